#!/usr/bin/env bash
# Builds the local Node.js image (mesh-nodejs:bookworm by default) without pulling anything,
# as scripts/base-image.sh builds the Python one: an mmdebstrap minbase of Debian bookworm
# with Debian's nodejs (18) and ca-certificates, docs, man pages, locales and info excluded,
# fed to `docker import`. The polyglot example's app (examples/polyglot/Dockerfile) is built
# on it: make setup writes NODE_BASE_IMAGE=mesh-nodejs:bookworm into .env. Skipped when the
# image exists and was made by this recipe (its label says which; bump RECIPE when the image
# it makes changes). Installs mmdebstrap (apt) when it is missing.
set -euo pipefail

IMAGE=${MESH_NODEJS_IMAGE:-mesh-nodejs:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
RECIPE=1

size() { docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'; }

made_by=$(docker image inspect -f '{{index .Config.Labels "mesh.nodejs-recipe"}}' "$IMAGE" 2>/dev/null || true)
if [ "$made_by" = "$RECIPE" ]; then
    echo "nodejs-image: $IMAGE exists ($(size))"
    exit 0
fi
old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)  # an earlier recipe's

if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "nodejs-image: installing mmdebstrap"
    apt-get -q update
    DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends mmdebstrap
fi

echo "nodejs-image: building $IMAGE with mmdebstrap (bookworm, minbase, nodejs)"
start=$(date +%s)
tmp=$(mktemp -d /tmp/mesh-nodejs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# merged-usr hook: bookworm's default would install usrmerge, which brings all of perl.
# Its chatter goes to a log, shown only when the build fails.
if ! mmdebstrap --variant=minbase --quiet --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=nodejs,ca-certificates \
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
    "deb $SECURITY_MIRROR bookworm-security main" >"$tmp/mmdebstrap.log" 2>&1; then
    cat "$tmp/mmdebstrap.log" >&2
    echo "nodejs-image: mmdebstrap failed" >&2
    exit 1
fi
docker import \
    --change 'CMD ["node"]' \
    --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase with nodejs (mesh local Node.js base)"' \
    --change "LABEL mesh.nodejs-recipe=$RECIPE" \
    "$tmp/rootfs.tar" "$IMAGE" >/dev/null
if [ -n "$old" ]; then  # the earlier recipe's image, untagged now; kept while an image uses it
    docker image rm "$old" >/dev/null 2>&1 || true
fi
echo "nodejs-image: $IMAGE built in $(($(date +%s) - start)) s, $(size)"
