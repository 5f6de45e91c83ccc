"""Server-side encryption at rest (issue 11) with boto3 over the https.port listener: SSE-S3 (the header or
the bucket's default) and SSE-C keep only ciphertext on disk, answer GETs (ranged, across parts), HEADs,
copies and multipart uploads as S3 does, and refuse a missing or wrong customer key with S3's codes."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from euca.core.identity import ADMIN_ACCOUNT, ADMIN_USER
from helpers.seaweedfs import SeaweedCluster, backend_client, backend_overrides
from helpers.server import EucaServer, start_euca

MiB = 1024 * 1024
KEY = os.urandom(32)
OTHER_KEY = os.urandom(32)
SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    yield from start_euca(
        tmp_path_factory.mktemp("sse"),
        roles="clc,walrus",
        overrides={"https.port": 0, "https.host": "127.0.0.1", "default_image": False},
    )


@pytest.fixture(scope="module")
def s3(cloud: EucaServer) -> Any:
    ca = cloud.data_dir / "credentials" / ADMIN_ACCOUNT / ADMIN_USER / "cloud-cert.pem"
    return boto3.client(
        "s3",
        endpoint_url=cloud.ctx.endpoints["https"],
        region_name=cloud.region,
        aws_access_key_id=cloud.admin.access_key,
        aws_secret_access_key=cloud.admin.secret_key,
        verify=str(ca),
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = "sse-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


def body(size: int) -> bytes:
    """Bytes no file holds by chance: a random 64-byte pattern, repeated."""
    return (os.urandom(64) * (size // 64 + 1))[:size]


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """The files under `root` whose bytes contain `needle` (the cloud's data directory: object files, the
    store, its WAL)."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


def error(e: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


def test_cloud_key_is_created_private(cloud: EucaServer) -> None:
    key_file = cloud.data_dir / "walrus-sse.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32


def test_sse_s3_keeps_ciphertext_and_reads_plaintext(cloud: EucaServer, s3: Any, bucket: str) -> None:
    secret, small, plain = body(3 * MiB + 5), body(1000), body(200 * 1024)
    r = s3.put_object(Bucket=bucket, Key="big", Body=secret, ServerSideEncryption="AES256")
    assert r["ServerSideEncryption"] == "AES256"
    assert r["ETag"] == f'"{hashlib.md5(secret).hexdigest()}"'  # SSE-S3: the MD5 of the plaintext
    s3.put_object(Bucket=bucket, Key="small", Body=small, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="plain", Body=plain)
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == secret
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == small
    assert s3.head_object(Bucket=bucket, Key="big")["ServerSideEncryption"] == "AES256"
    # The scan finds a plaintext object (so it would find the others if they were kept in clear).
    assert files_holding(cloud.data_dir, plain[:4096])
    assert not files_holding(cloud.data_dir, secret[:4096])
    assert not files_holding(cloud.data_dir, small[:200])


def test_sse_s3_ranges_at_any_offset(s3: Any, bucket: str) -> None:
    data = body(2 * MiB + 77)
    s3.put_object(Bucket=bucket, Key="r", Body=data, ServerSideEncryption="AES256")
    for first, last in [(0, 0), (1, 16), (15, 17), (1000, MiB + 3), (2 * MiB, 2 * MiB + 76), (5, 5)]:
        got = s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={first}-{last}")["Body"].read()
        assert got == data[first : last + 1], (first, last)
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-33")["Body"].read() == data[-33:]
    s3.put_object(Bucket=bucket, Key="empty", Body=b"", ServerSideEncryption="AES256")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    # A body left unread (the client goes away) releases what the GET opened; the object reads again.
    for _ in range(5):
        s3.get_object(Bucket=bucket, Key="r")["Body"].close()
    assert s3.get_object(Bucket=bucket, Key="r")["Body"].read() == data


def test_bucket_default_encrypts_puts_without_the_header(cloud: EucaServer, s3: Any, bucket: str) -> None:
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    data = body(300 * 1024)
    assert s3.put_object(Bucket=bucket, Key="d", Body=data)["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="d")["Body"].read() == data
    assert not files_holding(cloud.data_dir, data[:4096])


def test_sse_s3_multipart_parts_and_ranges_across_them(cloud: EucaServer, s3: Any, bucket: str) -> None:
    source = body(1 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=source, ServerSideEncryption="AES256")
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ServerSideEncryption="AES256")
    assert up["ServerSideEncryption"] == "AES256"
    p1, p2 = body(5 * MiB), body(5 * MiB + 3)
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=2, Body=p2)["ETag"]
    e3 = s3.upload_part_copy(
        Bucket=bucket,
        Key="mp",
        UploadId=up["UploadId"],
        PartNumber=3,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange="bytes=10-1000009",
    )["CopyPartResult"]["ETag"]
    assert e1 == f'"{hashlib.md5(p1).hexdigest()}"'
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=4, Body=b"x")
    assert part["ServerSideEncryption"] == "AES256"  # a part's answer says how it is kept, as S3's does
    parts = [{"PartNumber": n, "ETag": e} for n, e in ((1, e1), (2, e2), (3, e3))]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert done["ServerSideEncryption"] == "AES256"
    whole = p1 + p2 + source[10:1000010]
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == whole
    for first, last in [(5 * MiB - 7, 5 * MiB + 9), (MiB + 1, 10 * MiB + 20), (10 * MiB, len(whole) - 1)]:
        got = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={first}-{last}")["Body"].read()
        assert got == whole[first : last + 1], (first, last)
    assert s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)["Body"].read() == p2
    assert not files_holding(cloud.data_dir, p2[:4096])


