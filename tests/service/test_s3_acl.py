"""Access control: owners, canned ACLs, explicit grants, cross-account denial, anonymous, presigned URLs."""

from __future__ import annotations

import httpx
import pytest
from botocore.exceptions import ClientError


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_other_account_denied(s3_client, s3_other, bucket):
    s3_client.put_object(Bucket=bucket, Key="secret", Body=b"s")
    for call in (
        lambda: s3_other.get_object(Bucket=bucket, Key="secret"),
        lambda: s3_other.put_object(Bucket=bucket, Key="x", Body=b"x"),
        lambda: s3_other.list_objects_v2(Bucket=bucket),
        lambda: s3_other.delete_object(Bucket=bucket, Key="secret"),
        lambda: s3_other.delete_bucket(Bucket=bucket),
        lambda: s3_other.get_bucket_acl(Bucket=bucket),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"


def test_anonymous_public_read(euca, s3_client, s3_anonymous, bucket):
    s3_client.put_object(Bucket=bucket, Key="public", Body=b"p", ACL="public-read")
    s3_client.put_object(Bucket=bucket, Key="private", Body=b"q")
    assert httpx.get(f"{euca.url}/{bucket}/public").content == b"p"
    assert s3_anonymous.get_object(Bucket=bucket, Key="public")["Body"].read() == b"p"
    r = httpx.get(f"{euca.url}/{bucket}/private")
    assert r.status_code == 403 and b"AccessDenied" in r.content
    assert httpx.get(f"{euca.url}/{bucket}").status_code == 403
    with pytest.raises(ClientError):
        s3_anonymous.put_object(Bucket=bucket, Key="anon", Body=b"x")


def test_bucket_acl_canned_and_grants(euca, s3_client, s3_other, bucket):
    acl = s3_client.get_bucket_acl(Bucket=bucket)
    assert acl["Owner"]["ID"] == euca.admin.canonical_id
    assert acl["Grants"] == [
        {
            "Grantee": {"ID": euca.admin.canonical_id, "DisplayName": "eucalyptus", "Type": "CanonicalUser"},
            "Permission": "FULL_CONTROL",
        }
    ]
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read-write")
    perms = {
        (g["Grantee"].get("URI"), g["Permission"]) for g in s3_client.get_bucket_acl(Bucket=bucket)["Grants"]
    }
    assert ("http://acs.amazonaws.com/groups/global/AllUsers", "WRITE") in perms
    s3_client.put_bucket_acl(Bucket=bucket, ACL="private")
    s3_client.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{euca.other.canonical_id}"')
    s3_other.list_objects_v2(Bucket=bucket)
    with pytest.raises(ClientError):
        s3_other.put_object(Bucket=bucket, Key="nope", Body=b"")
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_acl(
            Bucket=bucket, GrantRead='id="0000000000000000000000000000000000000000000000000000000000000000"'
        )
    assert code(e) == "InvalidArgument"


def test_access_control_policy_xml(euca, s3_client, s3_other, bucket):
    s3_client.put_object(Bucket=bucket, Key="o", Body=b"o")
    policy = {
        "Owner": {"ID": euca.admin.canonical_id},
        "Grants": [
            {
                "Grantee": {"Type": "CanonicalUser", "ID": euca.admin.canonical_id},
                "Permission": "FULL_CONTROL",
            },
            {"Grantee": {"Type": "CanonicalUser", "ID": euca.other.canonical_id}, "Permission": "READ"},
        ],
    }
    s3_client.put_object_acl(Bucket=bucket, Key="o", AccessControlPolicy=policy)
    grants = s3_client.get_object_acl(Bucket=bucket, Key="o")["Grants"]
    assert {g["Grantee"]["ID"]: g["Permission"] for g in grants} == {
        euca.admin.canonical_id: "FULL_CONTROL",
        euca.other.canonical_id: "READ",
    }
    assert s3_other.get_object(Bucket=bucket, Key="o")["Body"].read() == b"o"
    with pytest.raises(ClientError):
        s3_other.put_object_acl(Bucket=bucket, Key="o", ACL="public-read")


def test_bucket_owner_full_control(euca, s3_client, s3_other, bucket):
    s3_client.put_bucket_acl(
        Bucket=bucket,
        GrantWrite=f'id="{euca.other.canonical_id}"',
        GrantFullControl=f'id="{euca.admin.canonical_id}"',
    )
    s3_other.put_object(Bucket=bucket, Key="theirs", Body=b"t", ACL="bucket-owner-full-control")
    assert s3_client.get_object(Bucket=bucket, Key="theirs")["Body"].read() == b"t"
    s3_other.put_object(Bucket=bucket, Key="theirs-private", Body=b"t")
    with pytest.raises(ClientError):
        s3_client.get_object(Bucket=bucket, Key="theirs-private")


def test_presigned_get_and_put(s3_client, bucket):
    put_url = s3_client.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300
    )
    r = httpx.put(put_url, content=b"presigned body")
    assert r.status_code == 200, r.text
    get_url = s3_client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300
    )
    r = httpx.get(get_url)
    assert r.status_code == 200 and r.content == b"presigned body"
    r = httpx.get(get_url, headers={"Range": "bytes=0-8"})
    assert r.status_code == 206 and r.content == b"presigned"
