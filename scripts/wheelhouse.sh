#!/usr/bin/env bash
# Fills build/wheels with wheels of the project's dependencies (plus setuptools and wheel,
# the build backend, and `wheel` repacks stripped wheels) for the image's Python, and with
# requirements.txt, the runtime list the image installs with `pip --no-index` (containers
# here cannot reach the package index). Never a wheel of the project itself: that would
# change at every commit and bust the image's dependency layer.
#
# The list comes from pyproject.toml (scripts/requirements.py). The target (Python version,
# architecture, glibc) is read once from the base image and kept in build/wheels/target.txt,
# so the host's own Python version does not matter. Skipped when the wheelhouse already
# resolves every requirement offline.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=build/wheels
BASE=${MESH_BASE_IMAGE:-mesh-base:bookworm}
PY=${PYTHON:-python3}

tmp=$(mktemp -d /tmp/mesh-wheels.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$PY" scripts/requirements.py runtime build >"$tmp/requirements.txt"
# the image installs the runtime list only; keyed on it, its dependency layer stays cached
"$PY" scripts/requirements.py runtime >"$tmp/runtime.txt"
cmp -s "$tmp/runtime.txt" "$WHEELS/requirements.txt" || cp "$tmp/runtime.txt" "$WHEELS/requirements.txt"

if [ ! -s "$WHEELS/target.txt" ]; then
    # pip's target options for the image's interpreter, one a line:
    # --python-version 3.11, --implementation cp, --abi cp311, --platform manylinux_2_x_<arch>...
    docker run --rm --pull never --network none --entrypoint python3 "$BASE" -c '
import os, platform, sys
v = sys.version_info
arch = platform.machine()
glibc = int(os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[1])
print(f"--python-version\n{v.major}.{v.minor}\n--implementation\ncp\n--abi\ncp{v.major}{v.minor}")
for minor in range(glibc, 4, -1):
    print(f"--platform\nmanylinux_2_{minor}_{arch}")
for legacy in ("manylinux2014", "manylinux2010", "manylinux1"):
    print(f"--platform\n{legacy}_{arch}")
' >"$tmp/target.txt"
    mv "$tmp/target.txt" "$WHEELS/target.txt"
fi
mapfile -t target <"$WHEELS/target.txt"

pip_quiet=(--disable-pip-version-check --quiet)
if "$PY" -m pip install "${pip_quiet[@]}" --dry-run --ignore-installed --target "$tmp/dry" \
    --no-index --find-links "$WHEELS" --only-binary=:all: "${target[@]}" \
    -r "$tmp/requirements.txt" >/dev/null 2>&1; then
    echo "wheelhouse: complete ($(find "$WHEELS" -name '*.whl' | wc -l) wheels in $WHEELS)"
    exit 0
fi

echo "wheelhouse: downloading wheels for $(grep -c . "$tmp/requirements.txt") requirements" \
    "(${target[1]}, ${target[7]})"
"$PY" -m pip download "${pip_quiet[@]}" --dest "$tmp/new" --only-binary=:all: "${target[@]}" \
    -r "$tmp/requirements.txt"

# Compiled wheels ship their shared objects with debug info (uvloop's is 13.6 MB, 1.6 MB
# stripped). Strip them, repacked with `wheel pack` (which rewrites RECORD), so the image
# stays small. Only wheels not yet in the wheelhouse are added: the ones there are kept
# byte for byte, so the image's dependency layer stays cached.
wheel_tool=$(printf "%s:" "$tmp"/new/wheel-*.whl "$tmp"/new/packaging-*.whl)
for whl in "$tmp"/new/*.whl; do
    name=$(basename "$whl")
    # `wheel pack` reorders platform tags in the name: match on distribution and version
    compgen -G "$WHEELS/$(echo "$name" | cut -d- -f1-2)-*.whl" >/dev/null && continue
    if [[ "$name" != *-none-any.whl ]] && command -v strip >/dev/null; then
        rm -rf "$tmp/unpacked"
        PYTHONPATH=$wheel_tool "$PY" -m wheel unpack --dest "$tmp/unpacked" "$whl" >/dev/null
        find "$tmp/unpacked" -name '*.so*' -type f -exec strip --strip-unneeded {} +
        SOURCE_DATE_EPOCH=315532800 PYTHONPATH=$wheel_tool "$PY" -m wheel pack --dest-dir "$WHEELS" "$tmp"/unpacked/* >/dev/null
    else
        cp "$whl" "$WHEELS/"
    fi
done
command -v strip >/dev/null || echo "wheelhouse: no strip (binutils): shared objects kept as they are"
echo "wheelhouse: $(find "$WHEELS" -name '*.whl' | wc -l) wheels in $WHEELS ($(du -sh "$WHEELS" | cut -f1))"
