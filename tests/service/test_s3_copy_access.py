"""A copy reads its source exactly as a GET of it by the same caller, and writes its destination by the
destination's own rules (issue 11: the cross-account copy leak).

Account A (the admin) owns the source bucket; account B (the `other` credentials) copies into a bucket of its
own, with or without a policy there that allows s3:PutObject to everyone. Each source state below is checked
three ways: B's GET of the source, B's CopyObject and B's UploadPartCopy of it; the copy must succeed exactly
when the GET does. The anonymous caller copies into a bucket whose policy lets anyone write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

SECRET = b"account A's secret"

Setup = Callable[[Any, str, dict[str, str]], None]


def statement(
    effect: str, principal: Any, action: str | list[str], bucket: str, **extra: Any
) -> dict[str, Any]:
    return {
        "Effect": effect,
        "Principal": principal,
        "Action": action,
        "Resource": f"arn:aws:s3:::{bucket}/*",
        **extra,
    }


def put_policy(s3: Any, bucket: str, *statements: dict[str, Any]) -> None:
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    )


def put_block(s3: Any, bucket: str, **settings: bool) -> None:
    conf = {
        name: settings.get(name, False)
        for name in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    }
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=conf)


def private(a: Any, bucket: str, ids: dict[str, str]) -> None:
    a.put_object(Bucket=bucket, Key="secret", Body=SECRET)


def granted_by_acl(a: Any, bucket: str, ids: dict[str, str]) -> None:
    a.put_object(Bucket=bucket, Key="secret", Body=SECRET, GrantRead=f"id={ids['other_canonical']}")


def public_acl(a: Any, bucket: str, ids: dict[str, str]) -> None:
    a.put_object(Bucket=bucket, Key="secret", Body=SECRET, ACL="public-read")


def granted_by_source_policy(a: Any, bucket: str, ids: dict[str, str]) -> None:
    private(a, bucket, ids)
    put_policy(a, bucket, statement("Allow", {"AWS": ids["other"]}, "s3:GetObject", bucket))


def public_source_policy(a: Any, bucket: str, ids: dict[str, str]) -> None:
    private(a, bucket, ids)
    put_policy(a, bucket, statement("Allow", "*", "s3:GetObject", bucket))


def denied_by_source_policy(a: Any, bucket: str, ids: dict[str, str]) -> None:
    """The object's ACL grants B READ, but the bucket's policy denies GetObject to all but account A."""
    granted_by_acl(a, bucket, ids)
    only_a = {"StringNotEquals": {"aws:PrincipalAccount": ids["admin"]}}
    put_policy(a, bucket, statement("Deny", "*", "s3:GetObject", bucket, Condition=only_a))


def ignore_public_acls(a: Any, bucket: str, ids: dict[str, str]) -> None:
    public_acl(a, bucket, ids)
    put_block(a, bucket, IgnorePublicAcls=True)


def restrict_public_buckets(a: Any, bucket: str, ids: dict[str, str]) -> None:
    public_source_policy(a, bucket, ids)
    put_block(a, bucket, RestrictPublicBuckets=True)


def block_public_policy(a: Any, bucket: str, ids: dict[str, str]) -> None:
    """BlockPublicPolicy refuses new public policies; a public policy already in place still grants (S3's rule:
    RestrictPublicBuckets is what withdraws it)."""
    public_source_policy(a, bucket, ids)
    put_block(a, bucket, BlockPublicPolicy=True)


def block_public_acls(a: Any, bucket: str, ids: dict[str, str]) -> None:
    """BlockPublicAcls refuses new public ACLs; a grant to B's account is not public and still counts."""
    put_block(a, bucket, BlockPublicAcls=True)
    granted_by_acl(a, bucket, ids)


# name -> (how the source is set up, whether B may GET it, whether an anonymous caller may GET it)
SOURCES: dict[str, tuple[Setup, bool, bool]] = {
    "private": (private, False, False),
    "granted-by-acl": (granted_by_acl, True, False),
    "public-acl": (public_acl, True, True),
    "granted-by-source-policy": (granted_by_source_policy, True, False),
    "public-source-policy": (public_source_policy, True, True),
    "denied-by-source-policy": (denied_by_source_policy, False, False),
    "ignore-public-acls": (ignore_public_acls, False, False),
    "restrict-public-buckets": (restrict_public_buckets, False, False),
    "block-public-policy": (block_public_policy, True, True),
    "block-public-acls": (block_public_acls, True, False),
}


