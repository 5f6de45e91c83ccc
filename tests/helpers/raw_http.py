"""Raw-socket clients for the HTTP server's tests (euca/core/http.py): bytes in, bytes out, from any
loopback address (127.0.0.0/8 is all local on Linux), so that one test can play many client addresses."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from euca.core.config import HttpLimits
from euca.core.http import HttpServer, Request, Response

HANG_GUARD = 60  # seconds: turns a hang into a failure; nothing asserts on time


@asynccontextmanager
async def serving(
    handler: Callable[[Request], Awaitable[Response]],
    limits: HttpLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[HttpServer]:
    """An HttpServer on a free loopback port (with TLS when given a context) for the duration of the block."""
    server = HttpServer(handler, "127.0.0.1", 0, limits or HttpLimits(), ssl_context=ssl_context)
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            try:
                yield server
            finally:
                server.shutdown()


async def connect(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    """A connection to 127.0.0.1:port from the loopback address `source`."""
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=source)


async def read_until_closed(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    out = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def exchange(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """Send one request on a new connection with `Connection: close` semantics left to the caller, and
    read the answer until the server closes."""
    stream = await connect(port, source)
    try:
        await stream.send_all(request)
        return await read_until_closed(stream)
    finally:
        await stream.aclose()


async def one_request(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """One request that ends its connection (send it with `Connection: close`): the status and body."""
    answer = await exchange(port, request, source)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), body