def test_copies_between_encrypted_and_plain(cloud: EucaServer, s3: Any, bucket: str) -> None:
    secret, plain = body(150 * 1024), body(120 * 1024)
    s3.put_object(Bucket=bucket, Key="enc", Body=secret, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="plain", Body=plain)
    out = s3.copy_object(Bucket=bucket, Key="dec", CopySource={"Bucket": bucket, "Key": "enc"})
    assert "ServerSideEncryption" not in out
    assert s3.get_object(Bucket=bucket, Key="dec")["Body"].read() == secret
    out = s3.copy_object(
        Bucket=bucket,
        Key="plain",
        CopySource={"Bucket": bucket, "Key": "plain"},
        ServerSideEncryption="AES256",
    )
    assert out["ServerSideEncryption"] == "AES256"
    assert out["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(plain).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="plain")["Body"].read() == plain
    assert s3.list_object_versions(Bucket=bucket, Prefix="plain")["Versions"][0]["Size"] == len(plain)


def test_sse_c_round_trip_and_key_checks(cloud: EucaServer, s3: Any, bucket: str) -> None:
    data = body(100 * 1024 + 1)
    md5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
    r = s3.put_object(Bucket=bucket, Key="c", Body=data, **SSE_C)
    assert r["SSECustomerAlgorithm"] == "AES256" and r["SSECustomerKeyMD5"] == md5
    assert "ServerSideEncryption" not in r
    got = s3.get_object(Bucket=bucket, Key="c", **SSE_C)
    assert got["Body"].read() == data and got["SSECustomerKeyMD5"] == md5
    assert (
        s3.get_object(Bucket=bucket, Key="c", Range="bytes=17-4100", **SSE_C)["Body"].read() == data[17:4101]
    )
    assert s3.head_object(Bucket=bucket, Key="c", **SSE_C)["SSECustomerAlgorithm"] == "AES256"
    assert not files_holding(cloud.data_dir, data[:4096])
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c")
    assert error(e) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:
        s3.get_object_attributes(Bucket=bucket, Key="c", ObjectAttributes=["ObjectSize"])
    assert error(e) == (400, "InvalidRequest")
    attrs = s3.get_object_attributes(  # botocore encodes the key for this operation only as given
        Bucket=bucket,
        Key="c",
        ObjectAttributes=["ObjectSize"],
        SSECustomerAlgorithm="AES256",
        SSECustomerKey=base64.b64encode(KEY).decode(),
        SSECustomerKeyMD5=md5,
    )
    assert attrs["ObjectSize"] == len(data)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="c")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_KEY)
    assert error(e) == (403, "AccessDenied")
    # A customer key for an object stored without one is refused too.
    s3.put_object(Bucket=bucket, Key="p", Body=b"plain")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="p", **SSE_C)
    assert error(e) == (400, "InvalidRequest")


