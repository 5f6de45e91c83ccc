"""core/auth.authenticate(): real boto3 requests (captured before sending, no server), a real Store on tmp_path."""

from __future__ import annotations

import base64
import hashlib
import time
import zlib
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from euca.core.auth import AuthError, BodyTooLarge, PayloadError, authenticate, authenticate_query
from euca.core.http import Headers, Request
from euca.core.identity import ADMIN_ACCOUNT, Identity
from euca.core.store import Store
from euca.protocol.ec2 import wire as ec2_wire


class MemoryBody:
    """A BodySource over bytes, handing them out in small reads like a socket would."""

    def __init__(self, data: bytes, step: int = 1000):
        self.data = data
        self.pos = 0
        self.step = step

    async def read(self, max_bytes: int = 262144) -> bytes:
        n = min(max_bytes, self.step)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    async def read_all(self, limit: int) -> bytes:
        """As euca.core.http_messages.Body.read_all: the rest, refused (ValueError) past `limit` bytes."""
        if len(self.data) - self.pos > limit:
            raise ValueError(f"request body larger than {limit} bytes")
        chunk, self.pos = self.data[self.pos :], len(self.data)
        return chunk


def make_request(method: str, url: str, headers, body: bytes = b"", raw_path: str | None = None) -> Request:
    split = urlsplit(url)
    items = headers.items() if hasattr(headers, "items") else headers
    raw = [
        (k.encode("latin-1"), (v.decode() if isinstance(v, bytes) else v).encode("latin-1")) for k, v in items
    ]
    if not any(k.lower() == b"host" for k, _ in raw):
        raw.append((b"Host", split.netloc.encode()))
    target = split.path + (f"?{split.query}" if split.query else "")
    request = Request(
        method=method,
        target=target,
        path=split.path,
        query=split.query,
        headers=Headers(raw),
        body=MemoryBody(body),  # type: ignore[arg-type]
        client=("127.0.0.1", 1),
    )
    if raw_path is not None:
        request.context["raw_path"] = raw_path
    return request


@pytest.fixture
def identity(tmp_path):
    store = Store(tmp_path / "state.db")
    ident = Identity(store)
    ident.ensure_admin()
    return ident


@pytest.fixture
def admin_key(identity):
    return next(k for k in identity.list_access_keys(ADMIN_ACCOUNT) if k.active)


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **kwargs):
        yield self.body


def capture_client(service: str, key, *, endpoint: str, secret: str | None = None, **config):
    client = boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=secret or key.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, **config),
    )
    sent: list = []
    # Query-API responses must parse; an empty element of the right namespace is enough.
    reply = b'<R xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"></R>' if service == "ec2" else b""

    def before_send(request, **kwargs):
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.append((request.method, request.url, headers, body or b""))
        return AWSResponse(request.url, 200, {}, _Raw(reply))

    client.meta.events.register("before-send", before_send)
    return client, sent


async def read_all(stream, n: int = 4096) -> bytes:
    out = []
    while True:
        chunk = await stream.read(n)
        if not chunk:
            return b"".join(out)
        out.append(chunk)


S3_PATH = {"s3": {"addressing_style": "path"}}


async def test_boto3_default_put_object_over_https_uses_unsigned_trailer(identity, admin_key):
    client, sent = capture_client("s3", admin_key, endpoint="https://s3.euca.test", **S3_PATH)
    data = b"payload " * 20000
    client.put_object(Bucket="bkt", Key="dir/a key.txt", Body=data)
    method, url, headers, body = sent[0]
    assert headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert "aws-chunked" in headers["Content-Encoding"]
    result = await authenticate(
        make_request(method, url, headers, body), identity, service="s3", region="euca"
    )
    assert result.principal == admin_key.principal and result.method == "sigv4-header"
    assert result.decoded_length == len(data)
    stream = result.payload(make_request(method, url, headers, body).body)
    assert await read_all(stream) == data
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert stream.trailers == {"x-amz-checksum-crc32": crc}


async def test_boto3_upload_part_crc64nvme_trailer(identity, admin_key):
    pytest.importorskip("awscrt")
    client, sent = capture_client("s3", admin_key, endpoint="https://s3.euca.test", **S3_PATH)
    data = b"\x00\x01part" * 50000
    client.upload_part(
        Bucket="bkt", Key="k", UploadId="u-1", PartNumber=1, Body=data, ChecksumAlgorithm="CRC64NVME"
    )
    method, url, headers, body = sent[0]
    result = await authenticate(
        make_request(method, url, headers, body), identity, service="s3", region="euca"
    )
    stream = result.payload(MemoryBody(body, step=7777))
    assert await read_all(stream, 65536) == data
    assert set(stream.trailers) == {"x-amz-checksum-crc64nvme"}


