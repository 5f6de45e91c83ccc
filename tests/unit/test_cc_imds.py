"""The metadata service's server (cc/imds.py) on a loopback socket: the instance is chosen by the
connection's source address, never by the request; IMDSv1 and IMDSv2 over keep-alive; answers leave with
IP TTL 1 (EC2's hop limit)."""

from __future__ import annotations

import http.client
import socket
from typing import Any

import trio

from euca.roles.cc.imds import HOP_LIMIT, MetadataServer, listen_in_netns
from euca.roles.cc.metadata import MetadataRecord

RECORDS = {
    "127.0.0.1": MetadataRecord("i-00000001", "127.0.0.1", "d0:0d:00:00:00:01", "c1", user_data=b"one"),
    "127.0.0.2": MetadataRecord("i-00000002", "127.0.0.2", "d0:0d:00:00:00:02", "c1", user_data=b"two"),
}


class SourceBound(http.client.HTTPConnection):
    """A client connection from a chosen loopback address (a guest's private address, here)."""

    def __init__(self, port: int, source: str):
        super().__init__("127.0.0.1", port, timeout=5, source_address=(source, 0))


def request(port: int, source: str, calls: list[tuple[str, str, dict[str, str]]]) -> list[Any]:
    """The calls in order on one keep-alive connection: [(status, body, headers), ...]."""
    conn = SourceBound(port, source)
    out = []
    try:
        for method, path, headers in calls:
            conn.request(method, path, headers=headers)
            r = conn.getresponse()
            out.append((r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}))
    finally:
        conn.close()
    return out


async def test_the_instance_is_the_source_address_imdsv1_and_v2() -> None:
    sock = listen_in_netns(None, "127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = MetadataServer(RECORDS.get, sock)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)

        def work() -> None:
            token_ask = ("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
            ident = ("GET", "/latest/meta-data/instance-id", {})
            (put, v1, user, missing) = request(
                port,
                "127.0.0.1",
                [token_ask, ident, ("GET", "/latest/user-data", {}), ("GET", "/latest/meta-data/nope", {})],
            )
            assert put[0] == 200 and put[2]["x-aws-ec2-metadata-token-ttl-seconds"] == "60"
            token = put[1].decode()
            assert v1[:2] == (200, b"i-00000001") and user[:2] == (200, b"one") and missing[0] == 404
            with_token = ("GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": token})
            assert request(port, "127.0.0.1", [with_token])[0][:2] == (200, b"i-00000001")
            # Another instance: its own data, and the first one's token is no good there.
            (theirs, stolen) = request(port, "127.0.0.2", [("GET", "/latest/user-data", {}), with_token])
            assert theirs[:2] == (200, b"two") and stolen[0] == 401
            # An address that is no instance's gets nothing, and no token.
            (none, no_token) = request(port, "127.0.0.3", [ident, token_ask])
            assert none[0] == 404 and no_token[0] == 403
            (head,) = request(port, "127.0.0.1", [("HEAD", "/latest/meta-data/instance-id", {})])
            assert head[:2] == (200, b"")

        await trio.to_thread.run_sync(work)
        nursery.cancel_scope.cancel()


async def test_answers_leave_with_the_hop_limit_and_big_heads_are_cut_off(monkeypatch: Any) -> None:
    ttls: list[int] = []
    real = MetadataServer._requests

    async def spy(self: MetadataServer, stream: trio.SocketStream, peer: str) -> None:
        ttls.append(stream.socket.getsockopt(socket.IPPROTO_IP, socket.IP_TTL))
        await real(self, stream, peer)

    monkeypatch.setattr(MetadataServer, "_requests", spy)
    sock = listen_in_netns(None, "127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = MetadataServer(RECORDS.get, sock)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)

        def work() -> None:
            assert request(port, "127.0.0.1", [("GET", "/", {})])[0][0] == 200
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                raw.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                try:
                    while chunk := raw.recv(4096):
                        answer += chunk
                except ConnectionResetError:
                    pass
                assert b" 200 " not in answer  # closed without serving it

        await trio.to_thread.run_sync(work)
        nursery.cancel_scope.cancel()
    assert ttls and set(ttls) == {HOP_LIMIT} and HOP_LIMIT == 1
