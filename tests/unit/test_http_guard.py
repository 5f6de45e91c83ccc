"""What the HTTP server (euca/core/http.py) refuses and bounds: versions other than HTTP/1.x, two framings
in one request, malformed chunked bodies, heads and bodies that trickle, connections over a cap, and new
clients once shutdown has begun. Raw sockets on loopback; no assertion on time (the deadlines here are
short so the tests are quick; `fail_after` guards only turn a hang into a failure)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from euca.core.config import HttpLimits
from euca.core.http import ClientDisconnected, FileBody, HttpServer, Request, Response
from euca.core.http_listen import Admission
from helpers.raw_http import HANG_GUARD, connect, exchange, one_request, read_until_closed, serving

calls: list[str] = []


async def echo(request: Request) -> Response:
    calls.append(request.path)
    body = await request.body.read_all(16 << 20)
    return Response(200, [("X-Md5", hashlib.md5(body).hexdigest())], body)


# ---------------------------------------------------------------------------------------------------------
# Input: version, framing, chunked syntax


@pytest.mark.parametrize("version", [b"2.0", b"1.2", b"0.9", b"3.0"])
async def test_a_version_other_than_http_1x_gets_505_and_the_connection_closes(version: bytes) -> None:
    calls.clear()
    async with serving(echo) as server:
        answer = await exchange(server.port, b"GET /v HTTP/" + version + b"\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 505 "), answer
    assert b"connection: close" in answer.lower()
    assert calls == []


async def test_http_1_0_is_still_served() -> None:
    async with serving(echo) as server:
        status, _ = await one_request(server.port, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
    assert status == 200


@pytest.mark.parametrize("order", ["cl-first", "te-first"])
async def test_transfer_encoding_with_content_length_gets_400_and_the_connection_closes(order: str) -> None:
    calls.clear()
    framing = [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"]
    if order == "te-first":
        framing.reverse()
    # After the chunked body, a second request a front proxy reading Content-Length would not have seen.
    request = (
        b"POST /a HTTP/1.1\r\nHost: x\r\n" + b"".join(framing) + b"\r\n"
        b"5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    async with serving(echo) as server:
        answer = await exchange(server.port, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing served after it on that connection
    assert calls == []


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # not a hex size
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the chunk data
        b"-5\r\nhello\r\n0\r\n\r\n",  # a negative size
        b"5\r\nhello\r\n0\r\nnot a header\r\n\r\n",  # a malformed trailer
    ],
    ids=["bad-size", "bad-chunk-end", "negative-size", "bad-trailer"],
)
async def test_a_malformed_chunked_body_gets_400_not_a_silent_close(body: bytes) -> None:
    request = b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    async with serving(echo) as server:
        answer = await exchange(server.port, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


async def test_a_malformed_chunked_body_gets_400_even_when_the_handler_answers_anyway() -> None:
    async def forgiving(request: Request) -> Response:
        try:
            await request.body.read_all(1 << 20)
        except ClientDisconnected:
            pass
        return Response(200, [], b"never mind")

    request = b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    async with serving(forgiving) as server:
        answer = await exchange(server.port, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer


async def test_a_well_formed_chunked_body_still_passes() -> None:
    request = (
        b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with serving(echo) as server:
        status, body = await one_request(server.port, request)
    assert (status, body) == (200, b"hello world")


# ---------------------------------------------------------------------------------------------------------
# Slow heads and bodies

QUICK = HttpLimits(header_timeout=1, idle_timeout=1, io_timeout=5, body_min_rate=1000, body_grace=1)


async def trickle(stream: trio.SocketStream, data: bytes, interval: float) -> int:
    """Send `data` a byte at a time; how many bytes went before the server closed the connection
    (len(data) if it never did)."""
    for sent, byte in enumerate(data):
        with trio.move_on_after(interval):
            try:
                if not await stream.receive_some(1024):
                    return sent
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return sent
        try:
            await stream.send_all(bytes([byte]))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return sent
    return len(data)


ENDLESS_HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\n" + b"X-More: y\r\n" * 100


async def test_a_head_trickled_byte_by_byte_is_cut() -> None:
    async with serving(echo, QUICK) as server:
        stream = await connect(server.port)
        # A byte every 0.2 s keeps a per-read timeout of 1 s alive forever; the whole head is bounded.
        sent = await trickle(stream, ENDLESS_HEAD, 0.2)
        await stream.aclose()
    assert sent < len(ENDLESS_HEAD)


async def test_a_next_head_trickled_on_a_kept_alive_connection_is_cut() -> None:
    async with serving(echo, QUICK) as server:
        stream = await connect(server.port)
        await stream.send_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
        sent = await trickle(stream, ENDLESS_HEAD, 0.2)
        await stream.aclose()
    assert sent < len(ENDLESS_HEAD)


async def test_a_body_trickled_byte_by_byte_is_cut() -> None:
    calls.clear()
    async with serving(echo, QUICK) as server:
        stream = await connect(server.port)
        await stream.send_all(b"PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        sent = await trickle(stream, b"z" * 1000, 0.2)
        await stream.aclose()
    assert sent < 1000
    assert calls == ["/slow"]  # the handler was reading it


async def test_a_large_body_at_a_usual_speed_passes_the_minimum_rate() -> None:
    data = bytes(range(256)) * (32 * 1024)  # 8 MiB
    request = b"PUT /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(data)
    async with serving(echo, QUICK) as server:
        answer = await exchange(server.port, request + data)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert hashlib.md5(data).hexdigest().encode() in answer


# ---------------------------------------------------------------------------------------------------------
# Slow readers: a response the client stops taking

BIG = 64 << 20  # more than loopback's socket buffers hold on both sides
SLOW_READERS = HttpLimits(header_timeout=1, idle_timeout=1, io_timeout=5, body_grace=1, send_min_rate=1 << 20)


async def big_file(request: Request, tmp: Path) -> Response:
    path = tmp / "big"
    if not path.exists():
        with open(path, "wb") as f:
            f.truncate(BIG)  # sparse: a sendfile of zeros
    fd = os.open(path, os.O_RDONLY)
    return Response(200, [("Content-Type", "application/octet-stream")], FileBody(fd, 0, BIG))


async def big_chunks(request: Request) -> Response:
    async def produce() -> AsyncIterator[bytes]:
        for _ in range(BIG // (1 << 20)):
            yield bytes(1 << 20)

    return Response(200, [], produce())


async def received_after_a_pause(port: int, target: str, pause: float) -> int:
    """GET `target`, take nothing for `pause` seconds, then read as fast as possible until the server closes:
    how many bytes came (headers included)."""
    stream = await connect(port)
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await trio.sleep(pause)
    return len(await read_until_closed(stream))


@pytest.mark.parametrize("target", ["/file", "/chunks"])
async def test_a_client_that_stops_reading_is_cut(tmp_path: Path, target: str) -> None:
    async def handler(request: Request) -> Response:
        return await (big_file(request, tmp_path) if request.path == "/file" else big_chunks(request))

    async with serving(handler, SLOW_READERS) as server:
        with trio.fail_after(HANG_GUARD):
            got = await received_after_a_pause(
                server.port, target, 3.0
            )  # beyond body_grace, within io_timeout
    assert got < BIG


async def test_a_client_reading_at_a_usual_speed_gets_the_whole_response(tmp_path: Path) -> None:
    async def handler(request: Request) -> Response:
        return await big_file(request, tmp_path)

    async with serving(handler, SLOW_READERS) as server:
        with trio.fail_after(HANG_GUARD):
            got = await received_after_a_pause(server.port, "/file", 0.0)
    assert got > BIG


# ---------------------------------------------------------------------------------------------------------
# Connection caps


async def test_a_client_over_its_connection_cap_gets_503_and_others_are_served() -> None:
    limits = HttpLimits(max_connections_per_client=2, internal_networks=[])
    async with serving(echo, limits) as server:
        held = []
        for _ in range(2):
            stream = await connect(server.port, "127.0.0.2")
            await stream.send_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
            held.append(stream)  # now idle on keep-alive, still counted
        over = await connect(server.port, "127.0.0.2")
        refused = await read_until_closed(over)
        await over.aclose()
        other = await one_request(
            server.port, b"GET /o HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.3"
        )
        await held.pop().aclose()
        with trio.fail_after(HANG_GUARD):
            while server.admission.per_client.get("127.0.0.2") != 1:  # the server has seen that close
                await trio.sleep(0.01)
        again = await one_request(
            server.port, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.2"
        )
        for stream in held:
            await stream.aclose()
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    assert other[0] == 200 and again[0] == 200


async def test_the_listener_cap_counts_public_clients_and_never_refuses_internal_ones() -> None:
    limits = HttpLimits(max_connections=2, internal_networks=["127.0.0.1/32"])
    async with serving(echo, limits) as server:
        held = [await connect(server.port, source) for source in ("127.0.0.2", "127.0.0.3")]
        for stream in held:
            await stream.send_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
        public = await exchange(server.port, b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.4")
        internal = [
            await one_request(server.port, b"GET /i HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for _ in range(5)
        ]
        for stream in held:
            await stream.aclose()
    assert public.startswith(b"HTTP/1.1 503 ")
    assert [status for status, _ in internal] == [200] * 5


# ---------------------------------------------------------------------------------------------------------
# Shutdown


async def test_shutdown_closes_the_listener_at_once_while_requests_finish() -> None:
    entered, release = trio.Event(), trio.Event()

    async def handler(request: Request) -> Response:
        entered.set()
        await release.wait()
        return Response(200, [], b"finished")

    server = HttpServer(handler, "127.0.0.1", 0, HttpLimits(shutdown_grace=HANG_GUARD))
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            busy = await connect(server.port)
            await busy.send_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await entered.wait()
            server.shutdown()
            # In the grace period: a new client is refused at once, not left hanging in a backlog.
            with pytest.raises(OSError):
                await connect(server.port)
            release.set()
            answer = await read_until_closed(busy)
            await busy.aclose()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"finished")


async def test_shutdown_of_one_reuse_port_server_sends_new_clients_to_the_other() -> None:
    """As walrus workers share a port: the one stopping takes no new client, the other takes them all."""
    first_entered, release = trio.Event(), trio.Event()

    async def first_handler(request: Request) -> Response:
        if request.path == "/hold":
            first_entered.set()
            await release.wait()
        return Response(200, [("Connection", "close")], b"first")

    async def second_handler(request: Request) -> Response:
        return Response(200, [("Connection", "close")], b"second")

    async def hold_a_request_on_first(port: int) -> trio.SocketStream:
        """The kernel picks the server: try until `first` has one (so it stays in its grace period)."""
        while True:
            stream = await connect(port)
            await stream.send_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            async with trio.open_nursery() as race:

                async def answered(stream: trio.SocketStream) -> None:
                    await read_until_closed(stream)
                    race.cancel_scope.cancel()

                async def held() -> None:
                    await first_entered.wait()
                    race.cancel_scope.cancel()

                race.start_soon(answered, stream)
                race.start_soon(held)
            if first_entered.is_set():
                return stream
            await stream.aclose()

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            first = HttpServer(first_handler, "127.0.0.1", 0, HttpLimits(), reuse_port=True)
            port = await nursery.start(first.serve)
            second = HttpServer(second_handler, "127.0.0.1", port, HttpLimits(), reuse_port=True)
            await nursery.start(second.serve)
            held = await hold_a_request_on_first(port)
            first.shutdown()
            answers = [
                await one_request(port, b"GET /n HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                for _ in range(20)
            ]
            release.set()
            await read_until_closed(held)
            await held.aclose()
            second.shutdown()
    assert answers == [(200, b"second")] * 20


# ---------------------------------------------------------------------------------------------------------
# Admission (the counts behind the caps), without sockets


def test_admission_counts_public_clients_per_address_and_per_listener() -> None:
    admission = Admission(
        HttpLimits(
            max_connections=3, max_connections_per_client=2, internal_networks=["10.0.0.0/8", "::1/128"]
        ),
        own_budget=True,
    )
    assert admission.is_internal("10.1.2.3") and admission.is_internal("::ffff:10.0.0.1")
    assert admission.is_internal("::1") and not admission.is_internal("192.0.2.1")
    assert not admission.is_internal("not an address")
    assert [admission.admit("192.0.2.1") for _ in range(3)] == [True, True, False]  # per address
    assert admission.admit("192.0.2.2") and not admission.admit("192.0.2.3")  # per listener
    admission.release("192.0.2.1")
    assert admission.per_client == {"192.0.2.1": 1, "192.0.2.2": 1}
    assert admission.admit("192.0.2.3")
    for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        admission.release(host)
    assert (admission.per_client, admission.public_connections) == ({}, 0)
