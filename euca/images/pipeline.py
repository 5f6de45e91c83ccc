"""The node-side image pipeline: bundle parts -> the raw image file, streaming, in bounded memory.

    fetch parts (bounded concurrency, delivered in order) -> check each part's SHA1
      -> AES-128-CBC decrypt -> gunzip -> first tar member, chunk by chunk, into the output file
                                       -> SHA1 over the whole tar stream, checked against the manifest
      -> fsync

Each stage is a trio task; the CPU work of each runs in a worker thread (trio.to_thread) in big chunks, so
the stages overlap on several cores the way Eucalyptus 4's `openssl | gunzip | tar` pipe of processes did
(hashlib, isal/zlib, AES and os.write all release the GIL on big buffers). The image digest runs beside
the writer, not before it. What is left on the event-loop thread is kept small, because it holds the GIL
the worker threads need between their calls: plain-HTTP part bodies go from the socket straight into
their buffer (h11 for the head, recv_into for the body), and big buffers are pooled, not reallocated.
Memory is bounded by the fetch window (`concurrency` parts of 10 MiB) plus a few chunks between stages,
whatever the image size. bench/image_pipeline.py measures it against Eucalyptus's pipe of processes.

Errors are typed (PartMissingError, PartDigestError, ImageKeyError, ImageCorruptError, ImageDiskFullError,
all ImagePipelineError), and a failed run leaves no output file behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import h11
import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from euca.protocol.bundle import (
    PART_SIZE,
    BundleManifest,
    DownloadManifest,
    KeyUnwrapError,
    download_key_iv,
    manifest_key_iv,
)

_inflate_lib: Any
try:  # ISA-L's inflate is 2-3x zlib's and a drop-in replacement (same API, same formats).
    from isal import isal_zlib

    _inflate_lib = isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _inflate_lib = zlib

# Output of one inflate step handed to the writer: big enough to amortise thread hops, small enough that a
# part of zeros (which inflates ~1000:1) never sits in memory whole. It comes in pieces of at most
# INFLATE_PIECE: allocations of that size are recycled by malloc instead of mapped afresh each time.
INFLATE_OUT = 8 * 1024 * 1024
INFLATE_PIECE = 1024 * 1024
INFLATE_IN = 1024 * 1024
RAW_QUEUE = 2
WRITEBACK_STEP = 32 * 1024 * 1024
# A part body larger than this is refused while it downloads (bounds memory against a hostile server).
MAX_PART_BYTES = 2 * PART_SIZE
DEFAULT_CONCURRENCY = 4
FETCH_ATTEMPTS = 3
TAR_BLOCK = 512
GZIP_MAGIC = b"\x1f\x8b\x08"  # gzip id bytes, then deflate
MAX_TAR_META = 1024 * 1024

Progress = Callable[[int, int], None]


class ImagePipelineError(Exception):
    """Base of the pipeline's failures."""


class PartMissingError(ImagePipelineError):
    """A part could not be fetched (404, refused, or still failing after retries)."""


class PartDigestError(ImagePipelineError):
    """A part's bytes do not match the SHA1 the manifest lists."""


class ImageKeyError(ImagePipelineError):
    """The key or IV cannot be unwrapped, or decrypting with them does not give a gzip stream."""


class ImageCorruptError(ImagePipelineError):
    """The decrypted stream is not a valid gzip/tar of one image, or the image digest does not match."""


class ImageDiskFullError(ImagePipelineError):
    """No space left for the image."""


@dataclass(frozen=True)
class PartRef:
    index: int
    digest: str  # hex SHA1 of the part's bytes
    location: str  # an http(s) URL, or a local file path


@dataclass(frozen=True)
class ImageSource:
    parts: tuple[PartRef, ...]
    key: bytes
    iv: bytes
    digest: str  # hex SHA1 of the tar stream
    size: int | None = None  # raw image size, when known
    bundled_size: int | None = None


