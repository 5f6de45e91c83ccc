"""The users' APIs on HTTPS beside HTTP (issue 13): EC2, S3, IAM and STS through one TLS listener whose
certificate the cloud CA issued, verified by boto3 and the aws CLI with the CA from the credentials directory
(never verify=False); aws:SecureTransport true there and false on HTTP."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from euca.core.credentials import write_credentials
from euca.core.identity import ADMIN_ACCOUNT, ADMIN_USER
from helpers.aws_cli import run_aws
from helpers.server import EucaServer, start_euca


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    yield from start_euca(
        tmp_path_factory.mktemp("https"),
        roles="clc,walrus",
        overrides={"https.port": 0, "https.host": "127.0.0.1", "default_image": False},
    )


@pytest.fixture(scope="module")
def creds_dir(cloud: EucaServer) -> Path:
    return cloud.data_dir / "credentials" / ADMIN_ACCOUNT / ADMIN_USER


@pytest.fixture(scope="module")
def https_url(cloud: EucaServer) -> str:
    return cloud.ctx.endpoints["https"]


def _client(cloud: EucaServer, service: str, url: str, ca: Path | bool, **kw: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=cloud.region,
        aws_access_key_id=cloud.admin.access_key,
        aws_secret_access_key=cloud.admin.secret_key,
        verify=str(ca) if isinstance(ca, Path) else ca,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **kw),
    )


def test_credentials_carry_the_cloud_ca(cloud: EucaServer, creds_dir: Path) -> None:
    eucarc = (creds_dir / "eucarc").read_text()
    assert "export AWS_CA_BUNDLE=${EUCA_KEY_DIR}/cloud-cert.pem" in eucarc
    assert (creds_dir / "cloud-cert.pem").read_bytes() == cloud.ctx.ca.cert_pem


def test_boto3_over_https_verifies_the_cloud_ca(
    cloud: EucaServer, creds_dir: Path, https_url: str, bucket_name: str
) -> None:
    ca = creds_dir / "cloud-cert.pem"
    s3 = _client(cloud, "s3", https_url, ca)
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="k", Body=b"over tls")
    assert s3.get_object(Bucket=bucket_name, Key="k")["Body"].read() == b"over tls"
    ec2 = _client(cloud, "ec2", https_url + "/services/compute", ca)
    assert ec2.describe_regions()["Regions"]
    iam = _client(cloud, "iam", https_url + "/services/Euare", ca)
    assert iam.get_user()["User"]["UserName"] == ADMIN_USER
    sts = _client(cloud, "sts", https_url + "/services/Tokens", ca)
    assert sts.get_caller_identity()["Account"]
    # The same listener is refused by a client that does not trust the cloud CA: the verification is real.
    untrusting = _client(cloud, "s3", https_url, True)
    with pytest.raises(botocore.exceptions.SSLError):
        untrusting.list_buckets()


def test_aws_cli_over_https(cloud: EucaServer, creds_dir: Path, https_url: str, bucket_name: str) -> None:
    ca = str(creds_dir / "cloud-cert.pem")

    def aws(url: str, *args: str, check: bool = True) -> Any:
        a = cloud.admin
        return run_aws(url, cloud.region, a.access_key, a.secret_key, "--ca-bundle", ca, *args, check=check)

    aws(https_url, "s3", "mb", f"s3://{bucket_name}")
    assert bucket_name in aws(https_url, "s3", "ls").stdout
    regions = json.loads(aws(https_url + "/services/compute", "ec2", "describe-regions").stdout)
    assert regions["Regions"]
    # Without the CA the CLI refuses the certificate.
    a = cloud.admin
    refused = run_aws(https_url, cloud.region, a.access_key, a.secret_key, "s3", "ls", check=False)
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr


def test_certificate_names_the_host(cloud: EucaServer, https_url: str) -> None:
    host, port = https_url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cadata=cloud.ctx.ca.cert_pem.decode())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_secure_transport_condition(
    cloud: EucaServer, creds_dir: Path, https_url: str, bucket_name: str
) -> None:
    s3 = cloud.client("s3")
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="public", Body=b"tls only")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket_name}/*",
                "Condition": {"Bool": {"aws:SecureTransport": "true"}},
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket_name, Policy=json.dumps(policy))

    def anonymous(url: str, verify: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=url,
            region_name=cloud.region,
            verify=verify,
            config=BotoConfig(
                signature_version=UNSIGNED, s3={"addressing_style": "path"}, retries={"max_attempts": 1}
            ),
        )

    over_tls = anonymous(https_url, str(creds_dir / "cloud-cert.pem"))
    assert over_tls.get_object(Bucket=bucket_name, Key="public")["Body"].read() == b"tls only"
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        anonymous(cloud.url, True).get_object(Bucket=bucket_name, Key="public")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def test_https_profile_in_aws_config(tmp_path: Path, cloud: EucaServer) -> None:
    """With a fixed https.port the credentials get profile euca-https, trusting the cloud CA."""

    class _Key:
        access_key_id = "AKIDEXAMPLE"
        secret_key = "secret"

        class principal:  # noqa: N801 (shape of Principal the writer reads)
            user_name, account_name, account_id = "admin", "eucalyptus", "000000000000"

    write_credentials(
        tmp_path,
        _Key(),  # type: ignore[arg-type]
        ec2_url="http://h:8773",
        s3_url="http://h:8773",
        region="r",
        cloud_cert_pem=cloud.ctx.ca.cert_pem,
        https_url="https://h:8443",
    )
    config = (tmp_path / "aws-config").read_text()
    assert "[profile euca-https]\nregion = r\nendpoint_url = https://h:8443\n" in config
    assert f"ca_bundle = {tmp_path.resolve() / 'cloud-cert.pem'}" in config
    assert "iam =\n    endpoint_url = https://h:8443/services/Euare" in config
    assert "export EUCA_HTTPS_URL=https://h:8443" in (tmp_path / "eucarc").read_text()


def test_sse_c_passes_the_transport_rule_over_https(
    cloud: EucaServer, creds_dir: Path, https_url: str, bucket_name: str
) -> None:
    """SSE-C is refused over plain HTTP (the key crossed the wire in clear, InvalidRequest as S3); over this
    listener it passes that rule and the object is stored under the customer key (test_s3_encryption.py)."""
    key = b"k" * 32
    sse_c: dict[str, Any] = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    cloud.client("s3").create_bucket(Bucket=bucket_name)
    with pytest.raises(botocore.exceptions.ClientError) as clear:
        cloud.client("s3").put_object(Bucket=bucket_name, Key="c", Body=b"x", **sse_c)
    assert clear.value.response["Error"]["Code"] == "InvalidRequest"
    s3 = _client(cloud, "s3", https_url, creds_dir / "cloud-cert.pem")
    s3.put_object(Bucket=bucket_name, Key="c", Body=b"x", **sse_c)
    assert s3.get_object(Bucket=bucket_name, Key="c", **sse_c)["Body"].read() == b"x"
