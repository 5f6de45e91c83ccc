"""Bucket policy documents (sans-I/O): validation and evaluation."""

from __future__ import annotations

import json

import pytest

from euca.protocol.s3 import S3Error
from euca.protocol.s3 import cors as s3_cors
from euca.protocol.s3 import policy as s3_policy


def doc(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def ctx(
    action: str, resource: str, account: str | None = "111", keys: dict[str, list[str]] | None = None
) -> s3_policy.Context:
    return s3_policy.Context(
        action, resource, account, f"arn:aws:iam::{account}:user/u" if account else None, keys or {}
    )


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "[]",
        doc({"Effect": "Maybe", "Principal": "*", "Action": "s3:*", "Resource": "*"}),
        doc(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::other/*",
            }
        ),
        doc(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::b/*",
                "Condition": {"Bogus": {"a": "b"}},
            }
        ),
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(S3Error) as e:
        s3_policy.parse_policy(text, "b")
    assert e.value.code == "MalformedPolicy"


def test_deny_wins_and_wildcards() -> None:
    p = s3_policy.parse_policy(
        doc(
            {
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "s3:Get*",
                "Resource": "arn:aws:s3:::b/*",
            },
            {
                "Effect": "Deny",
                "Principal": {"AWS": "arn:aws:iam::222:root"},
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::b/secret/*",
            },
        ),
        "b",
    )
    assert s3_policy.evaluate(p, ctx("s3:GetObject", "arn:aws:s3:::b/x", None)) == "Allow"
    assert s3_policy.evaluate(p, ctx("s3:GetObject", "arn:aws:s3:::b/secret/x", "222")) == "Deny"
    assert s3_policy.evaluate(p, ctx("s3:PutObject", "arn:aws:s3:::b/x")) is None
    assert s3_policy.is_public(p)


def test_conditions() -> None:
    p = s3_policy.parse_policy(
        doc(
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {
                    "StringLike": {"s3:prefix": "home/*"},
                    "NumericLessThanEquals": {"s3:max-keys": "10"},
                    "NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                },
            }
        ),
        "b",
    )
    ok = ctx(
        "s3:ListBucket",
        "arn:aws:s3:::b",
        keys={"s3:prefix": ["home/a"], "s3:max-keys": ["5"], "aws:sourceip": ["127.0.0.1"]},
    )
    assert s3_policy.evaluate(p, ok) == "Allow"
    ok.keys["s3:max-keys"] = ["11"]
    assert s3_policy.evaluate(p, ok) is None
    assert not s3_policy.is_public(p)


def test_cors_match() -> None:
    rules = [
        {"id": "", "methods": ["GET"], "origins": ["start*end"], "headers": [], "expose": [], "max_age": None}
    ]
    assert s3_cors.match(rules, "start1end", "GET", []) is not None
    assert s3_cors.match(rules, "0start1end", "GET", []) is None
    assert s3_cors.match(rules, "startend", "PUT", []) is None
    assert s3_cors.match(rules, "startend", "GET", ["x-amz-meta-a"]) is None
