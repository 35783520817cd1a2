"""The distributor's live page (GET /) in a real headless Chromium, driven by Selenium.

Debian's chromium and chromium-driver (scripts/chromium.sh, run by `make setup`). Without
them, or without selenium, these tests skip locally, and fail in CI (CI=true or
MESH_REQUIRE_DOCKER=1). The page state is read with small scripts that return plain data
(the table is redrawn on every event, so element handles would go stale). Every test sets
a marker on `window` first and checks it is still there at the end: what changed on the
page came from the event stream, not from a reload.

Screenshots go to build/page-screenshots/ (their paths are printed in the run's summary);
with MESH_DOCS_SCREENSHOT=1, the broken-link test also writes docs/page.png (README).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from harness.ports import free_port
from harness.procs import Proc, http
from tests.integration.cluster import GhostPeer

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "page-screenshots"
DOCS_SHOT = ROOT / "docs" / "page.png"
DOCS_MAX_BYTES = 200_000
CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MESH_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 30.0  # seconds: generous, never a timing assertion (DESIGN.md, "Timing")
TOKEN = "page-test-token s3cret"

# the page's state, read in one go (no element handle survives a redraw)
ROWS = """return [...document.querySelectorAll('#member-rows tr')].map(tr => ({
  id: tr.dataset.memberId, name: tr.dataset.name, broken: tr.dataset.broken === 'true',
  draining: tr.classList.contains('draining'),
  cells: [...tr.cells].map(td => td.textContent)}));"""
BANNER = "const b = document.getElementById('banner'); return b.hidden ? null : b.textContent;"
BROKEN = "return [...document.querySelectorAll('.broken-link')].map(li => li.textContent);"


def _required() -> bool:
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return ci or os.environ.get("MESH_REQUIRE_DOCKER") == "1"


def _unavailable(why: str) -> None:
    if _required():
        pytest.fail(f"{why} (CI=true or MESH_REQUIRE_DOCKER=1: a failure, not a skip)")
    pytest.skip(f"{why}; `make setup` (scripts/chromium.sh) installs it")


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium, quit afterwards whatever happens."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        _unavailable(f"selenium is not installed ({exc})")
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            _unavailable(f"{path} is missing (Debian's chromium and chromium-driver)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--window-size=1280,800", "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")  # containers have a small /dev/shm
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for errors
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root otherwise
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: Any, what: str, predicate: Callable[[], Any]) -> Any:
    """Wait (WAIT s) until predicate() is truthy; a screenshot and a clear failure if not."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda _: predicate())
    except TimeoutException:
        shot = screenshot(driver, "timed-out")
        raise AssertionError(
            f"timed out after {WAIT} s waiting for: {what}; screenshot: {shot}"
        ) from None


def screenshot(driver: Any, name: str, record_figure: Callable[..., None] | None = None) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"page screenshot: {path}")
    if record_figure is not None:
        record_figure(f"page screenshot ({name})", str(path.relative_to(ROOT)), "")
    return path