def new_bucket(s3: Any) -> str:
    name = "cp-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def ids(euca: Any) -> dict[str, str]:
    accounts = {a.name: a.account_id for a in euca.ctx.identity.list_accounts()}
    return {
        "admin": accounts[euca.admin.account],
        "other": accounts[euca.other.account],
        "other_canonical": euca.other.canonical_id,
    }


def allow_anyone_to_put(owner: Any, bucket: str) -> None:
    put_policy(owner, bucket, statement("Allow", "*", "s3:PutObject", bucket))


def outcome(fn: Callable[[], Any]) -> str:
    """ "ok", or the error code."""
    try:
        fn()
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    return "ok"


def copy(s3: Any, bucket: str, key: str, source: dict[str, str], operation: str) -> None:
    """CopyObject, or a one-part multipart upload whose part is an UploadPartCopy (aborted if that fails)."""
    if operation == "copy_object":
        s3.copy_object(Bucket=bucket, Key=key, CopySource=source)
        return
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        part = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, CopySource=source)
    except ClientError:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        raise
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )


OPERATIONS = ["copy_object", "upload_part_copy"]


def read(s3: Any, bucket: str, key: str, **extra: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read())


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("destination_policy", [False, True], ids=["own-bucket", "dest-allows-anyone"])
@pytest.mark.parametrize("case", sorted(SOURCES))
def test_other_account_copies_exactly_what_it_may_get(
    s3_client, s3_other, ids, case, destination_policy, operation
):
    setup, may_get, _ = SOURCES[case]
    source_bucket = new_bucket(s3_client)
    setup(s3_client, source_bucket, ids)
    destination = new_bucket(s3_other)
    if destination_policy:
        allow_anyone_to_put(s3_other, destination)

    got = outcome(lambda: read(s3_other, source_bucket, "secret"))
    assert got == ("ok" if may_get else "AccessDenied")
    copied = outcome(
        lambda: copy(s3_other, destination, "copy", {"Bucket": source_bucket, "Key": "secret"}, operation)
    )
    assert copied == got
    if may_get:
        assert read(s3_other, destination, "copy") == SECRET
    else:
        assert s3_other.list_objects_v2(Bucket=destination)["KeyCount"] == 0
        if operation == "upload_part_copy":
            assert s3_other.list_multipart_uploads(Bucket=destination).get("Uploads", []) == []


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("case", sorted(SOURCES))
def test_anonymous_copies_exactly_what_it_may_get(s3_client, s3_anonymous, ids, case, operation):
    setup, _, anonymous_may_get = SOURCES[case]
    source_bucket = new_bucket(s3_client)
    setup(s3_client, source_bucket, ids)
    destination = new_bucket(s3_client)
    put_policy(
        s3_client,
        destination,
        statement("Allow", "*", ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"], destination),
    )

    got = outcome(lambda: read(s3_anonymous, source_bucket, "secret"))
    assert got == ("ok" if anonymous_may_get else "AccessDenied")
    source = {"Bucket": source_bucket, "Key": "secret"}
    assert outcome(lambda: copy(s3_anonymous, destination, "copy", source, operation)) == got
    if anonymous_may_get:
        assert read(s3_anonymous, destination, "copy") == SECRET
    else:
        assert s3_client.list_objects_v2(Bucket=destination)["KeyCount"] == 0


def test_the_leak_as_reported(s3_client, s3_other, s3_anonymous):
    """B gets 403 on A's private object, puts a policy on its own bucket allowing s3:PutObject to everyone, and
    copies: still 403, for B and anonymously, by CopyObject and UploadPartCopy."""
    source_bucket = new_bucket(s3_client)
    s3_client.put_object(Bucket=source_bucket, Key="secret", Body=SECRET)
    destination = new_bucket(s3_other)
    allow_anyone_to_put(s3_other, destination)
    source = {"Bucket": source_bucket, "Key": "secret"}
    for client in (s3_other, s3_anonymous):
        for operation in OPERATIONS:
            with pytest.raises(ClientError) as e:
                copy(client, destination, f"stolen-{operation}", source, operation)
            assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert s3_other.list_objects_v2(Bucket=destination)["KeyCount"] == 0


def test_a_destination_block_does_not_hide_a_public_source(s3_client, s3_other):
    """The destination's IgnorePublicAcls is about the destination's ACLs: a public source stays readable."""
    source_bucket = new_bucket(s3_client)
    s3_client.put_object(Bucket=source_bucket, Key="public", Body=b"p", ACL="public-read")
    destination = new_bucket(s3_other)
    put_block(s3_other, destination, IgnorePublicAcls=True)
    for operation in OPERATIONS:
        copy(s3_other, destination, operation, {"Bucket": source_bucket, "Key": "public"}, operation)
        assert read(s3_other, destination, operation) == b"p"


def test_a_destination_deny_still_refuses_the_write(s3_client, s3_other):
    """Write on the destination is decided by the destination's rules: its Deny wins over a readable source."""
    source_bucket = new_bucket(s3_client)
    s3_client.put_object(Bucket=source_bucket, Key="public", Body=b"p", ACL="public-read")
    destination = new_bucket(s3_other)
    put_policy(s3_other, destination, statement("Deny", "*", "s3:PutObject", destination))
    for operation in OPERATIONS:
        with pytest.raises(ClientError) as e:
            copy(s3_other, destination, operation, {"Bucket": source_bucket, "Key": "public"}, operation)
        assert e.value.response["Error"]["Code"] == "AccessDenied"


# -- old versions of deleted keys ----------------------------------------------------------------------------


@pytest.fixture
def deleted_versions(s3_client: Any) -> tuple[str, str]:
    """A versioned bucket of A's whose key "secret" was deleted: (bucket, the version before the delete)."""
    bucket = new_bucket(s3_client)
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    version = s3_client.put_object(Bucket=bucket, Key="secret", Body=SECRET)["VersionId"]
    s3_client.delete_object(Bucket=bucket, Key="secret")
    return bucket, version


@pytest.mark.parametrize("operation", OPERATIONS)
def test_old_version_of_a_deleted_key(s3_client, s3_other, s3_anonymous, ids, deleted_versions, operation):
    bucket, version = deleted_versions
    destination = new_bucket(s3_other)
    allow_anyone_to_put(s3_other, destination)
    source = {"Bucket": bucket, "Key": "secret", "VersionId": version}
    for client in (s3_other, s3_anonymous):
        assert outcome(lambda c=client: read(c, bucket, "secret", VersionId=version)) == "AccessDenied"
        assert outcome(lambda c=client: copy(c, destination, "old", source, operation)) == "AccessDenied"
        # The current version is a delete marker: a caller who may not read the bucket learns nothing of it.
        assert outcome(lambda c=client: read(c, bucket, "secret")) == "AccessDenied"
        latest = {"Bucket": bucket, "Key": "secret"}
        assert outcome(lambda c=client, s=latest: copy(c, destination, "old", s, operation)) == "AccessDenied"
    assert s3_other.list_objects_v2(Bucket=destination)["KeyCount"] == 0

    # s3:GetObject does not grant an old version (s3:GetObjectVersion does), for the GET and the copy alike.
    put_policy(s3_client, bucket, statement("Allow", {"AWS": ids["other"]}, "s3:GetObject", bucket))
    assert outcome(lambda: read(s3_other, bucket, "secret", VersionId=version)) == "AccessDenied"
    assert outcome(lambda: copy(s3_other, destination, "old", source, operation)) == "AccessDenied"
    # Nor does it tell that the key was deleted: that is for callers who may list the bucket.
    latest = {"Bucket": bucket, "Key": "secret"}
    assert outcome(lambda: read(s3_other, bucket, "secret")) == "AccessDenied"
    assert outcome(lambda: copy(s3_other, destination, "old", latest, operation)) == "AccessDenied"
    put_policy(
        s3_client,
        bucket,
        statement("Allow", {"AWS": ids["other"]}, "s3:GetObject", bucket),
        {
            "Effect": "Allow",
            "Principal": {"AWS": ids["other"]},
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
        },
    )
    assert outcome(lambda: read(s3_other, bucket, "secret")) == "NoSuchKey"
    assert outcome(lambda: copy(s3_other, destination, "old", latest, operation)) == "NoSuchKey"
    put_policy(s3_client, bucket, statement("Allow", {"AWS": ids["other"]}, "s3:GetObjectVersion", bucket))
    assert read(s3_other, bucket, "secret", VersionId=version) == SECRET
    copy(s3_other, destination, "old", source, operation)
    assert read(s3_other, destination, "old") == SECRET


@pytest.mark.parametrize("operation", OPERATIONS)
def test_old_version_granted_by_its_acl(s3_client, s3_other, ids, deleted_versions, operation):
    bucket, version = deleted_versions
    s3_client.put_object_acl(
        Bucket=bucket, Key="secret", VersionId=version, GrantRead=f"id={ids['other_canonical']}"
    )
    destination = new_bucket(s3_other)
    source = {"Bucket": bucket, "Key": "secret", "VersionId": version}
    assert read(s3_other, bucket, "secret", VersionId=version) == SECRET
    copy(s3_other, destination, "old", source, operation)
    assert read(s3_other, destination, "old") == SECRET


def test_policy_conditions_see_the_source_version(s3_client, s3_other, ids, deleted_versions):
    """s3:VersionId in the source bucket's policy is the version x-amz-copy-source names."""
    bucket, version = deleted_versions
    other_version = s3_client.put_object(Bucket=bucket, Key="secret", Body=b"newer")["VersionId"]
    only = {"StringEquals": {"s3:VersionId": version}}
    put_policy(
        s3_client,
        bucket,
        statement("Allow", {"AWS": ids["other"]}, "s3:GetObjectVersion", bucket, Condition=only),
    )
    destination = new_bucket(s3_other)
    copy(
        s3_other, destination, "old", {"Bucket": bucket, "Key": "secret", "VersionId": version}, "copy_object"
    )
    assert read(s3_other, destination, "old") == SECRET
    with pytest.raises(ClientError) as e:
        s3_other.copy_object(
            Bucket=destination,
            Key="newer",
            CopySource={"Bucket": bucket, "Key": "secret", "VersionId": other_version},
        )
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_within_one_bucket_a_put_grant_reads_nothing(s3_client, s3_other, s3_anonymous):
    """Source and destination in the same bucket: its policy's Allow of s3:PutObject lets B write, not read."""
    bucket = new_bucket(s3_client)
    s3_client.put_object(Bucket=bucket, Key="secret", Body=SECRET)
    allow_anyone_to_put(s3_client, bucket)
    for client in (s3_other, s3_anonymous):
        for operation in OPERATIONS:
            source = {"Bucket": bucket, "Key": "secret"}
            assert (
                outcome(lambda c=client, o=operation, s=source: copy(c, bucket, "stolen", s, o))
                == "AccessDenied"
            )
    assert [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]] == ["secret"]


