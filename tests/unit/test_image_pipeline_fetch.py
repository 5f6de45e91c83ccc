"""euca.images.pipeline's part fetching: keep-alive connections a server drops, chunked and cut-off bodies
(plain HTTP, read off the socket), and https:// parts through the caller's httpx client."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import trio

from euca.images import part_fetch, pipeline
from euca.images.bundler import bundle_image
from euca.images.pipeline import PartMissingError, source_from_bundle_manifest, unbundle_image
from euca.protocol import bundle as b
from helpers.bundle_keys import BundleKeys

MiB = 1024 * 1024


def make_bundle(keys: BundleKeys, tmp_path: Path, size: int) -> tuple[b.BundleManifest, Path, bytes]:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(size // 2) + bytes(size - size // 2))
    parts = tmp_path / "bundle"
    result = bundle_image(
        image,
        parts,
        user="000000000042",
        cloud_cert=keys.cloud_cert,
        user_cert=keys.user_cert,
        user_key=keys.user_key,
    )
    return b.parse_manifest(result.manifest), parts, hashlib.sha256(image.read_bytes()).digest()


def digest_of(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


# A raw HTTP/1.1 server, to behave the way a real server may and euca's own does not.
Respond = Callable[[trio.SocketStream, bytes], Awaitable[bool]]  # (stream, part bytes) -> keep the connection


class RawServer:
    def __init__(self, directory: Path, respond: Respond):
        self.directory = directory
        self.respond = respond
        self.connections = 0
        self.requests = 0
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffered = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                self.requests += 1
                path = self.directory / unquote(target.lstrip("/").split("?", 1)[0])
                if not path.is_file():
                    await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                if not await self.respond(stream, path.read_bytes()):
                    return
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


async def start_raw_server(nursery: trio.Nursery, directory: Path, respond: Respond) -> RawServer:
    server = RawServer(directory, respond)
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


async def content_length_then_close(stream: trio.SocketStream, body: bytes) -> bool:
    # No "Connection: close": the client keeps the connection, which this server then drops while idle.
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return False


async def chunked(stream: trio.SocketStream, body: bytes) -> bool:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(body), 3 * MiB + 7):
        piece = body[start : start + 3 * MiB + 7]
        await stream.send_all(b"%x\r\n" % len(piece) + piece + b"\r\n")
    await stream.send_all(b"0\r\n\r\n")
    return True


async def cut_off(stream: trio.SocketStream, body: bytes) -> bool:
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2]
    )
    return False


def local_source(keys: BundleKeys, m: b.BundleManifest, server: RawServer) -> pipeline.ImageSource:
    source = source_from_bundle_manifest(m, keys.user_key, server.url(""), holder="user")
    return source


async def test_keep_alive_connection_dropped_by_the_server_is_not_a_failed_attempt(
    keys: BundleKeys, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(part_fetch, "FETCH_ATTEMPTS", 1)  # one failure of a fresh connection would be fatal
    m, parts, expected = make_bundle(keys, tmp_path, 25 * MiB)
    assert len(m.parts) >= 2  # the second part goes out on the connection the server dropped
    server = await start_raw_server(nursery, parts, content_length_then_close)
    out = tmp_path / "out.img"
    await unbundle_image(local_source(keys, m, server), out, concurrency=1)
    assert digest_of(out) == expected
    assert server.requests >= len(m.parts) and server.connections >= len(m.parts)


async def test_chunked_part_bodies(keys: BundleKeys, tmp_path: Path, nursery: trio.Nursery) -> None:
    m, parts, expected = make_bundle(keys, tmp_path, 15 * MiB)
    server = await start_raw_server(nursery, parts, chunked)
    out = tmp_path / "out.img"
    await unbundle_image(local_source(keys, m, server), out, concurrency=2)
    assert digest_of(out) == expected


async def test_body_cut_off_before_its_content_length(
    keys: BundleKeys, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(part_fetch, "FETCH_ATTEMPTS", 2)
    monkeypatch.setattr(trio, "sleep", _no_sleep)
    m, parts, _ = make_bundle(keys, tmp_path, 3 * MiB)
    server = await start_raw_server(nursery, parts, cut_off)
    out_dir = tmp_path / "cache"
    out_dir.mkdir()
    with pytest.raises(PartMissingError, match="after 2 attempts"):
        await unbundle_image(local_source(keys, m, server), out_dir / "emi.img")
    assert os.listdir(out_dir) == []
    assert server.requests == 2


_real_sleep = trio.sleep


async def _no_sleep(seconds: float) -> None:
    await _real_sleep(0)  # retry backoff, not what is tested


def https_client(directory: Path) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        path = directory / unquote(request.url.path.rsplit("/", 1)[-1])
        if not path.is_file():
            return httpx.Response(404, content=b"no such part")
        return httpx.Response(200, stream=httpx.ByteStream(path.read_bytes()))

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def test_https_parts_go_through_the_callers_httpx_client(keys: BundleKeys, tmp_path: Path) -> None:
    m, parts, expected = make_bundle(keys, tmp_path, 15 * MiB)
    source = source_from_bundle_manifest(m, keys.user_key, "https://walrus.test/bucket", holder="user")
    out = tmp_path / "out.img"
    async with https_client(parts) as client:
        await unbundle_image(source, out, client=client)
        assert digest_of(out) == expected
        (parts / m.parts[-1].filename).unlink()
        with pytest.raises(PartMissingError, match="HTTP 404"):
            await unbundle_image(source, tmp_path / "again.img", client=client)
    # Without a client there is no way to fetch https parts: a clear error, not a plain-HTTP attempt.
    with pytest.raises(ValueError, match="httpx.AsyncClient"):
        await unbundle_image(source, tmp_path / "none.img")
