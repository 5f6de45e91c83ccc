"""Bucket server access logging (issue 11): Put/GetBucketLogging with S3's checks, and log objects delivered
into the target bucket in S3's server access log format (a delivery every 0.2 s on this module's server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.polling import wait_until
from helpers.server import EucaServer, start_euca


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    yield from start_euca(
        tmp_path_factory.mktemp("logging"), "walrus,clc", {"walrus.log_delivery_interval": 0.2}
    )


@pytest.fixture(scope="module")
def s3(server: EucaServer) -> Any:
    return server.client("s3")


def new_bucket(s3: Any) -> str:
    name = "log-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


def test_logging_configuration(s3: Any, server: EucaServer) -> None:
    source, target = new_bucket(s3), new_bucket(s3)
    assert "LoggingEnabled" not in s3.get_bucket_logging(Bucket=source)
    status = {"LoggingEnabled": {"TargetBucket": target, "TargetPrefix": "logs/"}}
    s3.put_bucket_logging(Bucket=source, BucketLoggingStatus=status)
    assert s3.get_bucket_logging(Bucket=source)["LoggingEnabled"] == status["LoggingEnabled"]
    with pytest.raises(ClientError) as e:
        s3.put_bucket_logging(
            Bucket=source,
            BucketLoggingStatus={"LoggingEnabled": {"TargetBucket": "no-such-" + target, "TargetPrefix": ""}},
        )
    assert e.value.response["Error"]["Code"] == "InvalidTargetBucketForLogging"
    other = server.client("s3", creds=server.other)
    theirs = "log-" + uuid.uuid4().hex[:16]
    other.create_bucket(Bucket=theirs)
    with pytest.raises(ClientError) as e:
        s3.put_bucket_logging(
            Bucket=source,
            BucketLoggingStatus={"LoggingEnabled": {"TargetBucket": theirs, "TargetPrefix": ""}},
        )
    assert e.value.response["Error"]["Code"] == "InvalidTargetBucketForLogging"
    s3.put_bucket_logging(Bucket=source, BucketLoggingStatus={})
    assert "LoggingEnabled" not in s3.get_bucket_logging(Bucket=source)


def test_requests_are_delivered_as_log_objects(s3: Any) -> None:
    source, target = new_bucket(s3), new_bucket(s3)
    s3.put_bucket_logging(
        Bucket=source,
        BucketLoggingStatus={"LoggingEnabled": {"TargetBucket": target, "TargetPrefix": "logs/"}},
    )
    s3.put_object(Bucket=source, Key="hello world.txt", Body=b"hi")
    s3.get_object(Bucket=source, Key="hello world.txt")["Body"].read()
    with pytest.raises(ClientError):
        s3.get_object(Bucket=source, Key="missing")

    def records() -> list[str] | None:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=target, Prefix="logs/").get("Contents", [])]
        lines = [
            line
            for k in keys
            for line in s3.get_object(Bucket=target, Key=k)["Body"].read().decode().splitlines()
        ]
        return lines if len(lines) >= 3 else None

    lines = wait_until("three access log records", records, deadline=60, interval=0.2)
    text = "\n".join(lines)
    assert f" {source} [" in text
    put = next(line for line in lines if "REST.PUT.OBJECT" in line)
    assert "hello%20world.txt" in put and '"PUT /' in put and " 200 " in put and "SigV4" in put
    missing = next(line for line in lines if " missing " in line)
    assert "REST.GET.OBJECT" in missing and " 404 NoSuchKey " in missing
    owner = s3.get_bucket_acl(Bucket=target)["Owner"]["ID"]
    key = s3.list_objects_v2(Bucket=target, Prefix="logs/")["Contents"][0]["Key"]
    assert s3.get_object_acl(Bucket=target, Key=key)["Owner"]["ID"] == owner


def test_log_objects_follow_the_targets_default_encryption(s3: Any) -> None:
    source, target = new_bucket(s3), new_bucket(s3)
    s3.put_bucket_encryption(
        Bucket=target,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_logging(
        Bucket=source,
        BucketLoggingStatus={"LoggingEnabled": {"TargetBucket": target, "TargetPrefix": "enc/"}},
    )
    s3.put_object(Bucket=source, Key="k", Body=b"hi")

    def delivered() -> str | None:
        contents = s3.list_objects_v2(Bucket=target, Prefix="enc/").get("Contents", [])
        return str(contents[0]["Key"]) if contents else None

    key = wait_until("a log object", delivered, deadline=60, interval=0.2)
    got = s3.get_object(Bucket=target, Key=key)
    assert got["ServerSideEncryption"] == "AES256"
    assert f" {source} [" in got["Body"].read().decode()  # read back decrypted
