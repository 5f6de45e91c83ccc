"""euca.core.s3client and euca.images.upload against a loopback HttpServer that checks every request's SigV4
signature with euca's own verifier and keeps objects in a dict."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import trio

from euca.core.config import HttpLimits
from euca.core.http import HttpServer, Request, Response
from euca.core.pki import CloudCA
from euca.core.s3client import S3Client, S3ClientError
from euca.images.bundler import bundle_image
from euca.images.upload import UploadError, bundle_files, split_bucket, upload_bundle
from euca.protocol import bundle as b
from euca.protocol import sigv4, sigv4_verify

KEY = sigv4.SigningKey("AKIDTEST", "secret/key+test", "eucalyptus", "s3")
PREFIX = "/services/objectstorage"


def _error(status: int, code: str) -> Response:
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{code} here</Message></Error>"
    return Response(status, [("Content-Type", "application/xml")], body.encode())


class FakeS3:
    """Just enough S3 to test a client: buckets, PUT/GET/HEAD objects, one forbidden key, a huge error body."""

    def __init__(self) -> None:
        self.buckets: set[str] = {"existing"}
        self.objects: dict[str, bytes] = {}
        self.log: list[tuple[str, str]] = []
        self.port = 0

    async def handle(self, request: Request) -> Response:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers.raw]
        body = await request.body.read_all(64 * 1024 * 1024)
        try:
            parsed = sigv4_verify.parse_header_auth(
                request.method, request.path, request.query, headers, service="s3", now=time.time()
            )
            parsed.verify(KEY.secret_key)
        except sigv4.SignatureError as e:
            return _error(e.status, e.code)
        if parsed.payload_hash != hashlib.sha256(body).hexdigest():
            return _error(400, "XAmzContentSHA256Mismatch")
        assert request.path.startswith(PREFIX + "/")
        bucket, _, key = unquote(request.path[len(PREFIX) + 1 :]).partition("/")
        self.log.append((request.method, f"{bucket}/{key}"))
        if key == "forbidden":
            return _error(403, "AccessDenied")
        if key == "huge-error":
            return Response(500, [], b"<Error><Code>InternalError</Code>" + b"x" * (1 << 20) + b"</Error>")
        if not key:
            if request.method == "PUT":
                if bucket in self.buckets:
                    return _error(409, "BucketAlreadyOwnedByYou")
                self.buckets.add(bucket)
                return Response(200, [], b"")
            return Response(200 if bucket in self.buckets else 404, [], b"")
        if bucket not in self.buckets:
            return _error(404, "NoSuchBucket")
        name = f"{bucket}/{key}"
        if request.method == "PUT":
            assert request.headers.get("content-length") == str(len(body))
            self.objects[name] = body
            return Response(200, [("ETag", '"x"')], b"")
        if name not in self.objects:
            return _error(404, "NoSuchKey")
        if request.method == "HEAD":
            return Response(200, [("Content-Length", str(len(self.objects[name])))], b"")
        return Response(200, [], self.objects[name])


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeS3:
    s3 = FakeS3()
    s3.port = await nursery.start(HttpServer(s3.handle, "127.0.0.1", 0, HttpLimits()).serve)
    return s3


@pytest.fixture
async def client(fake: FakeS3) -> AsyncIterator[S3Client]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield S3Client(http, f"http://127.0.0.1:{fake.port}{PREFIX}", KEY)


async def test_put_get_head_and_errors(fake: FakeS3, client: S3Client, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "f").write_bytes(data)
    seen: list[int] = []
    info = await client.put_file("existing", "dir/a b+c.bin", tmp_path / "f", progress=seen.append)
    assert info.size == len(data) and sum(seen) == len(data)
    assert fake.objects["existing/dir/a b+c.bin"] == data
    assert await client.get_object("existing", "dir/a b+c.bin", max_bytes=len(data)) == data
    assert (await client.head_object("existing", "dir/a b+c.bin")).size == len(data)
    with pytest.raises(S3ClientError) as err:
        await client.get_object("existing", "dir/a b+c.bin", max_bytes=1024)
    assert err.value.code == "EntityTooLarge"
    with pytest.raises(S3ClientError) as err:
        await client.get_object("existing", "missing", max_bytes=10)
    assert (err.value.status, err.value.code) == (404, "NoSuchKey")
    with pytest.raises(S3ClientError) as err:
        await client.get_object("nobucket", "k", max_bytes=10)
    assert err.value.code == "NoSuchBucket"
    with pytest.raises(S3ClientError) as err:
        await client.head_object("existing", "forbidden")
    assert (err.value.status, err.value.code) == (403, "AccessDenied")
    with pytest.raises(S3ClientError) as err:
        await client.head_object("existing", "missing")
    assert err.value.code == "NotFound"
    with pytest.raises(S3ClientError) as err:
        await client.get_object("existing", "huge-error", max_bytes=10)
    assert (err.value.status, err.value.code) == (500, "InternalError")


async def test_buckets(fake: FakeS3, client: S3Client) -> None:
    assert await client.bucket_exists("existing")
    assert not await client.bucket_exists("new")
    await client.create_bucket("new")
    await client.create_bucket("new")  # already ours: fine
    assert "new" in fake.buckets


async def test_unreachable_endpoint_is_a_connection_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        async with httpx.AsyncClient(timeout=5) as http:
            with pytest.raises(S3ClientError) as err:
                await S3Client(http, f"http://127.0.0.1:{port}", KEY).head_object("b", "k")
    assert (err.value.status, err.value.code) == (0, "ConnectionError")


async def test_upload_bundle_puts_parts_then_the_manifest(
    fake: FakeS3, client: S3Client, tmp_path: Path
) -> None:
    ca = CloudCA.load_or_create(tmp_path / "ca")
    key_pem, cert_pem = ca.issue("u")
    (tmp_path / "img").write_bytes(os.urandom(700 * 1024))
    result = bundle_image(
        tmp_path / "img",
        tmp_path / "bundle",
        user="000000000042",
        cloud_cert=ca.cert,
        user_cert=b.load_certificate(cert_pem),
        user_key=b.load_private_key(key_pem),
        part_size=128 * 1024,
    )
    files = bundle_files(result.manifest_path)
    assert files.parts == result.part_paths
    bucket, prefix = split_bucket("fresh/images/v2/")
    location = await upload_bundle(client, bucket, prefix, files, concurrency=2)
    assert location == "fresh/images/v2/img.manifest.xml"
    puts = [name for method, name in fake.log if method == "PUT" and "/" in name and not name.endswith("/")]
    assert puts[-1] == location and len(puts) == len(result.part_paths) + 1
    for part in result.part_paths:
        assert fake.objects[f"fresh/images/v2/{part.name}"] == part.read_bytes()

    result.part_paths[1].unlink()
    with pytest.raises(UploadError, match="parts missing"):
        bundle_files(result.manifest_path)
    with pytest.raises(UploadError, match="not a bundle manifest"):
        (tmp_path / "bad.xml").write_bytes(b"<nope/>")
        bundle_files(tmp_path / "bad.xml")


def test_split_bucket() -> None:
    assert split_bucket("b") == ("b", "")
    assert split_bucket("b/") == ("b", "")
    assert split_bucket("/b/p/q/") == ("b", "p/q/")
    with pytest.raises(UploadError):
        split_bucket("/")
