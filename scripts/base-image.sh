#!/usr/bin/env bash
# Builds the local base image (mesh-base:bookworm by default) without pulling anything:
# an mmdebstrap minbase of Debian bookworm with python3, python3-venv and ca-certificates,
# docs, man pages, locales and info excluded, fed to `docker import`. Skipped when the
# image already exists and was made by this recipe (its label says which; bump RECIPE when
# the image it makes changes). Installs mmdebstrap (apt) when it is missing.
set -euo pipefail

IMAGE=${MESH_BASE_IMAGE:-mesh-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
RECIPE=2  # 2: merged /usr by mmdebstrap's hook, so no usrmerge and no perl (172 -> ~125 MB)

made_by=$(docker image inspect -f '{{index .Config.Labels "mesh.base-recipe"}}' "$IMAGE" 2>/dev/null || true)
if [ "$made_by" = "$RECIPE" ]; then
    echo "base-image: $IMAGE exists ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
    exit 0
fi
old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)  # an earlier recipe's

if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "base-image: installing mmdebstrap"
    apt-get -q update
    DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends mmdebstrap
fi

echo "base-image: building $IMAGE with mmdebstrap (bookworm, minbase)"
start=$(date +%s)
tmp=$(mktemp -d /tmp/mesh-base.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# merged-usr hook: bookworm's default would install usrmerge, which brings all of perl
mmdebstrap --variant=minbase --quiet --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3,python3-venv,ca-certificates \
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
docker import \
    --change 'CMD ["/bin/bash"]' \
    --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase with python3 (mesh local base)"' \
    --change "LABEL mesh.base-recipe=$RECIPE" \
    "$tmp/rootfs.tar" "$IMAGE" >/dev/null
if [ -n "$old" ]; then  # the earlier recipe's image, untagged now; kept while an image uses it
    docker image rm "$old" >/dev/null 2>&1 || true
fi
echo "base-image: $IMAGE built in $(($(date +%s) - start)) s," \
    "$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
