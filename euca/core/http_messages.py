"""What the HTTP server (euca.core.http) hands a handler and takes back: `Request` (with its `Headers`, the
streamed `Body`, the mutual-TLS `Peer`) and `Response` (bytes, a file range, file segments or an async
stream). Handlers import these from euca.core.http, which re-exports them."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h11

if TYPE_CHECKING:
    from euca.core.http import _Connection

RECV_SIZE = 256 * 1024


class Headers:
    """Request headers: case-insensitive lookup, values decoded as latin-1 (what HTTP carries)."""

    __slots__ = ("raw", "pairs", "_map")

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self.raw = raw
        # Every field as received, in order, decoded (names in lower case): what signatures are checked against.
        self.pairs: list[tuple[str, str]] = []
        m: dict[str, str] = {}
        for k, v in raw:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            self.pairs.append((name, value))
            # Repeated headers fold into one comma-separated value (RFC 9110 5.3).
            m[name] = f"{m[name]},{value}" if name in m else value
        self._map = m

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._map.get(name.lower(), default)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._map

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._map.items())

    def keys(self) -> list[str]:
        return list(self._map)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a mutual-TLS connection: the subject of its verified certificate.

    Components carry O=euca, OU=<role>, CN=<registered name> (see euca/core/components.py).
    """

    role: str  # organizationalUnitName
    name: str  # commonName
    organization: str = ""
    # The certificate's serial (checked against the cloud CA's revocation list); not part of who the peer is.
    serial: int = field(default=0, compare=False)

    @classmethod
    def from_ssl(cls, tls: Any) -> Peer | None:
        """The peer of a finished handshake (an ssl.SSLObject or a trio.SSLStream, which forwards
        getpeercert), or None when it sent no verified certificate."""
        cert = tls.getpeercert()
        if not cert:
            return None
        fields: dict[str, str] = {}
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                fields.setdefault(key, value)
        return cls(
            role=fields.get("organizationalUnitName", ""),
            name=fields.get("commonName", ""),
            organization=fields.get("organizationName", ""),
            serial=int(str(cert.get("serialNumber", "0")), 16),
        )


class ClientDisconnected(Exception):
    """The peer went away (or stalled past the I/O timeout) while we were reading its body."""


class Body:
    """The request body as a stream. `read()` returns b"" at the end."""

    def __init__(self, conn: _Connection):
        self._conn = conn
        self._pending = b""
        self.done = False
        self.bytes_read = 0
        self.trailers: list[tuple[bytes, bytes]] = []

    async def read(self, max_bytes: int = RECV_SIZE) -> bytes:
        if self._pending:
            chunk, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
            return chunk
        if self.done:
            return b""
        while True:
            event = await self._conn.next_event_for_body()
            if isinstance(event, h11.Data):
                data = bytes(event.data)
                if not data:
                    continue
                self.bytes_read += len(data)
                if len(data) > max_bytes:
                    self._pending = data[max_bytes:]
                    data = data[:max_bytes]
                return data
            if isinstance(event, h11.EndOfMessage):
                self.trailers = list(event.headers)
                self.done = True
                return b""
            raise ClientDisconnected(f"unexpected {type(event).__name__} in request body")

    async def read_all(self, limit: int) -> bytes:
        """The whole body, refused (ValueError) past `limit` bytes: only for small XML/form bodies."""
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self.read()
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"request body larger than {limit} bytes")
            parts.append(chunk)

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        while True:
            chunk = await self.read()
            if not chunk:
                return
            yield chunk


@dataclass
class Request:
    method: str
    target: str  # raw request target, percent-encoding intact
    path: str  # raw path part of target (still percent-encoded)
    query: str  # raw query string, without '?'
    headers: Headers
    body: Body
    client: tuple[str, int]
    http_version: str = "1.1"
    received_at: float = field(default_factory=time.time)
    # Free space for the dispatcher and roles (e.g. the mount prefix that was stripped).
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileBody:
    """Send `length` bytes of an open file from `offset` with os.sendfile. The fd is closed after sending."""

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


@dataclass
class FileSegments:
    """Several file pieces sent one after another as one body (e.g. an object kept as its part files).
    Every fd is closed after sending."""

    parts: list[FileBody]

    def __len__(self) -> int:
        return sum(p.length for p in self.parts)

    def close(self) -> None:
        for p in self.parts:
            p.close()


ResponseBody = bytes | FileBody | FileSegments | AsyncIterable[bytes]


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: ResponseBody = b""
    # For HEAD: the length the GET would have had; Content-Length is set from it, no body sent.
    head_length: int | None = None

    def header(self, name: str, value: str) -> Response:
        self.headers.append((name, value))
        return self


Handler = Callable[[Request], Awaitable[Response]]