def _put_with_headers(s3: Any, bucket: str, headers: dict[str, str]) -> tuple[int, str]:
    def add(params: dict[str, Any], **_: Any) -> None:
        params["headers"].update(headers)

    s3.meta.events.register("before-call.s3.PutObject", add)
    try:
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=bucket, Key="bad", Body=b"x")
        return error(e)
    finally:
        s3.meta.events.unregister("before-call.s3.PutObject", add)


def test_sse_c_bad_headers(s3: Any, bucket: str) -> None:
    key64 = base64.b64encode(KEY).decode()
    md5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
    p = "x-amz-server-side-encryption-customer-"
    assert _put_with_headers(
        s3, bucket, {p + "algorithm": "AES256", p + "key": key64, p + "key-MD5": "A" * 22 + "=="}
    ) == (400, "InvalidArgument")
    assert _put_with_headers(s3, bucket, {p + "algorithm": "AES256", p + "key": key64}) == (
        400,
        "InvalidArgument",
    )
    assert _put_with_headers(s3, bucket, {p + "algorithm": "AES256"}) == (400, "InvalidArgument")
    assert _put_with_headers(s3, bucket, {p + "key": key64, p + "key-MD5": md5}) == (400, "InvalidArgument")
    short = os.urandom(16)
    assert _put_with_headers(
        s3,
        bucket,
        {
            p + "algorithm": "AES256",
            p + "key": base64.b64encode(short).decode(),
            p + "key-MD5": base64.b64encode(hashlib.md5(short).digest()).decode(),
        },
    ) == (400, "InvalidArgument")
    assert (
        _put_with_headers(s3, bucket, {p + "algorithm": "AES128", p + "key": key64, p + "key-MD5": md5})[0]
        == 400
    )


def test_sse_c_refused_over_plain_http(cloud: EucaServer, bucket: str, s3: Any) -> None:
    plain_http = cloud.client("s3")
    with pytest.raises(ClientError) as e:
        plain_http.put_object(Bucket=bucket, Key="k", Body=b"x", **SSE_C)
    assert error(e) == (400, "InvalidRequest")


