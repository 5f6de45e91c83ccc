"""S3 on HTTPS (issues 11 and 13): walrus.https_port serves S3 with a certificate the cloud CA issued, which
boto3 and the aws CLI verify with the cloud certificate; SSE-C is refused on HTTP and not done on HTTPS."""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, SSLError

from helpers.server import EucaServer, start_euca


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    yield from start_euca(tmp_path_factory.mktemp("https"), "walrus,clc", {"walrus.https_port": 0})


def https_client(server: EucaServer, verify: str | bool) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.ctx.endpoints["walrus-https"],
        region_name=server.region,
        aws_access_key_id=server.admin.access_key,
        aws_secret_access_key=server.admin.secret_key,
        verify=verify,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}),
    )


def ca_file(server: EucaServer, tmp_path: Path) -> str:
    path = tmp_path / "cloud-cert.pem"
    path.write_bytes(server.ctx.ca.cert_pem)
    return str(path)


def test_boto3_over_https_verified_by_the_cloud_ca(server: EucaServer, tmp_path: Path) -> None:
    s3 = https_client(server, ca_file(server, tmp_path))
    bucket = "tls-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"over tls" * 10000)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"over tls" * 10000
    # The same bucket over plain HTTP: one service, two listeners.
    assert server.client("s3").head_object(Bucket=bucket, Key="k")["ContentLength"] == 80000


def test_an_unverified_certificate_is_refused_by_default_trust(server: EucaServer) -> None:
    with pytest.raises(SSLError):
        https_client(server, True).list_buckets()


def test_aws_cli_with_the_ca_bundle(server: EucaServer, tmp_path: Path) -> None:
    out = server.aws(
        "s3api", "list-buckets", "--endpoint-url", server.ctx.endpoints["walrus-https"],
        "--ca-bundle", ca_file(server, tmp_path),
    )  # fmt: skip
    assert '"Buckets"' in out.stdout


def test_the_certificate_names_the_host(server: EucaServer, tmp_path: Path) -> None:
    context = ssl.create_default_context(cafile=ca_file(server, tmp_path))
    host, port = server.ctx.endpoints["walrus-https"].removeprefix("https://").rsplit(":", 1)
    import socket

    with (
        socket.create_connection((host, int(port))) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_sse_c_refused_in_clear_and_not_done_over_tls(server: EucaServer, tmp_path: Path) -> None:
    key = os.urandom(32)
    sse_c: dict[str, Any] = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    bucket = "tls-" + uuid.uuid4().hex[:12]
    server.client("s3").create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        server.client("s3").put_object(Bucket=bucket, Key="c", Body=b"x", **sse_c)
    assert e.value.response["Error"]["Code"] == "InvalidRequest"
    with pytest.raises(ClientError) as e:
        https_client(server, ca_file(server, tmp_path)).put_object(Bucket=bucket, Key="c", Body=b"x", **sse_c)
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    assert base64.b64encode(hashlib.md5(key).digest())  # the key never reached a stored object


def test_the_credentials_profile_trusts_the_cloud_ca(server: EucaServer) -> None:
    creds_dirs = list((server.data_dir / "credentials").glob("*/admin"))
    assert creds_dirs
    config = (creds_dirs[0] / "aws-config").read_text()
    line = next(x for x in config.splitlines() if x.startswith("ca_bundle = "))
    assert Path(line.split(" = ", 1)[1]).read_bytes() == server.ctx.ca.cert_pem
