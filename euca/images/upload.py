"""Client side of getting a bundle into the cloud: upload its parts and manifest to Walrus, register it.

What `euca upload-bundle`, `euca register` and `euca install-image` run (euca.images.cli holds the click
commands). Parts go up first, then the manifest, so a manifest in a bucket always describes parts that are
there (as euca2ools). Files stream from disk: memory stays bounded whatever the bundle's size.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import trio

from euca.core.s3client import S3Client, S3ClientError
from euca.protocol.bundle import BundleError, parse_manifest
from euca.protocol.errors import CodedError
from euca.protocol.sigv4 import SigningKey, sign_request

UPLOAD_CONCURRENCY = 4
EC2_API_VERSION = "2016-11-15"
_IMAGE_ID = re.compile(rb"<imageId>([^<]+)</imageId>")
_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


class UploadError(Exception):
    """The bundle on disk is not complete, or the cloud refused something (message says what)."""


class Ec2ApiError(CodedError):
    """An EC2 error answer to the image tools' calls, or a failure to reach the API (status 0)."""

    default_status = 0


@dataclass(frozen=True)
class BundleFiles:
    manifest: Path
    parts: tuple[Path, ...]

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.parts) + self.manifest.stat().st_size


def bundle_files(manifest_path: Path, directory: Path | None = None) -> BundleFiles:
    """The manifest and the part files it lists (in `directory`, by default the manifest's), all present."""
    try:
        manifest = parse_manifest(manifest_path.read_bytes())
    except OSError as e:
        raise UploadError(f"cannot read the manifest {manifest_path}: {e.strerror}") from e
    except BundleError as e:
        raise UploadError(f"{manifest_path} is not a bundle manifest: {e}") from e
    directory = directory or manifest_path.parent
    parts = tuple(directory / p.filename for p in manifest.parts)
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise UploadError(f"parts missing next to the manifest: {', '.join(missing[:5])}")
    return BundleFiles(manifest_path, parts)


def split_bucket(value: str) -> tuple[str, str]:
    """`bucket` or `bucket/prefix/` (euca2ools' -b) -> (bucket, key prefix ending in / or empty)."""
    bucket, _, prefix = value.strip("/").partition("/")
    if not bucket:
        raise UploadError("a bucket name is needed")
    return bucket, (prefix.strip("/") + "/") if prefix.strip("/") else ""


async def upload_bundle(
    s3: S3Client,
    bucket: str,
    prefix: str,
    files: BundleFiles,
    *,
    create_bucket: bool = True,
    concurrency: int = UPLOAD_CONCURRENCY,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Upload the parts (`concurrency` at a time), then the manifest; returns the ImageLocation
    `bucket/prefix<name>.manifest.xml` to register."""
    if create_bucket and not await s3.bucket_exists(bucket):
        await s3.create_bucket(bucket)
    limiter = trio.CapacityLimiter(concurrency)
    failures: list[S3ClientError] = []

    async def put(path: Path, cancel: trio.CancelScope) -> None:
        async with limiter:
            try:
                await s3.put_file(bucket, prefix + path.name, path, progress=progress)
            except S3ClientError as e:
                # The first failure stops the rest and is what the user sees (not a group of them).
                failures.append(e)
                cancel.cancel()

    async with trio.open_nursery() as nursery:
        for part in files.parts:
            nursery.start_soon(put, part, nursery.cancel_scope)
    if failures:
        raise failures[0]
    await s3.put_file(
        bucket, prefix + files.manifest.name, files.manifest, progress=progress, content_type="text/xml"
    )
    return f"{bucket}/{prefix}{files.manifest.name}"


async def ec2_call(
    http: httpx.AsyncClient, url: str, key: SigningKey, action: str, params: dict[str, str]
) -> bytes:
    """One EC2 Query API call (form POST, SigV4); the response body, or Ec2ApiError."""
    body = urlencode({"Action": action, "Version": EC2_API_VERSION, **params}).encode()
    headers = sign_request(
        "POST",
        url,
        key,
        headers=[("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
        payload_hash=hashlib.sha256(body).hexdigest(),
        now=time.time(),
    )
    try:
        response = await http.post(url, content=body, headers=headers)
    except httpx.HTTPError as e:
        raise Ec2ApiError("ConnectionError", f"{url}: {e}") from e
    if response.status_code != 200:
        code = _CODE.search(response.content)
        message = _MESSAGE.search(response.content)
        raise Ec2ApiError(
            code.group(1).decode() if code else f"HTTP{response.status_code}",
            message.group(1).decode() if message else response.text[:200],
            response.status_code,
        )
    return response.content


async def register_bundle(
    http: httpx.AsyncClient,
    ec2_url: str,
    key: SigningKey,
    location: str,
    name: str,
    *,
    architecture: str | None = None,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    description: str | None = None,
    virtualization_type: str | None = None,
) -> str:
    """RegisterImage for an uploaded bundle; the new image id."""
    params = {"ImageLocation": location, "Name": name}
    for field, value in (
        ("Architecture", architecture),
        ("KernelId", kernel_id),
        ("RamdiskId", ramdisk_id),
        ("Description", description),
        ("VirtualizationType", virtualization_type),
    ):
        if value:
            params[field] = value
    body = await ec2_call(http, ec2_url, key, "RegisterImage", params)
    found = _IMAGE_ID.search(body)
    if found is None:
        raise Ec2ApiError("MalformedResponse", "RegisterImage answered without an imageId", 200)
    return found.group(1).decode()
