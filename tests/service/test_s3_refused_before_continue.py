"""A PUT that is refused is refused before its body is asked for (issue 11): with `Expect: 100-continue` the
client gets the error instead of `100 Continue`, and sends nothing of the body, whatever its size. Over 5 GiB
is EntityTooLarge; an anonymous PUT to a private bucket is AccessDenied, a bad signature SignatureDoesNotMatch.
boto3 and the aws CLI (which send Expect with every PUT body) read that early answer at their first attempt;
the refused connection is closed (its body was never sent), one whose body came with its head serves on."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from euca.core.identity import ADMIN_ACCOUNT, ADMIN_USER
from helpers.server import Credentials, start_euca


def first_answer(url: str, headers: dict[str, str], method: str = "PUT") -> tuple[int, bytes]:
    """Send only the request head (announcing a large body); the status of what the server answers first
    (100 for Continue) and what came with it."""
    split = urlsplit(url)
    target = split.path + (f"?{split.query}" if split.query else "")
    head = f"{method} {target} HTTP/1.1\r\nHost: {split.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((split.hostname, split.port), timeout=60) as sock:
        sock.sendall(head.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            data += chunk
            if not chunk or (
                b"\r\n\r\n" in data and (data.startswith(b"HTTP/1.1 100") or b"</Error>" in data)
            ):
                break
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("operation", ["put_object", "upload_part"])
def test_over_five_gib_is_entity_too_large_before_continue(
    s3_client: Any, bucket: str, operation: str
) -> None:
    params: dict[str, Any] = {"Bucket": bucket, "Key": "big"}
    if operation == "upload_part":
        upload = s3_client.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
        params |= {"UploadId": upload, "PartNumber": 1}
    url = s3_client.generate_presigned_url(operation, Params=params, ExpiresIn=300)
    size = 5 * 1024**3 + 1
    status, data = first_answer(url, {"Content-Length": str(size), "Expect": "100-continue"})
    assert status == 400, data[:300]
    assert b"<Code>EntityTooLarge</Code>" in data


def test_anonymous_put_to_a_private_bucket_is_refused_before_continue(euca: Any, bucket: str) -> None:
    status, data = first_answer(
        f"{euca.url}/{bucket}/k", {"Content-Length": str(1024**3), "Expect": "100-continue"}
    )
    assert status == 403, data[:300]
    assert b"<Code>AccessDenied</Code>" in data


def test_a_small_anonymous_put_to_a_private_bucket_is_refused_before_continue(
    s3_client: Any, euca: Any, bucket: str
) -> None:
    # As s3-tests' test_100_continue: a 123-byte body is refused on its head as well as a large one...
    status, data = first_answer(f"{euca.url}/{bucket}/k", {"Content-Length": "123", "Expect": "100-continue"})
    assert status == 403, data[:300]
    assert data.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"Connection: close\r\n" in data
    # ...and asked for once the bucket lets anyone write.
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    status, _ = first_answer(f"{euca.url}/{bucket}/k", {"Content-Length": "123", "Expect": "100-continue"})
    assert status == 100


@pytest.mark.parametrize("size", [0, 100, 2 * 1024 * 1024])
def test_boto3_gets_the_early_refusal_of_an_anonymous_put(
    s3_anonymous: Any, s3_client: Any, bucket: str, size: int
) -> None:
    # botocore sends `Expect: 100-continue` with every PUT body; the 403 that comes instead of 100 Continue
    # is its answer, read at the first attempt (no connection error, no retry).
    for _ in range(2):  # the refused connection is closed; the next request gets a new one
        with pytest.raises(ClientError) as e:
            s3_anonymous.put_object(Bucket=bucket, Key="k", Body=b"x" * size)
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"y" * size)
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"y" * size


@pytest.mark.parametrize("size", [100, 2 * 1024 * 1024])
def test_boto3_gets_the_early_refusal_of_a_bad_signature(euca: Any, bucket: str, size: int) -> None:
    wrong = Credentials(euca.admin.access_key, "not-the-secret", euca.admin.account, euca.admin.canonical_id)
    client = euca.client("s3", creds=wrong)
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="k", Body=b"x" * size)
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 0


def test_aws_cli_gets_the_early_refusal(euca: Any, bucket: str, tmp_path: Any) -> None:
    body = tmp_path / "body"
    body.write_bytes(b"x" * (2 * 1024 * 1024))
    result = euca.aws(
        "s3api", "put-object", "--no-sign-request", "--bucket", bucket, "--key", "k", "--body", str(body),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "AccessDenied" in result.stderr, result.stderr


def test_a_refused_put_without_expect_keeps_the_connection(euca: Any, bucket: str) -> None:
    # The body came with the head (no Expect): it is read and dropped, and the connection serves on.
    split = urlsplit(euca.url)
    put = f"PUT /{bucket}/k HTTP/1.1\r\nHost: {split.netloc}\r\nContent-Length: 5\r\n\r\nhello"
    get = f"GET /{bucket}/k HTTP/1.1\r\nHost: {split.netloc}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((split.hostname, split.port), timeout=60) as sock:
        sock.sendall(put.encode())
        first = b""
        while b"</Error>" not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        sock.sendall(get.encode())
        second = b""
        while chunk := sock.recv(65536):
            second += chunk
    assert first.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"Connection: close" not in first
    assert second.startswith(b"HTTP/1.1 403 Forbidden\r\n"), second[:200]


def test_five_gib_exactly_is_asked_for(s3_client: Any, bucket: str) -> None:
    url = s3_client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    status, _ = first_answer(url, {"Content-Length": str(5 * 1024**3), "Expect": "100-continue"})
    assert status == 100


def test_refusals_decided_on_the_head_come_before_continue(
    s3_client: Any, s3_other: Any, bucket: str, bucket_name: str
) -> None:
    # Signed by another account (authenticated, not allowed), to a bucket that does not exist, to an upload
    # that does not exist: each is answered on the head, and no body is asked for.
    headers = {"Content-Length": "123", "Expect": "100-continue"}
    url = s3_other.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    status, data = first_answer(url, headers)
    assert (status, b"<Code>AccessDenied</Code>" in data) == (403, True), data[:300]
    missing = bucket_name + "-missing"
    url = s3_client.generate_presigned_url(
        "put_object", Params={"Bucket": missing, "Key": "k"}, ExpiresIn=300
    )
    status, data = first_answer(url, headers)
    assert (status, b"<Code>NoSuchBucket</Code>" in data) == (404, True), data[:300]
    params = {"Bucket": bucket, "Key": "k", "UploadId": "no-such-upload", "PartNumber": 1}
    url = s3_client.generate_presigned_url("upload_part", Params=params, ExpiresIn=300)
    status, data = first_answer(url, headers)
    assert (status, b"<Code>NoSuchUpload</Code>" in data) == (404, True), data[:300]


def test_boto3_gets_the_early_refusal_over_https(tmp_path: Path, bucket_name: str) -> None:
    # The same over TLS (the https.port listener), which has no half-close to linger with.
    server = start_euca(
        tmp_path / "data",
        roles="clc,walrus",
        overrides={"https.port": 0, "https.host": "127.0.0.1", "default_image": False},
    )
    euca = next(server)
    try:
        ca = euca.data_dir / "credentials" / ADMIN_ACCOUNT / ADMIN_USER / "cloud-cert.pem"
        url = euca.ctx.endpoints["https"]
        config = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"})
        admin = boto3.client(
            "s3", endpoint_url=url, region_name=euca.region, verify=str(ca), config=config,
            aws_access_key_id=euca.admin.access_key, aws_secret_access_key=euca.admin.secret_key,
        )  # fmt: skip
        anonymous = boto3.client(
            "s3", endpoint_url=url, region_name=euca.region, verify=str(ca),
            config=config.merge(BotoConfig(signature_version=UNSIGNED)),
        )  # fmt: skip
        admin.create_bucket(Bucket=bucket_name)
        for size in (100, 2 * 1024 * 1024):
            with pytest.raises(ClientError) as e:
                anonymous.put_object(Bucket=bucket_name, Key="k", Body=b"x" * size)
            assert e.value.response["Error"]["Code"] == "AccessDenied"
            assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 0
            admin.put_object(Bucket=bucket_name, Key="k", Body=b"y" * size)
        assert admin.get_object(Bucket=bucket_name, Key="k")["Body"].read() == b"y" * (2 * 1024 * 1024)
    finally:
        server.close()
