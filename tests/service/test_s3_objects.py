"""Objects over boto3: put/get/head/delete, ranges, conditions, metadata, checksums, copy, tagging, batch delete."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import zlib

import httpx
import pytest
from botocore.exceptions import ClientError

from helpers.seaweedfs import disk_only


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return int(exc.value.response["ResponseMetadata"]["HTTPStatusCode"])


def test_put_get_head_delete(s3_client, bucket):
    data = os.urandom(300_000)
    r = s3_client.put_object(Bucket=bucket, Key="dir/obj", Body=data)
    assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3_client.get_object(Bucket=bucket, Key="dir/obj")
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    head = s3_client.head_object(Bucket=bucket, Key="dir/obj")
    assert head["ContentLength"] == len(data) and head["ETag"] == r["ETag"]
    s3_client.delete_object(Bucket=bucket, Key="dir/obj")
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="dir/obj")
    assert code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3_client.head_object(Bucket=bucket, Key="dir/obj")
    assert status(e) == 404


# Small bodies are kept inline in the state store (no object file); larger ones get a file each.
@disk_only
@pytest.mark.parametrize(("size", "files"), [(3, 0), (100 * 1024, 1)], ids=["inline", "file"])
def test_overwrite_removes_old_bytes(euca, s3_client, bucket, size, files):
    root = euca.data_dir / "objects"
    before = sum(1 for p in root.rglob("*") if p.is_file())
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"1" * size)
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"2" * size)
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"2" * size
    after = sum(1 for p in root.rglob("*") if p.is_file())
    assert after == before + files
    assert not list((root / "tmp").iterdir())


def test_metadata_and_standard_headers(s3_client, bucket):
    s3_client.put_object(
        Bucket=bucket,
        Key="m",
        Body=b"x",
        ContentType="text/plain",
        ContentEncoding="identity",
        ContentDisposition='attachment; filename="m.txt"',
        ContentLanguage="en",
        CacheControl="max-age=60",
        Expires=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
        Metadata={"color": "blue", "n": "1"},
    )
    h = s3_client.head_object(Bucket=bucket, Key="m")
    assert h["ContentType"] == "text/plain"
    assert h["ContentEncoding"] == "identity"
    assert h["ContentDisposition"] == 'attachment; filename="m.txt"'
    assert h["ContentLanguage"] == "en"
    assert h["CacheControl"] == "max-age=60"
    assert h["Metadata"] == {"color": "blue", "n": "1"}
    g = s3_client.get_object(
        Bucket=bucket,
        Key="m",
        ResponseContentType="application/json",
        ResponseCacheControl="no-cache",
        ResponseContentDisposition="inline",
    )
    assert g["ContentType"] == "application/json" and g["CacheControl"] == "no-cache"
    assert g["ContentDisposition"] == "inline"


def test_ranges(s3_client, bucket):
    data = bytes(range(256)) * 4
    s3_client.put_object(Bucket=bucket, Key="r", Body=data)
    r = s3_client.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert r["Body"].read() == data[10:20] and r["ContentRange"] == f"bytes 10-19/{len(data)}"
    assert s3_client.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == data[-5:]
    assert s3_client.get_object(Bucket=bucket, Key="r", Range="bytes=1000-")["Body"].read() == data[1000:]
    assert s3_client.get_object(Bucket=bucket, Key="r", Range="bytes=1020-5000")["Body"].read() == data[1020:]
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="r", Range="bytes=5000-6000")
    assert code(e) == "InvalidRange" and status(e) == 416
    # Syntax S3 ignores: the whole object.
    assert s3_client.get_object(Bucket=bucket, Key="r", Range="bytes=abc")["Body"].read() == data


def test_conditional_get(s3_client, bucket):
    etag = s3_client.put_object(Bucket=bucket, Key="c", Body=b"cond")["ETag"]
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    future = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
    assert s3_client.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"cond"
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="c", IfMatch='"nope"')
    assert status(e) == 412
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status(e) == 304
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="c", IfModifiedSince=future)
    assert status(e) == 304
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=past)
    assert status(e) == 412
    # S3 precedence: If-Match true wins over If-Unmodified-Since false; If-None-Match false over IMS.
    s3_client.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=past)
    s3_client.get_object(Bucket=bucket, Key="c", IfNoneMatch='"other"', IfModifiedSince=future)


def test_conditional_put(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="once", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="once", Body=b"2", IfNoneMatch="*")
    assert status(e) == 412
    assert s3_client.get_object(Bucket=bucket, Key="once")["Body"].read() == b"1"


def test_content_md5(euca, s3_client, bucket):
    data = b"digest me"
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3_client.put_object(Bucket=bucket, Key="md5", Body=data, ContentMD5=good)
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="md5", Body=data, ContentMD5=bad)
    assert code(e) == "BadDigest"
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="md5", Body=data, ContentMD5="notbase64!")
    assert code(e) == "InvalidDigest"


@pytest.mark.parametrize("algo", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_checksums_roundtrip(s3_client, bucket, algo):
    data = os.urandom(70_000)
    r = s3_client.put_object(Bucket=bucket, Key=f"ck-{algo}", Body=data, ChecksumAlgorithm=algo)
    sent = r[f"Checksum{algo}"]
    g = s3_client.get_object(Bucket=bucket, Key=f"ck-{algo}", ChecksumMode="ENABLED")
    assert g[f"Checksum{algo}"] == sent
    assert g["Body"].read() == data  # botocore validates the checksum while reading
    h = s3_client.head_object(Bucket=bucket, Key=f"ck-{algo}", ChecksumMode="ENABLED")
    assert h[f"Checksum{algo}"] == sent
    if algo == "SHA256":
        assert base64.b64decode(sent) == hashlib.sha256(data).digest()


def test_default_checksum_behaviour(s3_client, bucket):
    """boto3 1.43 sends a CRC32 by default and validates it on GET: both must agree with the server."""
    data = b"default checksum" * 1000
    r = s3_client.put_object(Bucket=bucket, Key="default", Body=data)
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert r.get("ChecksumCRC32") == expected
    g = s3_client.get_object(Bucket=bucket, Key="default")
    assert g["Body"].read() == data
    assert g.get("ChecksumCRC32") == expected


def test_wrong_checksum_is_bad_digest(euca, bucket, s3_client):
    url = s3_client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "bad"})
    wrong = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    r = httpx.put(url, content=b"payload", headers={"x-amz-checksum-crc32": wrong})
    assert r.status_code == 400 and b"BadDigest" in r.content
    with pytest.raises(ClientError):
        s3_client.head_object(Bucket=bucket, Key="bad")


def test_copy_object(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="src", Body=b"copy me", Metadata={"a": "1"}, ContentType="text/x")
    r = s3_client.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    h = s3_client.head_object(Bucket=bucket, Key="dst")
    assert h["Metadata"] == {"a": "1"} and h["ContentType"] == "text/x"
    s3_client.copy_object(
        Bucket=bucket,
        Key="dst2",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="text/y",
    )
    h = s3_client.head_object(Bucket=bucket, Key="dst2")
    assert h["Metadata"] == {"b": "2"} and h["ContentType"] == "text/y"
    assert s3_client.get_object(Bucket=bucket, Key="dst2")["Body"].read() == b"copy me"
    with pytest.raises(ClientError) as e:
        s3_client.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert code(e) == "InvalidRequest"
    s3_client.copy_object(
        Bucket=bucket,
        Key="src",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"c": "3"},
    )
    assert s3_client.head_object(Bucket=bucket, Key="src")["Metadata"] == {"c": "3"}
    with pytest.raises(ClientError) as e:
        s3_client.copy_object(
            Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "src"}, CopySourceIfMatch='"nope"'
        )
    assert status(e) == 412
    with pytest.raises(ClientError) as e:
        s3_client.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})
    assert code(e) == "NoSuchKey"


def test_delete_objects_quiet_and_verbose(s3_client, bucket):
    for i in range(5):
        s3_client.put_object(Bucket=bucket, Key=f"d{i}", Body=b"x")
    r = s3_client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "d0"}, {"Key": "d1"}, {"Key": "nope"}]}
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == ["d0", "d1", "nope"]
    r = s3_client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": f"d{i}"} for i in range(2, 5)], "Quiet": True}
    )
    assert not r.get("Deleted") and not r.get("Errors")
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_object_tagging(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=1&b=two")
    assert (
        s3_client.head_object(Bucket=bucket, Key="t")["ResponseMetadata"]["HTTPHeaders"][
            "x-amz-tagging-count"
        ]
        == "2"
    )
    tags = s3_client.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"a": "1", "b": "two"}
    s3_client.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "z", "Value": "9"}]})
    assert s3_client.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "z", "Value": "9"}]
    s3_client.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3_client.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []


def test_unicode_and_odd_keys(s3_client, bucket):
    keys = ["ünïcødé/ключ", "a b+c", "x%y", "q?r", "tab\tkey", "/leading", "trailing/", "a//b"]
    for k in keys:
        s3_client.put_object(Bucket=bucket, Key=k, Body=k.encode())
    for k in keys:
        assert s3_client.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode()
    listed = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda s: s.encode())


def test_empty_object(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="empty", Body=b"")
    r = s3_client.get_object(Bucket=bucket, Key="empty")
    assert r["Body"].read() == b"" and r["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="empty", Range="bytes=0-1")
    assert status(e) == 416


def _signed_chunked_put(euca, url: str, data: bytes, trailer_value: str) -> httpx.Response:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = (
        f"{len(data):x}\r\n".encode()
        + data
        + b"\r\n0\r\n"
        + f"x-amz-checksum-crc32:{trailer_value}\r\n\r\n".encode()
    )
    headers = {
        "Content-Encoding": "aws-chunked",
        "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "Content-Length": str(len(body)),
    }

    class StreamingTrailerAuth(S3SigV4Auth):
        def payload(self, request):  # type: ignore[no-untyped-def]
            return "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    req = AWSRequest("PUT", url, headers=headers, data=body)
    StreamingTrailerAuth(
        Credentials(euca.admin.access_key, euca.admin.secret_key), "s3", euca.region
    ).add_auth(req)
    return httpx.put(url, content=body, headers=dict(req.headers.items()))


def test_aws_chunked_trailer_checksum(euca, s3_client, bucket):
    """What boto3/awscli send over TLS: aws-chunked body, CRC32 in a trailer; verified and stored."""
    data = b"trailing checksum body" * 100
    good = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    r = _signed_chunked_put(euca, f"{euca.url}/{bucket}/chunked", data, good)
    assert r.status_code == 200, r.text
    g = s3_client.get_object(Bucket=bucket, Key="chunked", ChecksumMode="ENABLED")
    assert g["Body"].read() == data and g["ChecksumCRC32"] == good
    assert "ContentEncoding" not in g  # aws-chunked is framing, not stored
    bad = base64.b64encode(zlib.crc32(b"x").to_bytes(4, "big")).decode()
    r = _signed_chunked_put(euca, f"{euca.url}/{bucket}/chunked", b"other", bad)
    assert r.status_code == 400 and b"BadDigest" in r.content
    assert s3_client.get_object(Bucket=bucket, Key="chunked")["Body"].read() == data


@pytest.mark.parametrize("size", [3000, 3 * 1024 * 1024], ids=["inline", "file"])
def test_signed_payload_hash_checked(euca, s3_client, bucket, size):
    """A body whose SHA-256 is not the signed x-amz-content-sha256 is refused and stored nowhere (the hash of
    a large body is computed in the writer thread and checked before the file is renamed into place)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = os.urandom(size)
    url = f"{euca.url}/{bucket}/hashed"
    root = euca.data_dir / "objects"
    before = {p.name for p in root.rglob("*") if p.is_file()}
    for body, ok in ((data, True), (data[:-1] + b"!", False)):
        req = AWSRequest("PUT", url, data=data)
        S3SigV4Auth(Credentials(euca.admin.access_key, euca.admin.secret_key), "s3", euca.region).add_auth(
            req
        )
        assert req.headers["X-Amz-Content-SHA256"] == hashlib.sha256(data).hexdigest()
        r = httpx.put(url, content=body, headers=dict(req.headers.items()))
        if ok:
            assert r.status_code == 200, r.text
            s3_client.delete_object(Bucket=bucket, Key="hashed")
        else:
            assert r.status_code == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in r.content
    with pytest.raises(ClientError):
        s3_client.head_object(Bucket=bucket, Key="hashed")
    assert {p.name for p in root.rglob("*") if p.is_file()} == before
