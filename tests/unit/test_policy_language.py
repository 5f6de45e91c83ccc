"""The policy language shared by identity, resource and trust policies: parsing by kind, and evaluation."""

from __future__ import annotations

import json

import pytest

from euca.protocol import policy
from euca.protocol.policy import Context, PolicyDocumentError, Rules

IDENTITY = Rules(principal="forbidden", check_action=policy.vendor_action, check_resource=policy.arn_resource)


def parse(statements: list[dict[str, object]], rules: Rules = IDENTITY) -> policy.Policy:
    return policy.parse(json.dumps({"Version": "2012-10-17", "Statement": statements}), rules)


def ctx(action: str, resource: str = "*", **keys: str) -> Context:
    return Context(
        action,
        resource,
        "111122223333",
        "arn:aws:iam::111122223333:user/bob",
        {k.lower(): [v] for k, v in keys.items()},
    )


@pytest.mark.parametrize(
    "statement, message",
    [
        (
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Principal": "*"},
            "should not specify a principal",
        ),
        ({"Effect": "Allow", "Action": "GetObject", "Resource": "*"}, "prefaced by a vendor"),
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "bucket"}, "ARN format"),
        ({"Effect": "Maybe", "Action": "s3:*", "Resource": "*"}, "Invalid effect"),
        ({"Effect": "Allow", "Resource": "*"}, "Action"),
        ({"Effect": "Allow", "Action": "s3:*"}, "Resource"),
        (
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"Foo": {"a": "b"}}},
            "Condition",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"IpAddress": {"aws:SourceIp": "x"}},
            },
            "Condition value",
        ),
    ],
)
def test_identity_documents_refused(statement: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyDocumentError) as e:
        parse([statement])
    assert message in e.value.message


def test_trust_policies_need_a_principal_and_no_resource() -> None:
    trust = Rules(principal="required", resource_required=False)
    parse([{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}], trust)
    with pytest.raises(PolicyDocumentError):
        parse([{"Effect": "Allow", "Action": "sts:AssumeRole"}], trust)


def test_size_limit_counts_without_whitespace() -> None:
    rules = Rules(principal="forbidden", max_bytes=120)
    doc = {"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    policy.parse(json.dumps(doc, indent=8), rules)
    doc["Statement"] = doc["Statement"] * 3
    with pytest.raises(PolicyDocumentError) as e:
        policy.parse(json.dumps(doc), rules)
    assert e.value.too_large


def test_actions_resources_and_their_negations() -> None:
    p = parse(
        [
            {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
            {"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret/*"},
        ]
    )
    assert policy.evaluate(p, ctx("ec2:DescribeInstances")) == "Allow"
    assert policy.evaluate(p, ctx("EC2:describeimages")) == "Allow"  # actions match case-insensitively
    assert policy.evaluate(p, ctx("s3:GetObject", "arn:aws:s3:::open/k")) == "Allow"
    assert policy.evaluate(p, ctx("s3:GetObject", "arn:aws:s3:::secret/k")) is None
    assert policy.evaluate(p, ctx("iam:CreateUser", "arn:aws:iam::1:user/x")) is None


def test_deny_wins_across_policies() -> None:
    allow = parse([{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}])
    deny = parse([{"Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"}])
    assert policy.evaluate_all([allow, deny], ctx("s3:PutObject", "arn:aws:s3:::b/k")) == "Deny"
    assert policy.evaluate_all([allow, deny], ctx("s3:GetObject", "arn:aws:s3:::b/k")) == "Allow"
    assert policy.evaluate_all([], ctx("s3:GetObject")) is None


def test_conditions() -> None:
    def allowed(condition: dict[str, object], **keys: str) -> bool:
        p = parse([{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": condition}])
        return policy.evaluate(p, ctx("s3:GetObject", **keys)) == "Allow"

    assert allowed({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, **{"aws:SourceIp": "10.1.2.3"})
    assert not allowed({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, **{"aws:SourceIp": "127.0.0.1"})
    assert allowed({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, **{"aws:SourceIp": "127.0.0.1"})
    assert allowed({"Bool": {"aws:SecureTransport": "false"}}, **{"aws:SecureTransport": "false"})
    assert allowed(
        {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
        **{"aws:CurrentTime": "2026-01-01T00:00:00Z"},
    )
    assert not allowed(
        {"DateGreaterThan": {"aws:CurrentTime": "2030-01-01"}}, **{"aws:CurrentTime": "2026-01-01T00:00:00Z"}
    )
    assert allowed({"StringEquals": {"aws:username": "bob"}}, **{"aws:username": "bob"})
    assert allowed({"StringLike": {"s3:prefix": "home/bob/*"}}, **{"s3:prefix": "home/bob/x"})
    assert not allowed({"StringLike": {"s3:prefix": "home/bob/*"}})  # a missing key fails a positive test
    assert allowed({"StringNotEquals": {"ec2:ResourceTag/team": "red"}})  # and satisfies a negated one
    assert allowed({"StringEqualsIfExists": {"ec2:ResourceTag/team": "red"}})
    assert allowed({"Null": {"s3:prefix": "true"}})
    assert allowed({"NumericLessThan": {"s3:max-keys": "10"}}, **{"s3:max-keys": "5"})


def test_limit_statements_are_quotas_not_grants() -> None:
    rules = Rules(principal="forbidden", allow_limit=True)
    doc = [
        {
            "Effect": "Limit",
            "Action": "ec2:RunInstances",
            "Resource": "*",
            "Condition": {"NumericLessThanEquals": {"ec2:quota-vminstancenumber": "3"}},
        },
        {
            "Effect": "Limit",
            "Action": "ec2:*",
            "Resource": "*",
            "Condition": {
                "NumericLessThanEquals": {"ec2:quota-vminstancenumber": "5", "ec2:quota-cputotalsize": "8"}
            },
        },
    ]
    p = parse(doc, rules)
    assert policy.evaluate(p, ctx("ec2:RunInstances")) is None  # a Limit allows nothing
    assert policy.limits([p], "ec2:RunInstances", "*") == {
        "ec2:quota-vminstancenumber": 3,
        "ec2:quota-cputotalsize": 8,
    }
    assert policy.limits([p], "s3:PutObject", "*") == {}
    with pytest.raises(PolicyDocumentError):
        parse(doc, IDENTITY)  # where Limit is not accepted
    with pytest.raises(PolicyDocumentError):
        parse([{**doc[0], "Condition": {"NumericLessThan": {"ec2:quota-vminstancenumber": "3"}}}], rules)
    with pytest.raises(PolicyDocumentError):
        parse([{**doc[0], "Condition": {"NumericLessThanEquals": {"ec2:nonsense": "3"}}}], rules)