@dataclass(frozen=True)
class ImageWritten:
    name: str  # the tar member's name (the original image file name)
    size: int
    digest: str


def source_from_download_manifest(manifest: DownloadManifest, node_key: rsa.RSAPrivateKey) -> ImageSource:
    """An ImageSource for a download manifest the caller has verified (verify_download_manifest)."""
    try:
        key, iv = download_key_iv(manifest, node_key)
    except KeyUnwrapError as e:
        raise ImageKeyError(str(e)) from e
    parts = tuple(PartRef(p.index, p.digest, p.url) for p in manifest.parts)
    return ImageSource(parts, key, iv, manifest.digest, manifest.size, manifest.bundled_size)


def source_from_bundle_manifest(
    manifest: BundleManifest, private_key: rsa.RSAPrivateKey, base: str, *, holder: str = "ec2"
) -> ImageSource:
    """An ImageSource for parts next to a bundle manifest: `base` is a directory or a URL prefix."""
    try:
        key, iv = manifest_key_iv(manifest, private_key, holder=holder)
    except KeyUnwrapError as e:
        raise ImageKeyError(str(e)) from e
    if base.startswith(("http://", "https://")):
        prefix = base if base.endswith("/") else base + "/"
        locations = [prefix + quote(p.filename) for p in manifest.parts]
    else:
        locations = [os.path.join(base, p.filename) for p in manifest.parts]
    parts = tuple(PartRef(p.index, p.digest, loc) for p, loc in zip(manifest.parts, locations, strict=True))
    return ImageSource(parts, key, iv, manifest.digest, manifest.size, manifest.bundled_size)


# ---------------------------------------------------------------------------------------------------------
# Buffers. The big buffers of a run (part bodies, decrypted parts) are taken from a pool and given back,
# so a run touches a few dozen MiB of memory over and over instead of gigabytes of fresh allocations:
# fresh pages cost page faults, and on a VM with free page reporting a trip to the hypervisor each.


class _BufferPool:
    """Reusable bytearrays of at least `size` bytes. Used from the trio thread only."""

    def __init__(self, size: int):
        self.size = size
        self._free: list[bytearray] = []

    def get(self) -> bytearray:
        return self._free.pop() if self._free else bytearray(self.size)

    def put(self, buf: bytearray) -> None:
        self._free.append(buf)


class Chunk:
    """Bytes handed from one stage to the next; `release()` gives the buffer back once they are used."""

    __slots__ = ("data", "_buf", "_pool")

    def __init__(self, data: memoryview, buf: bytearray | None = None, pool: _BufferPool | None = None):
        self.data = data
        self._buf = buf
        self._pool = pool

    def release(self) -> None:
        self.data.release()
        if self._pool is not None and self._buf is not None:
            self._pool.put(self._buf)
        self._buf = self._pool = None


# ---------------------------------------------------------------------------------------------------------
# Fetching, in order, with a bounded window

HTTP_HEAD_READ = 64 * 1024  # a response head and the start of the body; the rest goes by recv_into
READ_TIMEOUT = 60.0  # seconds without progress on a part's connection before the attempt is abandoned


class _Slot:
    __slots__ = ("ready", "chunk")

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.chunk: Chunk | None = None


def _store(buf: bytearray, at: int, data: bytes | memoryview) -> int:
    end = at + len(data)
    if end > MAX_PART_BYTES:
        raise PartDigestError(f"a part is larger than {MAX_PART_BYTES} bytes")
    if end > len(buf):
        buf.extend(bytes(end - len(buf)))  # only for parts bigger than the usual 10 MiB
    buf[at:end] = data
    return end


