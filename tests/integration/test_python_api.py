"""The Python API services build on, in one process: add_service and request(service=...)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from node.app import Node
from node.config import parse
from node.errors import NoProvider, RequestFailed
from shared.looplag import LoopLag
from shared.wire import Member

FAST = {"MESH_DISTRIBUTORS": "", "MESH_HEARTBEAT_INTERVAL": "0.3", "MESH_HEARTBEAT_TIMEOUT": "3"}


@contextlib.asynccontextmanager
async def running(name: str, *flags: str) -> AsyncIterator[Node]:
    argv = ["--name", name, "--host", "127.0.0.1", "--port", "0", *flags]
    node = Node(parse(argv, FAST), LoopLag())
    await node.start()
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    try:
        yield node
    finally:
        stop.set()
        await task


async def until(what: str, predicate: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (a node has no event for these conditions)
            await asyncio.sleep(0.02)


async def test_add_service_and_request_by_service() -> None:
    async def list_goods(body: Any, caller: Member) -> Any:
        return {"items": ["apple", "pear"], "page": body["page"], "asked_by": caller.name}

    async with running("shop") as shop:
        shop.add_service("goods", {"list": list_goods})
        assert shop.member.services == ("goods",)
        seed = f"127.0.0.1:{shop.port}"
        async with running("client", "--seed", seed) as client:
            await until("the client knows the provider", lambda: client.providers("goods"))
            result = await client.request(service="goods", method="list", body={"page": 1})
            assert result == {"items": ["apple", "pear"], "page": 1, "asked_by": "client"}
            member, _ = await client.call(method="list", body={"page": 2}, service="goods")
            assert member == shop.id

            with pytest.raises(NoProvider) as info:
                await client.request(service="stock", method="list")
            assert info.value.status == 503 and info.value.member is None
            with pytest.raises(RequestFailed) as failed:
                await client.request(service="goods", method="no-such-method")
            assert failed.value.status == 502 and failed.value.member == shop.id

            # a service added while running is announced: a new incarnation reaches the peer
            async def count(body: Any, caller: Member) -> Any:
                return len(body)

            incarnation = shop.incarnation
            shop.add_service("stock", {"count": count})
            assert shop.incarnation == incarnation + 1
            await until("the client sees the new service", lambda: client.providers("stock") != [])
            assert await client.request(service="stock", method="count", body=[1, 2]) == 2
            # the provider calls itself by service too
            assert await shop.request(service="stock", method="count", body=[1]) == 1


async def test_plain_and_async_handlers_answer_alike_over_a_link() -> None:
    """A plain function is answered as its request is read, an async one in a task: the
    caller sees the same results, and the same errors (raised, not JSON, over the cap)."""

    def plain(body: Any, caller: Member) -> Any:
        if body == "raise":
            raise ValueError("plain says no")
        return {"plain": body} if body != "set" else {1, 2}

    async def later(body: Any, caller: Member) -> Any:
        await asyncio.sleep(0)
        if body == "raise":
            raise ValueError("later says no")
        return {"later": body} if body != "set" else {1, 2}

    def big(body: Any, caller: Member) -> Any:
        return "y" * (1024 * 1024)  # the frame cap: with the response around it, over

    async with running("callee") as callee:
        callee.handlers.add("plain", plain)
        callee.handlers.add("later", later)
        callee.handlers.add("big", big)
        async with running("caller", "--seed", f"127.0.0.1:{callee.port}") as caller:
            peers = caller.mesh.peers
            await until(
                "the link is up",
                lambda: callee.id in peers and peers[callee.id].status.state == "connected",
            )
            for method in ("plain", "later"):
                assert await caller.request(callee.id, method, [1]) == {method: [1]}
                with pytest.raises(RequestFailed, match=f"handler raised ValueError: {method}"):
                    await caller.request(callee.id, method, "raise")
                with pytest.raises(RequestFailed, match="result is not JSON"):
                    await caller.request(callee.id, method, "set")
            with pytest.raises(RequestFailed, match="over the frame cap") as info:
                await caller.request(callee.id, "big")
            assert info.value.status == 502
            handled = callee.stats.handled
            assert handled["plain", "ok"] == handled["later", "ok"] == 1
            assert handled["plain", "error"] == handled["later", "error"] == 2
            assert handled["big", "error"] == 1
