"""The bare baseline: `python -m bench.echo PORT`, a uvloop TCP server on 127.0.0.1 that
answers each request frame with a response frame carrying its body.

The same framing and wire types as the mesh, nothing else: no link, no heartbeats,
no handler tasks. bench/messaging.py measures the mesh against it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

from shared.framing import FrameDecoder, encode_frame
from shared.wire import Request, Response


class EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._decoder.feed(data)
        out = []
        while (message := self._decoder.next_message()) is not None:
            if isinstance(message, Request):
                out.append(encode_frame(Response(message.id, message.body)))
        self._transport.write(b"".join(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
