"""Walrus on two hosts: two servers with data directories of their own (no mapped change counter shared),
one PostgreSQL database (store.url) and one S3 backend for the bytes (walrus.backend = "s3", SeaweedFS), so
either may answer any request. What one writes, the other's caches (object rows, buckets with their
policies) let go of as soon as the write's notice arrives (core/store/listen.py); the tests poll for it,
as a client may meet the instant between a commit and its notice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import httpx
import pytest

from helpers import postgres
from helpers.polling import wait_until
from helpers.seaweedfs import SeaweedCluster, backend_overrides
from helpers.server import EucaServer, start_hosts


@pytest.fixture(scope="module")
def walruses(
    pg_cluster: postgres.Cluster, seaweedfs: SeaweedCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[EucaServer]]:
    overrides = {
        "store.url": pg_cluster.create_database("walrus_hosts"),
        **backend_overrides(seaweedfs, bucket="hosts-" + uuid.uuid4().hex[:12]),
    }
    yield from start_hosts(tmp_path_factory, "walrus", "walrus", overrides)


def _code(call: Callable[[], Any]) -> str | None:
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return str(e.response["Error"]["Code"])
    return None


def _body(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError:
        return None
    return data


@pytest.mark.parametrize("size", [100, 300 * 1024], ids=["inline", "backend"])
def test_objects_written_through_one_host_are_read_through_the_other(
    walruses: list[EucaServer], size: int
) -> None:
    a, b = (w.client("s3") for w in walruses)
    bucket = "hosts-" + uuid.uuid4().hex[:12]
    a.create_bucket(Bucket=bucket)
    wait_until(
        "b to know the bucket", lambda: _code(lambda: b.head_bucket(Bucket=bucket)) is None, interval=0.05
    )
    old, new = b"o" * size, b"n" * size
    a.put_object(Bucket=bucket, Key="k", Body=old)
    assert wait_until("b to read what a wrote", lambda: _body(b, bucket, "k"), interval=0.05) == old
    assert _body(b, bucket, "k") == old  # now in b's object cache
    a.put_object(Bucket=bucket, Key="k", Body=new)
    wait_until("b to read the overwrite", lambda: _body(b, bucket, "k") == new, interval=0.05)
    b.delete_object(Bucket=bucket, Key="k")
    wait_until(
        "a to see the delete", lambda: _code(lambda: a.head_object(Bucket=bucket, Key="k")), interval=0.05
    )
    a.delete_bucket(Bucket=bucket)
    code = wait_until(
        "b to see the bucket deleted", lambda: _code(lambda: b.head_bucket(Bucket=bucket)), interval=0.05
    )
    assert code == "404"


def test_a_bucket_policy_put_through_one_host_applies_on_the_other(walruses: list[EucaServer]) -> None:
    a_host, b_host = walruses
    a = a_host.client("s3")
    bucket = "hosts-" + uuid.uuid4().hex[:12]
    a.create_bucket(Bucket=bucket)
    a.put_object(Bucket=bucket, Key="page", Body=b"hello")
    anonymous = f"{b_host.url}/{bucket}/page"

    def anonymous_status() -> int:
        return httpx.get(anonymous).status_code

    wait_until("b to know the bucket", lambda: anonymous_status() == 403, interval=0.05)  # private
    public = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    wait_until("b to apply the policy put through a", lambda: anonymous_status() == 200, interval=0.05)
    a.delete_bucket_policy(Bucket=bucket)
    wait_until("b to drop the policy deleted through a", lambda: anonymous_status() == 403, interval=0.05)


def test_a_host_without_the_clouds_sse_key_refuses_sse_s3(walruses: list[EucaServer]) -> None:
    """Each host made its own walrus-sse.key here; the first to start holds the cloud's. The other logs which
    file to copy and refuses SSE-S3 (503) rather than write what the first could not read."""
    a, b = (w.client("s3") for w in walruses)
    bucket = "hosts-" + uuid.uuid4().hex[:12]
    a.create_bucket(Bucket=bucket)
    wait_until(
        "b to know the bucket", lambda: _code(lambda: b.head_bucket(Bucket=bucket)) is None, interval=0.05
    )
    a.put_object(Bucket=bucket, Key="enc", Body=b"secret", ServerSideEncryption="AES256")
    assert a.get_object(Bucket=bucket, Key="enc")["Body"].read() == b"secret"
    put = _code(lambda: b.put_object(Bucket=bucket, Key="e2", Body=b"x", ServerSideEncryption="AES256"))
    assert put == "ServiceUnavailable"

    def b_answers() -> str | None:
        code = _code(lambda: b.get_object(Bucket=bucket, Key="enc"))
        return None if code in (None, "NoSuchKey") else code

    assert wait_until("b to know the object", b_answers, interval=0.05) == "ServiceUnavailable"
    b.put_object(Bucket=bucket, Key="plain", Body=b"p")  # plaintext goes on through either host
