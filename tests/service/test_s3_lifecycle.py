"""Bucket lifecycle (issue 11): Put/Get/DeleteBucketLifecycleConfiguration with S3's validation, the
x-amz-expiration header, and the executor applying the rules on a fast clock (a lifecycle "day" of one second,
a run every 0.2 s, on a server of this module's own)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.polling import wait_until
from helpers.server import EucaServer, start_euca


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    yield from start_euca(
        tmp_path_factory.mktemp("lifecycle"),
        "walrus,clc",
        {"walrus.lifecycle_interval": 0.2, "walrus.lifecycle_day_seconds": 1.0},
    )


@pytest.fixture(scope="module")
def s3(fast: EucaServer) -> Any:
    return fast.client("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = "lc-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def put_rules(s3: Any, bucket: str, *rules: dict[str, Any]) -> Any:
    return s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)})


def keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_put_get_delete(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert code(e) == "NoSuchLifecycleConfiguration"
    rules = [
        {"ID": "old-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}},
        {
            "ID": "tagged",
            "Filter": {
                "And": {"Prefix": "tmp/", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}
            },
            "Status": "Disabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 3, "NewerNoncurrentVersions": 2},
        },
        {
            "ID": "uploads",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
        {
            "ID": "markers",
            "Filter": {"Prefix": "x"},
            "Status": "Enabled",
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
        {
            "ID": "dated",
            "Prefix": "legacy/",
            "Status": "Enabled",
            "Expiration": {"Date": datetime.datetime(2030, 1, 1)},
        },
    ]
    put_rules(s3, bucket, *rules)
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in got] == ["old-logs", "tagged", "uploads", "markers", "dated"]
    assert got[0]["Filter"] == {"Prefix": "logs/"} and got[0]["Expiration"] == {"Days": 30}
    assert got[1]["Filter"]["And"]["Tags"] == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 3, "NewerNoncurrentVersions": 2}
    assert got[2]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert got[3]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert got[4]["Prefix"] == "legacy/" and got[4]["Expiration"]["Date"].year == 2030
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert code(e) == "NoSuchLifecycleConfiguration"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {"ID": "a" * 256, "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 1}},
            "InvalidArgument",
        ),
        (
            {"ID": "r", "Filter": {"Prefix": ""}, "Status": "enabled", "Expiration": {"Days": 1}},
            "MalformedXML",
        ),
        (
            {"ID": "r", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 0}},
            "InvalidArgument",
        ),
        ({"ID": "r", "Filter": {"Prefix": ""}, "Status": "Enabled"}, "InvalidRequest"),
        (
            {
                "ID": "r",
                "Filter": {"Prefix": ""},
                "Status": "Enabled",
                "Expiration": {"Days": 1, "ExpiredObjectDeleteMarker": True},
            },
            "MalformedXML",
        ),
        (
            {
                "ID": "r",
                "Filter": {"Tag": {"Key": "k", "Value": "v"}},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
            "InvalidRequest",
        ),
    ],
)
def test_refused_as_s3_refuses(s3: Any, bucket: str, rule: dict[str, Any], expected: str) -> None:
    with pytest.raises(ClientError) as e:
        put_rules(s3, bucket, rule)
    assert code(e) == expected


def test_same_id_twice_and_date_not_at_midnight(s3: Any, bucket: str) -> None:
    rule = {"ID": "same", "Filter": {"Prefix": "a"}, "Status": "Enabled", "Expiration": {"Days": 1}}
    with pytest.raises(ClientError) as e:
        put_rules(s3, bucket, rule, dict(rule, Filter={"Prefix": "b"}))
    assert code(e) == "InvalidArgument"
    noon = {
        "ID": "n",
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "Expiration": {"Date": datetime.datetime(2030, 1, 1, 12)},
    }
    with pytest.raises(ClientError) as e:
        put_rules(s3, bucket, noon)
    assert code(e) == "InvalidArgument"


def test_expiration_header_on_put_head_get(fast: EucaServer, s3: Any) -> None:
    # A day of one second on this server: use a normal server's arithmetic through a far Date instead.
    bucket = "lc-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=bucket)
    put_rules(
        s3,
        bucket,
        {
            "ID": "year",
            "Filter": {"Prefix": "keep/"},
            "Status": "Enabled",
            "Expiration": {"Date": datetime.datetime(2099, 1, 1)},
        },
    )
    put = s3.put_object(Bucket=bucket, Key="keep/a", Body=b"x")
    assert put["Expiration"] == 'expiry-date="Thu, 01 Jan 2099 00:00:00 GMT", rule-id="year"'
    assert s3.head_object(Bucket=bucket, Key="keep/a")["Expiration"] == put["Expiration"]
    assert s3.get_object(Bucket=bucket, Key="keep/a")["Expiration"] == put["Expiration"]
    assert "Expiration" not in s3.put_object(Bucket=bucket, Key="other", Body=b"x")


def test_current_versions_expire(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="tmp/a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="keep/b", Body=b"b")
    put_rules(
        s3,
        bucket,
        {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 2}},
    )
    wait_until("tmp/a expired", lambda: keys(s3, bucket) == ["keep/b"], deadline=60, interval=0.2)


def test_versioned_expiry_leaves_a_marker_then_noncurrent_and_markers_go(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"1")
    put_rules(
        s3,
        bucket,
        {"ID": "cur", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 1}},
        {
            "ID": "old",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        },
        {
            "ID": "dm",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
    )

    def versions() -> tuple[int, int]:
        v = s3.list_object_versions(Bucket=bucket)
        return len(v.get("Versions", [])), len(v.get("DeleteMarkers", []))

    # The current version gets a delete marker, the (now noncurrent) version is deleted, and the marker,
    # left alone, goes too.
    wait_until("every version and marker gone", lambda: versions() == (0, 0), deadline=60, interval=0.2)


def test_newer_noncurrent_versions_are_kept(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"1", b"2", b"3", b"4"):
        s3.put_object(Bucket=bucket, Key="k", Body=body)
    put_rules(
        s3,
        bucket,
        {
            "ID": "old",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 2},
        },
    )

    def count() -> int:
        return len(s3.list_object_versions(Bucket=bucket).get("Versions", []))

    wait_until("two noncurrent kept", lambda: count() == 3, deadline=60, interval=0.2)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"4"


def test_incomplete_uploads_are_aborted(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"x" * 100)
    put_rules(
        s3,
        bucket,
        {
            "ID": "abort",
            "Filter": {"Prefix": ""},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
    )
    wait_until(
        "upload aborted",
        lambda: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
        deadline=60,
        interval=0.2,
    )


def test_aws_cli_round_trip(fast: EucaServer, bucket: str) -> None:
    doc = '{"Rules": [{"ID": "cli", "Filter": {"Prefix": "p/"}, "Status": "Enabled", "Expiration": {"Days": 9}}]}'
    fast.aws(
        "s3api", "put-bucket-lifecycle-configuration", "--bucket", bucket, "--lifecycle-configuration", doc
    )
    out = fast.aws("s3api", "get-bucket-lifecycle-configuration", "--bucket", bucket).stdout
    assert '"ID": "cli"' in out and '"Days": 9' in out