async def test_boto3_put_over_http_signs_the_body_and_a_changed_byte_fails_at_the_end(identity, admin_key):
    client, sent = capture_client("s3", admin_key, endpoint="http://127.0.0.1:19310", **S3_PATH)
    data = b"0123456789" * 10000
    client.put_object(Bucket="bkt", Key="k", Body=data)
    method, url, headers, body = sent[0]
    assert headers["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
    result = await authenticate(
        make_request(method, url, headers, body), identity, service="s3", region="euca"
    )
    assert await read_all(result.payload(MemoryBody(body))) == data

    tampered = bytearray(body)
    tampered[5000] ^= 1
    stream = result.payload(MemoryBody(bytes(tampered)))
    got = 0
    with pytest.raises(PayloadError) as e:
        while chunk := await stream.read(4096):
            got += len(chunk)
    assert got == len(data)  # the whole body streamed; the mismatch is reported at its end
    assert (e.value.code, e.value.status) == ("XAmzContentSHA256Mismatch", 400)


async def test_wrong_secret_unknown_key_disabled_key(identity, admin_key):
    client, sent = capture_client(
        "s3", admin_key, endpoint="http://127.0.0.1:19310", secret="not-the-secret", **S3_PATH
    )
    client.list_buckets()
    method, url, headers, body = sent[0]
    with pytest.raises(AuthError) as e:
        await authenticate(make_request(method, url, headers), identity, service="s3", region="euca")
    assert (e.value.code, e.value.status) == ("SignatureDoesNotMatch", 403)
    assert e.value.message == (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )

    ghost = type(admin_key)("AKIGHOSTGHOSTGHOST00", "secret", True, admin_key.principal)
    client, sent = capture_client("s3", ghost, endpoint="http://127.0.0.1:19310", **S3_PATH)
    client.list_buckets()
    with pytest.raises(AuthError) as e:
        await authenticate(make_request(*sent[0][:3]), identity, service="s3", region="euca")
    assert e.value.code == "InvalidAccessKeyId"

    user_key = identity.create_access_key(ADMIN_ACCOUNT)
    identity.set_access_key_active(user_key.access_key_id, False)
    client, sent = capture_client("s3", user_key, endpoint="http://127.0.0.1:19310", **S3_PATH)
    client.list_buckets()
    with pytest.raises(AuthError) as e:
        await authenticate(make_request(*sent[0][:3]), identity, service="s3", region="euca")
    assert e.value.code == "InvalidAccessKeyId"


async def test_tampered_header_and_skew(identity, admin_key):
    client, sent = capture_client("s3", admin_key, endpoint="http://127.0.0.1:19310", **S3_PATH)
    client.get_object(Bucket="bkt", Key="k", Range="bytes=0-9")
    method, url, headers, _ = sent[0]
    changed = dict(headers, Range="bytes=0-99")
    with pytest.raises(AuthError) as e:
        await authenticate(make_request(method, url, changed), identity, service="s3", region="euca")
    assert e.value.code == "SignatureDoesNotMatch"
    with pytest.raises(AuthError) as e:
        await authenticate(
            make_request(method, url, headers), identity, service="s3", region="euca", now=time.time() + 1800
        )
    assert (e.value.code, e.value.status) == ("RequestTimeTooSkewed", 403)


async def test_anonymous(identity):
    result = await authenticate(
        make_request("GET", "http://h/bkt/public.txt", {}), identity, service="s3", region="euca"
    )
    assert result.principal is None and result.method == "anonymous"


async def test_presigned_get_and_expiry(identity, admin_key):
    client, _ = capture_client(
        "s3", admin_key, endpoint="http://127.0.0.1:19310", signature_version="s3v4", **S3_PATH
    )
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "a/b c.txt"}, ExpiresIn=60
    )
    result = await authenticate(make_request("GET", url, {}), identity, service="s3", region="euca")
    assert result.method == "sigv4-query" and result.principal == admin_key.principal
    with pytest.raises(AuthError) as e:
        await authenticate(
            make_request("GET", url, {}), identity, service="s3", region="euca", now=time.time() + 61
        )
    assert (e.value.code, e.value.message, e.value.status) == ("AccessDenied", "Request has expired", 403)
    with pytest.raises(AuthError) as e:
        await authenticate(
            make_request("GET", url.replace("b%20c", "b%20d"), {}), identity, service="s3", region="euca"
        )
    assert e.value.code == "SignatureDoesNotMatch"


async def test_presigned_put_with_plain_http_body(identity, admin_key):
    client, _ = capture_client(
        "s3", admin_key, endpoint="http://127.0.0.1:19310", signature_version="s3v4", **S3_PATH
    )
    url = client.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "up"}, ExpiresIn=60)
    request = make_request("PUT", url, {"Content-Length": "5"}, b"hello")
    result = await authenticate(request, identity, service="s3", region="euca")
    assert await read_all(result.payload(request.body)) == b"hello"


