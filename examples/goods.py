"""The `goods` service: a node that offers a small catalogue, with two methods.

    python -m examples.goods --distributor 127.0.0.1:9000 ...

takes every flag `python -m node` takes. Run several: any node reaches one of them
by the service name, never by a member's name or address::

    curl -s -XPOST 127.0.0.1:9110/v1/request -d '{"service": "goods", "method": "list"}'
    curl -s -XPOST 127.0.0.1:9110/v1/request \
        -d '{"service": "goods", "method": "get", "body": {"sku": "tea"}}'

Each answer names the replica that gave it (`replica`, its node name) and how many
requests that replica has answered so far (`served`), so you can watch the load spread.
"""

from __future__ import annotations

import itertools
from typing import Any

from node.app import Node
from node.errors import RequestFailed
from node.run import main
from shared.wire import Member

CATALOGUE = {
    "tea": {"sku": "tea", "name": "Green tea", "price": 4.5},
    "mug": {"sku": "mug", "name": "Mug", "price": 9.0},
    "pot": {"sku": "pot", "name": "Teapot", "price": 32.0},
}


def setup(node: Node) -> None:
    """Called by main() before the node starts: offer `goods` with its two methods."""
    served = itertools.count(1)  # this replica's own count: each replica has its own

    async def list_goods(body: Any, caller: Member) -> Any:
        return {"replica": node.name, "served": next(served), "items": list(CATALOGUE.values())}

    async def get_item(body: Any, caller: Member) -> Any:
        sku = body.get("sku") if isinstance(body, dict) else None
        if not isinstance(sku, str) or sku not in CATALOGUE:
            # the caller gets a 502 with this text as its "error" (a handler's failure)
            raise RequestFailed(f"no item with sku {sku!r}")
        return {"replica": node.name, "served": next(served), "item": CATALOGUE[sku]}

    node.add_service("goods", {"list": list_goods, "get": get_item})


if __name__ == "__main__":
    main(setup=setup)
