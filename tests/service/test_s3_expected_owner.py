"""x-amz-expected-bucket-owner (boto3's ExpectedBucketOwner) and, on copies, x-amz-source-expected-bucket-owner
(ExpectedSourceBucketOwner): a request whose bucket belongs to another account is refused with AccessDenied."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


@pytest.fixture(scope="module")
def account_ids(euca: Any) -> dict[str, str]:
    accounts = {a.name: a.account_id for a in euca.ctx.identity.list_accounts()}
    return {"admin": accounts[euca.admin.account], "other": accounts[euca.other.account]}


def refused(fn: Any, **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as e:
        fn(**kwargs)
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_matching_owner_is_served(s3_client, account_ids, bucket):
    mine = account_ids["admin"]
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", ExpectedBucketOwner=mine)
    assert s3_client.get_object(Bucket=bucket, Key="k", ExpectedBucketOwner=mine)["Body"].read() == b"x"
    s3_client.head_bucket(Bucket=bucket, ExpectedBucketOwner=mine)
    assert s3_client.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=mine)["KeyCount"] == 1
    s3_client.get_bucket_acl(Bucket=bucket, ExpectedBucketOwner=mine)
    s3_client.delete_object(Bucket=bucket, Key="k", ExpectedBucketOwner=mine)


def test_another_owner_is_refused(s3_client, account_ids, bucket):
    theirs = account_ids["other"]
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    for fn, kwargs in [
        (s3_client.put_object, {"Key": "k2", "Body": b"y"}),
        (s3_client.get_object, {"Key": "k"}),
        (s3_client.list_objects_v2, {}),
        (s3_client.get_bucket_acl, {}),
        (s3_client.delete_object, {"Key": "k"}),
        (s3_client.create_multipart_upload, {"Key": "m"}),
    ]:
        assert refused(fn, Bucket=bucket, ExpectedBucketOwner=theirs, **kwargs) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        s3_client.head_bucket(Bucket=bucket, ExpectedBucketOwner=theirs)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # Nothing was written or deleted.
    assert [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    assert "Uploads" not in s3_client.list_multipart_uploads(Bucket=bucket)


def test_a_missing_bucket_is_still_no_such_bucket(s3_client, account_ids):
    missing = "missing-" + uuid.uuid4().hex[:12]
    code = refused(s3_client.list_objects_v2, Bucket=missing, ExpectedBucketOwner=account_ids["other"])
    assert code == ("NoSuchBucket", 404)


def test_copy_checks_the_source_owner(s3_client, account_ids, bucket):
    s3_client.put_object(Bucket=bucket, Key="src", Body=b"s")
    source = {"Bucket": bucket, "Key": "src"}
    mine, theirs = account_ids["admin"], account_ids["other"]
    s3_client.copy_object(
        Bucket=bucket, Key="a", CopySource=source, ExpectedSourceBucketOwner=mine, ExpectedBucketOwner=mine
    )
    assert refused(
        s3_client.copy_object, Bucket=bucket, Key="b", CopySource=source, ExpectedSourceBucketOwner=theirs
    ) == ("AccessDenied", 403)
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="c")["UploadId"]
    assert refused(
        s3_client.upload_part_copy,
        Bucket=bucket,
        Key="c",
        UploadId=upload,
        PartNumber=1,
        CopySource=source,
        ExpectedSourceBucketOwner=theirs,
    ) == ("AccessDenied", 403)
    s3_client.upload_part_copy(
        Bucket=bucket,
        Key="c",
        UploadId=upload,
        PartNumber=1,
        CopySource=source,
        ExpectedSourceBucketOwner=mine,
    )
    s3_client.abort_multipart_upload(Bucket=bucket, Key="c", UploadId=upload)
    assert sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]) == ["a", "src"]
