"""Versioning: enable/suspend, version ids, delete markers, GET/HEAD/DELETE by version, null versions."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_versioning_lifecycle(s3_client, bucket):
    assert "Status" not in s3_client.get_bucket_versioning(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"null-version")
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3_client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3_client.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    v2 = s3_client.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]
    assert v1 != v2 and v1 != "null"
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    assert s3_client.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"one"
    assert s3_client.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"null-version"
    d = s3_client.delete_object(Bucket=bucket, Key="k")
    assert d["DeleteMarker"] is True
    marker = d["VersionId"]
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="k")
    assert code(e) == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as e:
        s3_client.head_object(Bucket=bucket, Key="k", VersionId=marker)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    vs = s3_client.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in vs["Versions"]] == [v2, v1, "null"]
    assert [m["VersionId"] for m in vs["DeleteMarkers"]] == [marker]
    assert vs["DeleteMarkers"][0]["IsLatest"]
    # Removing the marker brings v2 back.
    s3_client.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    s3_client.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="k", VersionId=v2)
    assert code(e) == "NoSuchVersion"
    with pytest.raises(ClientError) as e:
        s3_client.get_object(Bucket=bucket, Key="k", VersionId="garbage")
    assert code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        s3_client.delete_bucket(Bucket=bucket)
    assert code(e) == "BucketNotEmpty"


def test_suspended_null_version(s3_client, bucket):
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3_client.put_object(Bucket=bucket, Key="s", Body=b"v1")["VersionId"]
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    # A write in a suspended bucket makes the null version, and S3's answer names no version (issue 11).
    assert "VersionId" not in s3_client.put_object(Bucket=bucket, Key="s", Body=b"n1")
    assert "VersionId" not in s3_client.put_object(Bucket=bucket, Key="s", Body=b"n2")
    vs = s3_client.list_object_versions(Bucket=bucket)["Versions"]
    assert [v["VersionId"] for v in vs] == ["null", v1]
    d = s3_client.delete_object(Bucket=bucket, Key="s")
    assert d["DeleteMarker"] and d["VersionId"] == "null"
    vs = s3_client.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in vs["Versions"]] == [v1]
    assert [m["VersionId"] for m in vs["DeleteMarkers"]] == ["null"]
    # CopyObject and CompleteMultipartUpload answer the same; a HEAD still names the null version.
    s3_client.put_object(Bucket=bucket, Key="s", Body=b"n3")
    assert s3_client.head_object(Bucket=bucket, Key="s")["VersionId"] == "null"
    assert "VersionId" not in s3_client.copy_object(
        Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "s"}
    )
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    part = s3_client.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"m")
    done = s3_client.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert "VersionId" not in done


def test_versions_pagination(s3_client, bucket):
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ids = [s3_client.put_object(Bucket=bucket, Key="p", Body=str(i).encode())["VersionId"] for i in range(5)]
    s3_client.put_object(Bucket=bucket, Key="q", Body=b"")
    got, kw = [], {}
    while True:
        r = s3_client.list_object_versions(Bucket=bucket, MaxKeys=2, **kw)
        got += [(v["Key"], v["VersionId"]) for v in r.get("Versions", [])]
        if not r["IsTruncated"]:
            break
        kw = {"KeyMarker": r["NextKeyMarker"], "VersionIdMarker": r["NextVersionIdMarker"]}
    assert [g for g in got if g[0] == "p"] == [("p", i) for i in reversed(ids)]
    assert len(got) == 6