async def test_sigv2_s3_header_and_query(identity, admin_key):
    client, sent = capture_client(
        "s3", admin_key, endpoint="http://127.0.0.1:19310", signature_version="s3", **S3_PATH
    )
    client.put_object(Bucket="bkt", Key="v2 key", Body=b"abc", ACL="public-read")
    method, url, headers, body = sent[0]
    result = await authenticate(
        make_request(method, url, headers, body), identity, service="s3", region="euca"
    )
    assert result.method == "sigv2-header" and result.principal == admin_key.principal
    url = client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "v2 key"}, ExpiresIn=60)
    result = await authenticate(make_request("GET", url, {}), identity, service="s3", region="euca")
    assert result.method == "sigv2-query"


async def test_virtual_host_and_mount_prefix(identity, admin_key):
    client, sent = capture_client(
        "s3", admin_key, endpoint="http://s3.euca.test:19310", s3={"addressing_style": "virtual"}
    )
    client.get_object(Bucket="bkt", Key="obj")
    method, url, headers, _ = sent[0]
    assert urlsplit(url).netloc.startswith("bkt.")
    result = await authenticate(
        make_request(method, url, headers), identity, service="s3", region="euca", virtual_bucket="bkt"
    )
    assert result.principal == admin_key.principal
    # A role mounted under a prefix sees the stripped path; the signature covers the raw one.
    request = make_request(method, url, headers, raw_path=urlsplit(url).path)
    request.path = "/obj-after-strip"
    await authenticate(request, identity, service="s3", region="euca", virtual_bucket="bkt")


async def test_ec2_sigv4_form_post(identity, admin_key):
    client, sent = capture_client("ec2", admin_key, endpoint="http://127.0.0.1:19310/services/compute")
    client.describe_instances(InstanceIds=["i-12345678"])
    method, url, headers, body = sent[0]
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    result = await authenticate(
        make_request(method, url, headers, body),
        identity,
        service="ec2",
        region="euca",
        body_sha256=hashlib.sha256(body).hexdigest(),
        form=form,
    )
    assert result.method == "sigv4-header" and result.principal == admin_key.principal
    with pytest.raises(AuthError) as e:
        await authenticate(
            make_request(method, url, headers, body),
            identity,
            service="ec2",
            region="euca",
            body_sha256=hashlib.sha256(body + b"&x=1").hexdigest(),
            form=form,
        )
    assert e.value.code == "SignatureDoesNotMatch"


async def test_authenticate_query_reads_the_form_and_checks_the_signature(identity, admin_key):
    client, sent = capture_client("ec2", admin_key, endpoint="http://127.0.0.1:19310/services/compute")
    client.describe_instances(InstanceIds=["i-12345678"])
    method, url, headers, body = sent[0]
    params, result = await authenticate_query(
        make_request(method, url, headers, body),
        identity,
        service="ec2",
        region="euca",
        max_body=len(body),
        parse_form=ec2_wire.parse_form,
    )
    assert params["Action"] == "DescribeInstances" and params["InstanceId.1"] == "i-12345678"
    assert result.principal == admin_key.principal
    with pytest.raises(BodyTooLarge):
        await authenticate_query(
            make_request(method, url, headers, body),
            identity,
            service="ec2",
            region="euca",
            max_body=len(body) - 1,
            parse_form=ec2_wire.parse_form,
        )
    with pytest.raises(AuthError) as e:
        await authenticate_query(
            make_request(method, url, headers, body + b"&x=1"),
            identity,
            service="ec2",
            region="euca",
            max_body=len(body) + 4,
            parse_form=ec2_wire.parse_form,
        )
    assert e.value.code == "SignatureDoesNotMatch"


async def test_ec2_sigv2_query(identity, admin_key):
    client, sent = capture_client(
        "ec2", admin_key, endpoint="http://127.0.0.1:19310/services/compute", signature_version="v2"
    )
    client.describe_regions()
    method, url, headers, body = sent[0]
    form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    assert form["SignatureVersion"] == "2"
    result = await authenticate(
        make_request(method, url, headers, body), identity, service="ec2", region="euca", form=form
    )
    assert result.method == "sigv2-query" and result.principal == admin_key.principal


# -- signed aws-chunked, with AWS's documented example keys and bytes ------------------------------

DOC_AKID = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_HEADERS = [
    ("Host", "s3.amazonaws.com"),
    ("x-amz-date", "20130524T000000Z"),
    ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    (
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders="
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;"
        "x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    ),
    ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
    ("Content-Encoding", "aws-chunked"),
    ("x-amz-decoded-content-length", "66560"),
    ("Content-Length", "66824"),
]
DOC_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)
DOC_NOW = 1369353600.0  # 2013-05-24T00:00:00Z


