"""Regressions from the Ceph s3-tests conformance run (SigV2 corner cases, ACL rendering, headers)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _with_headers(client: Any, operation: str, headers: dict[str, str | None]) -> None:
    def edit(params: dict[str, Any], **_: Any) -> None:
        for name, value in headers.items():
            if value is None:
                params["headers"].pop(name, None)
            else:
                params["headers"][name] = value

    client.meta.events.register(f"before-call.s3.{operation}", edit)


def test_sigv2_create_bucket_with_empty_user_agent(euca):
    # botocore's HmacV1Auth signs a bare bucket as "/bucket/" though it sends "/bucket".
    v2 = euca.client("s3", signature_version="s3")
    _with_headers(v2, "CreateBucket", {"User-Agent": ""})
    name = f"v2-{uuid.uuid4().hex[:12]}"
    v2.create_bucket(Bucket=name)
    v2.put_object(Bucket=name, Key="foo", Body=b"bar")
    assert v2.get_object(Bucket=name, Key="foo")["Body"].read() == b"bar"


@pytest.mark.parametrize("amz_date", ["", "Tue, 07 Jul 1950 21:53:04 GMT", "Bad Date"])
def test_sigv2_bad_amz_date_is_access_denied(euca, amz_date):
    v2 = euca.client("s3", signature_version="s3")
    _with_headers(v2, "CreateBucket", {"x-amz-date": amz_date})
    with pytest.raises(ClientError) as e:
        v2.create_bucket(Bucket=f"v2-{uuid.uuid4().hex[:12]}")
    assert code(e) == "AccessDenied"


def test_group_grants_render_before_the_owner(s3_client, bucket_name):
    s3_client.create_bucket(Bucket=bucket_name, ACL="public-read-write")
    grants = s3_client.get_bucket_acl(Bucket=bucket_name)["Grants"]
    assert [g["Grantee"]["Type"] for g in grants] == ["Group", "Group", "CanonicalUser"]
    assert grants[2]["Permission"] == "FULL_CONTROL" and grants[2]["Grantee"]["ID"]


def test_listing_corner_cases(s3_client, s3_anonymous, bucket):
    for key in ("a", "b/c"):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
    empty = s3_client.list_objects(Bucket=bucket, MaxKeys=0)
    assert empty["IsTruncated"] is False and "Contents" not in empty
    assert s3_client.list_objects_v2(Bucket=bucket, MaxKeys=0)["IsTruncated"] is False
    assert s3_client.list_objects(Bucket=bucket, Prefix="\n")["Prefix"] == "\n"
    assert s3_anonymous.list_buckets()["Buckets"] == []

    def unordered(params: dict[str, Any], **_: Any) -> None:
        params["url"] += "&allow-unordered=true"

    s3_client.meta.events.register("before-call.s3.ListObjects", unordered)
    try:
        with pytest.raises(ClientError) as e:
            s3_client.list_objects(Bucket=bucket, Delimiter="/")
        assert code(e) == "InvalidArgument"
    finally:
        s3_client.meta.events.unregister("before-call.s3.ListObjects", unordered)


def test_version_walk_survives_deleting_the_marker_version(s3_client, bucket):
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"1", b"2", b"3"):
        s3_client.put_object(Bucket=bucket, Key="k", Body=body)
    page = s3_client.list_object_versions(Bucket=bucket, MaxKeys=1)
    assert page["IsTruncated"]
    for v in page["Versions"]:
        s3_client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    rest = s3_client.list_object_versions(
        Bucket=bucket, KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"]
    )
    assert len(rest["Versions"]) == 2


def test_metadata_utf8_value_and_control_characters(s3_client, bucket):
    def unicode_meta(params: dict[str, Any], **_: Any) -> None:
        params["headers"]["x-amz-meta-meta1"] = "Hello World\xe9"

    s3_client.meta.events.register("before-call.s3.PutObject", unicode_meta)
    try:
        s3_client.put_object(Bucket=bucket, Key="u", Body=b"bar")
    finally:
        s3_client.meta.events.unregister("before-call.s3.PutObject", unicode_meta)
    got = s3_client.get_object(Bucket=bucket, Key="u")["Metadata"]["meta1"]
    assert got.encode("raw_unicode_escape").decode() == "Hello World\xe9"
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="c", Body=b"x", Metadata={"meta1": "\x04w"})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_complete_with_a_part_listed_twice_uses_the_last_entry(s3_client, bucket):
    uid = s3_client.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    first = s3_client.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=1, Body=b"B" * 8)["ETag"]
    last = s3_client.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=1, Body=b"A" * 8)["ETag"]
    s3_client.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 1, "ETag": last}]},
    )
    assert s3_client.get_object(Bucket=bucket, Key="m")["Body"].read() == b"A" * 8


def test_bucket_name_dot_dash(s3_client):
    name = f"foo.-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=name)
    s3_client.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3_client.create_bucket(Bucket=f"foo-.{uuid.uuid4().hex[:10]}")
    assert code(e) == "InvalidBucketName"
