"""python -m node: a mesh member (see README.md for flags)."""

from node.run import main

main()
