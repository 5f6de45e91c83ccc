"""The shared HTTP/1.1 server (euca/core/http.py) on a real loopback socket, with a raw h11 client.

Ordering between client and handler is made explicit with trio Events, never with sleeps; the
`fail_after` guards only turn a hang into a failure.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest
import trio

from euca.core.components import Components, ensure_components
from euca.core.config import HttpLimits
from euca.core.http import FileBody, HttpServer, Peer, Request, Response, reason_phrase
from euca.core.pki import CloudCA
from helpers.raw_http import read_until_closed, serving

HANG_GUARD = 30  # seconds: turns a hang into a failure; nothing asserts on time


class Client:
    """One client connection: h11 frames and parses, we move the bytes."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event

    async def response(self) -> tuple[h11.Response, bytes]:
        """The next final response (1xx skipped) and its whole body."""
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Response):
                response = event
                break
            assert isinstance(event, h11.InformationalResponse), event
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return response, bytes(body)
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> tuple[h11.Response, bytes]:
        hdrs = [("Host", "127.0.0.1"), *(headers or [])]
        if body or method in ("PUT", "POST"):
            hdrs.append(("Content-Length", str(len(body))))
        await self.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        result = await self.response()
        self.next_cycle()
        return result

    def next_cycle(self) -> None:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()

    async def read_until_closed(self) -> bytes:
        return await read_until_closed(self.stream)

    async def aclose(self) -> None:
        await self.stream.aclose()


def header(response: h11.Response, name: str) -> str | None:
    for k, v in response.headers:
        if k.decode().lower() == name.lower():
            return v.decode()
    return None


async def echo(request: Request) -> Response:
    body = await request.body.read_all(1 << 20)
    return Response(200, [("X-Method", request.method), ("X-Path", request.path)], body)


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    peers: list[tuple[str, int]] = []

    async def handler(request: Request) -> Response:
        peers.append(request.client)
        return await echo(request)

    async with serving(handler) as server:
        client = await Client.connect(server.port)
        r1, b1 = await client.request("PUT", "/a?x=1", body=b"first")
        r2, b2 = await client.request("GET", "/b")
        await client.aclose()
    assert (r1.status_code, b1, header(r1, "x-path")) == (200, b"first", "/a")
    assert (r2.status_code, b2, header(r2, "x-path")) == (200, b"", "/b")
    assert len(peers) == 2 and peers[0] == peers[1]  # same client port: the same connection


async def test_expect_100_continue_sent_when_the_handler_reads() -> None:
    async with serving(echo) as server:
        client = await Client.connect(server.port)
        await client.send(
            h11.Request(
                method="PUT",
                target="/obj",
                headers=[("Host", "x"), ("Content-Length", "5"), ("Expect", "100-continue")],
            )
        )
        # The client holds its body until told to continue.
        event = await client.next_event()
        assert isinstance(event, h11.InformationalResponse) and event.status_code == 100
        await client.send(h11.Data(data=b"hello"), h11.EndOfMessage())
        response, body = await client.response()
        await client.aclose()
    assert response.status_code == 200 and body == b"hello"


async def test_expect_100_continue_refused_without_the_body_being_sent() -> None:
    async def refuse(request: Request) -> Response:
        return Response(403, [("Content-Type", "text/plain")], b"denied")

    async with serving(refuse) as server:
        client = await Client.connect(server.port)
        await client.send(
            h11.Request(
                method="PUT",
                target="/obj",
                headers=[("Host", "x"), ("Content-Length", "1000000"), ("Expect", "100-continue")],
            )
        )
        # No 100 comes first: the final answer arrives while the body is still unsent.
        event = await client.next_event()
        assert isinstance(event, h11.Response), event
        assert event.status_code == 403
        assert header(event, "connection") == "close"
        data = await client.next_event()
        assert isinstance(data, h11.Data) and bytes(data.data) == b"denied"
        assert isinstance(await client.next_event(), h11.EndOfMessage)
        # ...and the connection is closed: the unsent body can never be mistaken for a next request.
        assert await client.read_until_closed() == b""
        await client.aclose()


PUT_EXPECTING_CONTINUE = b"PUT /obj HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"


