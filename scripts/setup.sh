#!/usr/bin/env bash
# `make setup`: everything `make up` and `make test` need, installed only where missing.
# Safe to run twice; a run with nothing to do takes seconds. Each step says what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${MESH_IMAGE:-mesh:latest}
HELLO_IMAGE=${MESH_HELLO_IMAGE:-mesh-hello:latest}
ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { printf '%d.%d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }

build_image() {
    docker compose build --quiet
    # The polyglot example's Node.js app (one COPY on the local Node.js base: a second or
    # two), so its e2e test never pulls or builds more than the mesh image.
    docker compose --profile polyglot build --quiet hello-1
    # Earlier builds of the images, now untagged and used by no container, are removed.
    for title in mesh mesh-hello; do
        docker image prune --force --filter label=org.opencontainers.image.title=$title >/dev/null
    done
    for image in "$IMAGE" "$HELLO_IMAGE"; do
        docker image inspect -f '{{.Size}}' "$image" |
            awk -v image="$image" '{printf "image: %s, %.0f MB\n", image, $1 / 1e6}'
    done
}

start=$(ms)
for step in scripts/compose-v2.sh scripts/base-image.sh scripts/nodejs-image.sh \
    scripts/wheelhouse.sh scripts/venv.sh scripts/chromium.sh scripts/test-tools.sh \
    scripts/prometheus.sh scripts/env-file.sh build_image; do
    t0=$(ms)
    if [ -f "$step" ]; then bash "$step"; else "$step"; fi
    echo "  ($(basename "$step" .sh): $(seconds $(($(ms) - t0))))"
done
echo "setup: done in $(seconds $(($(ms) - start)))"
