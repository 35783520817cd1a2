#!/usr/bin/env bash
# Makes .venv with the project installed editable and its test dependencies
# (pip install -e '.[test]'). Skipped when .venv was made from the same pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
stamp="$VENV/.mesh-setup"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)

if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] &&
    "$VENV/bin/python" -c 'import pytest, testcontainers, docker, aiohttp, orjson, structlog, uvloop' 2>/dev/null; then
    echo "venv: $VENV is up to date"
    exit 0
fi

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "venv: $PY is $("$PY" --version 2>&1); Python 3.11 or newer is needed" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "venv: installing the project and its test dependencies into $VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -e '.[test]'
echo "$want" >"$stamp"
echo "venv: $VENV ready ($("$VENV/bin/python" --version))"