class _Connections:
    """Keep-alive HTTP/1.1 connections of one pipeline run, by (host, port); one request at a time each."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[trio.SocketStream]] = {}

    def take(self, address: tuple[str, int]) -> trio.SocketStream | None:
        idle = self._idle.get(address)
        return idle.pop() if idle else None

    def give_back(self, address: tuple[str, int], stream: trio.SocketStream) -> None:
        self._idle.setdefault(address, []).append(stream)

    async def aclose(self) -> None:
        for streams in self._idle.values():
            for stream in streams:
                await stream.aclose()
        self._idle.clear()


class _Retry(Exception):
    """An attempt failed in a way worth retrying."""


def _parse_http_url(url: str) -> tuple[tuple[str, int], str, str]:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise PartMissingError(f"bad part URL {url[:200]!r}")
    try:
        port = parts.port or 80
    except ValueError as e:
        raise PartMissingError(f"bad part URL {url[:200]!r}") from e
    host_header = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.hostname, port), host_header, target


async def _receive(stream: trio.SocketStream) -> bytes:
    with trio.fail_after(READ_TIMEOUT):
        data: bytes = await stream.receive_some(HTTP_HEAD_READ)
        return data


async def _get_once(
    stream: trio.SocketStream, host: str, target: str, part: PartRef, buf: bytearray
) -> tuple[int, bool]:
    """One GET on an open connection: (body length in buf, whether the connection can be reused)."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[("Host", host), ("Accept-Encoding", "identity"), ("User-Agent", "euca-image-pipeline")],
    )
    with trio.fail_after(READ_TIMEOUT):
        await stream.send_all(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await _receive(stream))
        elif isinstance(event, h11.Response):
            break
        elif not isinstance(event, h11.InformationalResponse):
            raise _Retry(f"unexpected {type(event).__name__} instead of a response")
    status = event.status_code
    if status in (403, 404, 410):
        raise PartMissingError(f"part {part.index}: HTTP {status} from the server")
    if status != 200:
        raise _Retry(f"HTTP {status}")
    headers = {name.lower(): value for name, value in event.headers}
    reusable = event.http_version == b"1.1" and headers.get(b"connection", b"").lower() != b"close"
    if b"content-length" not in headers or b"transfer-encoding" in headers:
        return await _chunked_body(conn, stream, part, buf), False
    length = int(headers[b"content-length"])
    if length > MAX_PART_BYTES:
        raise PartDigestError(f"part {part.index} is larger than {MAX_PART_BYTES} bytes")
    if length > len(buf):
        buf.extend(bytes(length - len(buf)))
    # What came with the head is the start of the body; the rest goes from the socket into buf.
    got = len(conn.trailing_data[0])
    if got > length:
        raise _Retry("more data than the Content-Length")
    buf[:got] = conn.trailing_data[0]
    view = memoryview(buf)
    sock = stream.socket
    while got < length:
        with trio.fail_after(READ_TIMEOUT):
            n = await sock.recv_into(view[got:length])
        if not n:
            raise _Retry(f"connection closed after {got} of {length} bytes")
        got += n
    return length, reusable


async def _chunked_body(
    conn: h11.Connection, stream: trio.SocketStream, part: PartRef, buf: bytearray
) -> int:
    length = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await _receive(stream))
        elif isinstance(event, h11.Data):
            try:
                length = _store(buf, length, event.data)
            except PartDigestError:
                raise PartDigestError(f"part {part.index} is larger than {MAX_PART_BYTES} bytes") from None
        elif isinstance(event, h11.EndOfMessage):
            return length
        else:
            raise _Retry(f"unexpected {type(event).__name__} in a response body")


async def _fetch_plain_http(connections: _Connections, part: PartRef, buf: bytearray) -> int:
    """A part over plain HTTP, the body straight from the socket into `buf`; its length."""
    address, host, target = _parse_http_url(part.location)
    last: BaseException | None = None
    attempt = 0
    while attempt < FETCH_ATTEMPTS:
        stream = connections.take(address)
        fresh = stream is None
        if stream is None:
            if attempt:
                await trio.sleep(0.5 * 2**attempt)
            try:
                with trio.fail_after(READ_TIMEOUT):
                    stream = await trio.open_tcp_stream(*address)
            except (OSError, trio.TooSlowError) as e:
                last = e
                attempt += 1
                continue
        try:
            length, reusable = await _get_once(stream, host, target, part, buf)
        except (_Retry, OSError, trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError) as e:
            await stream.aclose()
            last = e
            if fresh:  # a kept-alive connection the server has closed meanwhile is not a failed attempt
                attempt += 1
            continue
        except BaseException:
            await stream.aclose()
            raise
        if reusable:
            connections.give_back(address, stream)
        else:
            await stream.aclose()
        return length
    raise PartMissingError(f"part {part.index}: cannot fetch it after {FETCH_ATTEMPTS} attempts: {last}")


