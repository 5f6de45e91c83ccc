"""POST Object (browser-based form uploads): boto3's presigned POST (SigV4), SigV2 policies, anonymous uploads,
policy violations, and the streaming form parser."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
from typing import Any

import httpx
import pytest

from euca.protocol.s3 import S3Error
from euca.protocol.s3 import post as s3_post


def _policy(conditions: list[Any], seconds: int = 600) -> str:
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    doc = {"expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "conditions": conditions}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def _v2_fields(euca: Any, policy: str) -> dict[str, str]:
    signature = base64.b64encode(
        hmac.new(euca.admin.secret_key.encode(), policy.encode(), hashlib.sha1).digest()
    )
    return {"AWSAccessKeyId": euca.admin.access_key, "policy": policy, "signature": signature.decode()}


def _code(r: httpx.Response) -> str:
    return r.text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def test_presigned_post_sigv4_from_boto3(euca, s3_client, bucket):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several parser pieces
    post = s3_client.generate_presigned_post(
        bucket,
        "uploads/${filename}",
        Fields={"x-amz-meta-color": "blue", "Content-Type": "image/png"},
        Conditions=[
            ["starts-with", "$key", "uploads/"],
            {"x-amz-meta-color": "blue"},
            ["starts-with", "$Content-Type", "image/"],
            ["content-length-range", 1, 4 * 1024 * 1024],
        ],
    )
    r = httpx.post(post["url"], data=post["fields"], files={"file": ("photo.png", data)})
    assert r.status_code == 204, r.text
    got = s3_client.get_object(Bucket=bucket, Key="uploads/photo.png")
    assert got["Body"].read() == data
    assert got["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert got["Metadata"] == {"color": "blue"} and got["ContentType"] == "image/png"


def test_sigv2_policy_201_response_acl_and_tags(euca, s3_client, bucket):
    tagging = "<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>"
    policy = _policy(
        [
            {"bucket": bucket},
            ["starts-with", "$key", "foo"],
            {"acl": "public-read"},
            {"success_action_status": "201"},
            ["starts-with", "$tagging", ""],
            ["content-length-range", 0, 1024],
        ]
    )
    fields = {
        "key": "foo.txt",
        "acl": "public-read",
        "success_action_status": "201",
        "tagging": tagging,
        **_v2_fields(euca, policy),
    }
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"bar")})
    assert r.status_code == 201, r.text
    assert "<Key>foo.txt</Key>" in r.text and f"<Bucket>{bucket}</Bucket>" in r.text
    assert httpx.get(f"{euca.url}/{bucket}/foo.txt").content == b"bar"  # public-read
    assert s3_client.get_object_tagging(Bucket=bucket, Key="foo.txt")["TagSet"] == [
        {"Key": "k", "Value": "v"}
    ]


def test_redirect_after_upload(euca, s3_client, bucket):
    policy = _policy([{"bucket": bucket}, {"key": "r.txt"}, ["starts-with", "$success_action_redirect", ""]])
    fields = {
        "key": "r.txt",
        "success_action_redirect": "http://example.invalid/done",
        **_v2_fields(euca, policy),
    }
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"abc")})
    assert r.status_code == 303
    etag = hashlib.md5(b"abc").hexdigest()
    assert r.headers["location"] == f"http://example.invalid/done?bucket={bucket}&key=r.txt&etag=%22{etag}%22"


def test_anonymous_needs_public_write(euca, s3_client, bucket, bucket_name):
    r = httpx.post(f"{euca.url}/{bucket}", data={"key": "a"}, files={"file": ("x", b"1")})
    assert r.status_code == 403 and _code(r) == "AccessDenied"
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    r = httpx.post(f"{euca.url}/{bucket}", data={"key": "a"}, files={"file": ("x", b"1")})
    assert r.status_code == 204
    assert s3_client.get_object(Bucket=bucket, Key="a")["Body"].read() == b"1"


@pytest.mark.parametrize(
    "conditions,fields,status,code",
    [
        ([["starts-with", "$key", "bar"]], {}, 403, "AccessDenied"),  # condition fails
        ([{"key": "foo.txt"}], {"x-amz-meta-a": "b"}, 403, "AccessDenied"),  # field not named by the policy
        ([{"key": "foo.txt"}, ["content-length-range", 0, 2]], {}, 400, "EntityTooLarge"),
        ([{"key": "foo.txt"}, ["content-length-range", 10, 20]], {}, 400, "EntityTooSmall"),
        ([{"key": "foo.txt"}, ["content-length-range", 0]], {}, 400, "InvalidPolicyDocument"),
    ],
)
def test_policy_violations(euca, s3_client, bucket, conditions, fields, status, code):
    policy = _policy([{"bucket": bucket}, *conditions])
    r = httpx.post(
        f"{euca.url}/{bucket}",
        data={"key": "foo.txt", **fields, **_v2_fields(euca, policy)},
        files={"file": ("x", b"bar")},
    )
    assert (r.status_code, _code(r)) == (status, code)
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)


def test_bad_signature_and_expired_policy(euca, bucket):
    policy = _policy([{"bucket": bucket}, {"key": "foo.txt"}])
    fields = {"key": "foo.txt", **_v2_fields(euca, policy)}
    fields["signature"] = fields["signature"][::-1]
    r = httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"bar")})
    assert (r.status_code, _code(r)) == (403, "SignatureDoesNotMatch")
    expired = _policy([{"bucket": bucket}, {"key": "foo.txt"}], seconds=-60)
    r = httpx.post(
        f"{euca.url}/{bucket}",
        data={"key": "foo.txt", **_v2_fields(euca, expired)},
        files={"file": ("x", b"bar")},
    )
    assert (r.status_code, _code(r)) == (403, "AccessDenied")


def test_parser_streams_file_byte_by_byte():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="Key"\r\n\r\nk\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"\r\n--Xy" * 3 + b"\r\n--XyZ--\r\n"
    )
    parser = s3_post.MultipartParser(s3_post.boundary_of("multipart/form-data; boundary=XyZ"))
    events = [e for i in range(len(body)) for e in parser.feed(body[i : i + 1])]
    parser.finish()
    assert events[0] == s3_post.Field("Key", "k")
    assert events[1] == s3_post.FileStart("a.bin", "application/octet-stream")
    assert b"".join(e.data for e in events if isinstance(e, s3_post.FileData)) == b"\r\n--Xy" * 3
    assert isinstance(events[-1], s3_post.FileEnd)
    truncated = s3_post.MultipartParser(b"XyZ")
    truncated.feed(body[:-20])
    with pytest.raises(S3Error):
        truncated.finish()


def _v2_fields_for(creds: Any, policy: str) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(creds.secret_key.encode(), policy.encode(), hashlib.sha1).digest())
    return {"AWSAccessKeyId": creds.access_key, "policy": policy, "signature": signature.decode()}


def _bucket_policy(s3_client: Any, bucket: str, effect: str, principal: Any) -> None:
    statement = {
        "Effect": effect,
        "Principal": principal,
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    s3_client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )


def test_the_bucket_policy_judges_form_uploads(euca, s3_client, bucket):
    """A form upload is its signer's PutObject of the form's key under the bucket's policy: an Allow grants
    what the ACL does not, a Deny refuses what the ACL grants (issue 11's audit of POST uploads)."""
    other_account = {a.name: a.account_id for a in euca.ctx.identity.list_accounts()}[euca.other.account]
    policy = _policy([{"bucket": bucket}, ["starts-with", "$key", ""]])

    def upload(key: str) -> httpx.Response:
        fields = {"key": key, **_v2_fields_for(euca.other, policy)}
        return httpx.post(f"{euca.url}/{bucket}", data=fields, files={"file": ("x", b"form")})

    r = upload("by-acl-alone")
    assert r.status_code == 403 and _code(r) == "AccessDenied"  # the other account holds no WRITE
    _bucket_policy(s3_client, bucket, "Allow", {"AWS": other_account})
    assert upload("allowed").status_code == 204
    # The writer owns the object (the bucket owner is not granted it), as in S3 without ownership controls.
    assert (
        euca.client("s3", creds=euca.other).get_object(Bucket=bucket, Key="allowed")["Body"].read() == b"form"
    )

    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    _bucket_policy(s3_client, bucket, "Deny", {"AWS": other_account})
    r = upload("denied")
    assert r.status_code == 403 and _code(r) == "AccessDenied"
    anonymous = httpx.post(f"{euca.url}/{bucket}", data={"key": "anon"}, files={"file": ("x", b"1")})
    assert anonymous.status_code == 204  # the Deny names the other account only


def test_a_checksum_field_is_verified_and_kept(euca: Any, s3_client: Any, bucket: str) -> None:
    data = b"form bytes" * 1000
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    for value, status in ((good, 204), (base64.b64encode(b"x" * 32).decode(), 400)):
        post = s3_client.generate_presigned_post(bucket, "summed")
        fields = dict(post["fields"], **{"x-amz-checksum-sha256": value})
        r = httpx.post(post["url"], data=fields, files={"file": ("f", data)})
        assert r.status_code == status, r.text
        if status == 400:
            assert _code(r) == "BadDigest"
    got = s3_client.head_object(Bucket=bucket, Key="summed", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == good
