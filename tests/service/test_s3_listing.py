"""Listings: v1, v2, versions; prefixes, delimiters, pagination, encoding-type=url, binary order."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

KEYS = ["a/1", "a/2", "a/b/3", "b", "c/x/y", "c/z", "d", "é", "z"]


@pytest.fixture
def filled(s3_client, bucket):
    for k in KEYS:
        s3_client.put_object(Bucket=bucket, Key=k, Body=b"")
    return bucket


def test_v2_delimiter(s3_client, filled):
    r = s3_client.list_objects_v2(Bucket=filled, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["b", "d", "z", "é"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    r = s3_client.list_objects_v2(Bucket=filled, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/b/"]


def test_v2_pagination(s3_client, filled):
    seen, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3_client.list_objects_v2(Bucket=filled, MaxKeys=2, **kw)
        seen += [o["Key"] for o in r.get("Contents", [])]
        assert r["KeyCount"] <= 2
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert seen == sorted(KEYS, key=str.encode)


def test_v2_pagination_with_delimiter(s3_client, filled):
    items, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3_client.list_objects_v2(Bucket=filled, MaxKeys=1, Delimiter="/", **kw)
        items += [o["Key"] for o in r.get("Contents", [])] + [
            p["Prefix"] for p in r.get("CommonPrefixes", [])
        ]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert items == ["a/", "b", "c/", "d", "z", "é"]


def test_start_after_and_fetch_owner(s3_client, filled, euca):
    r = s3_client.list_objects_v2(Bucket=filled, StartAfter="c/z", FetchOwner=True)
    assert [o["Key"] for o in r["Contents"]] == ["d", "z", "é"]
    assert r["Contents"][0]["Owner"]["ID"] == euca.admin.canonical_id
    r = s3_client.list_objects_v2(Bucket=filled)
    assert "Owner" not in r["Contents"][0]


def test_v1_marker(s3_client, filled):
    r = s3_client.list_objects(Bucket=filled, MaxKeys=3)
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2", "a/b/3"] and r["IsTruncated"]
    r = s3_client.list_objects(Bucket=filled, Marker="a/b/3")
    assert [o["Key"] for o in r["Contents"]][0] == "b"
    r = s3_client.list_objects(Bucket=filled, Delimiter="/", MaxKeys=1)
    assert r["NextMarker"] == "a/"
    r = s3_client.list_objects(Bucket=filled, Delimiter="/", Marker="a/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["c/"]


def test_encoding_type_url(euca, s3_client, bucket):
    import httpx

    s3_client.put_object(Bucket=bucket, Key="sp ace/ü", Body=b"", ACL="public-read")
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    r = httpx.get(f"{euca.url}/{bucket}?list-type=2&encoding-type=url")
    assert b"<Key>sp%20ace/%C3%BC</Key>" in r.content
    # boto3 asks for url encoding itself and decodes it back.
    assert s3_client.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"] == "sp ace/ü"


def test_max_keys_zero_and_bad(s3_client, filled):
    r = s3_client.list_objects_v2(Bucket=filled, MaxKeys=0)
    assert r["KeyCount"] == 0
    with pytest.raises(ClientError):
        s3_client.list_objects_v2(Bucket="no-such-bucket-for-listing")


def test_many_keys(s3_client, bucket):
    keys = [f"k{i:04d}" for i in range(1200)]
    s3_client.delete_objects  # noqa: B018
    for k in keys:
        s3_client.put_object(Bucket=bucket, Key=k, Body=b"")
    r = s3_client.list_objects_v2(Bucket=bucket)
    assert r["KeyCount"] == 1000 and r["IsTruncated"]
    r2 = s3_client.list_objects_v2(Bucket=bucket, ContinuationToken=r["NextContinuationToken"])
    assert [o["Key"] for o in r2["Contents"]] == keys[1000:]