async def _fetch_http(client: httpx.AsyncClient, part: PartRef, buf: bytearray) -> int:
    """The part's body into `buf`; its length."""
    last: Exception | None = None
    for attempt in range(FETCH_ATTEMPTS):
        if attempt:
            await trio.sleep(0.5 * 2**attempt)
        try:
            async with client.stream("GET", part.location) as response:
                if response.status_code in (403, 404, 410):
                    raise PartMissingError(f"part {part.index}: HTTP {response.status_code} from the server")
                if response.status_code != 200:
                    last = PartMissingError(f"part {part.index}: HTTP {response.status_code}")
                    continue
                length = 0
                try:
                    async for data in response.aiter_raw():
                        length = _store(buf, length, data)
                except PartDigestError:
                    raise PartDigestError(
                        f"part {part.index} is larger than {MAX_PART_BYTES} bytes"
                    ) from None
                return length
        except httpx.HTTPError as e:
            last = e
    raise PartMissingError(f"part {part.index}: cannot fetch it after {FETCH_ATTEMPTS} attempts: {last}")


def _read_local(part: PartRef, buf: bytearray) -> int:
    try:
        with open(part.location, "rb", buffering=0) as f:
            length = 0
            while data := f.read(PART_SIZE):
                length = _store(buf, length, data)
    except FileNotFoundError as e:
        raise PartMissingError(f"part {part.index}: {part.location} does not exist") from e
    except PartDigestError:
        raise PartDigestError(f"part {part.index} is larger than {MAX_PART_BYTES} bytes") from None
    except OSError as e:
        raise PartMissingError(f"part {part.index}: cannot read {part.location}: {e.strerror}") from e
    return length


def _sha1_hex(data: memoryview) -> str:
    return hashlib.sha1(data).hexdigest()


async def _fetch_checked(
    client: httpx.AsyncClient | None,
    connections: _Connections,
    part: PartRef,
    slot: _Slot,
    pool: _BufferPool,
) -> None:
    buf = pool.get()
    if part.location.startswith("http://"):
        length = await _fetch_plain_http(connections, part, buf)
    elif part.location.startswith("https://"):
        if client is None:
            raise ValueError("an httpx.AsyncClient is needed for URL parts")
        length = await _fetch_http(client, part, buf)
    else:
        length = await trio.to_thread.run_sync(_read_local, part, buf)
    data = memoryview(buf)[:length]
    digest = await trio.to_thread.run_sync(_sha1_hex, data)
    if digest != part.digest:
        raise PartDigestError(f"part {part.index}: SHA1 {digest} does not match the manifest's {part.digest}")
    slot.chunk = Chunk(data, buf, pool)
    slot.ready.set()


async def fetch_in_order(
    parts: Sequence[PartRef],
    client: httpx.AsyncClient | None,
    concurrency: int,
    out: trio.MemorySendChannel[Chunk],
) -> None:
    """Fetch up to `concurrency` parts ahead of the consumer; send them, checked, in index order.

    The receiver calls `chunk.release()` when it is done with a part's bytes (the buffer is reused).
    """
    pool = _BufferPool(PART_SIZE)
    window = trio.Semaphore(concurrency)
    slots_send, slots_recv = trio.open_memory_channel[_Slot](concurrency)

    async def start_fetches(nursery: trio.Nursery) -> None:
        async with slots_send:
            for part in parts:
                await window.acquire()
                slot = _Slot()
                nursery.start_soon(_fetch_checked, client, connections, part, slot, pool)
                await slots_send.send(slot)

    connections = _Connections()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_fetches, nursery)
            async with slots_recv:
                async for slot in slots_recv:
                    await slot.ready.wait()
                    chunk, slot.chunk = slot.chunk, None
                    assert chunk is not None
                    await out.send(chunk)
                    window.release()
        # Only a complete run ends the stream. After a failure `out` stays open: the consumer is cancelled
        # with the rest of the pipeline instead of taking a cut-off stream for a whole one.
        await out.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await connections.aclose()


