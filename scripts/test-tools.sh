#!/usr/bin/env bash
# Makes sure the tools the Consul/DNS and gateway tests and benchmarks drive are installed:
# Debian's haproxy (2.6, the gateway benchmark's yardstick and the SRV-record client),
# bind9-dnsutils (dig) and wrk (the gateway benchmark's load). When any command is missing,
# `apt-get install -y --no-install-recommends haproxy bind9-dnsutils wrk` from the host's
# own apt sources (none is
# added; the host's policy-rc.d keeps apt from starting haproxy's service). The package
# lists are updated only when an install without it fails. Needs root only when it has
# work to do. Prints one line saying what it did.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "?"; }

if have haproxy && have dig && have wrk; then
    echo "test-tools: haproxy $(version haproxy), dig ($(version bind9-dnsutils)) and wrk $(version wrk) already installed"
    exit 0
fi

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
log=$(mktemp /tmp/mesh-test-tools.XXXXXX)
trap 'rm -f "$log"' EXIT
install_quietly() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
        haproxy bind9-dnsutils wrk >"$log" 2>&1
}
# the package lists may be missing or stale (a fresh machine): update them once, then retry
if ! install_quietly; then
    "${sudo[@]}" apt-get update -q -o DPkg::Lock::Timeout=300 >>"$log" 2>&1 || true
    install_quietly || { cat "$log" >&2; echo "test-tools: apt-get install failed" >&2; exit 1; }
fi
echo "test-tools: installed haproxy $(version haproxy), bind9-dnsutils $(version bind9-dnsutils) and wrk $(version wrk) with apt-get"
