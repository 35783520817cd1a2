#!/usr/bin/env bash
# Builds the local Node.js image (mesh-nodejs:bookworm by default) without pulling anything,
# as scripts/base-image.sh builds the Python one (both by scripts/debian-image.sh): an
# mmdebstrap minbase of Debian bookworm with Debian's nodejs (18) and ca-certificates, docs,
# man pages, locales and info excluded, fed to `docker import`. The polyglot example's app
# (examples/polyglot/Dockerfile) is built on it: make setup writes
# NODE_BASE_IMAGE=mesh-nodejs:bookworm into .env. Skipped when the image exists and was made
# by this recipe (its label says which; bump RECIPE when the image it makes changes).
# Installs mmdebstrap (apt) when it is missing.
set -euo pipefail

WHO=nodejs-image
IMAGE=${MESH_NODEJS_IMAGE:-mesh-nodejs:bookworm}
LABEL=mesh.nodejs-recipe
RECIPE=1
INCLUDE=nodejs,ca-certificates
WHAT="bookworm, minbase, nodejs"
CMD='["node"]'
DESCRIPTION="Debian bookworm minbase with nodejs (mesh local Node.js base)"
BUILD_LOG=1  # mmdebstrap's chatter goes to a log, shown only when the build fails
. "$(dirname "$0")/debian-image.sh"
