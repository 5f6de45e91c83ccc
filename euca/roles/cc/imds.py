"""The instance metadata service's server: an HTTP listener of the CC on the guests' gateway address
inside the cluster's namespace (the socket is made there by a thread that joins the namespace, so the CC
process itself stays on the host), to which the filter's DNAT sends 169.254.169.254:80. It finds the
instance by the connection's source address and answers with metadata.py.

Small on purpose: requests without bodies (a token PUT has none), heads bounded, a deadline per
connection, a cap on connections, keep-alive. Answers leave with IP TTL 1, EC2's default hop limit: a
container behind the guest (one more routing hop) never gets them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import h11
import trio

from euca.roles.cc.metadata import Answer, MetadataRecord, Tokens, answer

log = logging.getLogger("euca.cc.imds")

METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80  # where the CC listens, on the gateway address in its namespace
MAX_HEAD = 8192
MAX_CONNECTIONS = 256
CONNECTION_DEADLINE = 10.0
MAX_REQUESTS_PER_CONNECTION = 100
HOP_LIMIT = 1
CLONE_NEWNET = 0x40000000


def _listen_here(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_in_netns(netns: str | None, host: str, port: int) -> socket.socket:
    """A listening socket bound in network namespace `netns` (the host's when None). setns(2) changes the
    calling thread only, so a short-lived thread of its own joins the namespace; the socket stays there."""
    if not netns:
        return _listen_here(host, port)
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(_listen_here(host, port))
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=work, name=f"imds-listen-{netns}")
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class MetadataServer:
    """Serves `lookup(source address) -> MetadataRecord | None` on a listening socket."""

    def __init__(self, lookup: Callable[[str], MetadataRecord | None], sock: socket.socket):
        self.lookup = lookup
        self.sock = sock
        self.tokens = Tokens(secrets.token_bytes(32))
        self._slots = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    if self._slots.available_tokens == 0:
                        await stream.aclose()
                        continue
                    nursery.start_soon(self._connection, stream)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with self._slots:
            try:
                stream.socket.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, HOP_LIMIT)
                peer = str(stream.socket.getpeername()[0])
                with trio.move_on_after(CONNECTION_DEADLINE):
                    await self._requests(stream, peer)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
                pass
            finally:
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _requests(self, stream: trio.SocketStream, peer: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            request: h11.Request | None = None
            too_big = False
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(4096)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    too_big = True
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            headers = {k.decode().lower(): v.decode(errors="replace") for k, v in request.headers}
            method = request.method.decode()
            path = request.target.decode(errors="replace")
            if too_big:
                result = Answer(400, b"Bad Request\n")
            else:
                result = answer(self.lookup(peer), method, path, headers, self.tokens, time.time())
            log.debug("metadata %s %s from=%s status=%d", method, path, peer, result.status)
            out_headers = [
                ("Content-Type", result.content_type),
                ("Content-Length", str(len(result.body))),
                ("Server", "EC2ws"),
                *result.headers,
            ]
            await stream.send_all(conn.send(h11.Response(status_code=result.status, headers=out_headers)))
            if method != "HEAD":
                await stream.send_all(conn.send(h11.Data(data=result.body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
