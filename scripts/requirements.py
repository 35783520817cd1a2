"""Prints requirements from pyproject.toml, one a line, so no list is copied anywhere else.

    python3 scripts/requirements.py runtime build   # [project].dependencies + the build backend
    python3 scripts/requirements.py test            # [project.optional-dependencies].test

Used by scripts/wheelhouse.sh on the host and by the Dockerfile's build stage. Only the
standard library (tomllib, Python 3.11+), so it runs in a bare base image.
"""

import sys
import tomllib
from pathlib import Path

KINDS = {
    "runtime": lambda p: p["project"].get("dependencies", []),
    "build": lambda p: p["build-system"].get("requires", []),
    "test": lambda p: p["project"].get("optional-dependencies", {}).get("test", []),
}


def main(argv: list[str]) -> int:
    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if argv and argv[0].endswith(".toml"):
        path, argv = Path(argv[0]), argv[1:]
    unknown = [k for k in argv if k not in KINDS]
    if not argv or unknown:
        print(f"usage: requirements.py [pyproject.toml] {{{'|'.join(KINDS)}}}...", file=sys.stderr)
        return 2
    project = tomllib.loads(path.read_text())
    for kind in argv:
        for requirement in KINDS[kind](project):
            print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
