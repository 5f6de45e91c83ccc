"""What S3 refuses and Walrus must refuse too (issue 13, items 3, 5, 6; issue 11): parse-before-auth and deep
nesting, document digests, DeleteObjects without an integrity header, reserved tag keys, policy values,
oversized location constraints and metadata, unknown storage classes and encryption, a declared size over
5 GiB refused before `100 Continue`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError

BAD_MD5 = base64.b64encode(hashlib.md5(b"something else").digest()).decode()


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def xml_code(r: httpx.Response) -> str:
    return r.text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def policy(bucket: str, **statement: object) -> str:
    base: dict[str, object] = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    base.update(statement)
    return json.dumps({"Version": "2012-10-17", "Statement": [base]})


@pytest.fixture
def tampering_client(euca: Any) -> Callable[[str, Callable[[Any], None]], Any]:
    """A fresh S3 client whose request for one operation is changed by `edit(request)` just before signing
    (so the signature still matches and only the edit is wrong)."""

    def make(operation: str, edit: Callable[[Any], None]) -> Any:
        client = euca.client("s3")

        def hook(request: Any, **_: Any) -> None:
            edit(request)

        client.meta.events.register(f"before-sign.s3.{operation}", hook)
        return client

    return make


def _without_checksums(request: Any) -> None:
    for name in list(request.headers.keys()):
        lowered = name.lower()
        if (
            lowered == "content-md5"
            or lowered.startswith("x-amz-checksum-")
            or lowered.startswith("x-amz-sdk-")
        ):
            del request.headers[name]


def _wrong_md5(request: Any) -> None:
    _without_checksums(request)
    request.headers["Content-MD5"] = BAD_MD5


# -- item 3: signatures first, bounded parsers -------------------------------------------------------------


def test_post_form_with_unknown_key_and_deep_policy_is_refused_by_key(euca, bucket):
    deep = base64.b64encode(b"[" * 1500 + b"]" * 1500).decode()
    fields = {"key": "x", "AWSAccessKeyId": "AKIDONOTEXIST", "policy": deep, "signature": "bm9wZQ=="}
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"data")})
    assert r.status_code == 403 and xml_code(r) == "InvalidAccessKeyId", r.text


def test_post_form_signed_deep_policy_is_an_invalid_policy(euca, bucket):
    deep = base64.b64encode(b'{"conditions":' + b"[" * 1500 + b"]" * 1500 + b"}").decode()
    signature = base64.b64encode(
        hmac.new(euca.admin.secret_key.encode(), deep.encode(), hashlib.sha1).digest()
    )
    fields = {
        "key": "x",
        "AWSAccessKeyId": euca.admin.access_key,
        "policy": deep,
        "signature": signature.decode(),
    }
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"data")})
    assert r.status_code == 400 and xml_code(r) == "InvalidPolicyDocument", r.text


def test_post_form_wrong_signature_is_refused_before_the_policy_is_read(euca, bucket):
    fields = {
        "key": "x",
        "AWSAccessKeyId": euca.admin.access_key,
        "policy": "!!not base64!!",
        "signature": "eA==",
    }
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"data")})
    assert r.status_code == 403 and xml_code(r) == "SignatureDoesNotMatch", r.text


@pytest.mark.parametrize("doc", ["[" * 1000 + "]" * 1000, '{"Statement":' + "[" * 1000 + "]" * 1000 + "}"])
def test_deeply_nested_policy_is_malformed(s3_client, bucket, doc):
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_policy(Bucket=bucket, Policy=doc)
    assert code(e) == "MalformedPolicy"


def test_deeply_nested_xml_is_malformed(tampering_client, bucket):
    deep = b"<Tagging><TagSet>" + b"<a>" * 2000 + b"</a>" * 2000 + b"</TagSet></Tagging>"

    def replace_body(request: Any) -> None:
        _without_checksums(request)
        request.data = deep
        request.headers["Content-Length"] = str(len(deep))
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(deep).digest()).decode()

    client = tampering_client("PutBucketTagging", replace_body)
    with pytest.raises(ClientError) as e:
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": []})
    assert code(e) == "MalformedXML"


def test_policy_over_20_kb_is_refused_and_whitespace_does_not_count(s3_client, bucket):
    resources = [f"arn:aws:s3:::{bucket}/{'p' * 90}{i}/*" for i in range(220)]
    big = policy(bucket, Resource=resources)
    assert len(big) > 20 * 1024
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_policy(Bucket=bucket, Policy=big)
    assert code(e) == "PolicyTooLarge"
    # Pretty-printed past 20 KB but under it without the whitespace: accepted.
    small = json.loads(policy(bucket, Resource=resources[:150]))
    pretty = json.dumps(small, indent=40)
    assert len(pretty) > 20 * 1024 and len(json.dumps(small, separators=(",", ":"))) < 20 * 1024
    s3_client.put_bucket_policy(Bucket=bucket, Policy=pretty)


@pytest.mark.parametrize(
    "condition",
    [
        {"NotIpAddress": {"aws:SourceIp": "not-an-address"}},
        {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "300.1.2.3"]}},
        {"NumericLessThan": {"s3:max-keys": "ten"}},
        {"Bool": {"aws:SecureTransport": "maybe"}},
        {"DateGreaterThan": {"aws:CurrentTime": "yesterday"}},
    ],
)
def test_policy_with_invalid_condition_value_is_malformed(s3_client, bucket, condition):
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, Condition=condition))
    assert code(e) == "MalformedPolicy"


def test_policy_with_valid_condition_values_is_accepted(s3_client, bucket):
    condition = {
        "NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]},
        "NumericLessThanEquals": {"s3:max-keys": "10"},
        "Bool": {"aws:SecureTransport": "false"},
        "DateLessThan": {"aws:CurrentTime": "2099-01-01T00:00:00Z"},
    }
    s3_client.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, Condition=condition))


def test_policy_allow_with_not_principal_is_malformed(s3_client, bucket):
    doc = json.loads(policy(bucket))
    statement = doc["Statement"][0]
    del statement["Principal"]
    statement["NotPrincipal"] = {"AWS": "arn:aws:iam::123456789012:root"}
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(doc))
    assert code(e) == "MalformedPolicy"
    statement["Effect"] = "Deny"
    s3_client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(doc))


# -- item 5: digests of documents ----------------------------------------------------------------------------


def test_wrong_content_md5_on_documents_is_bad_digest(tampering_client, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    calls: list[tuple[str, Callable[[Any], Any]]] = [
        ("PutBucketTagging", lambda c: c.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": []})),
        (
            "PutObjectTagging",
            lambda c: c.put_object_tagging(
                Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}
            ),
        ),
        ("DeleteObjects", lambda c: c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})),
        (
            "PutBucketVersioning",
            lambda c: c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
        ),
        ("PutBucketPolicy", lambda c: c.put_bucket_policy(Bucket=bucket, Policy=policy(bucket))),
    ]
    for operation, call in calls:
        with pytest.raises(ClientError) as e:
            call(tampering_client(operation, _wrong_md5))
        assert code(e) == "BadDigest", operation
    # Nothing was changed by the refused requests.
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    assert "Status" not in s3_client.get_bucket_versioning(Bucket=bucket)


def test_wrong_checksum_header_on_a_document_is_bad_digest(tampering_client, bucket):
    def wrong_crc(request: Any) -> None:
        _without_checksums(request)
        request.headers["x-amz-checksum-crc32"] = "AAAAAA=="

    client = tampering_client("PutBucketTagging", wrong_crc)
    with pytest.raises(ClientError) as e:
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert code(e) == "BadDigest"


def test_malformed_content_md5_on_a_document_is_invalid_digest(tampering_client, bucket):
    def bad(request: Any) -> None:
        _without_checksums(request)
        request.headers["Content-MD5"] = "not-an-md5"

    with pytest.raises(ClientError) as e:
        tampering_client("PutBucketTagging", bad).put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": []})
    assert code(e) == "InvalidDigest"


def test_right_content_md5_on_a_document_is_accepted(tampering_client, s3_client, bucket):
    def right_md5(request: Any) -> None:
        _without_checksums(request)
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(request.body).digest()).decode()

    client = tampering_client("PutBucketTagging", right_md5)
    client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert s3_client.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "a", "Value": "b"}]


def test_delete_objects_without_content_md5_or_checksum_is_refused(tampering_client, s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    client = tampering_client("DeleteObjects", _without_checksums)
    with pytest.raises(ClientError) as e:
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})
    assert code(e) == "InvalidRequest"
    assert e.value.response["Error"]["Message"] == "Missing required header for this request: Content-MD5"
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


# -- item 6: inputs S3 refuses -----------------------------------------------------------------------------


def test_aws_prefixed_tag_keys_are_refused(s3_client, bucket):
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_tagging(
            Bucket=bucket, Tagging={"TagSet": [{"Key": "aws:cloudformation", "Value": "v"}]}
        )
    assert code(e) == "InvalidTag"
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3_client.put_object_tagging(
            Bucket=bucket, Key="k", Tagging={"TagSet": [{"Key": "aws:x", "Value": "v"}]}
        )
    assert code(e) == "InvalidTag"


def test_location_constraint_of_5000_characters_is_refused(s3_client, bucket_name):
    with pytest.raises(ClientError) as e:
        s3_client.create_bucket(
            Bucket=bucket_name, CreateBucketConfiguration={"LocationConstraint": "x" * 5000}
        )
    assert code(e) == "InvalidLocationConstraint"
    with pytest.raises(ClientError) as e:
        s3_client.head_bucket(Bucket=bucket_name)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_user_metadata_over_2_kb_is_refused(s3_client, bucket):
    # 2 KB counted as S3 counts it: names (without x-amz-meta-) and values, in UTF-8.
    s3_client.put_object(Bucket=bucket, Key="fits", Body=b"x", Metadata={"m": "v" * 2047})
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="big", Body=b"x", Metadata={"m": "v" * 2048})
    assert code(e) == "MetadataTooLarge"
    with pytest.raises(ClientError) as e:
        s3_client.create_multipart_upload(
            Bucket=bucket, Key="big", Metadata={"a": "v" * 1500, "b": "w" * 600}
        )
    assert code(e) == "MetadataTooLarge"


def test_unknown_storage_class_and_encryption_are_refused(s3_client, bucket):
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", StorageClass="PLATINUM")
    assert code(e) == "InvalidStorageClass"
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="ROT13")
    assert code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3_client.create_multipart_upload(Bucket=bucket, Key="k", StorageClass="PLATINUM")
    assert code(e) == "InvalidStorageClass"
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", StorageClass="STANDARD")


def test_post_form_metadata_and_storage_class_are_checked_as_for_put(euca, s3_client, bucket):
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    fields = {"key": "x", "x-amz-meta-m": "v" * 2048}
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"data")})
    assert r.status_code == 400 and xml_code(r) == "MetadataTooLarge", r.text
    fields = {"key": "x", "x-amz-storage-class": "PLATINUM"}
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"data")})
    assert r.status_code == 400 and xml_code(r) == "InvalidStorageClass", r.text


# -- issue 11: a declared size over 5 GiB refused before 100 Continue -------------------------------------


def test_put_over_5_gib_is_refused_before_100_continue(euca, s3_client, bucket):
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    url = urlsplit(euca.url)
    size = 5 * 1024**3 + 1
    head = (
        f"PUT /{bucket}/huge HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {size}\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port or 80), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 400"), answer[:300]
        while b"</Error>" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert b"<Code>EntityTooLarge</Code>" in answer, answer[:600]
    assert b"100 Continue" not in answer


# -- the same through the aws CLI ----------------------------------------------------------------------------


def test_aws_cli_sees_the_aws_error_codes(aws_cli, s3_client, bucket):
    doc = json.loads(policy(bucket))
    statement = doc["Statement"][0]
    del statement["Principal"]
    statement["NotPrincipal"] = {"AWS": "arn:aws:iam::123456789012:root"}
    out = aws_cli("s3api", "put-bucket-policy", "--bucket", bucket, "--policy", json.dumps(doc), check=False)
    assert out.returncode != 0 and "MalformedPolicy" in out.stderr, out.stderr
    out = aws_cli("s3api", "put-bucket-policy", "--bucket", bucket, "--policy", "[" * 1000, check=False)
    assert out.returncode != 0 and "MalformedPolicy" in out.stderr, out.stderr
    tagging = json.dumps({"TagSet": [{"Key": "aws:x", "Value": "v"}]})
    out = aws_cli("s3api", "put-bucket-tagging", "--bucket", bucket, "--tagging", tagging, check=False)
    assert out.returncode != 0 and "InvalidTag" in out.stderr, out.stderr
    # The CLI's own DeleteObjects carries its digest and is accepted.
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    delete = json.dumps({"Objects": [{"Key": "k"}]})
    aws_cli("s3api", "delete-objects", "--bucket", bucket, "--delete", delete)
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)