async def test_status_lines_carry_a_reason_phrase() -> None:
    # botocore reads a final answer sent instead of 100 Continue only from a three-part status line.
    async def refuse(request: Request) -> Response:
        return Response(403, [("Content-Type", "text/plain")], b"denied")

    async with serving(refuse) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(PUT_EXPECTING_CONTINUE)
        answer = await read_until_closed(stream)
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
    async with serving(echo) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(PUT_EXPECTING_CONTINUE)
        first = await stream.receive_some(65536)
        await stream.aclose()
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n"), first


def test_reason_phrases() -> None:
    assert (reason_phrase(200), reason_phrase(404), reason_phrase(503)) == (
        b"OK",
        b"Not Found",
        b"Service Unavailable",
    )
    assert reason_phrase(599) == b"Unknown"  # never empty


async def test_a_body_sent_without_waiting_for_continue_does_not_cost_the_early_answer() -> None:
    # A client that stops waiting for 100 Continue sends its body anyway; the server answered already and
    # closes, but reads what comes first so that the close is not a reset that destroys the answer.
    async def refuse(request: Request) -> Response:
        return Response(403, [("Content-Type", "text/plain")], b"denied")

    body = b"x" * 300_000
    async with serving(refuse) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        length = b"Content-Length: %d\r\n" % len(body)
        head = b"PUT /obj HTTP/1.1\r\nHost: x\r\n" + length + b"Expect: 100-continue\r\n\r\n"
        await stream.send_all(head + body)
        answer = await read_until_closed(stream)
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer[:200]
    assert b"Connection: close\r\n" in answer and answer.endswith(b"\r\n\r\ndenied")


async def test_chunked_request_body_is_streamed_to_the_handler() -> None:
    first_seen = trio.Event()
    pieces: list[bytes] = []

    async def handler(request: Request) -> Response:
        digest = hashlib.sha256()
        async for chunk in request.body:
            pieces.append(chunk)
            digest.update(chunk)
            first_seen.set()
        return Response(200, [], digest.hexdigest().encode())

    async with serving(handler) as server:
        client = await Client.connect(server.port)
        await client.send(
            h11.Request(method="PUT", target="/o", headers=[("Host", "x"), ("Transfer-Encoding", "chunked")])
        )
        await client.send(h11.Data(data=b"a" * 1000))
        # The handler holds the first chunk before the second is even sent: nothing waits for the whole body.
        await first_seen.wait()
        await client.send(h11.Data(data=b"b" * 3000), h11.EndOfMessage())
        response, body = await client.response()
        await client.aclose()
    assert response.status_code == 200
    assert body == hashlib.sha256(b"a" * 1000 + b"b" * 3000).hexdigest().encode()
    assert pieces[0] == b"a" * 1000


async def test_async_iterable_response_is_sent_chunked_as_produced() -> None:
    first_received = trio.Event()

    async def produce() -> AsyncIterator[bytes]:
        yield b"part one;"
        await first_received.wait()  # the client already has part one: the response is not buffered
        yield b"part two"

    async def handler(request: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], produce())

    async with serving(handler) as server:
        client = await Client.connect(server.port)
        await client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]), h11.EndOfMessage())
        response = await client.next_event()
        assert isinstance(response, h11.Response)
        assert header(response, "transfer-encoding") == "chunked"
        first = await client.next_event()
        assert isinstance(first, h11.Data) and bytes(first.data) == b"part one;"
        first_received.set()
        rest = bytearray()
        while not isinstance(event := await client.next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data)
            rest += event.data
        await client.aclose()
    assert bytes(rest) == b"part two"


async def test_file_body_goes_out_with_sendfile_exactly(tmp_path: Path) -> None:
    data = os.urandom(8 * 1024 * 1024 + 12345)
    path = tmp_path / "blob"
    path.write_bytes(data)
    offset, length = 777, len(data) - 777 - 1000

    async def handler(request: Request) -> Response:
        fd = os.open(path, os.O_RDONLY)
        if request.path == "/part":
            return Response(206, [], FileBody(fd, offset, length))
        return Response(200, [], FileBody(fd, 0, len(data)))

    async with serving(handler) as server:
        client = await Client.connect(server.port)
        whole_response, whole = await client.request("GET", "/whole")
        part_response, part = await client.request("GET", "/part")
        await client.aclose()
    assert header(whole_response, "content-length") == str(len(data))
    assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()
    assert part_response.status_code == 206
    assert part == data[offset : offset + length]


