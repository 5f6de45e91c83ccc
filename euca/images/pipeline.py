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
all ImagePipelineError, in euca.images.errors), and a failed run leaves no output file behind. The fetch
stage is euca.images.part_fetch, the untar stage euca.images.untar; decrypt, inflate, the digest and the
run that joins them are here.
"""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from euca.core.files import fsync_directory
from euca.images.errors import (
    ImageCorruptError,
    ImageDiskFullError,
    ImageKeyError,
    ImagePipelineError,
    PartDigestError,
    PartMissingError,
)
from euca.images.part_fetch import BufferPool, Chunk, PartRef, fetch_in_order
from euca.images.untar import ImageWritten, TarExtractor
from euca.protocol.bundle import (
    PART_SIZE,
    BundleManifest,
    DownloadManifest,
    KeyUnwrapError,
    download_key_iv,
    manifest_key_iv,
)

# The pipeline's interface: its stages' modules are details, its failures are part of it.
__all__ = [
    "ImageCorruptError",
    "ImageDiskFullError",
    "ImageKeyError",
    "ImagePipelineError",
    "ImageSource",
    "ImageWritten",
    "PartDigestError",
    "PartMissingError",
    "PartRef",
    "fetch_in_order",
    "source_from_bundle_manifest",
    "source_from_download_manifest",
    "unbundle_image",
    "write_image",
]

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
DEFAULT_CONCURRENCY = 4
GZIP_MAGIC = b"\x1f\x8b\x08"  # gzip id bytes, then deflate

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImageSource:
    parts: tuple[PartRef, ...]
    key: bytes
    iv: bytes
    digest: str  # hex SHA1 of the tar stream
    size: int | None = None  # raw image size, when known
    bundled_size: int | None = None


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
    pool = BufferPool(PART_SIZE + 32)
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
