"""Earlier releases of the code, taken from git, and how to run their programs."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def checkout_release(commit: str, root: Path) -> Path:
    """`commit`'s shared, node and distributor packages under `root`: the real thing, not a
    hand-made copy."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "shared", "node", "distributor"],
        capture_output=True,
        check=False,
    )
    assert archive.returncode == 0, (
        f"git archive {commit} failed (a clone without history?): {archive.stderr!r}"
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def old(root: Path, module: str) -> tuple[str, ...]:
    """Run `module` of the release checked out under `root`: its packages first on the path."""
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(root)!r}); "
        f"runpy.run_module({module!r}, run_name='__main__')"
    )
    return ("-c", code)