def rows(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(ROWS)


def names(driver: Any) -> list[str]:
    return sorted(r["name"] for r in rows(driver))


def console_errors(driver: Any) -> list[str]:
    """The console's errors since the last call: a script error, a failed fetch."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def mark_page(driver: Any) -> None:
    """A marker that a reload would wipe."""
    driver.execute_script("window.meshTestMarker = 'no reload';")


def not_reloaded(driver: Any) -> bool:
    return driver.execute_script("return window.meshTestMarker;") == "no reload"


def page_url(distributor: Proc) -> str:
    return f"http://127.0.0.1:{distributor.http_port}/"


def save_docs_screenshot(driver: Any) -> None:
    """docs/page.png for the README: the whole page at 1100 px wide, under DOCS_MAX_BYTES
    (a PNG of flat colours is small; quantised only if it is not)."""
    from PIL import Image

    height = driver.execute_script("return document.documentElement.scrollHeight;")
    metrics = {"width": 1100, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        DOCS_SHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(DOCS_SHOT))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    with Image.open(DOCS_SHOT) as image:
        image.load()
    image.save(DOCS_SHOT, optimize=True)
    if DOCS_SHOT.stat().st_size >= DOCS_MAX_BYTES:
        image.convert("RGB").quantize(colors=256).save(DOCS_SHOT, optimize=True)
    size = DOCS_SHOT.stat().st_size
    assert size < DOCS_MAX_BYTES, f"{DOCS_SHOT} is {size} bytes"
    print(f"docs screenshot: {DOCS_SHOT} ({size} bytes)")


def test_the_page_lists_members_and_follows_joins_updates_and_kills(
    make_cluster, browser, record_figure
):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    cluster.node("shop1", extra=["--service", "goods", "--tag", "v2", "--tag", "zone-a"])
    cluster.node("shop2", extra=["--service", "goods", "--tag", "zone-b"])
    pay = cluster.node("pay1", extra=["--service", "payments", "--tag", "zone-a"])

    browser.get(page_url(distributor))
    mark_page(browser)
    until(browser, "3 members listed", lambda: names(browser) == ["pay1", "shop1", "shop2"])
    shown = {r["name"]: r for r in rows(browser)}
    doc = distributor.get("/v1/members")
    for member in doc["members"]:
        row = shown[member["name"]]
        assert row["id"] == member["id"]
        _name, short_id, address, services, tags, draining, age = row["cells"]
        assert member["id"].startswith(short_id) and address == member["address"]
        assert all(s in services for s in member["services"]), (services, member)
        assert all(t in tags for t in member["tags"]), (tags, member)
        assert draining == "" and age.endswith("s"), row
    assert browser.find_element("id", "epoch").text == doc["epoch"]
    assert browser.find_element("id", "banner").is_displayed() is False

    # a join, without a reload
    cluster.node("gateway", extra=["--service", "web", "--tag", "edge"])
    until(browser, "gateway appears", lambda: "gateway" in names(browser))
    # an update (member_joined of a known id) replaces the row
    code, _ = http("PUT", pay.http_port, "/v1/self", {"draining": True})
    assert code == 200
    until(
        browser,
        "pay1 shown draining, still one row",
        lambda: [r["draining"] for r in rows(browser) if r["name"] == "pay1"] == [True],
    )
    version = distributor.get("/v1/members")["version"]
    until(
        browser,
        "the version shown is the distributor's",
        lambda: browser.find_element("id", "version").text == str(version),
    )
    screenshot(browser, "members", record_figure)

    # a kill, without a reload
    pay.kill()
    until(browser, "pay1 disappears", lambda: "pay1" not in names(browser))
    assert names(browser) == ["gateway", "shop1", "shop2"]
    assert not_reloaded(browser)
    assert console_errors(browser) == []


def test_the_banner_shows_while_the_distributor_is_down(make_cluster, browser, record_figure):
    cluster = make_cluster(steady=True)
    http_port = free_port()
    distributor = cluster.distributor(http_port=http_port)
    for name in ("a", "b", "c"):
        cluster.node(name)
    browser.get(page_url(distributor))
    mark_page(browser)
    until(browser, "3 members listed", lambda: names(browser) == ["a", "b", "c"])
    first_epoch = browser.find_element("id", "epoch").text
    assert browser.execute_script(BANNER) is None

    distributor.kill()  # SIGKILL
    banner = until(browser, "the banner shows", lambda: browser.execute_script(BANNER))
    assert "stream lost" in banner
    assert browser.find_element("id", "banner").is_displayed()
    screenshot(browser, "distributor-down", record_figure)

    restarted = cluster.distributor(http_port=http_port)
    until(browser, "the banner goes away", lambda: browser.execute_script(BANNER) is None)
    epoch = restarted.get("/v1/members")["epoch"]
    until(
        browser,
        "the new epoch and the re-registered members",
        lambda: (
            browser.find_element("id", "epoch").text == epoch and names(browser) == ["a", "b", "c"]
        ),
    )
    assert epoch != first_epoch
    assert not_reloaded(browser)


def raw(port: int, method: str, path: str, body: str = "", headers: dict[str, str] | None = None):
    """One request, no redirect followed: (status, headers, body)."""
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        conn.close()


def test_with_a_token_the_page_logs_in_with_a_form_and_a_cookie(
    make_cluster, browser, record_figure
):
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor({"MESH_HTTP_TOKEN": TOKEN})
    for name in ("a", "b", "c"):
        cluster.node(name)
    port = distributor.http_port

    # without a browser: the form, the JSON 401s, the probes open, the bearer header
    status, headers, body = raw(port, "GET", "/")
    assert status == 401 and headers["Content-Type"].startswith("text/html")
    assert 'action="/login"' in body and 'name="token"' in body and TOKEN not in body
    assert raw(port, "GET", "/v1/members")[0] == 401
    assert raw(port, "GET", "/v1/events")[0] == 401
    assert raw(port, "GET", "/healthz")[0] == 200
    assert raw(port, "GET", "/", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = raw(port, "POST", "/login", "token=wrong", form)
    assert status == 401 and "Wrong token" in body and "Set-Cookie" not in headers

    browser.get(page_url(distributor))
    until(browser, "the login form", lambda: browser.find_elements("id", "token"))
    browser.find_element("id", "token").send_keys("not the token")
    browser.find_element("css selector", "#login button").click()
    error = until(
        browser, "the form refuses it", lambda: browser.find_elements("id", "login-error")
    )
    assert "Wrong token" in error[0].text
    assert browser.get_cookie("mesh_token") is None

    browser.find_element("id", "token").send_keys(TOKEN)
    browser.find_element("css selector", "#login button").click()
    until(browser, "the members, through the cookie", lambda: names(browser) == ["a", "b", "c"])
    assert browser.current_url == page_url(distributor)  # no token in any URL
    cookie = browser.get_cookie("mesh_token")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/" and TOKEN not in cookie["value"]
    assert browser.execute_script("return document.cookie;") == ""  # HttpOnly: not in JS

    # the event stream works through the cookie: a join shows without a reload
    mark_page(browser)
    cluster.node("d")
    until(browser, "d appears", lambda: "d" in names(browser))
    assert browser.execute_script(BANNER) is None
    assert not_reloaded(browser)
    screenshot(browser, "logged-in", record_figure)

    # the same cookie outside the browser is accepted like the bearer header
    cookie_header = {"Cookie": f"mesh_token={cookie['value']}"}
    assert raw(port, "GET", "/v1/members", headers=cookie_header)[0] == 200
    assert raw(port, "GET", "/v1/members", headers={"Cookie": "mesh_token=forged"})[0] == 401


def test_a_cut_link_turns_red_and_clears_when_it_heals(make_cluster, browser, record_figure):
    """A partial partition: the ghost is registered with the distributor, but the nodes
    cannot reach it (GhostPeer), so they report their links to it broken (/v1/links)."""
    cluster = make_cluster()  # short heartbeats: a link is reported 1.2 s after it breaks
    distributor = cluster.distributor()
    cluster.node("shop1", extra=["--service", "goods", "--tag", "v2", "--tag", "zone-a"])
    cluster.node("shop2", extra=["--service", "goods", "--tag", "zone-b"])
    cluster.node("pay1", extra=["--service", "payments", "--tag", "zone-a"])
    browser.get(page_url(distributor))
    mark_page(browser)
    until(browser, "3 members", lambda: names(browser) == ["pay1", "shop1", "shop2"])
    assert browser.execute_script(BROKEN) == []

    def reported(texts: list[str]) -> bool:
        return all(any(n in t and "ghost" in t for t in texts) for n in ("pay1", "shop1", "shop2"))

    with GhostPeer(cluster.distributor_port) as ghost:
        until(
            browser,
            "a .broken-link from each node to the ghost",
            lambda: reported(browser.execute_script(BROKEN)),
        )
        until(
            browser,
            "every member in a broken link marked red",
            lambda: all(r["broken"] for r in rows(browser)) and len(rows(browser)) == 4,
        )
        assert browser.execute_script("return document.querySelectorAll('#graph line.cut').length")
        screenshot(browser, "broken-links", record_figure)
        if os.environ.get("MESH_DOCS_SCREENSHOT") == "1":
            save_docs_screenshot(browser)

        ghost.reachable()
        until(browser, "no broken link left", lambda: browser.execute_script(BROKEN) == [])
        until(browser, "no red mark left", lambda: not any(r["broken"] for r in rows(browser)))
        assert names(browser) == ["ghost", "pay1", "shop1", "shop2"]
    until(browser, "the ghost gone", lambda: "ghost" not in names(browser))
    assert not_reloaded(browser)
    assert console_errors(browser) == []


CHIPS = """return [...document.querySelectorAll('.chip.instance')].map(c => ({
  id: c.dataset.instanceId, health: c.dataset.health, text: c.textContent,
  color: getComputedStyle(c).backgroundColor}));"""


def test_an_instance_shows_as_a_chip_coloured_by_its_health(
    make_cluster, browser, record_figure
) -> None:
    """An instance's health reaches the page as a record update: the chip turns from
    green to red without a reload."""
    cluster = make_cluster(steady=True)
    distributor = cluster.distributor()
    agent = cluster.node("agent")
    with socket.socket() as app:  # a TCP check passes while this listens
        app.bind(("127.0.0.1", 0))
        app.listen()
        port = app.getsockname()[1]
        definition = {
            "name": "hello",
            "id": "hello-1",
            "address": "127.0.0.1",
            "port": port,
            "check": {"tcp": f"127.0.0.1:{port}", "interval": "200ms"},
        }
        code, _ = http("PUT", agent.http_port, "/v1/agent/service/register", definition)
        assert code == 200
        browser.get(page_url(distributor))
        mark_page(browser)
        until(
            browser,
            "a passing chip",
            lambda: [c["health"] for c in browser.execute_script(CHIPS)] == ["passing"],
        )
        (chip,) = browser.execute_script(CHIPS)
        assert chip["id"] == "hello-1" and "hello" in chip["text"] and "hello-1" in chip["text"]
        green = chip["color"]
        screenshot(browser, "instance-passing", record_figure)
    # the app's port closed: its check fails, the agent announces it, the page follows
    until(
        browser,
        "a critical chip",
        lambda: [c["health"] for c in browser.execute_script(CHIPS)] == ["critical"],
    )
    assert browser.execute_script(CHIPS)[0]["color"] != green
    screenshot(browser, "instance-critical", record_figure)
    assert not_reloaded(browser)
    assert console_errors(browser) == []