# ---------------------------------------------------------------------------------------------------------
# Decrypt


class Decrypter:
    """AES-128-CBC with PKCS#7 padding, part by part into reusable buffers.

    The last 16 plaintext bytes may be padding: they are held back until the stream ends.
    """

    def __init__(self, key: bytes, iv: bytes):
        self._decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        self._held = b""
        self._first = True

    def update_into(self, data: memoryview, out: bytearray) -> memoryview:
        """Decrypt `data` into `out` (grown if needed); the plaintext that can be passed on (a view of out)."""
        need = len(self._held) + len(data) + 16
        if len(out) < need:
            out.extend(bytes(need - len(out)))
        held = len(self._held)
        out[:held] = self._held
        n = held + self._decryptor.update_into(data, memoryview(out)[held:])
        if self._first and n >= 16:
            # A wrong key garbles every block, a wrong IV the first one: either way, no gzip header.
            if out[held : held + 3] != GZIP_MAGIC:
                raise ImageKeyError("the decrypted bundle is not gzip data: wrong key or IV for this bundle")
            self._first = False
        keep = min(16, n)
        self._held = bytes(out[n - keep : n])
        return memoryview(out)[: n - keep]

    def finish(self) -> bytes:
        """The last plaintext bytes, padding removed."""
        try:
            held = self._held + self._decryptor.finalize()
        except ValueError as e:
            raise ImageCorruptError("the encrypted stream is not a whole number of AES blocks") from e
        if self._first and held[:3] != GZIP_MAGIC and len(held) >= 3:
            raise ImageKeyError("the decrypted bundle is not gzip data: wrong key or IV for this bundle")
        if len(held) < 16 or not 1 <= held[-1] <= 16 or held[-held[-1] :] != bytes([held[-1]]) * held[-1]:
            raise ImageCorruptError("bad padding at the end of the decrypted stream")
        return held[: -held[-1]]


async def _decrypt_stage(
    key: bytes, iv: bytes, parts: trio.MemoryReceiveChannel[Chunk], out: trio.MemorySendChannel[Chunk]
) -> None:
    decrypter = Decrypter(key, iv)
    pool = _BufferPool(PART_SIZE + 32)
    async with parts:
        async for part in parts:
            buf = pool.get()
            try:
                plain = await trio.to_thread.run_sync(decrypter.update_into, part.data, buf)
            finally:
                part.release()
            if plain:
                await out.send(Chunk(plain, buf, pool))
            else:
                pool.put(buf)
        tail = decrypter.finish()
        if tail:
            await out.send(Chunk(memoryview(tail)))
    await out.aclose()  # as in fetch_in_order: only after the whole stream


# ---------------------------------------------------------------------------------------------------------
# Gunzip


