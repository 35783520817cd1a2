#!/usr/bin/env bash
# Makes sure Debian's chromium and chromium-driver are installed: the page test drives a
# real headless Chromium through Selenium (tests/integration/test_page.py). When either is
# missing, `apt-get install -y --no-install-recommends chromium chromium-driver` from the
# host's own apt sources (none is added; installing starts no service). Needs root only when
# it has work to do. Prints one line saying what it did.
set -euo pipefail

installed() { dpkg -s "$1" >/dev/null 2>&1; }

if command -v chromium >/dev/null && command -v chromedriver >/dev/null &&
    installed chromium && installed chromium-driver; then
    echo "chromium: $(dpkg-query -W -f '${Version}' chromium) and chromium-driver already installed"
    exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
log=$(mktemp /tmp/mesh-chromium.XXXXXX)
trap 'rm -f "$log"' EXIT
install_quietly() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        chromium chromium-driver >"$log" 2>&1
}
# the package lists may be missing or stale (a fresh container): update them once, then retry
if ! install_quietly; then
    "${sudo[@]}" apt-get update -q >>"$log" 2>&1 || true
    install_quietly || { cat "$log" >&2; echo "chromium: apt-get install failed" >&2; exit 1; }
fi
echo "chromium: installed chromium $(dpkg-query -W -f '${Version}' chromium) and chromium-driver with apt-get"
