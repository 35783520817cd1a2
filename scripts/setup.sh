#!/usr/bin/env bash
# `make setup`: everything `make up` and `make test` need, installed only where missing.
# Safe to run twice; a run with nothing to do takes seconds. Each step says what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${MESH_IMAGE:-mesh:latest}
ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { printf '%d.%d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }

build_image() {
    docker compose build --quiet
    # Earlier builds of the image, now untagged and used by no container, are removed.
    docker image prune --force --filter label=org.opencontainers.image.title=mesh >/dev/null
    docker image inspect -f '{{.Size}}' "$IMAGE" |
        awk -v image="$IMAGE" '{printf "image: %s, %.0f MB\n", image, $1 / 1e6}'
}

start=$(ms)
for step in scripts/compose-v2.sh scripts/base-image.sh scripts/wheelhouse.sh \
    scripts/venv.sh scripts/chromium.sh scripts/prometheus.sh scripts/env-file.sh build_image; do
    t0=$(ms)
    if [ -f "$step" ]; then bash "$step"; else "$step"; fi
    echo "  ($(basename "$step" .sh): $(seconds $(($(ms) - t0))))"
done
echo "setup: done in $(seconds $(($(ms) - start)))"
