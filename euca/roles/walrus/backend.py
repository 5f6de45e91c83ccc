"""Object bytes in an external S3-compatible cluster (walrus.backend = "s3"), as Eucalyptus 4's object
gateway kept them in Ceph RGW or Riak CS: Walrus keeps its whole S3 front end and its metadata, and each
object or part file of the disk store becomes one object of the backend bucket, keyed by its storage id.

- Writes stream: the body goes to the backend as it is read (hashed on the way, a thread hop per ~1 MiB), with
  the announced length when there is one; a body that is short, too large or not what was signed makes the
  stream raise, which cuts the PUT short, so the backend keeps nothing. A PUT the backend acknowledged is
  durable there: only then is the storage id handed to the commit (the commit rule of the disk store).
- Reads stream a GET with a Range per piece; a piece that is gone (404) sends the GET back to the metadata.
- Copies that need no hash (a multipart object concatenated from its parts) move inside the backend:
  CreateMultipartUpload + UploadPartCopy of each range + Complete, when the backend's part-size floor allows
  it (every range but the last at least BACKEND_MIN_PART); otherwise, and for copies that hash (CopyObject,
  UploadPartCopy into Walrus), the bytes stream through Walrus, never held whole.
- The in-flight registry is the disk store's (ByteStore); there is no cross-process lock on a backend object,
  so the sweep (sweep.py) takes only unreferenced objects older than SWEEP_MIN_AGE: a write not committed by
  INFLIGHT_MAX after it was placed is refused (its commit never runs), so such an object can never become
  referenced.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import httpx
import trio

from euca.core.config import WalrusConfig
from euca.core.s3client import S3Client, S3ClientError
from euca.protocol.s3 import S3Error
from euca.protocol.sigv4 import SigningKey
from euca.roles.walrus.storage import (
    BATCH,
    INFLIGHT_MAX,
    INLINE_MAX,
    BodyStream,
    ByteStore,
    Checksum,
    Source,
    Storage,
    Written,
)

log = logging.getLogger("euca.walrus")

# S3's (and most backends') floor for every part of a multipart upload but the last.
BACKEND_MIN_PART = 5 * 1024 * 1024
# An unreferenced backend object younger than this may still be a write in flight in some process.
SWEEP_MIN_AGE = 2 * INFLIGHT_MAX
READ_CHUNK = 256 * 1024
# A chunk at least this large is hashed in a worker thread (off the event loop).
THREAD_HASH_MIN = 256 * 1024


def backend_failed(e: S3ClientError) -> S3Error:
    """A backend failure as the client sees it: ours (503 SlowDown lets SDKs retry), never the backend's
    own error document."""
    log.warning("object backend: %s", e)
    return S3Error("ServiceUnavailable", "The object store backend is not available; try again.")


class _ChunkStream:
    """A BodyStream over an async iterator of chunks (a copy's sources read from the backend)."""

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._chunks = chunks
        self._left = b""

    async def read(self, max_bytes: int = BATCH) -> bytes:
        if not self._left:
            try:
                self._left = await self._chunks.__anext__()
            except StopAsyncIteration:
                return b""
        out, self._left = self._left[:max_bytes], self._left[max_bytes:]
        return out


class RangeBody:
    """A GET response body: the backend ranges, streamed one after the other. The first is opened before
    the response starts (so a gone object is a retry, not a cut); `aclose` closes whatever is open."""

    def __init__(self, backend: S3Backend, first: httpx.Response, rest: list[tuple[str, int, int]]):
        self._backend = backend
        self._current: httpx.Response | None = first
        self._rest = rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while self._current is not None:
                async for chunk in self._current.aiter_raw(READ_CHUNK):
                    yield chunk
                await self._current.aclose()
                self._current = None
                if self._rest:
                    storage_id, offset, length = self._rest.pop(0)
                    self._current = await self._backend.open_range(storage_id, offset, length)
        except S3ClientError as e:
            # Mid-body: the status line is gone, so the connection is cut (the client sees a short body).
            raise backend_failed(e) from e
        except httpx.HTTPError as e:
            raise backend_failed(S3ClientError("ConnectionError", str(e))) from e

    async def aclose(self) -> None:
        if self._current is not None:
            await self._current.aclose()
            self._current = None


class S3Backend(ByteStore):
    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, bucket: str, region: str = "us-east-1"
    ):
        super().__init__()
        self.bucket = bucket
        self.endpoint = endpoint
        # No overall timeout (bodies stream for as long as they take); connect and idle reads are bounded.
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=60.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self.client = S3Client(self.http, endpoint, SigningKey(access_key, secret_key, region, "s3"))

    def describe(self) -> str:
        return f"s3 {self.endpoint}/{self.bucket}"

    async def setup(self) -> int:
        """Create the backend bucket if it is not there (one the credentials own already is fine)."""
        if not await self.client.bucket_exists(self.bucket):
            await self.client.create_bucket(self.bucket)
        return 0

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- writing ------------------------------------------------------------------------------------------

    async def write_stream(
        self,
        stream: BodyStream,
        algorithm: str | None,
        *,
        expected_size: int | None = None,
        max_size: int | None = None,
        inline: bool = False,
    ) -> Written:
        md5 = hashlib.md5()
        checksum = Checksum(algorithm) if algorithm else None
        if inline and expected_size is not None and expected_size <= INLINE_MAX:
            return await Storage._read_inline(stream, md5, checksum, expected_size)
        defer = getattr(stream, "defer_hash", None)
        sha256 = defer() if defer is not None else None
        check = getattr(stream, "check_hash", None) if sha256 is not None else None
        size = 0

        def absorb(chunks: list[bytes]) -> None:
            for chunk in chunks:
                md5.update(chunk)
                if checksum is not None:
                    checksum.update(chunk)
                if sha256 is not None:
                    sha256.update(chunk)

        async def body() -> AsyncIterator[bytes]:
            nonlocal size
            while True:
                chunk = await stream.read(BATCH)
                if not chunk:
                    break
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise S3Error("EntityTooLarge", ProposedSize=str(size), MaxSizeAllowed=str(max_size))
                if expected_size is not None and size > expected_size:
                    raise S3Error("IncompleteBody")
                if len(chunk) >= THREAD_HASH_MIN:
                    await trio.to_thread.run_sync(absorb, [chunk])
                else:
                    absorb([chunk])  # a thread hop costs more than hashing a small chunk here
                yield chunk
            if expected_size is not None and size != expected_size:
                raise S3Error("IncompleteBody")
            if check is not None:
                check()  # not what was signed: the PUT is cut before its last byte, nothing is stored

        storage_id = uuid.uuid4().hex
        await self._put(storage_id, body(), expected_size)
        return Written(storage_id, size, md5.hexdigest(), checksum)

    async def _put(self, storage_id: str, body: AsyncIterable[bytes], size: int | None) -> None:
        try:
            await self.client.put_stream(self.bucket, storage_id, body, size)
        except S3ClientError as e:
            raise backend_failed(e) from e
        except BaseException:
            # The body raised (or we were cancelled): the PUT was cut short, but a backend that stored a
            # chunked body anyway is cleaned here (or by the sweep).
            with trio.CancelScope(shield=True):
                await self.delete_quietly(storage_id)
            raise
        self._track(storage_id, -1)

    async def copy(
        self, sources: list[Source], algorithm: str | None, hash_md5: bool = True, inline: bool = False
    ) -> Written:
        total = sum(length for _, _, length in sources)
        if inline and total <= INLINE_MAX:
            md5 = hashlib.md5()
            checksum = Checksum(algorithm) if algorithm else None
            data = b"".join([chunk async for chunk in self._chunks(sources)])
            md5.update(data)
            if checksum is not None:
                checksum.update(data)
            return Written(None, len(data), md5.hexdigest(), checksum, data)
        if not hash_md5 and algorithm is None and self._server_side(sources):
            return await self._copy_in_backend(sources, total)
        return await self.write_stream(_ChunkStream(self._chunks(sources)), algorithm, expected_size=total)

    @staticmethod
    def _server_side(sources: list[Source]) -> bool:
        return all(isinstance(src, str) for src, _, _ in sources) and all(
            length >= BACKEND_MIN_PART for _, _, length in sources[:-1]
        )

    async def _copy_in_backend(self, sources: list[Source], total: int) -> Written:
        storage_id = uuid.uuid4().hex
        try:
            upload = await self.client.create_multipart(self.bucket, storage_id)
            try:
                etags = []
                for n, (src, offset, length) in enumerate(sources, 1):
                    assert isinstance(src, str)
                    etags.append(
                        await self.client.upload_part_copy(
                            self.bucket, storage_id, upload, n, src, offset, length
                        )
                    )
                await self.client.complete_multipart(self.bucket, storage_id, upload, etags)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._abort_quietly(storage_id, upload)
                raise
        except S3ClientError as e:
            raise backend_failed(e) from e
        self._track(storage_id, -1)
        return Written(storage_id, total, hashlib.md5().hexdigest(), None)

    async def _chunks(self, sources: list[Source]) -> AsyncIterator[bytes]:
        for src, offset, length in sources:
            if isinstance(src, bytes):
                data = src[offset : offset + length]
                if len(data) != length:
                    raise S3Error("InternalError", "source shorter than recorded")
                yield data
                continue
            response = await self.open_range(src, offset, length)
            try:
                async for chunk in response.aiter_raw(BATCH):
                    yield chunk
            finally:
                await response.aclose()

    # -- reading and removing -------------------------------------------------------------------------------

    async def open_range(self, storage_id: str, offset: int, length: int) -> httpx.Response:
        try:
            return await self.client.open_range(self.bucket, storage_id, offset, length)
        except S3ClientError as e:
            if e.code in ("NoSuchKey", "NotFound"):
                raise S3Error("InternalError", f"object data {storage_id} is gone") from e
            raise backend_failed(e) from e

    async def open_stream(self, sources: list[tuple[str, int, int]]) -> AsyncIterable[bytes] | None:
        pieces = [s for s in sources if s[2] > 0]
        if not pieces:
            return _empty()
        storage_id, offset, length = pieces[0]
        try:
            first = await self.client.open_range(self.bucket, storage_id, offset, length)
        except S3ClientError as e:
            if e.code in ("NoSuchKey", "NotFound"):
                return None
            raise backend_failed(e) from e
        return RangeBody(self, first, pieces[1:])

    async def remove(self, storage_ids: list[str]) -> None:
        self.release(storage_ids)
        for storage_id in storage_ids:
            if storage_id:
                await self.delete_quietly(storage_id)

    async def delete_quietly(self, storage_id: str) -> None:
        """Remove one backend object; a failure is logged and left to the sweep."""
        try:
            await self.client.delete_object(self.bucket, storage_id)
        except S3ClientError as e:
            log.warning("cannot remove backend object %s: %s", storage_id, e)

    async def _abort_quietly(self, storage_id: str, upload: str) -> None:
        try:
            await self.client.abort_multipart(self.bucket, storage_id, upload)
        except S3ClientError as e:
            log.warning("cannot abort backend upload %s of %s: %s", upload, storage_id, e)

    async def listed(self) -> dict[str, tuple[int, float]]:
        """Every object of the backend bucket named like a storage id: id -> (size, last modified)."""
        found: dict[str, tuple[int, float]] = {}
        async for item in self.client.list_objects(self.bucket):
            if len(item.key) == 32 and all(c in "0123456789abcdef" for c in item.key):
                found[item.key] = (item.size, item.last_modified)
        return found


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""


def open_byte_store(cfg: WalrusConfig, objects_dir: Path) -> ByteStore:
    """The byte store a WalrusConfig names: the disk under objects_dir (default) or an S3 backend."""
    if cfg.backend != "s3":
        return Storage(objects_dir)
    return S3Backend(
        cfg.backend_endpoint,
        cfg.backend_access_key,
        cfg.backend_secret_key,
        cfg.backend_bucket,
        cfg.backend_region,
    )
