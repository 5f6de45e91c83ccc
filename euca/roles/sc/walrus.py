"""The SC's S3 requests to Walrus for snapshots: chunks and manifests in the system account's bucket.

The SC reaches Walrus as any S3 client does (a role reaches another only over HTTP), signed with the
system account's key the CLC hands it in each snapshot message (cluster.SnapshotStore). A chunk is PUT with
its SHA-256 as the signed payload hash, so Walrus itself checks every byte arrived; a chunk read back is
hashed again before it is written into a volume.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from euca.core.s3client import MAX_ERROR_BODY, S3ClientError, object_url
from euca.protocol import snapshot_manifest as sm
from euca.protocol.cluster import SnapshotStore
from euca.protocol.sigv4 import EMPTY_SHA256, SigningKey, sign_request

TIMEOUT = httpx.Timeout(120.0, connect=10.0)
_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,2000})</Message>")
_CONTENTS = re.compile(rb"<Contents>(.*?)</Contents>", re.S)
_KEY = re.compile(rb"<Key>([^<]*)</Key>")
_SIZE = re.compile(rb"<Size>(\d+)</Size>")
_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_TRUNCATED = re.compile(rb"<IsTruncated>true</IsTruncated>")


def _error(response: httpx.Response) -> S3ClientError:
    body = response.content[:MAX_ERROR_BODY]
    code = _CODE.search(body)
    message = _MESSAGE.search(body)
    return S3ClientError(
        code.group(1).decode("utf-8", "replace") if code else f"HTTP{response.status_code}",
        message.group(1).decode("utf-8", "replace") if message else response.reason_phrase,
        response.status_code,
    )


@dataclass(frozen=True)
class Listed:
    key: str
    size: int


class SnapshotBucket:
    """The snapshot bucket as the system account sees it."""

    def __init__(self, http: httpx.AsyncClient, store: SnapshotStore):
        self.http = http
        self.bucket = store.bucket
        self.endpoint = store.endpoint.rstrip("/")
        self.key = SigningKey(store.access_key_id, store.secret_key, store.region, "s3")

    async def _send(
        self,
        method: str,
        key: str = "",
        *,
        query: str = "",
        body: bytes = b"",
        payload_hash: str = EMPTY_SHA256,
    ) -> httpx.Response:
        url = object_url(self.endpoint, self.bucket, key) + (f"?{query}" if query else "")
        extra = [("Content-Length", str(len(body)))] if method == "PUT" else []
        headers = sign_request(
            method, url, self.key, headers=extra, payload_hash=payload_hash, now=time.time()
        )
        try:
            return await self.http.request(method, url, headers=headers, content=body or None)
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"{method} {url}: {e}") from e

    async def ensure(self) -> None:
        """The bucket exists (made private, the system account's, on first use)."""
        response = await self._send("PUT")
        if response.status_code != 200:
            error = _error(response)
            if error.code != "BucketAlreadyOwnedByYou":
                raise error

    async def exists(self) -> bool:
        response = await self._send("HEAD")
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise S3ClientError(f"HTTP{response.status_code}", f"HEAD {self.bucket}", response.status_code)
        return True

    async def put(self, key: str, data: bytes, digest: str | None = None) -> None:
        digest = digest or hashlib.sha256(data).hexdigest()
        response = await self._send("PUT", key, body=data, payload_hash=digest)
        if response.status_code != 200:
            raise _error(response)

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        url = object_url(self.endpoint, self.bucket, key)
        headers = sign_request("GET", url, self.key, payload_hash=EMPTY_SHA256, now=time.time())
        try:
            async with self.http.stream("GET", url, headers=headers) as response:
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > max_bytes + MAX_ERROR_BODY:
                        raise S3ClientError("EntityTooLarge", f"{key} is larger than {max_bytes} bytes")
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    code = _CODE.search(bytes(body[:MAX_ERROR_BODY]))
                    raise S3ClientError(
                        code.group(1).decode("utf-8", "replace") if code else f"HTTP{response.status_code}",
                        f"GET {key}: HTTP {response.status_code}",
                        response.status_code,
                    )
                if len(body) > max_bytes:
                    raise S3ClientError("EntityTooLarge", f"{key} is larger than {max_bytes} bytes")
                return bytes(body)
        except httpx.HTTPError as e:
            raise S3ClientError("ConnectionError", f"GET {url}: {e}") from e

    async def delete(self, key: str) -> None:
        response = await self._send("DELETE", key)
        if response.status_code not in (200, 204, 404):
            raise _error(response)

    async def list(self, prefix: str) -> list[Listed]:
        """Every key under `prefix` with its size (ListObjectsV2, page by page)."""
        found: list[Listed] = []
        token: str | None = None
        while True:
            query = f"list-type=2&max-keys=1000&prefix={quote(prefix, safe='')}"
            if token:
                query += f"&continuation-token={quote(token, safe='')}"
            response = await self._send("GET", query=query)
            if response.status_code != 200:
                raise _error(response)
            body = response.content
            for contents in _CONTENTS.findall(body):
                key, size = _KEY.search(contents), _SIZE.search(contents)
                if key is not None:
                    found.append(Listed(key.group(1).decode(), int(size.group(1)) if size else 0))
            more = _TOKEN.search(body)
            if not _TRUNCATED.search(body) or more is None:
                return found
            token = more.group(1).decode()

    async def manifest(self, snapshot_id: str) -> sm.SnapshotManifest | None:
        data = await self.get(sm.manifest_key(snapshot_id), max_bytes=sm.MAX_MANIFEST_BYTES)
        return None if data is None else sm.decode(data)
