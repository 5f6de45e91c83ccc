"""The image pipeline's first stage: bundle parts fetched over HTTP (or read from local files), a bounded
window ahead of the consumer, each checked against its SHA1 and delivered in index order.

Plain-HTTP part bodies go from the socket straight into a pooled buffer (h11 for the head, recv_into for the
body), so the event-loop thread does little and big buffers are reused, not reallocated; https goes through
httpx. A failed attempt is retried on a fresh connection (FETCH_ATTEMPTS in all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import httpx
import trio

from euca.images.errors import PartDigestError, PartMissingError
from euca.protocol.bundle import PART_SIZE

# A part body larger than this is refused while it downloads (bounds memory against a hostile server).
MAX_PART_BYTES = 2 * PART_SIZE
FETCH_ATTEMPTS = 3


@dataclass(frozen=True)
class PartRef:
    index: int
    digest: str  # hex SHA1 of the part's bytes
    location: str  # an http(s) URL, or a local file path


# ---------------------------------------------------------------------------------------------------------
# Buffers. The big buffers of a run (part bodies, decrypted parts) are taken from a pool and given back,
# so a run touches a few dozen MiB of memory over and over instead of gigabytes of fresh allocations:
# fresh pages cost page faults, and on a VM with free page reporting a trip to the hypervisor each.


class BufferPool:
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

    def __init__(self, data: memoryview, buf: bytearray | None = None, pool: BufferPool | None = None):
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
    pool: BufferPool,
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
    pool = BufferPool(PART_SIZE)
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
