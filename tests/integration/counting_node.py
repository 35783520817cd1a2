"""A node that provides `goods`, whose handler writes down every request it runs.

Each line is written (line-buffered: one write to the kernel) before the handler answers,
so it survives a SIGKILL: a test reads the files of all providers and proves that no
request ran twice.

    COUNT_FILE=/tmp/a.count python tests/integration/counting_node.py --name a ...
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from node.app import Node
from node.run import main
from shared.wire import Member


def setup(node: Node) -> None:
    ran = open(os.environ["COUNT_FILE"], "a", buffering=1)  # open as long as the process lives

    async def take(body: Any, caller: Member) -> Any:
        ran.write(f"{body['n']}\n")
        await asyncio.sleep(float(body.get("hold", 0.0)))
        return {"n": body["n"], "by": node.name}

    node.add_service("goods", {"take": take})


if __name__ == "__main__":
    main(setup)
