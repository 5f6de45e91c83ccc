"""Small things S3 answers in a given form (issue 11): tags listed sorted by key, Content-Encoding returned as
sent, a request head that cannot be framed answered 400."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError


def test_object_and_bucket_tags_are_listed_sorted_by_key(s3_client, bucket):
    tags = [{"Key": k, "Value": v} for k, v in [("zeta", "1"), ("Alpha", "2"), ("mid", "3"), ("alpha", "4")]]
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3_client.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tags})
    expected = sorted(tags, key=lambda t: t["Key"])
    assert [t["Key"] for t in expected] == ["Alpha", "alpha", "mid", "zeta"]
    assert s3_client.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == expected
    s3_client.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging="zeta=1&Alpha=2&mid=3&alpha=4")
    assert s3_client.get_object_tagging(Bucket=bucket, Key="h")["TagSet"] == expected
    s3_client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    assert s3_client.get_bucket_tagging(Bucket=bucket)["TagSet"] == expected


def test_content_encoding_comes_back_as_sent(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="two", Body=b"x", ContentEncoding="deflate, gzip")
    assert s3_client.head_object(Bucket=bucket, Key="two")["ContentEncoding"] == "deflate, gzip"
    got = s3_client.get_object(Bucket=bucket, Key="two")
    assert got["ContentEncoding"] == "deflate, gzip"
    s3_client.put_object(Bucket=bucket, Key="one", Body=b"x", ContentEncoding="gzip")
    assert s3_client.head_object(Bucket=bucket, Key="one")["ContentEncoding"] == "gzip"


def test_an_empty_content_length_is_a_bad_request(s3_client, bucket):
    # A head HTTP cannot frame is answered 400 (and the connection closed), as S3 answers it, even while the
    # client waits for 100 Continue: never a connection closed without an answer.
    def empty_length(params, **kwargs):
        params["headers"]["Content-Length"] = ""

    s3_client.meta.events.register("before-call.s3.PutObject", empty_length)
    try:
        with pytest.raises(ClientError) as e:
            s3_client.put_object(Bucket=bucket, Key="k", Body=b"bar")
    finally:
        s3_client.meta.events.unregister("before-call.s3.PutObject", empty_length)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"bar")
