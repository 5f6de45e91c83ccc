"""A small S3 client over httpx for euca's own needs: read an object, check one exists, create a bucket,
upload a file, presign a GET. Path-style addressing, SigV4 (euca.protocol.sigv4's client side).

The CLC uses it to read a bundle manifest from Walrus as the caller (so Walrus, not the CLC, decides what
the caller may read); `euca upload-bundle` uses it to upload parts; Walrus's "s3" backend (walrus/backend.py)
uses its streamed calls (put a stream, open a range, delete, list, server-side multipart copy) to keep object
bytes in an external S3-compatible cluster. It knows nothing of Walrus' insides: a
role reaches another only over HTTP.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
import trio

from euca.protocol.errors import CodedError
from euca.protocol.sigv4 import EMPTY_SHA256, SigningKey, presign_url, sign_request, uri_encode

UPLOAD_CHUNK = 1024 * 1024
MAX_ERROR_BODY = 65536
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,2000})</Message>")
# What a HEAD (which has no body) most likely meant, by status.
_HEAD_CODES = {403: "AccessDenied", 404: "NotFound", 301: "PermanentRedirect", 400: "BadRequest"}

_CONTENTS = re.compile(rb"<Contents>(.*?)</Contents>", re.S)
_FIELD = {
    name: re.compile(rb"<" + name.encode() + rb">([^<]*)</" + name.encode() + rb">")
    for name in ("Key", "Size", "LastModified", "NextContinuationToken", "IsTruncated", "UploadId", "ETag")
}

Progress = Callable[[int], None]


def _field(name: str, body: bytes) -> str | None:
    m = _FIELD[name].search(body)
    return _unescape(m.group(1).decode()) if m else None


def _unescape(text: str) -> str:
    return (
        text.replace("&quot;", '"').replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">")
    ).replace("&amp;", "&")


def _iso_time(text: str) -> float:
    """Seconds since the epoch of an S3 ISO 8601 timestamp (2026-12-02T23:30:00.000Z)."""
    return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    last_modified: float  # seconds since the epoch


class S3ClientError(CodedError):
    """An S3 error answer (status, code and message as the server sent them) or a failure on this side
    (status 0: "ConnectionError", "EntityTooLarge", "FileChanged")."""

    default_status = 0

    def __str__(self) -> str:
        return f"{self.code} (HTTP {self.status}): {self.message}" if self.status else super().__str__()


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str


def _error(response: httpx.Response, body: bytes) -> S3ClientError:
    code = _CODE.search(body)
    message = _MESSAGE.search(body)
    return S3ClientError(
        code.group(1).decode("utf-8", "replace") if code else _HEAD_CODES.get(response.status_code, "Error"),
        message.group(1).decode("utf-8", "replace") if message else response.reason_phrase,
        response.status_code,
    )


def object_url(endpoint: str, bucket: str, key: str = "") -> str:
    """Path-style URL of a bucket or object under an S3 endpoint (which may carry a path prefix)."""
    url = f"{endpoint.rstrip('/')}/{uri_encode(bucket)}"
    if key:
        url += "/" + uri_encode(key, keep_slash=True)
    return url


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class S3Client:
    """S3 requests signed as one access key. `endpoint` is the service URL, with any path prefix
    (http://host:8773/services/objectstorage); `http` is the caller's httpx.AsyncClient (its timeouts apply)."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str, key: SigningKey):
        self.http = http
        self.endpoint = endpoint.rstrip("/")
        self.key = key

    def url(self, bucket: str, key: str = "") -> str:
        return object_url(self.endpoint, bucket, key)

    def presign_get(self, bucket: str, key: str, *, expires: int, now: float | None = None) -> str:
        return presign_url(
            "GET", self.url(bucket, key), self.key, expires=expires, now=time.time() if now is None else now
        )

    def _headers(
        self,
        method: str,
        url: str,
        payload_hash: str = EMPTY_SHA256,
        extra: list[tuple[str, str]] | None = None,
    ) -> list[tuple[str, str]]:
        return sign_request(
            method, url, self.key, headers=extra or [], payload_hash=payload_hash, now=time.time()
        )

    async def get_object(self, bucket: str, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; S3ClientError "EntityTooLarge" (status 0) past `max_bytes` without reading on."""
        url = self.url(bucket, key)
        try:
            async with self.http.stream("GET", url, headers=self._headers("GET", url)) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if response.status_code != 200 and len(body) > MAX_ERROR_BODY:
                        break  # an error document is small: its code and message come first
                    if response.status_code == 200 and len(body) > max_bytes:
                        raise S3ClientError(
                            "EntityTooLarge", f"s3://{bucket}/{key} is larger than {max_bytes} bytes"
                        )
                if response.status_code != 200:
                    raise _error(response, bytes(body[:MAX_ERROR_BODY]))
                return bytes(body)
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"{url}: {e}") from e

    async def head_object(self, bucket: str, key: str) -> ObjectInfo:
        url = self.url(bucket, key)
        try:
            response = await self.http.head(url, headers=self._headers("HEAD", url))
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"{url}: {e}") from e
        if response.status_code != 200:
            raise _error(response, b"")
        return ObjectInfo(int(response.headers.get("content-length", "0")), response.headers.get("etag", ""))

    async def bucket_exists(self, bucket: str) -> bool:
        """True if the bucket exists and is ours to use, False if it does not exist; S3ClientError otherwise."""
        url = self.url(bucket)
        try:
            response = await self.http.head(url, headers=self._headers("HEAD", url))
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"{url}: {e}") from e
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise _error(response, b"")
        return True

    async def create_bucket(self, bucket: str) -> None:
        """Create the bucket; one the caller already owns is fine."""
        url = self.url(bucket)
        try:
            response = await self.http.put(url, headers=self._headers("PUT", url))
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"{url}: {e}") from e
        if response.status_code == 200:
            return
        error = _error(response, response.content[:MAX_ERROR_BODY])
        if error.code != "BucketAlreadyOwnedByYou":
            raise error

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        progress: Progress | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Upload a file, streamed from disk (read twice: once for the SHA-256 the signature covers)."""
        size = os.path.getsize(path)
        payload_hash = await trio.to_thread.run_sync(_file_sha256, path)
        url = self.url(bucket, key)
        extra = [("Content-Length", str(size))]
        if content_type:
            extra.append(("Content-Type", content_type))

        async def body() -> AsyncIterator[bytes]:
            async with await trio.open_file(path, "rb") as f:
                sent = 0
                while sent < size:
                    chunk = await f.read(min(UPLOAD_CHUNK, size - sent))
                    if not chunk:
                        raise S3ClientError("FileChanged", f"{path} shrank while it was being uploaded")
                    sent += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk

        try:
            response = await self.http.put(
                url, headers=self._headers("PUT", url, payload_hash, extra), content=body()
            )
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"{url}: {e}") from e
        if response.status_code != 200:
            raise _error(response, response.content[:MAX_ERROR_BODY])
        return ObjectInfo(size, response.headers.get("etag", ""))

    # -- streamed calls (Walrus's s3 backend) ---------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        extra: list[tuple[str, str]] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        payload_hash: str = EMPTY_SHA256,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """One request, its body read whole (small answers only); S3ClientError unless its status is in ok."""
        try:
            response = await self.http.request(
                method, url, headers=self._headers(method, url, payload_hash, extra), content=content
            )
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"{method} {url}: {e}") from e
        if response.status_code not in ok:
            raise _error(response, response.content[:MAX_ERROR_BODY])
        return response

    async def put_stream(
        self, bucket: str, key: str, body: AsyncIterable[bytes], size: int | None
    ) -> ObjectInfo:
        """Upload an object from an async stream of chunks, never held whole (payload UNSIGNED-PAYLOAD: the
        caller hashes what it sends). With `size` None the body goes chunked. An exception the stream raises
        cuts the request short, so the server stores nothing."""
        url = self.url(bucket, key)
        extra = [("Content-Length", str(size))] if size is not None else []
        response = await self._send("PUT", url, extra=extra, content=body, payload_hash=UNSIGNED_PAYLOAD)
        return ObjectInfo(size or 0, response.headers.get("etag", ""))

    async def open_range(self, bucket: str, key: str, offset: int, length: int) -> httpx.Response:
        """A streamed GET of [offset, offset+length) of an object; the caller reads it with aiter_bytes and
        must aclose() it. S3ClientError NoSuchKey (404) when the object is gone."""
        url = self.url(bucket, key)
        extra = [("Range", f"bytes={offset}-{offset + length - 1}")] if length else []
        request = self.http.build_request("GET", url, headers=self._headers("GET", url, EMPTY_SHA256, extra))
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"GET {url}: {e}") from e
        if response.status_code not in (200, 206):
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            raise _error(response, body[:MAX_ERROR_BODY])
        return response

    async def delete_object(self, bucket: str, key: str) -> None:
        """Delete an object; one already gone is fine (S3 answers 204 either way)."""
        await self._send("DELETE", self.url(bucket, key), ok=(200, 204, 404))

    async def list_objects(self, bucket: str, prefix: str = "") -> AsyncIterator[ListedObject]:
        """Every object under `prefix`, a page (ListObjectsV2, 1000 keys) at a time."""
        token: str | None = None
        while True:
            query = f"list-type=2&max-keys=1000&prefix={uri_encode(prefix)}"
            if token is not None:
                query += f"&continuation-token={uri_encode(token)}"
            response = await self._send("GET", f"{self.url(bucket)}?{query}")
            body = response.content
            for m in _CONTENTS.finditer(body):
                item = m.group(1)
                yield ListedObject(
                    _field("Key", item) or "",
                    int(_field("Size", item) or 0),
                    _iso_time(_field("LastModified", item) or "1970-01-01T00:00:00"),
                )
            token = _field("NextContinuationToken", body)
            if _field("IsTruncated", body) != "true" or not token:
                return

    async def create_multipart(self, bucket: str, key: str) -> str:
        response = await self._send("POST", self.url(bucket, key) + "?uploads=")
        upload_id = _field("UploadId", response.content)
        if not upload_id:
            raise S3ClientError("InternalError", "CreateMultipartUpload answered no UploadId")
        return upload_id

    async def upload_part_copy(
        self, bucket: str, key: str, upload_id: str, part: int, source_key: str, offset: int, length: int
    ) -> str:
        """UploadPartCopy of [offset, offset+length) of another object of the same bucket: the bytes move
        inside the backend. Returns the part's ETag."""
        url = f"{self.url(bucket, key)}?partNumber={part}&uploadId={uri_encode(upload_id)}"
        extra = [
            ("x-amz-copy-source", f"/{uri_encode(bucket)}/{uri_encode(source_key, keep_slash=True)}"),
            ("x-amz-copy-source-range", f"bytes={offset}-{offset + length - 1}"),
        ]
        response = await self._send("PUT", url, extra=extra)
        etag = _field("ETag", response.content)
        if etag is None:
            raise _error(response, response.content[:MAX_ERROR_BODY])  # a 200 carrying an error document
        return etag

    async def complete_multipart(self, bucket: str, key: str, upload_id: str, etags: list[str]) -> None:
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
            for n, etag in enumerate(etags, 1)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        url = f"{self.url(bucket, key)}?uploadId={uri_encode(upload_id)}"
        response = await self._send("POST", url, content=body, payload_hash=hashlib.sha256(body).hexdigest())
        if b"<Error>" in response.content[:512]:
            raise _error(response, response.content[:MAX_ERROR_BODY])  # S3 may fail a completion with a 200

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        url = f"{self.url(bucket, key)}?uploadId={uri_encode(upload_id)}"
        await self._send("DELETE", url, ok=(200, 204, 404))