def test_sse_c_multipart_and_copy(cloud: EucaServer, s3: Any, bucket: str) -> None:
    up = s3.create_multipart_upload(Bucket=bucket, Key="mc", **SSE_C)
    assert up["SSECustomerAlgorithm"] == "AES256"
    p1, p2 = body(5 * MiB), body(MiB + 9)
    e1 = s3.upload_part(Bucket=bucket, Key="mc", UploadId=up["UploadId"], PartNumber=1, Body=p1, **SSE_C)
    assert e1["SSECustomerAlgorithm"] == "AES256"
    with pytest.raises(ClientError) as e:
        s3.upload_part(
            Bucket=bucket,
            Key="mc",
            UploadId=up["UploadId"],
            PartNumber=2,
            Body=p2,
            SSECustomerAlgorithm="AES256",
            SSECustomerKey=OTHER_KEY,
        )
    assert error(e) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="mc", UploadId=up["UploadId"], PartNumber=2, Body=p2)
    assert error(e) == (400, "InvalidRequest")
    e2 = s3.upload_part(Bucket=bucket, Key="mc", UploadId=up["UploadId"], PartNumber=2, Body=p2, **SSE_C)
    parts = [{"PartNumber": 1, "ETag": e1["ETag"]}, {"PartNumber": 2, "ETag": e2["ETag"]}]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mc", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert "ServerSideEncryption" not in done
    whole = p1 + p2
    got = s3.get_object(Bucket=bucket, Key="mc", Range=f"bytes={5 * MiB - 100}-{5 * MiB + 100}", **SSE_C)
    assert got["Body"].read() == whole[5 * MiB - 100 : 5 * MiB + 101]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="mc", SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_KEY)
    assert error(e) == (403, "AccessDenied")
    assert not files_holding(cloud.data_dir, p1[:4096])
    # A copy reads its source with the source's key and writes under another (here SSE-S3).
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="cp", CopySource={"Bucket": bucket, "Key": "mc"})
    assert error(e) == (400, "InvalidRequest")
    out = s3.copy_object(
        Bucket=bucket,
        Key="cp",
        CopySource={"Bucket": bucket, "Key": "mc"},
        CopySourceSSECustomerAlgorithm="AES256",
        CopySourceSSECustomerKey=KEY,
        ServerSideEncryption="AES256",
    )
    assert out["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="cp")["Body"].read() == whole
    # And into a new customer key.
    s3.copy_object(
        Bucket=bucket,
        Key="cp2",
        CopySource={"Bucket": bucket, "Key": "cp"},
        SSECustomerAlgorithm="AES256",
        SSECustomerKey=OTHER_KEY,
    )
    got = s3.get_object(Bucket=bucket, Key="cp2", SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_KEY)
    assert got["Body"].read() == whole


def test_backend_cluster_keeps_only_ciphertext(
    tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedCluster
) -> None:
    """walrus.backend = "s3": the encryption is above the byte store, so the cluster holds ciphertext too."""
    overrides = backend_overrides(seaweedfs, bucket="walrus-" + uuid.uuid4().hex[:12])
    server = start_euca(tmp_path_factory.mktemp("sse-backend"), roles="walrus", overrides=overrides)
    walrus = next(server)
    try:
        s3 = walrus.client("s3")
        s3.create_bucket(Bucket="enc")
        single, p1, p2 = body(300 * 1024), body(5 * MiB), body(100 * 1024)
        s3.put_object(Bucket="enc", Key="one", Body=single, ServerSideEncryption="AES256")
        up = s3.create_multipart_upload(Bucket="enc", Key="mp", ServerSideEncryption="AES256")
        etags = [
            s3.upload_part(Bucket="enc", Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=b)["ETag"]
            for n, b in ((1, p1), (2, p2))
        ]
        s3.complete_multipart_upload(
            Bucket="enc",
            Key="mp",
            UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]},
        )
        assert s3.get_object(Bucket="enc", Key="one")["Body"].read() == single
        whole = p1 + p2
        got = s3.get_object(Bucket="enc", Key="mp", Range=f"bytes={5 * MiB - 5}-{5 * MiB + 70000}")
        assert got["Body"].read() == whole[5 * MiB - 5 : 5 * MiB + 70001]
        backend = backend_client(seaweedfs)
        name = walrus.ctx.config.walrus.backend_bucket
        stored = [
            backend.get_object(Bucket=name, Key=item["Key"])["Body"].read()
            for item in backend.list_objects_v2(Bucket=name).get("Contents", [])
        ]
        assert len(stored) == 3
        assert not any(needle[:4096] in data for data in stored for needle in (single, p1, p2))
    finally:
        server.close()


def test_post_form_uploads_are_encrypted(cloud: EucaServer, s3: Any, bucket: str) -> None:
    """A browser POST upload takes SSE-C from its form fields (over HTTPS) and the bucket default otherwise."""
    ca = cloud.data_dir / "credentials" / ADMIN_ACCOUNT / ADMIN_USER / "cloud-cert.pem"
    key64 = base64.b64encode(KEY).decode()
    md5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
    fields = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": key64,
        "x-amz-server-side-encryption-customer-key-MD5": md5,
    }
    post = s3.generate_presigned_post(
        bucket, "c", Fields=fields, Conditions=[{k: v} for k, v in fields.items()]
    )
    data = body(100 * 1024)
    r = httpx.post(
        post["url"],
        data=post["fields"],
        files={"file": ("f", data)},
        verify=ssl.create_default_context(cafile=str(ca)),
    )
    assert r.status_code == 204, r.text
    assert r.headers["x-amz-server-side-encryption-customer-key-MD5"] == md5
    assert s3.get_object(Bucket=bucket, Key="c", **SSE_C)["Body"].read() == data
    assert not files_holding(cloud.data_dir, data[:4096])
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    post = s3.generate_presigned_post(bucket, "d")
    r = httpx.post(
        post["url"],
        data=post["fields"],
        files={"file": ("f", data)},
        verify=ssl.create_default_context(cafile=str(ca)),
    )
    assert r.status_code == 204 and r.headers["x-amz-server-side-encryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="d")["Body"].read() == data