class Inflater:
    """gzip -> raw bytes, in bounded steps; concatenated gzip members are one stream (as gunzip does)."""

    def __init__(self) -> None:
        self._d: Any = _inflate_lib.decompressobj(31)
        self._pending: list[memoryview] = []
        self._tail: bytes | memoryview = b""
        self.produced = 0
        self.finished_member = False

    def add(self, data: memoryview) -> None:
        for start in range(0, len(data), INFLATE_IN):
            self._pending.append(data[start : start + INFLATE_IN])

    def step(self) -> list[bytes]:
        """Up to ~INFLATE_OUT bytes of output; [] once the input given so far is used up."""
        out: list[bytes] = []
        room = INFLATE_OUT
        while room > 0:
            if self._tail:
                data = self._tail
            elif self._pending:
                data = self._pending.pop(0)
            else:
                break
            if self._d.eof:
                # A new gzip member starts after the previous one's trailer.
                if not bytes(data[:2]) == b"\x1f\x8b" and not any(data):
                    self._tail = b""  # zero padding after the last member: tolerated, as gunzip does
                    continue
                self._d = _inflate_lib.decompressobj(31)
            try:
                chunk = self._d.decompress(data, min(room, INFLATE_PIECE))
            except _inflate_lib.error as e:
                if self.produced == 0:
                    raise ImageKeyError(
                        "the decrypted bundle is not gzip data: wrong key or IV for this bundle"
                    ) from e
                raise ImageCorruptError(f"the bundle's gzip stream is corrupt: {e}") from e
            self._tail = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            if chunk:
                out.append(chunk)
                room -= len(chunk)
                self.produced += len(chunk)
        return out

    def finish(self) -> None:
        if not self._d.eof:
            raise ImageCorruptError("the bundle's gzip stream is truncated")


async def _inflate_stage(
    plain: trio.MemoryReceiveChannel[Chunk],
    to_writer: trio.MemorySendChannel[list[bytes]],
    to_digest: trio.MemorySendChannel[list[bytes]],
) -> None:
    """Inflate; every step's output goes both to the writer and to the digest, which run side by side."""
    inflater = Inflater()
    async with plain:
        async for chunk in plain:
            try:
                inflater.add(chunk.data)
                while True:
                    pieces = await trio.to_thread.run_sync(inflater.step)
                    if not pieces:
                        break
                    await to_digest.send(pieces)
                    await to_writer.send(pieces)
            finally:
                chunk.release()  # step() returned []: nothing refers to the chunk's bytes any more
        inflater.finish()
    await to_digest.aclose()  # as in fetch_in_order: only after the whole stream
    await to_writer.aclose()


def _hash_pieces(sha1: Any, pieces: list[bytes]) -> None:
    for piece in pieces:
        sha1.update(piece)


async def _digest_stage(pieces: trio.MemoryReceiveChannel[list[bytes]], sha1: Any) -> None:
    async with pieces:
        async for batch in pieces:
            await trio.to_thread.run_sync(_hash_pieces, sha1, batch)


# ---------------------------------------------------------------------------------------------------------
# Untar the first regular member into the output file, hashing the whole tar stream


