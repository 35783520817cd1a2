"""A service built on the mesh: a node that also answers `greet`.

    python examples/greeter.py --name greeter --distributor 127.0.0.1:9000 ...

takes every flag `python -m node` takes. From any node:

    curl -s -XPOST 127.0.0.1:9111/v1/request -d '{"to": "greeter", "method": "greet"}'
"""

from typing import Any

from node.run import main
from shared.wire import Member


async def greet(body: Any, caller: Member) -> Any:
    """A handler: the request body and the caller's member record in, a JSON value out."""
    return {"hello": caller.name, "you_sent": body}


if __name__ == "__main__":
    main(setup=lambda node: node.handlers.add("greet", greet))
