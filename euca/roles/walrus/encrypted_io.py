"""Encrypted bytes in and out of a ByteStore, streamed: the store (disk or backend cluster) only ever sees
ciphertext, and nothing here holds more than a batch of an object.

A write wraps its body stream in `EncryptingStream` (the plaintext is hashed and encrypted on the way, a large
batch in a worker thread); a read (`open_plain`) streams each piece's ciphertext from where the range starts
and decrypts it with that piece's keystream; a copy (`copy_plain`) is a read of the source fed to a write."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from euca.protocol.s3 import S3Error
from euca.roles.walrus.cipher import Keystream
from euca.roles.walrus.storage import BATCH, BodyStream, ByteStore, Checksum, Storage, Written

# Batches at least this large are encrypted and hashed in a worker thread (a smaller one costs less in line).
THREAD_MIN = 256 * 1024

# One piece of an encrypted range: its bytes (a storage id, or an inline object's bytes), the offset and
# length within them, and the piece's nonce (None: the piece is plaintext).
Piece = tuple[str | bytes, int, int, bytes | None]


@dataclass(frozen=True, slots=True)
class PieceCipher:
    """How a new piece is encrypted: the data key, the piece's nonce, and whether its ETag is the MD5 of the
    ciphertext (SSE-C, as S3: the ETag of an object under a customer key is not the MD5 of its data)."""

    key: bytes
    nonce: bytes
    customer: bool = False


class EncryptingStream:
    """A body stream whose reads come out encrypted. The plaintext's MD5 and x-amz-checksum are computed here
    (the store hashes what it is given: ciphertext); a payload whose SHA-256 was signed is hashed here too, and
    checked at its end, so a body that is not what was signed raises before the store keeps anything."""

    def __init__(self, source: BodyStream, cipher: PieceCipher, algorithm: str | None):
        self.source = source
        self.cipher = cipher
        self.md5 = hashlib.md5()
        self.checksum = Checksum(algorithm) if algorithm else None
        self._keystream = Keystream(cipher.key, cipher.nonce)
        defer = getattr(source, "defer_hash", None)
        self._sha256: Any = defer() if defer is not None else None
        self._check = getattr(source, "check_hash", None) if self._sha256 is not None else None
        self._ended = False

    def _absorb(self, data: bytes) -> bytes:
        self.md5.update(data)
        if self.checksum is not None:
            self.checksum.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        return self._keystream.apply(data)

    async def read(self, max_bytes: int = BATCH) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while size < max_bytes and not self._ended:
            chunk = await self.source.read(max_bytes - size)
            if not chunk:
                self._ended = True
                break
            chunks.append(chunk)
            size += len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if size >= THREAD_MIN:
            out: bytes = await trio.to_thread.run_sync(self._absorb, data)
        else:
            out = self._absorb(data) if data else b""
        if self._ended and self._check is not None:
            check, self._check = self._check, None
            check()  # raises when the body is not what was signed
        return out

    def finish(self, written: Written) -> str:
        """After the store wrote the ciphertext: make `written` describe the plaintext (its checksum, and its
        MD5 as the ETag unless under a customer key); returns the plaintext's MD5 (for Content-MD5)."""
        plain_md5 = self.md5.hexdigest()
        if not self.cipher.customer:
            written.md5 = plain_md5
        written.checksum = self.checksum
        return plain_md5


class IterStream:
    """A BodyStream over an async iterator of chunks."""

    def __init__(self, chunks: AsyncIterable[bytes]):
        self._chunks = aiter(chunks)
        self._pending = b""

    async def read(self, max_bytes: int = BATCH) -> bytes:
        if not self._pending:
            try:
                self._pending = await self._chunks.__anext__()
            except StopAsyncIteration:
                return b""
        out, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return out


async def _slices(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), BATCH):
        yield data[start : start + BATCH]


class _FileRange:
    """A range of an open file, read in batches off the event loop; the descriptor is closed at the end or
    by `aclose`, whichever comes first (also when the range was never read)."""

    def __init__(self, fd: int, offset: int, length: int):
        self._fd, self._offset, self._length = fd, offset, length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while self._length > 0 and self._fd >= 0:
                data = await trio.to_thread.run_sync(
                    os.pread, self._fd, min(BATCH, self._length), self._offset
                )
                if not data:
                    raise OSError("object data shorter than recorded")
                self._offset += len(data)
                self._length -= len(data)
                yield data
        finally:
            self._close()

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


async def _read_piece(
    storage: ByteStore, source: str | bytes, offset: int, length: int
) -> AsyncIterable[bytes] | None:
    """The stored bytes of one piece's range; None when its file is gone (the object was just replaced)."""
    if isinstance(source, bytes):
        return _slices(source[offset : offset + length])
    if isinstance(storage, Storage):
        fds = storage.open_all([source])
        return None if fds is None else _FileRange(fds[0], offset, length)
    return await storage.open_stream([(source, offset, length)])


async def open_plain(storage: ByteStore, pieces: list[Piece], key: bytes | None) -> PlainBody | None:
    """The plaintext of these pieces, streamed (decrypted with `key` where a piece has a nonce); None when the
    first piece is gone (read the object again). One gone later (replaced while being sent) cuts the body."""
    pieces = [p for p in pieces if p[2] > 0]
    first = await _read_piece(storage, *pieces[0][:3]) if pieces else None
    if pieces and first is None:
        return None
    return PlainBody(storage, pieces, key, first)


class PlainBody:
    """A response body: the pieces' plaintext one after the other. The first piece is opened before the
    response starts; `aclose` (the server calls it whenever the body ends) closes what is open (a file, a
    backend response), even when the body was never read."""

    def __init__(
        self, storage: ByteStore, pieces: list[Piece], key: bytes | None, first: AsyncIterable[bytes] | None
    ):
        self._storage = storage
        self._pieces = pieces
        self._key = key
        self._current = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, (source, offset, length, nonce) in enumerate(self._pieces):
            if index > 0:
                self._current = await _read_piece(self._storage, source, offset, length)
            body = self._current
            if body is None:
                raise OSError("object data gone while it was being read")
            keystream = (
                Keystream(self._key, nonce, offset) if self._key is not None and nonce is not None else None
            )
            async for chunk in body:
                yield keystream.apply(chunk) if keystream is not None else chunk
            await self.aclose()

    async def aclose(self) -> None:
        body, self._current = self._current, None
        close = getattr(body, "aclose", None)
        if close is not None:
            await close()


async def copy_plain(
    storage: ByteStore,
    pieces: list[Piece],
    key: bytes | None,
    cipher: PieceCipher | None,
    algorithm: str | None,
    *,
    inline: bool = False,
) -> Written:
    """A new piece from the plaintext of `pieces` (decrypted with `key`), encrypted with `cipher` (None: kept
    plain), hashed on the way: Written.md5 and .checksum describe the plaintext (the ETag: see PieceCipher)."""
    plain = await open_plain(storage, pieces, key)
    if plain is None:
        raise S3Error("InternalError", "the copy source changed while it was being read")
    total = sum(p[2] for p in pieces)
    try:
        if cipher is None:
            return await storage.write_stream(
                IterStream(plain), algorithm, expected_size=total, inline=inline
            )
        stream = EncryptingStream(IterStream(plain), cipher, algorithm)
        written = await storage.write_stream(stream, None, expected_size=total, inline=inline)
        stream.finish(written)
        return written
    finally:
        with trio.CancelScope(shield=True):
            await plain.aclose()