@pytest.fixture
def doc_identity(identity, admin_key):
    def insert(tx):
        tx.execute(
            "INSERT INTO access_keys(access_key_id, secret_key, account_id, user_name, active, created) "
            "VALUES(?,?,?,?,1,0)",
            (DOC_AKID, DOC_SECRET, admin_key.principal.account_id, admin_key.principal.user_name),
        )

    identity.store.write_sync(insert)
    return identity


async def test_documented_streaming_put_end_to_end(doc_identity):
    request = make_request(
        "PUT", "http://s3.amazonaws.com/examplebucket/chunkObject.txt", DOC_HEADERS, DOC_BODY
    )
    result = await authenticate(request, doc_identity, service="s3", region="euca", now=DOC_NOW)
    assert result.content_sha256 == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    assert result.decoded_length == 66560
    assert await read_all(result.payload(MemoryBody(DOC_BODY, step=1))) == b"a" * 66560


async def test_documented_streaming_put_with_modified_chunk(doc_identity):
    request = make_request(
        "PUT", "http://s3.amazonaws.com/examplebucket/chunkObject.txt", DOC_HEADERS, DOC_BODY
    )
    result = await authenticate(request, doc_identity, service="s3", region="euca", now=DOC_NOW)
    tampered = DOC_BODY[:66000] + b"b" + DOC_BODY[66001:]  # inside the 1 KiB chunk
    with pytest.raises(PayloadError) as e:
        await read_all(result.payload(MemoryBody(tampered)))
    assert (e.value.code, e.value.status) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(PayloadError) as e:
        await read_all(result.payload(MemoryBody(DOC_BODY[:-40])))
    assert e.value.code in ("IncompleteBody", "InvalidRequest")


async def test_documented_streaming_put_refused_when_headers_changed(doc_identity):
    headers = [(k, "STANDARD" if k == "x-amz-storage-class" else v) for k, v in DOC_HEADERS]
    request = make_request("PUT", "http://s3.amazonaws.com/examplebucket/chunkObject.txt", headers, DOC_BODY)
    with pytest.raises(AuthError) as e:
        await authenticate(request, doc_identity, service="s3", region="euca", now=DOC_NOW)
    assert e.value.code == "SignatureDoesNotMatch"


async def test_only_one_auth_mechanism(identity, admin_key):
    client, _ = capture_client(
        "s3", admin_key, endpoint="http://127.0.0.1:19310", signature_version="s3v4", **S3_PATH
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=60)
    request = make_request("GET", url, {"Authorization": "AWS4-HMAC-SHA256 Credential=x"})
    with pytest.raises(AuthError) as e:
        await authenticate(request, identity, service="s3", region="euca")
    assert (e.value.code, e.value.status) == ("InvalidArgument", 400)


async def test_unsupported_authorization_type(identity):
    request = make_request("GET", "http://h/b", {"Authorization": "Bearer abc"})
    with pytest.raises(AuthError) as e:
        await authenticate(request, identity, service="s3", region="euca")
    assert (e.value.code, e.value.status) == ("InvalidArgument", 400)


async def test_s3_preflight_is_never_authenticated(identity, admin_key):
    client, _ = capture_client(
        "s3", admin_key, endpoint="http://127.0.0.1:19310", signature_version="s3v4", **S3_PATH
    )
    url = client.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "up"}, ExpiresIn=60)
    result = await authenticate(make_request("OPTIONS", url, {}), identity, service="s3", region="euca")
    assert result.principal is None and result.method == "anonymous"
    with pytest.raises(AuthError):
        await authenticate(make_request("GET", url, {}), identity, service="s3", region="euca")


async def test_sigv2_below_the_mount_prefix(identity, admin_key):
    """botocore with endpoint .../services/objectstorage signs /bkt/k (its auth_path) with SigV2."""
    client, sent = capture_client(
        "s3",
        admin_key,
        endpoint="http://127.0.0.1:19310/services/objectstorage",
        signature_version="s3",
        **S3_PATH,
    )
    client.get_object(Bucket="bkt", Key="k")
    method, url, headers, _ = sent[0]
    raw = urlsplit(url).path
    assert raw == "/services/objectstorage/bkt/k"
    request = make_request(method, url, headers, raw_path=raw)
    request.path = "/bkt/k"
    request.context["mount"] = "/services/objectstorage"
    result = await authenticate(request, identity, service="s3", region="euca")
    assert result.method == "sigv2-header" and result.principal == admin_key.principal
    other = make_request(method, url, headers, raw_path=raw)
    other.path = "/bkt/other"
    other.context["mount"] = "/services/objectstorage"
    with pytest.raises(AuthError) as e:
        await authenticate(other, identity, service="s3", region="euca")
    assert e.value.code == "SignatureDoesNotMatch"
