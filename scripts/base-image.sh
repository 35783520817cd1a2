#!/usr/bin/env bash
# Builds the local base image (mesh-base:bookworm by default) without pulling anything:
# an mmdebstrap minbase of Debian bookworm with python3, python3-venv and ca-certificates,
# docs, man pages, locales and info excluded, fed to `docker import` (scripts/debian-image.sh,
# shared with scripts/nodejs-image.sh). Skipped when the image already exists and was made by
# this recipe (its label says which; bump RECIPE when the image it makes changes). Installs
# mmdebstrap (apt) when it is missing.
set -euo pipefail

WHO=base-image
IMAGE=${MESH_BASE_IMAGE:-mesh-base:bookworm}
LABEL=mesh.base-recipe
RECIPE=2  # 2: merged /usr by mmdebstrap's hook, so no usrmerge and no perl (172 -> ~125 MB)
INCLUDE=python3,python3-venv,ca-certificates
WHAT="bookworm, minbase"
CMD='["/bin/bash"]'
DESCRIPTION="Debian bookworm minbase with python3 (mesh local base)"
. "$(dirname "$0")/debian-image.sh"
