#!/usr/bin/env bash
# Writes the gitignored .env that docker compose reads: build the image on the local base
# and install Python packages only from the host wheelhouse (no package index in builds).
# Other lines a user put in .env are kept; ours are replaced.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${MESH_BASE_IMAGE:-mesh-base:bookworm}
ours=("BASE_IMAGE=$BASE" "PIP_INSTALL_FLAGS=--no-index")

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
    echo "# BASE_IMAGE and PIP_INSTALL_FLAGS are written by make setup (scripts/env-file.sh)"
    if [ -f .env ]; then grep -vE '^(BASE_IMAGE|PIP_INSTALL_FLAGS)=|^# BASE_IMAGE and PIP_INSTALL_FLAGS' .env || true; fi
    printf '%s\n' "${ours[@]}"
} >"$tmp"
if cmp -s "$tmp" .env; then
    echo "env-file: .env is up to date"
else
    cp "$tmp" .env
    echo "env-file: wrote .env (${ours[*]})"
fi
