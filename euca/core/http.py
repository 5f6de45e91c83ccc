"""The HTTP/1.1 server every role serves on: trio + h11. (What it hands handlers, Request and Response, is
euca.core.http_messages, re-exported here.)

- keep-alive, pipelining-safe request cycles, chunked request and response bodies;
- `Expect: 100-continue` answered lazily, when the handler first reads the body, so a request refused
  on its headers alone (bad signature, no such bucket) never uploads its body;
- bodies streamed both ways, never held whole; file responses go out with os.sendfile;
- limits on header size; a bound on the time to a whole request head and a minimum body rate (slow
  clients are cut, however steadily they trickle); caps on connections per listener and per client
  address, over-cap connections answered 503 at once (internal callers are never refused);
- only HTTP/1.0 and 1.1; Transfer-Encoding with Content-Length and malformed chunked bodies get 400 and
  the connection is closed (no request smuggling through a proxy in front);
- graceful shutdown: the listener closes at once (new clients are refused, or go to another process on a
  SO_REUSEPORT port), idle connections close, requests in flight finish;
- optional TLS (the cluster listeners use mutual TLS): the verified peer certificate's subject reaches the
  handler as `request.context["peer"]` (a `Peer`); file bodies are read and sent through the TLS stream.

A handler is `async def handler(request: Request) -> Response`. It never sees h11.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket as pysocket
import ssl
import time
from http import HTTPStatus
from typing import Any, cast

import h11
import trio

from euca.core.config import HttpLimits
from euca.core.http_listen import Admission, OpenFiles, reuse_port_listeners
from euca.core.http_messages import (
    RECV_SIZE,
    Body,
    ClientDisconnected,
    FileBody,
    FileSegments,
    Handler,
    Headers,
    Peer,
    Request,
    Response,
    ResponseBody,
)

# The request/response types live in euca.core.http_messages; handlers keep importing them from here.
__all__ = [
    "Body",
    "ClientDisconnected",
    "FileBody",
    "FileSegments",
    "Handler",
    "Headers",
    "HttpServer",
    "Peer",
    "Request",
    "Response",
    "ResponseBody",
]

log = logging.getLogger("euca.http")

# File bodies up to this size go out in the same write as the response head (see send_response).
SMALL_FILE = 64 * 1024
# What a refused client may still send after its error response before we stop listening to it.
LINGER_MAX_BYTES = 1024 * 1024
# Status lines carry a reason phrase ("HTTP/1.1 403 Forbidden"): h11 leaves it empty, and botocore reads a
# final answer that comes instead of `100 Continue` only from a status line of three parts (with two it
# takes the header lines for the status line and gives up on the connection).
_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


class _Connection:
    def __init__(self, server: HttpServer, stream: trio.SocketStream, client: tuple[str, int]):
        self.server = server
        self.socket_stream = stream
        # What requests are read from and responses written to: the socket, or TLS over it.
        self.stream: trio.SocketStream | trio.SSLStream = stream
        self.tls = False
        self.peer: Peer | None = None
        self.limits = server.limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.idle = True
        self.cancel_scope = trio.CancelScope()
        self.client = client
        # The first request head (and any TLS handshake before it) must be whole by header_timeout after this.
        self.opened_at = trio.current_time()
        # When the body being read runs out of time (trio clock); 0: no body read yet in this request.
        self.body_deadline = 0.0
        # When the response being sent runs out of time; 0: it has not had to wait for the client yet.
        self.send_deadline = 0.0

    async def start_tls(self, context: ssl.SSLContext) -> bool:
        """The TLS handshake, within the first head's time. False (logged in one line) when it fails."""
        stream = trio.SSLStream(self.socket_stream, context, server_side=True, https_compatible=True)
        error: str | None = None
        with trio.move_on_at(self.opened_at + self.limits.header_timeout) as cs:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as e:
                cause = e.__cause__ or e
                error = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
                # e.g. "unable to get local issuer certificate" for a certificate of another CA
                detail = getattr(cause, "verify_message", None)
                if detail:
                    error = f"{error} ({detail})"
            except (trio.ClosedResourceError, OSError) as e:
                error = str(e) or type(e).__name__
        if cs.cancelled_caught:
            error = "timed out"
        if error is not None:
            log.warning("tls handshake failed client=%s:%d error=%s", self.client[0], self.client[1], error)
            return False
        self.stream = stream
        self.tls = True
        self.peer = Peer.from_ssl(stream)
        return True

    async def read_head(self, first: bool) -> Any:
        """The next request head (or the end of the connection). The first request's head must be whole
        within header_timeout of the connection's start; a later one may keep the connection idle for
        idle_timeout, then must be whole within header_timeout of its first bytes. One deadline per phase,
        however the bytes trickle in."""
        event = self.conn.next_event()
        if event is not h11.NEED_DATA:
            return event  # pipelined: already here
        limits = self.limits
        started = first
        if first:
            deadline = self.opened_at + limits.header_timeout
        else:
            deadline = trio.current_time() + limits.idle_timeout
        with trio.CancelScope(deadline=deadline) as scope:
            while True:
                try:
                    data = await self.stream.receive_some(RECV_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                self.conn.receive_data(data)
                event = self.conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                if not started:
                    started = True
                    scope.deadline = trio.current_time() + limits.header_timeout
        raise ClientDisconnected("timed out waiting for the request head")

    async def next_event_for_body(self) -> Any:
        if self.conn.they_are_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
        try:
            event = self.conn.next_event()
            while event is h11.NEED_DATA:
                await self._receive_body_bytes()
                event = self.conn.next_event()
            return event
        except h11.RemoteProtocolError as e:
            # h11 has put their side in ERROR: the request ends in a 400 (see _handle).
            raise ClientDisconnected(f"bad request body: {e}") from e

    async def _receive_body_bytes(self) -> None:
        """One read of the body, against the body's deadline: body_grace from its first read, then every
        byte buys 1/body_min_rate s, never more than io_timeout ahead (so an average rate over a window,
        and a bound on any stall). A trickle falls behind and is cut; a past deadline stays past."""
        limits = self.limits
        rate = limits.body_min_rate
        if not self.body_deadline:
            self.body_deadline = trio.current_time() + (limits.body_grace if rate else limits.io_timeout)
        with trio.CancelScope(deadline=self.body_deadline) as scope:
            try:
                data = await self.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
        if scope.cancelled_caught:
            raise ClientDisconnected("request body too slow")
        self.conn.receive_data(data)
        stall_bound = trio.current_time() + limits.io_timeout
        if rate:
            self.body_deadline = min(self.body_deadline + len(data) / rate, stall_bound)
        else:
            self.body_deadline = stall_bound

    async def send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            await self._send_bytes(data)

    async def _send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        if not self.tls:
            # Most responses fit in the socket's send buffer: one write(2) on the (non-blocking) socket takes
            # them whole, without a timeout scope or trio's send machinery. The yield stays: without it a
            # connection goes straight to an empty read instead of finding its next request there.
            try:
                sent = os.write(self.socket_stream.socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError as e:
                raise ClientDisconnected(f"send: {e}") from e
            if sent == len(data):
                if self.send_deadline:
                    self._sent(sent)
                await trio.lowlevel.checkpoint()
                return
            self._sent(sent)
            data = memoryview(data)[sent:]
        with trio.CancelScope(deadline=self._send_wait_deadline()) as cs:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                raise ClientDisconnected(f"send: {e}") from e
        if cs.cancelled_caught:
            raise ClientDisconnected("timed out sending to the client")
        self._sent(len(data))

    def _send_wait_deadline(self) -> float:
        """How long a send may wait for the client to take bytes: the response's deadline (body_grace from its
        first wait, then 1/send_min_rate s per byte sent, as for a request body), and never more than
        io_timeout for one wait. A reader that stops, or trickles, is cut; one at any usual speed never."""
        now = trio.current_time()
        if not self.send_deadline:
            grace = self.limits.body_grace if self.limits.send_min_rate else self.limits.io_timeout
            self.send_deadline = now + grace
        return float(min(self.send_deadline, now + self.limits.io_timeout))

    def _sent(self, count: int) -> None:
        """Credit `count` bytes the client took to the response's deadline (capped io_timeout ahead)."""
        rate = self.limits.send_min_rate
        if not self.send_deadline or not rate:
            return
        self.send_deadline = min(
            self.send_deadline + count / rate, trio.current_time() + self.limits.io_timeout
        )

    async def _sendfile(self, body: FileBody) -> None:
        if self.tls:
            # os.sendfile would bypass the encryption: read and send through the TLS stream instead.
            await self._send_file_by_reads(body)
            return
        sock = self.socket_stream.socket
        fd = sock.fileno()
        offset, remaining = body.offset, body.length
        while remaining > 0:
            try:
                sent = os.sendfile(fd, body.fd, offset, min(remaining, 1 << 30))
            except BlockingIOError:
                sent = -1
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    sent = -1
                else:
                    raise ClientDisconnected(f"sendfile: {e}") from e
            if sent == 0:
                raise ClientDisconnected("file shorter than announced")
            if sent < 0:
                with trio.CancelScope(deadline=self._send_wait_deadline()) as cs:
                    await trio.lowlevel.wait_writable(sock)
                if cs.cancelled_caught:
                    raise ClientDisconnected("timed out sending to the client")
                continue
            self._sent(sent)
            offset += sent
            remaining -= sent

    async def _send_file_by_reads(self, body: FileBody) -> None:
        offset, remaining = body.offset, body.length
        while remaining > 0:
            data = os.pread(body.fd, min(remaining, RECV_SIZE), offset)
            if not data:
                raise ClientDisconnected("file shorter than announced")
            await self._send_bytes(data)
            offset += len(data)
            remaining -= len(data)

    async def send_response(self, request_method: str, response: Response) -> None:
        self.send_deadline = 0.0
        headers = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in response.headers]
        names = {k.lower() for k, _ in response.headers}
        body = response.body
        is_head = request_method == "HEAD"
        no_body_status = response.status in (204, 304) or response.status < 200
        if "date" not in names:
            headers.append((b"Date", _http_date()))
        if "server" not in names:
            headers.append((b"Server", b"euca"))
        if self.server.closing:
            headers.append((b"Connection", b"close"))
        if no_body_status:
            pass
        elif is_head:
            if "content-length" not in names and response.head_length is not None:
                headers.append((b"Content-Length", str(response.head_length).encode()))
        elif isinstance(body, bytes | bytearray | memoryview):
            if "content-length" not in names:
                headers.append((b"Content-Length", str(len(body)).encode()))
        elif isinstance(body, FileBody | FileSegments):
            if "content-length" not in names:
                headers.append((b"Content-Length", str(len(body)).encode()))
        elif "content-length" not in names:
            headers.append((b"Transfer-Encoding", b"chunked"))
        try:
            head = self.conn.send(_response_event(response.status, headers)) or b""
            if is_head or no_body_status:
                await self._send_bytes(head + (self.conn.send(h11.EndOfMessage()) or b""))
            elif isinstance(body, bytes | bytearray | memoryview):
                # Head, body and end in one write: one syscall and one checkpoint per small response
                # instead of two or three, and the client gets it in one segment.
                data = self.conn.send(h11.Data(data=body)) if body else b""
                await self._send_bytes(
                    b"".join((head, data or b"", self.conn.send(h11.EndOfMessage()) or b""))
                )
            elif isinstance(body, FileBody | FileSegments) and len(body) <= SMALL_FILE:
                # A small file costs less read into memory and sent with the head than as a write plus a
                # sendfile (a page-cache read either way; os.sendfile also reads in this thread).
                data = b"".join(_pread_all(piece) for piece in _pieces(body))
                framed = self.conn.send(h11.Data(data=data)) if data else b""
                await self._send_bytes(
                    b"".join((head, framed or b"", self.conn.send(h11.EndOfMessage()) or b""))
                )
            else:
                await self._send_bytes(head)
                if isinstance(body, FileBody | FileSegments):
                    for file_piece in _pieces(body):
                        if not file_piece.length:
                            continue
                        # h11 frames the bytes (it only needs their length); we move them with sendfile.
                        # (h11 types Data.data as bytes; passthrough hands our FileBody back untouched.)
                        pieces: list[Any] = (
                            self.conn.send_with_data_passthrough(h11.Data(data=cast(bytes, file_piece))) or []
                        )
                        for piece in pieces:
                            if isinstance(piece, FileBody):
                                await self._sendfile(piece)
                            else:
                                await self._send_bytes(piece)
                else:
                    async for chunk in body:
                        if chunk:
                            await self.send(h11.Data(data=chunk))
                await self.send(h11.EndOfMessage())
        finally:
            await _discard(body)

    async def _drain_body(self, body: Body) -> bool:
        """Read and drop what the handler left unread, so the connection can be reused."""
        if self.conn.their_state is not h11.SEND_BODY:
            return True
        if self.conn.they_are_waiting_for_100_continue:
            # The client never sent the body: it must not be told to now; close instead.
            return False
        limit = 64 * 1024 * 1024
        try:
            while not body.done and body.bytes_read < limit:
                await body.read()
        except ClientDisconnected:
            return False
        return body.done

    async def run(self) -> None:
        with self.cancel_scope:
            try:
                if self.server.ssl_context is not None and not await self.start_tls(self.server.ssl_context):
                    return
                await self._cycle_loop()
            except ClientDisconnected:
                pass
            except h11.LocalProtocolError as e:
                log.debug("local protocol error: %s", e)
            finally:
                if not self.tls:
                    # Closing a plain socket cannot block: no timeout scope (costly, and every connection ends).
                    self.socket_stream.socket.close()
                else:
                    with trio.move_on_after(1) as cs:
                        cs.shield = True
                        try:
                            await self.stream.aclose()
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass

    async def _cycle_loop(self) -> None:
        first = True
        while True:
            self.idle = True
            if self.server.closing:
                return
            try:
                event = await self.read_head(first)
            except h11.RemoteProtocolError as e:
                await self._send_error_and_close(e)
                return
            first = False
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            if _head_size(event) > self.limits.max_header_bytes:
                # h11 bounds only a head still incomplete in its buffer; one that arrived whole in a
                # single read passes it, so the limit is checked again on the parsed head.
                await self._send_error_and_close(
                    h11.RemoteProtocolError("request header fields too large", error_status_hint=431)
                )
                return
            if event.http_version != b"1.1" and event.http_version != b"1.0":
                # h11 parses any digit.digit; what is not HTTP/1.x is not ours to guess at.
                await self._send_error_and_close(
                    h11.RemoteProtocolError("HTTP version not supported", error_status_hint=505)
                )
                return
            self.idle = False
            try:
                await self._handle(event)
            except _BadRequest as e:
                await self._send_error_and_close(h11.RemoteProtocolError(str(e), error_status_hint=400))
                return
            if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                return
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            if self.server.closing:
                return
            self.conn.start_next_cycle()

    async def _handle(self, event: h11.Request) -> None:
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        # raw_items(): a list as received; iterating h11's Headers goes through the Sequence ABC, one
        # __getitem__ per field. (Names keep their case here: Headers lower-cases them itself.)
        headers = Headers(event.headers.raw_items())
        if "transfer-encoding" in headers and "content-length" in headers:
            # Two framings: a proxy in front may have used the other one (request smuggling). RFC 9112 6.1:
            # a server may reject such a message, and must close the connection after it.
            raise _BadRequest("Transfer-Encoding together with Content-Length")
        request = Request(
            method=event.method.decode("ascii", "replace").upper(),
            target=target,
            path=path,
            query=query,
            headers=headers,
            body=Body(self),
            client=self.client,
            http_version=event.http_version.decode("ascii", "replace"),
        )
        self.body_deadline = 0.0
        if self.tls:
            request.context["peer"] = self.peer
        started = time.monotonic()
        self.server.in_flight += 1
        try:
            try:
                response = await self.server.handler(request)
            except ClientDisconnected:
                if self.conn.their_state is h11.ERROR:
                    raise _BadRequest("malformed request body") from None
                raise
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.target)
                response = Response(
                    500,
                    [("Content-Type", "text/plain")],
                    b"internal error\n",
                )
            if self.conn.their_state is h11.ERROR:
                # The handler met the malformed body and answered anyway: the answer is 400, and the end.
                await _discard(response.body)
                raise _BadRequest("malformed request body")
            if not await self._drain_body(request.body):
                response.headers.append(("Connection", "close"))
                # h11 would refuse to keep the connection; make the intent explicit to the client.
            await self.send_response(request.method, response)
            if self.conn.their_state is h11.SEND_BODY:
                # Body left unread (100-continue declined or too big to drain): this connection is done. A
                # client that sent its body anyway (it stopped waiting for 100 Continue) must not have its
                # answer destroyed by the reset that closing over unread bytes makes.
                await self._linger()
                raise ClientDisconnected("request body not consumed")
        finally:
            self.server.in_flight -= 1
            if self.server.access_log:
                log.info(
                    "%s %s %s %.1fms%s",
                    request.client[0],
                    request.method,
                    request.target[:200],
                    (time.monotonic() - started) * 1000,
                    f" peer={self.peer.role}/{self.peer.name}" if self.peer is not None else "",
                )

    async def _send_error_and_close(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint or 400
        body = f"{status} bad request: {exc}\n".encode()
        try:
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self.send(
                    h11.Response(
                        status_code=status,
                        headers=[(b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")],
                        reason=reason_phrase(status),
                    )
                )
                await self.send(h11.Data(data=body))
                await self.send(h11.EndOfMessage())
        except (ClientDisconnected, h11.LocalProtocolError):
            return
        await self._linger()

    async def _linger(self) -> None:
        """Half-close and swallow what the client is still sending, briefly, before the socket is closed.

        Closing with unread input makes the kernel send a reset, which can destroy the error response
        before the client reads it.
        """
        drained = 0
        with trio.move_on_after(2):
            try:
                if isinstance(self.stream, trio.SocketStream):
                    await self.stream.send_eof()  # TLS has no half-close: just keep reading
                while drained < LINGER_MAX_BYTES:
                    data = await self.stream.receive_some(RECV_SIZE)
                    if not data:
                        return
                    drained += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return


class _BadRequest(Exception):
    """The request cannot be served and the connection cannot be trusted after it: 400, then close."""


async def _discard(body: ResponseBody) -> None:
    """Release what a response body holds (file descriptors, an async generator), sent or not."""
    if isinstance(body, FileBody | FileSegments):
        body.close()
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            try:
                await aclose()
            except Exception:  # a generator's cleanup failing must not mask the real error
                pass


# h11's rules for a header field name (a token) and value (no NUL, no CR/LF or other whitespace but inner
# spaces and tabs), each as one pattern over all the names or all the values of a response joined by "\n" (which
# neither may contain, counted to be sure): two regex matches per response instead of h11's two per header.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_CONTENT = rb"[^\x00\s]+(?:[ \t]+[^\x00\s]+)*"
_NAMES = re.compile(_TOKEN + rb"(?:\n" + _TOKEN + rb")*")
_VALUES = re.compile(rb"(?:" + _FIELD_CONTENT + rb")?(?:\n(?:" + _FIELD_CONTENT + rb")?)*")


def _response_event(status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
    """h11's Response for a status and header list. Headers that pass h11's checks (all of them, in
    practice) are checked here in two matches and handed over as parsed; anything else goes through h11's
    own validation, which raises its usual LocalProtocolError."""
    reason = reason_phrase(status)
    names = b"\n".join([name for name, _ in headers])
    values = b"\n".join([value for _, value in headers])
    separators = len(headers) - 1  # more "\n" than that: some name or value holds one, which h11 refuses
    if (
        type(status) is int
        and names.count(b"\n") == separators
        and values.count(b"\n") == separators
        and _NAMES.fullmatch(names)
        and _VALUES.fullmatch(values)
    ):
        return h11.Response(status_code=status, headers=headers, reason=reason, _parsed=True)
    return h11.Response(status_code=status, headers=headers, reason=reason)


def _pieces(body: FileBody | FileSegments) -> list[FileBody]:
    return body.parts if isinstance(body, FileSegments) else [body]


def _pread_all(body: FileBody) -> bytes:
    data = os.pread(body.fd, body.length, body.offset) if body.length else b""
    if len(data) != body.length:
        raise ClientDisconnected("file shorter than announced")
    return data


def _head_size(event: h11.Request) -> int:
    """Bytes of the request line and header fields, as they were on the wire (give or take whitespace)."""
    size = len(event.method) + len(event.target) + 12
    for name, value in event.headers.raw_items():
        size += len(name) + len(value) + 4
    return size


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """The Date header value, formatted once per second rather than once per response."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode())
    return _date_cache[1]


class HttpServer:
    """One listening address, one handler. `await nursery.start(server.serve)`; `server.shutdown()` to stop.

    With `ssl_context` every connection is TLS; a failed handshake closes that connection only.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        limits: HttpLimits,
        *,
        access_log: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ):
        self.handler = handler
        self.ssl_context = ssl_context
        # SO_REUSEPORT: other processes may bind the same address, and the kernel spreads connections over
        # them all (walrus.workers). Off by default: a second server on a port in use must fail to start.
        self.reuse_port = reuse_port
        self.host = host
        self.port = port
        self.limits = limits
        self.access_log = access_log
        self.closing = False
        self.in_flight = 0
        self.connections: set[_Connection] = set()
        self._listeners: list[trio.SocketListener] = []
        self._accept_scope: trio.CancelScope | None = None
        # A listener that requires client certificates (cluster traffic) keeps its own budget only, out of
        # the process's public one: a flood on the public port cannot starve it.
        self.admission = Admission(
            limits, own_budget=ssl_context is not None and ssl_context.verify_mode == ssl.CERT_REQUIRED
        )
        self.accept_failures = 0
        self._accept_failures_logged_at = -1e9

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        OpenFiles.ensure_budget()
        if self.reuse_port:
            listeners = await reuse_port_listeners(self.host, self.port)
        else:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host or None, backlog=1024)
        for listener in listeners:
            listener.socket.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
        self._listeners = listeners
        if self.port == 0:
            self.port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as conn_nursery:
                async with trio.open_nursery() as accept_nursery:
                    self._accept_scope = accept_nursery.cancel_scope
                    for listener in listeners:
                        accept_nursery.start_soon(self._accept_loop, listener, conn_nursery)
                    task_status.started(self.port)
                # shutdown() cancelled the accept loops: let requests in flight finish, then stop.
                await self._finish_in_flight()
                conn_nursery.cancel_scope.cancel()
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while not self.closing:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors despite the budget (files, other listeners): wait, logging once
                    # in a while rather than at every retry.
                    self.accept_failures += 1
                    now = time.monotonic()
                    if now - self._accept_failures_logged_at >= 10:
                        self._accept_failures_logged_at = now
                        log.warning("accept: %s; pausing (%d times so far)", e, self.accept_failures)
                    await trio.sleep(0.1)
                    continue
                raise
            # (trio.SocketStream has set TCP_NODELAY already.)
            try:
                peer = stream.socket.getpeername()
            except OSError:  # gone already
                stream.socket.close()
                continue
            client = (str(peer[0]), int(peer[1]))
            public = not self.admission.is_internal(client[0])
            if public and not self.admission.admit(client[0]):
                self.admission.refuse(stream.socket, client[0], self.port, plain=self.ssl_context is None)
                continue
            nursery.start_soon(self._run_connection, stream, client, public)

    async def _run_connection(self, stream: trio.SocketStream, client: tuple[str, int], public: bool) -> None:
        conn = _Connection(self, stream, client)
        self.connections.add(conn)
        try:
            await conn.run()
        except Exception:
            # One connection's failure must never take the listener (and the cloud) down with it.
            log.exception("connection from %s failed", conn.client[0])
        finally:
            self.connections.discard(conn)
            if public:
                self.admission.release(client[0])

    def shutdown(self) -> None:
        """Close the listener now (new clients are refused, or on a SO_REUSEPORT port go to another
        process); idle keep-alive connections close now, busy ones after their response."""
        if self.closing:
            return
        self.closing = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for listener in self._listeners:
            # Closed here, not when serve() returns after the grace period: a listening socket that no
            # longer accepts leaves new clients in its backlog, hanging, until they are reset.
            listener.socket.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.cancel_scope.cancel()

    async def _finish_in_flight(self) -> None:
        with trio.move_on_after(self.limits.shutdown_grace):
            while self.connections:
                for conn in list(self.connections):
                    if conn.idle:
                        conn.cancel_scope.cancel()
                await trio.sleep(0.05)
