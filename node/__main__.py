"""python -m node: a mesh member (see README.md for flags)."""

import sys

# rich is meshctl's. structlog imports it when it is installed, only to draw tracebacks on
# a terminal (plain ones do): refused here, it costs a node no 4 MB of RSS.
sys.modules.setdefault("rich", None)

from node.run import main  # noqa: E402 (after the line above, or structlog imports rich)

main()
