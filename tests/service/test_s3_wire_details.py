"""Small things S3 answers in a given form (issue 11): tags listed sorted by key, Content-Encoding returned as
sent."""

from __future__ import annotations


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
