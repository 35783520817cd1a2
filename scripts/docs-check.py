"""Checks the documentation: README.md and docs/*.md.

    python scripts/docs-check.py [ROOT]

- Every relative link (``[text](path)``, ``![alt](path)``) names a file or folder that
  exists, inside ROOT (``#anchor`` is cut off; anchors are not checked).
- Every ``make <target>`` in code (inline or fenced) is a target of ROOT's Makefile.

Prints one line for each problem and exits 1, or one summary line and exits 0. Only the
standard library: it runs before any set-up.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
FENCE = re.compile(r"^\s*(```|~~~)")
# `make` as a command: at the start, or after a shell separator or `$(`.
MAKE = re.compile(r"(?:^|[;&|(]\s*|\s)make((?:\s+[^\s;&|#)]+)*)")
COMMENT = re.compile(r"(?:^|\s)#.*$")
TARGET_LINE = re.compile(r"^([A-Za-z0-9_.%/-]+(?:[ \t]+[A-Za-z0-9_.%/-]+)*)[ \t]*::?(?!=)")
SCHEMES = ("http:", "https:", "mailto:", "ftp:", "file:", "data:")


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    text: str

    def show(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}: {self.text}"


def documents(root: Path) -> list[Path]:
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    return found + sorted((root / "docs").glob("*.md"))


def makefile_targets(root: Path) -> set[str]:
    targets: set[str] = set()
    makefile = root / "Makefile"
    if not makefile.is_file():
        return targets
    for line in makefile.read_text(encoding="utf-8").splitlines():
        if line.startswith(("\t", "#", " ")):
            continue
        match = TARGET_LINE.match(line)
        if match:
            targets.update(t for t in match.group(1).split() if not t.startswith("."))
    return targets


def split_code(lines: list[str]) -> list[tuple[int, str, list[str]]]:
    """(line number, prose with code removed, code pieces) for each line."""
    out = []
    fenced = False
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            fenced = not fenced
            out.append((number, "", []))
        elif fenced:
            out.append((number, "", [line]))
        else:
            code = [m.group(2) for m in INLINE_CODE.finditer(line)]
            out.append((number, INLINE_CODE.sub(" ", line), code))
    return out


def make_targets_named(code: str) -> list[str]:
    named = []
    code = COMMENT.sub("", code)  # a shell comment is prose: "# make it run"
    for match in MAKE.finditer(code):
        try:
            words = shlex.split(match.group(1))
        except ValueError:  # an unclosed quote: the command goes on elsewhere
            words = match.group(1).split()
        for word in words:
            if word.startswith("-") or "=" in word:
                continue  # an option or a variable: make test PYTEST_ARGS=-x
            if re.fullmatch(r"[A-Za-z0-9_.-]+", word):
                named.append(word)
            break  # the first target only: what follows may be prose (make up runs...)
    return named


def check_link(root: Path, doc: Path, target: str) -> str | None:
    if target.startswith("#") or target.lower().startswith(SCHEMES) or "://" in target:
        return None
    path = target.split("#", 1)[0].split("?", 1)[0]
    if not path:
        return None
    resolved = (doc.parent / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"link {target}: outside the repository (a clone does not have it)"
    if not resolved.exists():
        return f"link {target}: no such file"
    return None


def check(root: Path) -> tuple[list[Problem], int, int]:
    """The problems, and how many links and make targets were checked."""
    problems: list[Problem] = []
    targets = makefile_targets(root)
    links = makes = 0
    for doc in documents(root):
        lines = doc.read_text(encoding="utf-8").splitlines()
        for number, prose, code in split_code(lines):
            for match in LINK.finditer(prose):
                links += 1
                wrong = check_link(root, doc, match.group(1))
                if wrong:
                    problems.append(Problem(doc, number, wrong))
            for piece in code:
                for target in make_targets_named(piece):
                    makes += 1
                    if target not in targets:
                        problems.append(
                            Problem(doc, number, f"make {target}: no such target in the Makefile")
                        )
    return problems, links, makes


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    problems, links, makes = check(root)
    for problem in problems:
        print(problem.show(root))
    docs = len(documents(root))
    if problems:
        print(f"docs-check: {len(problems)} problem(s) in {docs} files", file=sys.stderr)
        return 1
    print(f"docs-check: {docs} files, {links} relative links and {makes} make targets: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