async def test_head_announces_the_length_and_sends_no_body() -> None:
    async def handler(request: Request) -> Response:
        if request.method == "HEAD":
            return Response(200, [("ETag", '"abc"')], b"", head_length=1234)
        return Response(200, [], b"after head")

    async with serving(handler) as server:
        client = await Client.connect(server.port)
        await client.send(
            h11.Request(method="HEAD", target="/k", headers=[("Host", "x")]), h11.EndOfMessage()
        )
        response, body = await client.response()
        client.next_cycle()
        # Had any body bytes followed the HEAD response, this second response would be garbled.
        after, after_body = await client.request("GET", "/k")
        await client.aclose()
    assert response.status_code == 200
    assert header(response, "content-length") == "1234"
    assert body == b""
    assert after_body == b"after head"


async def test_malformed_request_gets_400() -> None:
    async with serving(echo) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"THIS IS NOT HTTP\r\n\r\n")
        raw = await Client(stream).read_until_closed()
        await stream.aclose()
    assert raw.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("piece", [4096, None], ids=["head-in-pieces", "head-in-one-write"])
async def test_header_too_large_gets_431(piece: int | None) -> None:
    async with serving(echo, HttpLimits(max_header_bytes=16 * 1024)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * (20 * 1024) + b"\r\n\r\n"
        step = piece or len(request)
        try:
            for i in range(0, len(request), step):
                await stream.send_all(request[i : i + step])
        except trio.BrokenResourceError:
            pass  # the server may answer and close before taking all of it
        raw = await Client(stream).read_until_closed()
        await stream.aclose()
    assert raw.startswith(b"HTTP/1.1 431 ")


async def test_handler_exception_becomes_500_and_the_server_lives_on() -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("bug")
        return Response(200, [], b"fine")

    async with serving(handler) as server:
        client = await Client.connect(server.port)
        boom, _ = await client.request("GET", "/boom")
        fine, body = await client.request("GET", "/ok")
        await client.aclose()
    assert boom.status_code == 500
    assert (fine.status_code, body) == (200, b"fine")


async def test_graceful_shutdown_finishes_in_flight_and_closes_idle() -> None:
    entered = trio.Event()
    release = trio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            entered.set()
            await release.wait()
            return Response(200, [], b"finished")
        return Response(200, [], b"quick")

    server = HttpServer(handler, "127.0.0.1", 0, HttpLimits(shutdown_grace=HANG_GUARD))
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            idle = await Client.connect(server.port)
            quick, _ = await idle.request("GET", "/quick")  # now idle on keep-alive
            busy = await Client.connect(server.port)
            await busy.send(
                h11.Request(method="GET", target="/slow", headers=[("Host", "x")]), h11.EndOfMessage()
            )
            await entered.wait()

            server.shutdown()
            assert await idle.read_until_closed() == b""  # the idle connection is closed at once
            release.set()
            response, body = await busy.response()  # the request in flight still gets its answer
            assert await busy.read_until_closed() == b""
            await idle.aclose()
            await busy.aclose()
        # serve() returned on its own: the nursery exited without being cancelled.
    assert quick.status_code == 200
    assert (response.status_code, body) == (200, b"finished")
    assert header(response, "connection") == "close"


async def test_client_gone_mid_response_does_not_stop_the_server() -> None:
    """A peer that resets while its large response is being sent costs its connection only."""
    big = b"x" * (8 << 20)
    handler_entered = trio.Event()

    async def handler(request: Request) -> Response:
        handler_entered.set()
        return Response(200, [], big)

    async with serving(handler) as server:
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            # SO_LINGER 0: close() sends RST, so the server's next send fails with EPIPE/ECONNRESET.
            import socket as pysocket
            import struct

            stream.socket.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.send_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            await handler_entered.wait()
            await stream.receive_some(1024)
            await stream.aclose()
            handler_entered = trio.Event()
        client = await Client.connect(server.port)
        response, body = await client.request("GET", "/after")
        assert response.status_code == 200 and len(body) == len(big)


# ---------------------------------------------------------------------------------------------------------
# TLS (the cluster listeners): the same server over trio.SSLStream, with real certificates from a cloud CA.


@pytest.fixture(scope="module")
def tls_components(tmp_path_factory: pytest.TempPathFactory) -> Components:
    base = tmp_path_factory.mktemp("tls")
    ca = CloudCA.load_or_create(base / "pki")
    components = Components(base / "components")
    ensure_components(components, ca, [("cc", "cluster01", ["127.0.0.1"]), ("clc", "clc", [])])
    return components


async def tls_connect(port: int, context: ssl.SSLContext) -> Client:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1", https_compatible=True)
    await stream.do_handshake()
    return Client(stream)  # type: ignore[arg-type]  # SSLStream has the same send/receive interface


async def test_tls_request_carries_the_peer_certificate(tls_components: Components, tmp_path: Path) -> None:
    peers: list[object] = []
    big = os.urandom(3 * 1024 * 1024 + 17)  # past SMALL_FILE: the sendfile path, which TLS must not take
    small = b"small file body"
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "small").write_bytes(small)

    async def handler(request: Request) -> Response:
        peers.append(request.context.get("peer"))
        if request.path in ("/big", "/small"):
            path = tmp_path / request.path.lstrip("/")
            return Response(200, [], FileBody(os.open(path, os.O_RDONLY), 0, path.stat().st_size))
        return await echo(request)

    async with serving(handler, ssl_context=tls_components.server_context("cc")) as server:
        client = await tls_connect(server.port, tls_components.client_context("clc"))
        r1, b1 = await client.request("PUT", "/a", body=b"over tls")
        r2, b2 = await client.request("GET", "/big")
        r3, b3 = await client.request("GET", "/small")
        await client.aclose()
    assert (r1.status_code, b1) == (200, b"over tls")
    assert r2.status_code == 200 and hashlib.sha256(b2).digest() == hashlib.sha256(big).digest()
    assert (r3.status_code, b3) == (200, small)
    assert peers == [Peer(role="clc", name="clc", organization="euca")] * 3


