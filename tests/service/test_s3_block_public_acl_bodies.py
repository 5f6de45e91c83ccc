"""BlockPublicAcls refuses a public ACL however it is given: x-amz-acl, x-amz-grant-* headers, or an
AccessControlPolicy body (found auditing issue 11: the body was not checked)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


def policy_with(s3, bucket, group, key=None):
    current = s3.get_object_acl(Bucket=bucket, Key=key) if key else s3.get_bucket_acl(Bucket=bucket)
    return {
        "Owner": current["Owner"],
        "Grants": [*current["Grants"], {"Grantee": {"Type": "Group", "URI": group}, "Permission": "READ"}],
    }


@pytest.mark.parametrize("group", [ALL_USERS, AUTHENTICATED])
def test_acl_bodies_are_checked(s3_client, s3_anonymous, bucket, group):
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3_client.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": False,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False,
        },
    )
    for kwargs in (
        {"GrantRead": f"uri={group}"},
        {"AccessControlPolicy": policy_with(s3_client, bucket, group, "k")},
    ):
        with pytest.raises(ClientError) as e:
            s3_client.put_object_acl(Bucket=bucket, Key="k", **kwargs)
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    for kwargs in (
        {"GrantRead": f"uri={group}"},
        {"AccessControlPolicy": policy_with(s3_client, bucket, group)},
    ):
        with pytest.raises(ClientError) as e:
            s3_client.put_bucket_acl(Bucket=bucket, **kwargs)
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError):
        s3_anonymous.get_object(Bucket=bucket, Key="k")
    # A private ACL as a body is still accepted.
    private = s3_client.get_object_acl(Bucket=bucket, Key="k")
    s3_client.put_object_acl(
        Bucket=bucket, Key="k", AccessControlPolicy={"Owner": private["Owner"], "Grants": private["Grants"]}
    )
    s3_client.delete_public_access_block(Bucket=bucket)
    s3_client.put_object_acl(
        Bucket=bucket, Key="k", AccessControlPolicy=policy_with(s3_client, bucket, ALL_USERS, "k")
    )
    assert s3_anonymous.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
