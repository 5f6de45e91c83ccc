"""Issue 11's object-facing S3 settings with boto3 and the aws CLI: ownership controls (BucketOwnerEnforced
disables ACLs), object lock (bucket configuration, retention, legal hold, refused deletes), GetObjectAttributes,
SSE-S3 headers and bucket default encryption, SSE-C refused over HTTP, and a CompleteMultipartUpload sent
again after it succeeded."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.server import EucaServer

FUTURE = datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


# -- ownership controls ---------------------------------------------------------------------------------------


def test_ownership_controls_round_trip(s3_client: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_ownership_controls(Bucket=bucket)
    assert code(e) == "OwnershipControlsNotFoundError"
    rules = {"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]}
    s3_client.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=rules)
    assert s3_client.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"] == rules
    s3_client.delete_bucket_ownership_controls(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_ownership_controls(Bucket=bucket)
    assert code(e) == "OwnershipControlsNotFoundError"


def test_enforced_disables_acls(s3_client: Any, s3_other: Any, euca: EucaServer, bucket: str) -> None:
    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    s3_client.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=enforced)
    for acl in ("public-read", "private"):
        with pytest.raises(ClientError) as e:
            s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", ACL=acl)
        assert code(e) == "AccessControlListNotSupported"
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="bucket-owner-full-control")
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert code(e) == "AccessControlListNotSupported"
    with pytest.raises(ClientError) as e:
        s3_client.put_object_acl(Bucket=bucket, Key="k", ACL="public-read")
    assert code(e) == "AccessControlListNotSupported"
    # Another account writes through a bucket policy: the bucket owner owns the object, ACLs grant nothing.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    s3_client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    s3_other.put_object(Bucket=bucket, Key="theirs", Body=b"y")
    owner = s3_client.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]
    acl = s3_client.get_object_acl(Bucket=bucket, Key="theirs")
    assert acl["Owner"]["ID"] == owner
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]
    with pytest.raises(ClientError) as e:
        s3_other.get_object(Bucket=bucket, Key="theirs")
    assert code(e) == "AccessDenied"
    assert s3_client.get_object(Bucket=bucket, Key="theirs")["Body"].read() == b"y"


def test_enforced_refused_on_a_bucket_with_public_acl(s3_client: Any, bucket_name: str) -> None:
    s3_client.create_bucket(Bucket=bucket_name, ACL="public-read")
    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_ownership_controls(Bucket=bucket_name, OwnershipControls=enforced)
    assert code(e) == "InvalidBucketAclWithObjectOwnership"
    with pytest.raises(ClientError) as e:
        s3_client.create_bucket(
            Bucket=bucket_name + "-x", ACL="public-read", ObjectOwnership="BucketOwnerEnforced"
        )
    assert code(e) == "InvalidBucketAclWithObjectOwnership"


def test_ownership_at_create_and_malformed(s3_client: Any, bucket_name: str) -> None:
    s3_client.create_bucket(Bucket=bucket_name, ObjectOwnership="BucketOwnerEnforced")
    got = s3_client.get_bucket_ownership_controls(Bucket=bucket_name)["OwnershipControls"]
    assert got == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_ownership_controls(
            Bucket=bucket_name, OwnershipControls={"Rules": [{"ObjectOwnership": "Nobody"}]}
        )
    assert code(e) == "MalformedXML"


# -- object lock ----------------------------------------------------------------------------------------------


@pytest.fixture
def locked(s3_client: Any, bucket_name: str) -> str:
    s3_client.create_bucket(Bucket=bucket_name, ObjectLockEnabledForBucket=True)
    return bucket_name


def test_lock_configuration(s3_client: Any, locked: str) -> None:
    bucket = locked + "-plain"
    s3_client.create_bucket(Bucket=bucket)
    assert s3_client.get_bucket_versioning(Bucket=locked)["Status"] == "Enabled"
    got = s3_client.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert got == {"ObjectLockEnabled": "Enabled"}
    conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}}
    s3_client.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration=conf)
    assert s3_client.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"] == conf
    head = s3_client.head_object(
        Bucket=locked, Key=s3_client.put_object(Bucket=locked, Key="d", Body=b"x") and "d"
    )
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_versioning(Bucket=locked, VersioningConfiguration={"Status": "Suspended"})
    assert code(e) == "InvalidBucketState"
    # A bucket without it: not found, and versioning must be enabled before it is turned on.
    with pytest.raises(ClientError) as e:
        s3_client.get_object_lock_configuration(Bucket=bucket)
    assert code(e) == "ObjectLockConfigurationNotFoundError"
    with pytest.raises(ClientError) as e:
        s3_client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=conf)
    assert code(e) == "InvalidBucketState"
    for bad, expected in (
        ({"Mode": "GOVERNANCE", "Days": 1, "Years": 1}, "MalformedXML"),
        ({"Mode": "GOVERNANCE", "Days": 0}, "InvalidRetentionPeriod"),
        ({"Mode": "governance", "Days": 1}, "MalformedXML"),
    ):
        with pytest.raises(ClientError) as e:
            s3_client.put_object_lock_configuration(
                Bucket=locked,
                ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": bad}},
            )
        assert code(e) == expected


def test_retention_and_legal_hold(s3_client: Any, locked: str) -> None:
    put = s3_client.put_object(
        Bucket=locked, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=FUTURE
    )
    version = put["VersionId"]
    head = s3_client.head_object(Bucket=locked, Key="k")
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] == FUTURE
    got = s3_client.get_object_retention(Bucket=locked, Key="k")["Retention"]
    assert got == {"Mode": "GOVERNANCE", "RetainUntilDate": FUTURE}
    # Deleting the version is refused; a delete marker is not.
    with pytest.raises(ClientError) as e:
        s3_client.delete_object(Bucket=locked, Key="k", VersionId=version)
    assert code(e) == "AccessDenied"
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": datetime.datetime(2098, 1, 1, tzinfo=datetime.UTC)}
    with pytest.raises(ClientError) as e:
        s3_client.put_object_retention(Bucket=locked, Key="k", Retention=shorter)
    assert code(e) == "AccessDenied"
    s3_client.put_object_retention(Bucket=locked, Key="k", Retention=shorter, BypassGovernanceRetention=True)
    # A legal hold keeps it even with the bypass.
    s3_client.put_object_legal_hold(Bucket=locked, Key="k", LegalHold={"Status": "ON"})
    assert s3_client.get_object_legal_hold(Bucket=locked, Key="k")["LegalHold"] == {"Status": "ON"}
    with pytest.raises(ClientError) as e:
        s3_client.delete_object(Bucket=locked, Key="k", VersionId=version, BypassGovernanceRetention=True)
    assert code(e) == "AccessDenied"
    result = s3_client.delete_objects(
        Bucket=locked,
        Delete={"Objects": [{"Key": "k", "VersionId": version}]},
        BypassGovernanceRetention=True,
    )
    assert result["Errors"][0]["Code"] == "AccessDenied"
    s3_client.put_object_legal_hold(Bucket=locked, Key="k", LegalHold={"Status": "OFF"})
    s3_client.delete_object(Bucket=locked, Key="k", VersionId=version, BypassGovernanceRetention=True)


def test_compliance_cannot_be_shortened_or_changed(s3_client: Any, locked: str) -> None:
    s3_client.put_object(
        Bucket=locked, Key="c", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=FUTURE
    )
    for retention in (
        {"Mode": "GOVERNANCE", "RetainUntilDate": FUTURE},
        {"Mode": "COMPLIANCE", "RetainUntilDate": datetime.datetime(2098, 1, 1, tzinfo=datetime.UTC)},
    ):
        with pytest.raises(ClientError) as e:
            s3_client.put_object_retention(
                Bucket=locked, Key="c", Retention=retention, BypassGovernanceRetention=True
            )
        assert code(e) == "AccessDenied"
    later = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
    s3_client.put_object_retention(
        Bucket=locked, Key="c", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later}
    )


def test_lock_requests_on_a_bucket_without_lock(s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_object_retention", {"Key": "k"}),
        ("put_object_legal_hold", {"Key": "k", "LegalHold": {"Status": "ON"}}),
        ("put_object", {"Key": "j", "Body": b"x", "ObjectLockLegalHoldStatus": "ON"}),
    ]
    for method, kwargs in calls:
        with pytest.raises(ClientError) as e:
            getattr(s3_client, method)(Bucket=bucket, **kwargs)
        assert code(e) == "InvalidRequest"


def test_lock_headers_refused_when_wrong(s3_client: Any, locked: str) -> None:
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(ClientError) as e:
        s3_client.put_object(
            Bucket=locked, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=past
        )
    assert code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3_client.put_object_legal_hold(Bucket=locked, Key="nope", LegalHold={"Status": "ON"})
    assert code(e) == "NoSuchKey"


# -- GetObjectAttributes ------------------------------------------------------------------------------------------


def test_object_attributes_single_and_multipart(s3_client: Any, bucket: str) -> None:
    put = s3_client.put_object(Bucket=bucket, Key="small", Body=b"hello", ChecksumAlgorithm="SHA256")
    got = s3_client.get_object_attributes(
        Bucket=bucket, Key="small", ObjectAttributes=["ETag", "Checksum", "ObjectSize", "StorageClass"]
    )
    assert (
        got["ETag"] == put["ETag"].strip('"') and got["ObjectSize"] == 5 and got["StorageClass"] == "STANDARD"
    )
    assert got["Checksum"]["ChecksumSHA256"] == put["ChecksumSHA256"]
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="big", ChecksumAlgorithm="CRC32")[
        "UploadId"
    ]
    parts = []
    for n, body in ((1, b"a" * 5 * 1024 * 1024), (2, b"b" * 10)):
        r = s3_client.upload_part(
            Bucket=bucket, Key="big", UploadId=upload, PartNumber=n, Body=body, ChecksumAlgorithm="CRC32"
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    s3_client.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    got = s3_client.get_object_attributes(
        Bucket=bucket, Key="big", ObjectAttributes=["ObjectParts", "ObjectSize"]
    )
    assert got["ObjectSize"] == 5 * 1024 * 1024 + 10
    assert got["ObjectParts"]["TotalPartsCount"] == 2
    assert [(p["PartNumber"], p["Size"], p["ChecksumCRC32"]) for p in got["ObjectParts"]["Parts"]] == [
        (1, 5 * 1024 * 1024, parts[0]["ChecksumCRC32"]),
        (2, 10, parts[1]["ChecksumCRC32"]),
    ]
    page = s3_client.get_object_attributes(
        Bucket=bucket, Key="big", ObjectAttributes=["ObjectParts"], MaxParts=1
    )
    assert page["ObjectParts"]["IsTruncated"] and page["ObjectParts"]["NextPartNumberMarker"] == 1
    with pytest.raises(ClientError) as e:
        s3_client.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])
    assert code(e) == "NoSuchKey"


def test_object_attributes_with_the_cli(euca: EucaServer, s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"12345")
    out = euca.aws(
        "s3api",
        "get-object-attributes",
        "--bucket",
        bucket,
        "--key",
        "k",
        "--object-attributes",
        "ObjectSize",
    ).stdout
    assert json.loads(out)["ObjectSize"] == 5


# -- server-side encryption ------------------------------------------------------------------------------------


def test_sse_s3_echoed_and_bucket_default(s3_client: Any, bucket: str) -> None:
    put = s3_client.put_object(Bucket=bucket, Key="e", Body=b"x", ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    assert s3_client.head_object(Bucket=bucket, Key="e")["ServerSideEncryption"] == "AES256"
    assert "ServerSideEncryption" not in s3_client.put_object(Bucket=bucket, Key="plain", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_encryption(Bucket=bucket)
    assert code(e) == "ServerSideEncryptionConfigurationNotFoundError"
    conf = {
        "Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}
        ]
    }
    s3_client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=conf)
    assert s3_client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == conf
    assert s3_client.put_object(Bucket=bucket, Key="d", Body=b"x")["ServerSideEncryption"] == "AES256"
    assert s3_client.get_object(Bucket=bucket, Key="d")["ServerSideEncryption"] == "AES256"
    s3_client.delete_bucket_encryption(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3_client.get_bucket_encryption(Bucket=bucket)
    assert code(e) == "ServerSideEncryptionConfigurationNotFoundError"


def test_sse_c_refused_over_http(s3_client: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as e:
        s3_client.put_object(
            Bucket=bucket, Key="c", Body=b"x", SSECustomerAlgorithm="AES256", SSECustomerKey="k" * 32
        )
    assert code(e) == "InvalidRequest"


# -- a completion sent again --------------------------------------------------------------------------------------


def test_second_completion_answers_again(s3_client: Any, bucket: str) -> None:
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    etag = s3_client.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"abc")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    first = s3_client.complete_multipart_upload(
        Bucket=bucket, Key="m", UploadId=upload, MultipartUpload=parts
    )
    again = s3_client.complete_multipart_upload(
        Bucket=bucket, Key="m", UploadId=upload, MultipartUpload=parts
    )
    assert again["ETag"] == first["ETag"] and again["Key"] == "m"
    with pytest.raises(ClientError) as e:
        s3_client.complete_multipart_upload(Bucket=bucket, Key="m", UploadId="f" * 32, MultipartUpload=parts)
    assert code(e) == "NoSuchUpload"


# -- CORS configuration under a bucket policy ----------------------------------------------------------------


def test_cors_configuration_is_judged_by_the_bucket_policy(
    s3_client: Any, s3_other: Any, bucket: str
) -> None:
    cors = {"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]}
    s3_client.put_bucket_cors(Bucket=bucket, CORSConfiguration=cors)
    with pytest.raises(ClientError) as e:
        s3_other.get_bucket_cors(Bucket=bucket)
    assert code(e) == "AccessDenied"
    arn = f"arn:aws:s3:::{bucket}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetBucketCORS", "Resource": arn},
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutBucketCORS", "Resource": arn},
        ],
    }
    s3_client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert s3_other.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["AllowedMethods"] == ["GET"]
    with pytest.raises(ClientError) as e:
        s3_client.put_bucket_cors(Bucket=bucket, CORSConfiguration=cors)
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3_client.delete_bucket_cors(Bucket=bucket)
    assert code(e) == "AccessDenied"


# -- the whole object's checksum on completion -----------------------------------------------------------------


@pytest.mark.parametrize("checksum_type", ["FULL_OBJECT", "COMPOSITE"])
def test_completion_checks_the_final_checksum(s3_client: Any, bucket: str, checksum_type: str) -> None:
    def upload() -> tuple[str, dict[str, Any]]:
        up = s3_client.create_multipart_upload(
            Bucket=bucket, Key="m", ChecksumAlgorithm="CRC32", ChecksumType=checksum_type
        )["UploadId"]
        r = s3_client.upload_part(
            Bucket=bucket, Key="m", UploadId=up, PartNumber=1, Body=b"abc", ChecksumAlgorithm="CRC32"
        )
        return up, {"Parts": [{"PartNumber": 1, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]}]}

    up, parts = upload()
    with pytest.raises(ClientError) as e:
        s3_client.complete_multipart_upload(
            Bucket=bucket, Key="m", UploadId=up, MultipartUpload=parts, ChecksumCRC32="AAAAAA=="
        )
    assert code(e) == "BadDigest"
    done = s3_client.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=up, MultipartUpload=parts)
    up2, parts2 = upload()
    again = s3_client.complete_multipart_upload(
        Bucket=bucket, Key="m", UploadId=up2, MultipartUpload=parts2, ChecksumCRC32=done["ChecksumCRC32"]
    )
    assert again["ChecksumCRC32"] == done["ChecksumCRC32"]


def test_bypass_needs_its_own_permission(s3_client: Any, s3_other: Any, locked: str) -> None:
    version = s3_client.put_object(
        Bucket=locked, Key="g", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=FUTURE
    )["VersionId"]
    arn = f"arn:aws:s3:::{locked}/*"
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:DeleteObjectVersion", "Resource": arn}
    ]

    def put_policy() -> None:
        s3_client.put_bucket_policy(
            Bucket=locked, Policy=json.dumps({"Version": "2012-10-17", "Statement": statements})
        )

    put_policy()
    with pytest.raises(ClientError) as e:
        s3_other.delete_object(Bucket=locked, Key="g", VersionId=version, BypassGovernanceRetention=True)
    assert code(e) == "AccessDenied"
    statements.append(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:BypassGovernanceRetention", "Resource": arn}
    )
    put_policy()
    s3_other.delete_object(Bucket=locked, Key="g", VersionId=version, BypassGovernanceRetention=True)


def test_lock_headers_on_copy_and_multipart(s3_client: Any, locked: str) -> None:
    s3_client.put_object(
        Bucket=locked, Key="src", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=FUTURE
    )
    # A copy takes its own lock (here none: the source's retention does not come along).
    s3_client.copy_object(Bucket=locked, Key="copy", CopySource={"Bucket": locked, "Key": "src"})
    assert "ObjectLockMode" not in s3_client.head_object(Bucket=locked, Key="copy")
    s3_client.copy_object(
        Bucket=locked,
        Key="copy2",
        CopySource={"Bucket": locked, "Key": "src"},
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=FUTURE,
        ObjectLockLegalHoldStatus="ON",
    )
    head = s3_client.head_object(Bucket=locked, Key="copy2")
    assert (head["ObjectLockMode"], head["ObjectLockLegalHoldStatus"]) == ("GOVERNANCE", "ON")
    up = s3_client.create_multipart_upload(
        Bucket=locked, Key="mp", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=FUTURE
    )["UploadId"]
    etag = s3_client.upload_part(Bucket=locked, Key="mp", UploadId=up, PartNumber=1, Body=b"abc")["ETag"]
    done = s3_client.complete_multipart_upload(
        Bucket=locked, Key="mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert s3_client.head_object(Bucket=locked, Key="mp")["ObjectLockRetainUntilDate"] == FUTURE
    with pytest.raises(ClientError) as e:
        s3_client.delete_object(Bucket=locked, Key="mp", VersionId=done["VersionId"])
    assert code(e) == "AccessDenied"
