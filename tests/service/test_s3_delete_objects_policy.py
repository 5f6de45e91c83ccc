"""DeleteObjects under a bucket policy: each key is judged as its own DeleteObject (s3:DeleteObjectVersion when
a version is named), so a Deny on bucket/* or on one key holds, and an Allow grants (found auditing issue 11:
the request was judged once, against the bucket's ARN, which statements on its objects never match)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError


def put_policy(s3: Any, bucket: str, effect: str, principal: Any, action: str, resource: str) -> None:
    statement = {
        "Effect": effect,
        "Principal": principal,
        "Action": action,
        "Resource": f"arn:aws:s3:::{bucket}{resource}",
    }
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )


@pytest.fixture(scope="module")
def other_account(euca: Any) -> str:
    return next(a.account_id for a in euca.ctx.identity.list_accounts() if a.name == euca.other.account)


def keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def delete(s3: Any, bucket: str, *names: str, **version: str) -> dict[str, Any]:
    objects = [{"Key": name, **version} for name in names]
    return dict(s3.delete_objects(Bucket=bucket, Delete={"Objects": objects}))


def test_a_deny_on_keys_holds_for_the_owner(s3_client, bucket):
    for name in ("keep/1", "keep/2", "scratch"):
        s3_client.put_object(Bucket=bucket, Key=name, Body=b"x")
    put_policy(s3_client, bucket, "Deny", "*", "s3:DeleteObject", "/keep/*")
    with pytest.raises(ClientError) as e:
        s3_client.delete_object(Bucket=bucket, Key="keep/1")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    r = delete(s3_client, bucket, "keep/1", "scratch", "keep/2")
    assert [d["Key"] for d in r.get("Deleted", [])] == ["scratch"]
    assert sorted((x["Key"], x["Code"]) for x in r["Errors"]) == [
        ("keep/1", "AccessDenied"),
        ("keep/2", "AccessDenied"),
    ]
    assert keys(s3_client, bucket) == ["keep/1", "keep/2"]


def test_an_allow_on_objects_grants_another_account(s3_client, s3_other, other_account, bucket):
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = s3_client.put_object(Bucket=bucket, Key="a", Body=b"x")["VersionId"]
    s3_client.put_object(Bucket=bucket, Key="b", Body=b"x")
    with pytest.raises(ClientError) as e:
        delete(s3_other, bucket, "b")
    assert e.value.response["Error"]["Code"] == "AccessDenied"

    put_policy(s3_client, bucket, "Allow", {"AWS": other_account}, "s3:DeleteObject", "/*")
    r = delete(s3_other, bucket, "b")
    assert [d["Key"] for d in r["Deleted"]] == ["b"] and "Errors" not in r
    # Naming a version is s3:DeleteObjectVersion, which the policy does not grant.
    r = delete(s3_other, bucket, "a", VersionId=version)
    assert [(x["Key"], x["VersionId"], x["Code"]) for x in r["Errors"]] == [("a", version, "AccessDenied")]
    assert s3_client.get_object(Bucket=bucket, Key="a", VersionId=version)["Body"].read() == b"x"


def test_without_a_policy_the_bucket_acl_decides_the_request(s3_client, s3_other, bucket):
    s3_client.put_object(Bucket=bucket, Key="a", Body=b"x")
    with pytest.raises(ClientError) as e:
        delete(s3_other, bucket, "a")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    other = "open-" + uuid.uuid4().hex[:12]
    s3_client.create_bucket(Bucket=other, ACL="public-read-write")
    s3_client.put_object(Bucket=other, Key="a", Body=b"x")
    assert [d["Key"] for d in delete(s3_other, other, "a")["Deleted"]] == ["a"]