async def test_tls_without_client_verification_has_no_peer(tls_components: Components) -> None:
    ident = tls_components.identity("cc")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ident.cert_path, ident.key_path)  # verify_mode stays CERT_NONE
    seen: list[object] = []

    async def handler(request: Request) -> Response:
        seen.append(request.context.get("peer", "unset"))
        return Response(200, [], b"ok")

    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(cafile=str(tls_components.ca_cert_path))
    async with serving(handler, ssl_context=context) as server:
        client = await tls_connect(server.port, client_context)  # SAN 127.0.0.1: the host name verifies
        response, _ = await client.request("GET", "/")
        await client.aclose()
    assert response.status_code == 200 and seen == [None]


async def test_failed_handshakes_close_that_connection_only(
    tls_components: Components, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(
        echo, HttpLimits(header_timeout=0.5), ssl_context=tls_components.server_context("cc")
    ) as server:
        with caplog.at_level("WARNING", logger="euca.http"):
            # Plain HTTP on a TLS port.
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"HTTP/1.1 200" not in await Client(stream).read_until_closed()
            await stream.aclose()
            # TLS without a client certificate (TLS 1.3: the server refuses after the client's Finished).
            no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            no_cert.check_hostname = False
            no_cert.load_verify_locations(cafile=str(tls_components.ca_cert_path))
            client = await tls_connect(server.port, no_cert)
            try:
                await client.stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            except trio.BrokenResourceError:
                pass
            assert b"HTTP/1.1" not in await client.read_until_closed()  # an alert or EOF, no answer
            await client.aclose()
            # A client that connects and never says anything is dropped after the header timeout.
            silent = await trio.open_tcp_stream("127.0.0.1", server.port)
            assert await Client(silent).read_until_closed() == b""
            await silent.aclose()
        # The server is still serving.
        client = await tls_connect(server.port, tls_components.client_context("clc"))
        response, body = await client.request("PUT", "/", body=b"still here")
        await client.aclose()
    assert (response.status_code, body) == (200, b"still here")
    failures = [r.getMessage() for r in caplog.records if "tls handshake failed" in r.getMessage()]
    assert len(failures) == 3, failures
    assert any("timed out" in m for m in failures)
    assert all("\n" not in m for m in failures)
    assert not [r for r in caplog.records if r.exc_info]