def _tar_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError as e:
        raise ImageCorruptError("bad number in a tar header") from e


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError as e:
            raise ImageCorruptError("bad pax header in the bundle's tar stream") from e
        if length <= 0:
            break
        record = data[space + 1 : pos + length - 1]
        k, _, v = record.partition(b"=")
        records[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        pos += length
    return records


class TarExtractor:
    """Writes the first regular member of a tar stream to `fd`; SHA1 over every byte of the stream.

    Understands what tar writers put before a member (GNU long names, pax headers). Once the member's data
    is written the rest of the stream (padding, end-of-archive blocks) is only hashed. With
    `hash_stream=False` the caller feeds `sha1` itself (the pipeline hashes in its inflate thread, so the
    hashing and the writing overlap).
    """

    def __init__(self, fd: int, expected_size: int | None = None, *, hash_stream: bool = True):
        self.fd = fd
        self.expected_size = expected_size
        self.sha1 = hashlib.sha1()
        self._hash_stream = hash_stream
        self._flushed = 0  # bytes up to which writeback has been started
        self.name: str | None = None
        self.size = 0
        self.written = 0
        self._header = bytearray()
        self._state = "header"  # header | meta | skip | data | rest
        self._remaining = 0
        self._meta = bytearray()
        self._meta_size = 0
        self._meta_type = b""
        self._long_name: str | None = None
        self._pax: dict[str, str] = {}

    def feed(self, pieces: Sequence[bytes | memoryview]) -> None:
        for piece in pieces:
            if self._hash_stream:
                self.sha1.update(piece)
            view = memoryview(piece)
            while view:
                view = self._consume(view)

    def _consume(self, view: memoryview) -> memoryview:
        state = self._state
        if state == "rest":
            return view[len(view) :]
        if state == "header":
            need = TAR_BLOCK - len(self._header)
            self._header += view[:need]
            if len(self._header) == TAR_BLOCK:
                block = bytes(self._header)
                self._header.clear()
                self._on_header(block)
            return view[need:]
        take = min(self._remaining, len(view))
        if state == "data":
            try:
                _write_all(self.fd, view[:take])
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ImageDiskFullError(f"no space left for the image: {e.strerror}") from e
                raise
            self.written += take
            if self.written - self._flushed >= WRITEBACK_STEP:
                self._start_writeback()
        elif state == "meta":
            keep = self._meta_size - len(self._meta)
            if keep > 0:
                self._meta += view[: min(take, keep)]
        self._remaining -= take
        if self._remaining == 0:
            self._end_of_span()
        return view[take:]

    def _on_header(self, block: bytes) -> None:
        if not any(block):
            raise ImageCorruptError("the bundle's tar stream holds no file")
        stored = _tar_number(block[148:156])
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != computed:
            raise ImageCorruptError("bad tar header checksum in the bundle")
        kind = block[156:157]
        size = _tar_number(block[124:136])
        if kind in (b"L", b"K", b"x", b"g"):
            if size > MAX_TAR_META:
                raise ImageCorruptError("oversized tar metadata record in the bundle")
            self._meta_type, self._meta_size = kind, size
            self._begin("meta", size + -size % TAR_BLOCK)
        elif kind in (b"0", b"\0", b"7"):
            name = self._long_name or self._pax.get("path")
            if name is None:
                name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if "size" in self._pax:
                try:
                    size = int(self._pax["size"])
                except ValueError as e:
                    raise ImageCorruptError("bad pax size in the bundle's tar stream") from e
            self.name, self.size = name, size
            if self.expected_size is not None and size != self.expected_size:
                raise ImageCorruptError(
                    f"the bundle holds {size} bytes, its manifest says {self.expected_size}"
                )
            self._begin("data", size)
        else:  # a directory, link, device...: not the image; skip its (normally empty) data
            self._long_name, self._pax = None, {}
            self._begin("skip", size + -size % TAR_BLOCK)

    def _begin(self, state: str, length: int) -> None:
        self._state, self._remaining = state, length
        if length == 0:
            self._end_of_span()

    def _end_of_span(self) -> None:
        state, self._state = self._state, "header"
        if state == "data":
            self._state = "rest"
        elif state == "meta":
            data = bytes(self._meta)
            self._meta.clear()
            if self._meta_type == b"L":
                self._long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif self._meta_type == b"x":
                self._pax = _pax_records(data)

    def _start_writeback(self) -> None:
        # The kernel would otherwise keep the whole image dirty in memory (it is under dirty_background
        # bytes on most nodes) and the final fsync would write it all while the pipeline waits. FADV_DONTNEED
        # starts writeback of the dirty range without waiting, and drops the pages of the range before it,
        # written back by now: the flush overlaps the download, and the image does not crowd the page cache.
        start = max(0, self._flushed - WRITEBACK_STEP)
        try:
            os.posix_fadvise(self.fd, start, self.written - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # only advice: the fsync at the end is what makes the image durable
        self._flushed = self.written

    def finish(self) -> ImageWritten:
        if self.name is None or self.written != self.size:
            raise ImageCorruptError("the bundle's tar stream ends before the image does")
        return ImageWritten(name=self.name, size=self.size, digest=self.sha1.hexdigest())


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


# ---------------------------------------------------------------------------------------------------------
# The whole pipeline


async def _extract_stage(
    chunks: trio.MemoryReceiveChannel[list[bytes]],
    extractor: TarExtractor,
    progress: Callable[[int], None] | None,
) -> None:
    async with chunks:
        async for pieces in chunks:
            await trio.to_thread.run_sync(extractor.feed, pieces)
            if progress is not None:
                progress(extractor.written)


async def _run_pipeline(
    source: ImageSource,
    fd: int,
    *,
    client: httpx.AsyncClient | None,
    concurrency: int,
    progress: Progress | None,
) -> ImageWritten:
    extractor = TarExtractor(fd, source.size, hash_stream=False)
    parts_send, parts_recv = trio.open_memory_channel[Chunk](0)
    plain_send, plain_recv = trio.open_memory_channel[Chunk](1)
    # Room for a few inflate steps, so the writer has work queued when the inflater is between parts.
    raw_send, raw_recv = trio.open_memory_channel[list[bytes]](RAW_QUEUE)
    digest_send, digest_recv = trio.open_memory_channel[list[bytes]](RAW_QUEUE)
    total = source.size or 0
    report = (lambda done: progress(done, total)) if progress is not None else None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch_in_order, source.parts, client, concurrency, parts_send)
        nursery.start_soon(_decrypt_stage, source.key, source.iv, parts_recv, plain_send)
        nursery.start_soon(_inflate_stage, plain_recv, raw_send, digest_send)
        nursery.start_soon(_digest_stage, digest_recv, extractor.sha1)
        nursery.start_soon(_extract_stage, raw_recv, extractor, report)
    written = extractor.finish()
    if written.digest != source.digest:
        raise ImageCorruptError(
            f"the image digest {written.digest} does not match the manifest's {source.digest}"
        )
    return written


def _preallocate(fd: int, size: int | None) -> None:
    # Claim the space up front: a full disk shows now, not after gigabytes of work.
    if not size:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ImageDiskFullError(f"no space left for an image of {size} bytes") from e
        # EOPNOTSUPP and friends (tmpfs of old kernels, some network filesystems): just write.


async def write_image(
    source: ImageSource,
    path: Path,
    *,
    client: httpx.AsyncClient | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
) -> ImageWritten:
    """Run the pipeline into `path` (created or truncated) and fsync it. On any failure `path` is removed.

    `path` is the caller's temporary name: publishing it (atomic rename) is the caller's business, see
    unbundle_image and euca.images.cache. `client` fetches https:// parts; http:// parts (Walrus on the
    cloud's network) are read over the pipeline's own keep-alive connections, without it.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        await trio.to_thread.run_sync(_preallocate, fd, source.size)
        written = await _run_pipeline(source, fd, client=client, concurrency=concurrency, progress=progress)
        try:
            await trio.to_thread.run_sync(os.fsync, fd)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ImageDiskFullError(f"no space left for the image: {e.strerror}") from e
            raise
    except BaseException as exc:
        os.close(fd)
        _unlink_quietly(path)
        if isinstance(exc, BaseExceptionGroup):
            # Stages fail one at a time; surface the pipeline's own error rather than a group of one.
            inner = _first_pipeline_error(exc)
            if inner is not None:
                raise inner from exc
        raise
    os.close(fd)
    return written


def _first_pipeline_error(group: BaseExceptionGroup[Any]) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_pipeline_error(exc)
            if found is not None:
                return found
        elif isinstance(exc, ImagePipelineError):
            return exc
    return None


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def unbundle_image(
    source: ImageSource,
    destination: Path,
    *,
    client: httpx.AsyncClient | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
) -> ImageWritten:
    """The image at `destination`, complete and verified, or nothing there (temp file + atomic rename)."""
    tmp = destination.with_name(f".{destination.name}.{os.urandom(4).hex()}.tmp")
    written = await write_image(source, tmp, client=client, concurrency=concurrency, progress=progress)
    try:
        os.replace(tmp, destination)
        await trio.to_thread.run_sync(fsync_directory, destination.parent)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return written
