"""Bucket policies, public access blocks and CORS: storage, validation, Allow/Deny decisions combined with ACLs,
preflight and Access-Control-* headers."""

from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def policy(bucket: str, effect: str, action: str, resource: str, **extra: object) -> str:
    statement = {
        "Effect": effect,
        "Principal": {"AWS": "*"},
        "Action": action,
        "Resource": f"arn:aws:s3:::{bucket}{resource}",
        **extra,
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def test_policy_round_trip_and_errors(s3_client, s3_other, bucket):
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_policy(Bucket=bucket)
    assert code(e) == "NoSuchBucketPolicy"
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_policy(Bucket=bucket, Policy='{"Statement": "nope"}')
    assert code(e) == "MalformedPolicy"
    doc = policy(bucket, "Allow", "s3:ListBucket", "")
    with pytest.raises(ClientError) as e:
        s3_other.put_bucket_policy(Bucket=bucket, Policy=doc)
    assert code(e) == "AccessDenied"
    s3_client.put_bucket_policy(Bucket=bucket, Policy=doc)
    assert json.loads(s3_client.get_bucket_policy(Bucket=bucket)["Policy"]) == json.loads(doc)
    assert s3_client.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    s3_client.delete_bucket_policy(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_policy(Bucket=bucket)
    assert code(e) == "NoSuchBucketPolicy"


def test_allow_grants_other_account_and_deny_wins(s3_client, s3_other, s3_anonymous, bucket):
    s3_client.put_object(Bucket=bucket, Key="a/1", Body=b"1")
    with pytest.raises(ClientError):
        s3_other.list_objects_v2(Bucket=bucket)
    s3_client.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, "Allow", "s3:ListBucket", ""))
    assert [o["Key"] for o in s3_other.list_objects_v2(Bucket=bucket)["Contents"]] == ["a/1"]
    assert s3_anonymous.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    with pytest.raises(ClientError) as e:
        s3_other.get_object(Bucket=bucket, Key="a/1")
    assert code(e) == "AccessDenied"
    s3_client.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, "Deny", "s3:Get*", "/*"))
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="a/1")
    assert code(e) == "AccessDenied"
    s3_client.delete_bucket_policy(Bucket=bucket)  # the owner may still manage a policy that denies it
    assert s3_client.get_object(Bucket=bucket, Key="a/1")["Body"].read() == b"1"


def test_condition_on_existing_object_tag(s3_client, s3_other, bucket):
    s3_client.put_object(Bucket=bucket, Key="pub", Body=b"p", Tagging="security=public")
    s3_client.put_object(Bucket=bucket, Key="priv", Body=b"q", Tagging="security=private")
    cond = {"StringEquals": {"s3:ExistingObjectTag/security": "public"}}
    s3_client.put_bucket_policy(
        Bucket=bucket, Policy=policy(bucket, "Allow", "s3:GetObject", "/*", Condition=cond)
    )
    assert s3_other.get_object(Bucket=bucket, Key="pub")["Body"].read() == b"p"
    with pytest.raises(ClientError):
        s3_other.get_object(Bucket=bucket, Key="priv")


def test_public_access_block(s3_client, s3_other, bucket):
    with pytest.raises(ClientError) as e:
        s3_client.get_public_access_block(Bucket=bucket)
    assert code(e) == "NoSuchPublicAccessBlockConfiguration"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    conf = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": False,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": False,
    }
    s3_client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=conf)
    assert s3_client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == conf
    with pytest.raises(ClientError) as e:
        s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_policy(Bucket=bucket, Policy=policy(bucket, "Allow", "s3:GetObject", "/*"))
    assert code(e) == "AccessDenied"
    s3_client.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={**conf, "BlockPublicAcls": False, "IgnorePublicAcls": True},
    )
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"k", ACL="public-read")
    with pytest.raises(ClientError):
        s3_other.get_object(Bucket=bucket, Key="k")
    s3_client.delete_public_access_block(Bucket=bucket)
    assert s3_other.get_object(Bucket=bucket, Key="k")["Body"].read() == b"k"
    with pytest.raises(ClientError) as e:
        s3_client.get_public_access_block(Bucket=bucket)
    assert code(e) == "NoSuchPublicAccessBlockConfiguration"
    with pytest.raises(ClientError) as e:
        s3_other.get_public_access_block(Bucket=bucket)
    assert code(e) == "AccessDenied"


def test_cors_rules_and_preflight(euca, s3_client, bucket):
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_cors(Bucket=bucket)
    assert code(e) == "NoSuchCORSConfiguration"
    rules = [
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["*.example.com"], "ExposeHeaders": ["x-amz-meta-a"]}
    ]
    s3_client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    assert s3_client.get_bucket_cors(Bucket=bucket)["CORSRules"] == rules
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    r = httpx.get(f"{euca.url}/{bucket}", headers={"Origin": "https://a.example.com"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://a.example.com"
    assert (
        "access-control-allow-origin"
        not in httpx.get(f"{euca.url}/{bucket}", headers={"Origin": "x.org"}).headers
    )
    ok = httpx.options(
        f"{euca.url}/{bucket}/k",
        headers={"Origin": "https://a.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert ok.status_code == 200 and ok.headers["access-control-allow-methods"] == "GET"
    assert (
        httpx.options(
            f"{euca.url}/{bucket}/k",
            headers={"Origin": "https://a.example.com", "Access-Control-Request-Method": "PUT"},
        ).status_code
        == 403
    )
    assert (
        httpx.options(f"{euca.url}/{bucket}/k", headers={"Origin": "https://a.example.com"}).status_code
        == 400
    )
    s3_client.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError):
        s3_client.get_bucket_cors(Bucket=bucket)
