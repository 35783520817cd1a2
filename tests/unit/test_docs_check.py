"""scripts/docs-check.py (`make docs-check`): broken links and unknown make targets fail it;
the repository's own README.md and docs/ pass it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "docs-check.py"

MAKEFILE = """.PHONY: up test
VENV_PY := .venv/bin/python

up: setup
\tdocker compose up
test: setup docs-check
\t$(VENV_PY) -m pytest
setup docs-check:
\ttrue
"""


def run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60
    )


def tree(tmp_path: Path, readme: str, page: str = "# Page\n") -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "Makefile").write_text(MAKEFILE)
    (root / "README.md").write_text(readme)
    (root / "docs" / "page.md").write_text(page)
    return root


def test_a_good_tree_passes(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        "# R\n\nSee [the page](docs/page.md#a-heading), <https://example.com>, [web](https://x.y).\n"
        "Run `make up`, `make test PYTEST_ARGS='-k mesh -x'`, `make setup && make docs-check`.\n"
        "```\nmake up      # make it run\n```\n"
        "Prose may say make sure; code may show `[not a link](nowhere.md)`.\n",
        page="Back to [the README](../README.md) and [a folder](../docs).\n",
    )
    result = run(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_a_broken_link_and_an_unknown_target_fail(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        "# R\n\nSee [missing](docs/missing.md).\n\n```\nmake frobnicate\n```\n",
        page="The design: [design](../../shared/DESIGN.md). ![shot](page.png)\n",
    )
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "DESIGN.md").write_text("outside the repository\n")
    result = run(root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "README.md:3: link docs/missing.md: no such file" in lines
    assert "README.md:6: make frobnicate: no such target in the Makefile" in lines
    assert any(
        line.startswith("docs/page.md:1: link ../../shared/DESIGN.md: outside") for line in lines
    )
    assert "docs/page.md:1: link page.png: no such file" in lines
    assert len(lines) == 4, result.stdout


def test_the_repository_docs_pass() -> None:
    result = run(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
