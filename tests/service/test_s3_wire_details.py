"""Small things S3 answers in a given form (issue 11): tags listed sorted by key."""

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

