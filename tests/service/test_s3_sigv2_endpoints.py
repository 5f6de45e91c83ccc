"""Signatures against both S3 endpoint forms: the bare http://host:port and the service path eucarc's S3_URL
names (http://host:port/services/objectstorage), with SigV2 (botocore's "s3") and SigV4 ("s3v4"), headers and
presigned URLs alike (issue 11: the path the client signed includes the service prefix)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from helpers.aws_cli import run_aws

PREFIXES = ["", "/services/objectstorage", "/services/Walrus"]
SIGNATURES = ["s3", "s3v4"]


def client(euca: Any, prefix: str, signature: str, addressing: str = "path") -> Any:
    return boto3.client(
        "s3",
        endpoint_url=euca.url + prefix,
        region_name="us-east-1",
        aws_access_key_id=euca.admin.access_key,
        aws_secret_access_key=euca.admin.secret_key,
        config=Config(
            signature_version=signature,
            s3={"addressing_style": addressing},
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )


@pytest.mark.parametrize("signature", SIGNATURES)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_calls_and_presigned_urls(euca, prefix, signature):
    s3 = client(euca, prefix, signature)
    bucket = "sig-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="dir/a b+c.txt", Body=b"hello", Metadata={"k": "v"})
    got = s3.get_object(Bucket=bucket, Key="dir/a b+c.txt")
    assert got["Body"].read() == b"hello"
    assert got["Metadata"] == {"k": "v"}
    s3.put_object_acl(Bucket=bucket, Key="dir/a b+c.txt", ACL="private")
    assert s3.get_object_acl(Bucket=bucket, Key="dir/a b+c.txt")["Grants"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]] == [
        "dir/a b+c.txt"
    ]
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "up/load.bin"}, ExpiresIn=300
    )
    assert httpx.put(put_url, content=b"presigned body").status_code == 200
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "up/load.bin"}, ExpiresIn=300
    )
    r = httpx.get(get_url)
    assert r.status_code == 200, r.text
    assert r.content == b"presigned body"
    overridden = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "up/load.bin", "ResponseContentType": "text/x-test"},
        ExpiresIn=300,
    )
    r = httpx.get(overridden)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/x-test"

    s3.delete_object(Bucket=bucket, Key="dir/a b+c.txt")
    s3.delete_object(Bucket=bucket, Key="up/load.bin")
    s3.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize("signature", SIGNATURES)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_tampered_presigned_url_is_refused(euca, prefix, signature):
    s3 = client(euca, prefix, signature)
    bucket = "sig-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="one", Body=b"1")
    s3.put_object(Bucket=bucket, Key="two", Body=b"2")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "one"}, ExpiresIn=300)
    r = httpx.get(url.replace(f"/{bucket}/one?", f"/{bucket}/two?"))
    assert r.status_code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in r.content


@pytest.mark.parametrize("signature", SIGNATURES)
def test_a_signature_for_one_prefix_is_not_replayed_on_another_path(euca, signature):
    """The prefix may be signed or not (both name the same resource), but the rest of the path is signed."""
    s3 = client(euca, "/services/objectstorage", signature)
    bucket = "sig-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_object(Bucket=bucket, Key="services/objectstorage/k", Body=b"y")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    assert httpx.get(url).content == b"x"
    # The same signature on the bare endpoint names the same object: fine either way, but never another one.
    bare = url.replace("/services/objectstorage/", "/", 1)
    r = httpx.get(bare)
    assert r.status_code in (200, 403)
    if r.status_code == 200:
        assert r.content == b"x"


def test_errors_still_name_the_request(euca):
    s3 = client(euca, "/services/objectstorage", "s3")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="no-such-bucket-" + uuid.uuid4().hex[:8], Key="k")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"


def test_aws_cli_presign_below_the_service_prefix(euca, tmp_path):
    """`aws s3 presign` against eucarc's S3_URL, in us-east-1 as many users leave it (its SigV2 URLs sign the
    whole path, prefix included; boto3's calls sign the path below it: both must verify)."""
    s3 = client(euca, "", "s3v4")
    bucket = "sig-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a b.txt", Body=b"from the cli")
    config = tmp_path / "aws-config"
    # Left to itself the CLI presigns with SigV2 in us-east-1; the config can ask for SigV4.
    for extra, marker in (("", "AWSAccessKeyId="), ("    signature_version = s3v4\n", "X-Amz-Signature=")):
        config.write_text(f"[default]\ns3 =\n    addressing_style = path\n{extra}")
        out = run_aws(
            euca.url + "/services/objectstorage",
            "us-east-1",
            euca.admin.access_key,
            euca.admin.secret_key,
            "s3",
            "presign",
            f"s3://{bucket}/a b.txt",
            config_file=config,
        )
        url = out.stdout.strip()
        assert marker in url
        r = httpx.get(url)
        assert r.status_code == 200, (url, r.text)
        assert r.content == b"from the cli"
    ls = run_aws(
        euca.url + "/services/objectstorage",
        "us-east-1",
        euca.admin.access_key,
        euca.admin.secret_key,
        "s3",
        "ls",
        f"s3://{bucket}/",
        config_file=config,
    )
    assert "a b.txt" in ls.stdout
