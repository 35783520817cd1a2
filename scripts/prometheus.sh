#!/usr/bin/env bash
# Fetches Debian's Prometheus (one binary, needing only libc) into build/prometheus, with its
# web templates (build/prometheus/web: Debian's build reads them from
# /usr/share/prometheus/web, where compose mounts them), for the tests and compose's
# `monitoring` profile: `apt-get download` with the host's own sources (nothing is added to
# apt, nothing is installed or started), then `dpkg-deb -x`. Skipped when both are there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=build/prometheus
BIN=$DEST/prometheus

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1 && [ -f "$DEST/web/templates/_base.html" ]; then
    echo "prometheus: $("$BIN" --version 2>&1 | head -n 1)"
    exit 0
fi
tmp=$(mktemp -d /tmp/mesh-prometheus.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt's download sandbox user (_apt) must be able to write here
if ! (cd "$tmp" && apt-get download -q prometheus >"$tmp/download.log" 2>&1); then
    # a fresh machine may have no package lists yet
    apt-get -q update >/dev/null
    (cd "$tmp" && apt-get download -q prometheus)
fi
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
mkdir -p "$DEST"
install -m 0755 "$tmp/root/usr/bin/prometheus" "$BIN"
rm -rf "$DEST/web"
cp -r "$tmp/root/usr/share/prometheus/web" "$DEST/web"
echo "prometheus: installed $(basename "$tmp"/prometheus_*.deb) -> $BIN ($("$BIN" --version 2>&1 | head -n 1))"