def test_a_bucket_name_taken_again_has_none_of_the_old_rules(s3_client, s3_other, s3_anonymous):
    """A bucket deleted and created again by another account starts without the old policy, public access
    block or CORS rules (they are keyed by name: the audit of issue 11 checked they go with the bucket)."""
    name = new_bucket(s3_client)
    put_policy(s3_client, name, statement("Allow", "*", ["s3:GetObject", "s3:PutObject"], name))
    put_block(s3_client, name, IgnorePublicAcls=True)
    s3_client.put_bucket_cors(
        Bucket=name, CORSConfiguration={"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]}
    )
    s3_client.delete_bucket(Bucket=name)
    s3_other.create_bucket(Bucket=name)
    s3_other.put_object(Bucket=name, Key="mine", Body=b"b's")
    assert outcome(lambda: read(s3_anonymous, name, "mine")) == "AccessDenied"
    assert outcome(lambda: s3_anonymous.put_object(Bucket=name, Key="x", Body=b"x")) == "AccessDenied"
    assert outcome(lambda: s3_other.get_bucket_policy(Bucket=name)) == "NoSuchBucketPolicy"
    assert (
        outcome(lambda: s3_other.get_public_access_block(Bucket=name))
        == "NoSuchPublicAccessBlockConfiguration"
    )
    assert outcome(lambda: s3_other.get_bucket_cors(Bucket=name)) == "NoSuchCORSConfiguration"
