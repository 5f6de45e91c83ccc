"""GET/HEAD of a key that has no object (issue 11): 404 to a caller who may list the bucket at that prefix
(s3:ListBucket, with a policy condition on s3:prefix, or READ on the bucket's ACL), 403 to everyone else,
whatever they may do with objects that exist. The copy source follows the same rule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError


@pytest.fixture(scope="module")
def other_account(euca: Any) -> str:
    return next(a.account_id for a in euca.ctx.identity.list_accounts() if a.name == euca.other.account)


def status(fn: Any, **kwargs: Any) -> int:
    try:
        fn(**kwargs)
    except ClientError as e:
        return int(e.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def put_policy(s3: Any, bucket: str, *statements: dict[str, Any]) -> None:
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    )


def test_listing_a_prefix_tells_missing_keys_under_it(s3_client, s3_other, other_account, bucket):
    s3_client.put_object(Bucket=bucket, Key="home/b/there", Body=b"x")
    who = {"AWS": other_account}
    put_policy(
        s3_client,
        bucket,
        {
            "Effect": "Allow",
            "Principal": who,
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": "home/b/*"}},
        },
        {
            "Effect": "Allow",
            "Principal": who,
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        },
    )
    assert status(s3_other.head_object, Bucket=bucket, Key="home/b/there") == 200
    assert status(s3_other.head_object, Bucket=bucket, Key="home/b/missing") == 404
    with pytest.raises(ClientError) as e:
        s3_other.get_object(Bucket=bucket, Key="home/b/missing")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    assert status(s3_other.head_object, Bucket=bucket, Key="home/c/missing") == 403
    with pytest.raises(ClientError) as e:
        s3_other.get_object(Bucket=bucket, Key="home/c/missing")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    # The listing itself follows the same condition.
    assert s3_other.list_objects_v2(Bucket=bucket, Prefix="home/b/")["KeyCount"] == 1
    assert status(s3_other.list_objects_v2, Bucket=bucket, Prefix="home/c/") == 403


def test_get_object_alone_does_not_tell(s3_client, s3_other, other_account, bucket):
    s3_client.put_object(Bucket=bucket, Key="there", Body=b"x")
    put_policy(
        s3_client,
        bucket,
        {
            "Effect": "Allow",
            "Principal": {"AWS": other_account},
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        },
    )
    assert status(s3_other.head_object, Bucket=bucket, Key="there") == 200
    assert status(s3_other.head_object, Bucket=bucket, Key="missing") == 403
    destination = bucket + "-copy"
    s3_other.create_bucket(Bucket=destination)
    with pytest.raises(ClientError) as e:
        s3_other.copy_object(Bucket=destination, Key="c", CopySource={"Bucket": bucket, "Key": "missing"})
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_the_bucket_acl_decides_without_a_policy(s3_client, s3_anonymous, bucket):
    assert status(s3_anonymous.head_object, Bucket=bucket, Key="missing") == 403
    assert status(s3_client.head_object, Bucket=bucket, Key="missing") == 404
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert status(s3_anonymous.head_object, Bucket=bucket, Key="missing") == 404
