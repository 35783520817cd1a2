"""The live page (`GET /`, page.html) and its token login (`POST /login`).

    GET /          page.html: members, joins and leaves as they happen (EventSource on
                   /v1/events), broken links from /v1/links in red, epoch and version
    POST /login    form field `token`: the right one sets the cookie, then 303 to /

With an HTTP token set, the page cannot send `Authorization` (an EventSource has no
headers), and the token never goes in a URL. So `GET /` without a valid token answers 401
with a small login form; a right token posted to /login sets an HttpOnly, SameSite=Strict,
Path=/ cookie (shared.http.TOKEN_COOKIE, a value derived from the token) and redirects to
/, and from then on the middleware (shared.http.bearer_token_required) accepts the cookie
on every endpoint, the event stream included. A wrong token answers 401 with the form
again and a message. Without a token set, / is the page and /login sends you there.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from shared.http import LOGIN_HANDLERS, TOKEN_CHECK, TOKEN_COOKIE

PAGE = (Path(__file__).parent / "page.html").read_bytes()
MAX_FORM = 4096  # bytes: a login form is a token, not an upload

# The page and the form load nothing from anywhere: inline script and style, same-origin
# fetches and the event stream. Framing is refused (no clickjacking of the login form).
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    # no referrer leaves for another site; not no-referrer, with which a browser sends the
    # login form's POST with `Origin: null`, and the API refuses a foreign Origin (403)
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mesh: log in</title>
<style>
body {{ font: 15px system-ui, sans-serif; background: #f6f7f9; color: #1d2330; }}
form {{ max-width: 22em; margin: 15vh auto; padding: 1.5em; background: #fff;
  border: 1px solid #d8dce3; border-radius: 8px; }}
h1 {{ font-size: 1.2em; margin: 0 0 .8em; }}
input {{ width: 100%; box-sizing: border-box; padding: .5em; margin: .4em 0 1em; font: inherit; }}
button {{ padding: .45em 1.2em; font: inherit; }}
#login-error {{ color: #b3261e; margin: 0 0 .8em; }}
</style></head>
<body><form id="login" method="post" action="/login">
<h1>mesh distributor</h1>
{message}<label for="token">HTTP token (<code>MESH_HTTP_TOKEN</code>)</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form></body></html>
"""


def login_form(message: str | None = None) -> web.Response:
    """401 with the form, and the message (escaped) above it, if any."""
    shown = f'<p id="login-error">{html.escape(message)}</p>\n' if message else ""
    return web.Response(
        text=FORM.format(message=shown), status=401, content_type="text/html", headers=HEADERS
    )


def see_other() -> web.Response:
    return web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})


async def page(request: web.Request) -> web.Response:
    # reached only with a valid token (or none set): the middleware answers the form otherwise
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8", headers=HEADERS)


async def form(request: web.Request) -> web.Response:
    """What `/` answers without a valid token (called by the middleware)."""
    return login_form()


async def login(request: web.Request) -> web.StreamResponse:
    """POST /login: the right token sets the cookie and sends the browser to /."""
    check = request.app.get(TOKEN_CHECK)
    if check is None or check.authorized(request):  # no token set, or logged in: the page
        return see_other()
    if request.method != "POST":  # a GET: the form, as / answers it
        return login_form()
    if (request.content_length or 0) > MAX_FORM:
        return login_form("That is not a token.")
    try:
        token = (await request.post()).get("token")
    except ValueError:  # a malformed body
        token = None
    if not isinstance(token, str) or not check.matches(token.strip()):
        return login_form("Wrong token.")
    response = see_other()
    # no Secure: the API is plain HTTP (put TLS in front and it still works)
    response.set_cookie(TOKEN_COOKIE, check.cookie, path="/", httponly=True, samesite="Strict")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_route("*", "/login", login)
    app[LOGIN_HANDLERS] = {"/": form, "/login": login}
