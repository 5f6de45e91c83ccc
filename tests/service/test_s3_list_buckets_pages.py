"""ListBuckets in pages (issue 11): MaxBuckets, ContinuationToken, Prefix and BucketRegion, as boto3 sends them."""

from __future__ import annotations

import uuid

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError


@pytest.fixture
def prefixed(s3_client):
    prefix = "lb-" + uuid.uuid4().hex[:10] + "-"
    names = [f"{prefix}{i:02d}" for i in (3, 0, 4, 1, 2)]
    for name in names:
        s3_client.create_bucket(Bucket=name)
    return prefix, sorted(names)


def test_pages_with_a_prefix(s3_client, prefixed):
    prefix, names = prefixed
    first = s3_client.list_buckets(Prefix=prefix, MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == names[:2]
    assert first["Prefix"] == prefix
    second = s3_client.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
    assert [b["Name"] for b in second["Buckets"]] == names[2:4]
    third = s3_client.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=second["ContinuationToken"])
    assert [b["Name"] for b in third["Buckets"]] == names[4:]
    assert "ContinuationToken" not in third
    exact = s3_client.list_buckets(Prefix=prefix, MaxBuckets=5)
    assert [b["Name"] for b in exact["Buckets"]] == names and "ContinuationToken" not in exact
    assert [b["Name"] for b in s3_client.list_buckets(Prefix=prefix)["Buckets"]] == names
    assert s3_client.list_buckets(Prefix=prefix + "9")["Buckets"] == []


def test_the_paginator_walks_every_bucket(s3_client, prefixed):
    everything = [b["Name"] for b in s3_client.list_buckets()["Buckets"]]
    assert "ContinuationToken" not in s3_client.list_buckets()
    pages = s3_client.get_paginator("list_buckets").paginate(PaginationConfig={"PageSize": 2})
    walked = [b["Name"] for page in pages for b in page["Buckets"]]
    assert walked == everything and set(prefixed[1]) <= set(walked)


def test_bucket_region(euca, s3_client, prefixed):
    prefix, names = prefixed
    assert [
        b["Name"] for b in s3_client.list_buckets(Prefix=prefix, BucketRegion=euca.region)["Buckets"]
    ] == names
    assert s3_client.list_buckets(Prefix=prefix, BucketRegion="elsewhere-1")["Buckets"] == []


@pytest.mark.parametrize("value", ["0", "10001", "-1", "two"])
def test_bad_max_buckets(euca, value):
    request = AWSRequest(method="GET", url=f"{euca.url}/?max-buckets={value}")
    creds = Credentials(euca.admin.access_key, euca.admin.secret_key)
    S3SigV4Auth(creds, "s3", euca.region).add_auth(request)
    r = httpx.get(request.url, headers=dict(request.headers))
    assert r.status_code == 400
    assert b"<Code>InvalidArgument</Code>" in r.content


def test_bad_continuation_token(s3_client):
    with pytest.raises(ClientError) as e:
        s3_client.list_buckets(MaxBuckets=1, ContinuationToken="not a token!")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
