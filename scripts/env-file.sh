#!/usr/bin/env bash
# Writes the gitignored .env that docker compose reads: build the image on the local base
# and install Python packages only from the host wheelhouse (no package index in builds),
# and build the polyglot example's Node.js app on the local Node.js base.
# Other lines a user put in .env are kept; ours are replaced.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${MESH_BASE_IMAGE:-mesh-base:bookworm}
NODE_BASE=${MESH_NODEJS_IMAGE:-mesh-nodejs:bookworm}
ours=("BASE_IMAGE=$BASE" "PIP_INSTALL_FLAGS=--no-index" "NODE_BASE_IMAGE=$NODE_BASE")
header="# BASE_IMAGE, PIP_INSTALL_FLAGS and NODE_BASE_IMAGE are written by make setup (scripts/env-file.sh)"

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
    echo "$header"
    if [ -f .env ]; then
        # ours, and our header in this or an earlier wording, are written anew
        grep -vE '^(BASE_IMAGE|PIP_INSTALL_FLAGS|NODE_BASE_IMAGE)=|^# BASE_IMAGE and PIP_INSTALL_FLAGS|^# BASE_IMAGE, PIP_INSTALL_FLAGS' .env || true
    fi
    printf '%s\n' "${ours[@]}"
} >"$tmp"
if cmp -s "$tmp" .env; then
    echo "env-file: .env is up to date"
else
    cp "$tmp" .env
    echo "env-file: wrote .env (${ours[*]})"
fi
