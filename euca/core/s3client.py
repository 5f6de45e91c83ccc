"""A small S3 client over httpx for euca's own needs: read an object, check one exists, create a bucket,
upload a file, presign a GET. Path-style addressing, SigV4 (euca.protocol.sigv4's client side).

The CLC uses it to read a bundle manifest from Walrus as the caller (so Walrus, not the CLC, decides what
the caller may read); `euca upload-bundle` uses it to upload parts. It knows nothing of Walrus' insides: a
role reaches another only over HTTP.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from euca.protocol.errors import CodedError
from euca.protocol.sigv4 import EMPTY_SHA256, SigningKey, presign_url, sign_request, uri_encode

UPLOAD_CHUNK = 1024 * 1024
MAX_ERROR_BODY = 65536
_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,2000})</Message>")
# What a HEAD (which has no body) most likely meant, by status.
_HEAD_CODES = {403: "AccessDenied", 404: "NotFound", 301: "PermanentRedirect", 400: "BadRequest"}

Progress = Callable[[int], None]


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
