#!/usr/bin/env bash
# Makes sure `docker compose` (v2) works. When it does not, installs the CLI plugin from
# Debian trixie's `docker-compose` package: apt is pointed at a throw-away sources list,
# lists and cache (trixie is never added to /etc/apt), the .deb is unpacked with dpkg-deb,
# and only its plugin file is copied to /usr/local/lib/docker/cli-plugins. docker-compose
# v1 and the system's apt state stay as they were. Needs root only when it has work to do.
set -euo pipefail

PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

if docker compose version >/dev/null 2>&1; then
    echo "compose-v2: $(docker compose version)"
    exit 0
fi

echo "compose-v2: 'docker compose' is missing; installing the plugin from Debian trixie"
tmp=$(mktemp -d /tmp/mesh-compose.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt's download sandbox user (_apt) must be able to write here
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb" "$tmp/root"
echo "deb [signed-by=$KEYRING] $MIRROR trixie main" >"$tmp/sources.list"
chown _apt "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb" 2>/dev/null || true

apt_tmp() {
    apt-get -q \
        -o Dir::Etc::sourcelist="$tmp/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" \
        -o Acquire::Languages=none -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
        -o Acquire::IndexTargets::deb::CNF::DefaultEnabled=false \
        "$@"
}

# apt-get update exits 0 on a bad signature (it only warns), so check its output too.
update_trixie() {
    apt_tmp update >"$tmp/update.log" 2>&1 || true
    ! grep -qE 'NO_PUBKEY|EXPKEYSIG|not signed|is not signed|invalid signature|^E:' "$tmp/update.log"
}
if ! update_trixie; then
    # An older bookworm keyring may lack the trixie keys; bookworm's own updates carry them.
    echo "compose-v2: trixie's Release signature is not accepted; updating debian-archive-keyring"
    cat "$tmp/update.log" >&2
    apt-get -q update
    apt-get -q install -y --only-upgrade debian-archive-keyring
    update_trixie || { cat "$tmp/update.log" >&2; exit 1; }
fi

(cd "$tmp/deb" && apt_tmp download docker-compose)
deb=$(ls "$tmp"/deb/docker-compose_*.deb)
dpkg-deb -x "$deb" "$tmp/root"
install -d "$PLUGIN_DIR"
install -m 0755 "$tmp/root/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN_DIR/docker-compose"
echo "compose-v2: installed $(basename "$deb") -> $PLUGIN_DIR/docker-compose"
docker compose version
