# Sourced by scripts/base-image.sh and scripts/nodejs-image.sh: builds a local image without
# pulling anything, an mmdebstrap minbase of Debian bookworm with $INCLUDE, docs, man pages,
# locales and info excluded, fed to `docker import`. Skipped when $IMAGE exists and was made
# by this recipe (its label $LABEL says which; the caller bumps RECIPE when the image it
# makes changes). Installs mmdebstrap (apt) when it is missing.
#
# The caller sets: WHO (the name its lines start with), IMAGE, LABEL, RECIPE, INCLUDE (the
# packages), WHAT (the build line's words), CMD (the image's, as JSON), DESCRIPTION, and
# BUILD_LOG=1 to keep mmdebstrap's chatter in a log shown only when the build fails.
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

size() { docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'; }

made_by=$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null || true)
if [ "$made_by" = "$RECIPE" ]; then
    echo "$WHO: $IMAGE exists ($(size))"
    exit 0
fi
old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)  # an earlier recipe's

if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "$WHO: installing mmdebstrap"
    apt-get -q update
    DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends mmdebstrap
fi

echo "$WHO: building $IMAGE with mmdebstrap ($WHAT)"
start=$(date +%s)
tmp=$(mktemp -d "/tmp/mesh-${WHO%-image}.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# merged-usr hook: bookworm's default would install usrmerge, which brings all of perl
rootfs() {
    mmdebstrap --variant=minbase --quiet --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --include="$INCLUDE" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log' \
        bookworm "$tmp/rootfs.tar" \
        "deb $MIRROR bookworm main" \
        "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY_MIRROR bookworm-security main"
}
if [ "${BUILD_LOG:-0}" != 1 ]; then
    rootfs
elif ! rootfs >"$tmp/mmdebstrap.log" 2>&1; then
    cat "$tmp/mmdebstrap.log" >&2
    echo "$WHO: mmdebstrap failed" >&2
    exit 1
fi
docker import \
    --change "CMD $CMD" \
    --change "LABEL org.opencontainers.image.description=\"$DESCRIPTION\"" \
    --change "LABEL $LABEL=$RECIPE" \
    "$tmp/rootfs.tar" "$IMAGE" >/dev/null
if [ -n "$old" ]; then  # the earlier recipe's image, untagged now; kept while an image uses it
    docker image rm "$old" >/dev/null 2>&1 || true
fi
echo "$WHO: $IMAGE built in $(($(date +%s) - start)) s, $(size)"
