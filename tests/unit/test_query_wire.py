"""The query protocol (IAM, STS) from botocore's models: parameters in, XML out, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree

import pytest

from euca.protocol.query import wire
from euca.protocol.query.wire import QueryError


def decode(service: str, params: dict[str, str]) -> tuple[str, dict[str, object]]:
    env = wire.envelope(service, params)
    return env.action, wire.decode_input(service, env.action, env.params)


def test_lists_maps_and_scalars_by_the_model() -> None:
    action, tree = decode(
        "iam",
        {
            "Action": "CreateUser",
            "Version": "2010-05-08",
            "UserName": "bob",
            "Tags.member.2.Key": "b",
            "Tags.member.2.Value": "2",
            "Tags.member.1.Key": "a",
            "Tags.member.1.Value": "1",
        },
    )
    assert action == "CreateUser"
    assert tree == {"UserName": "bob", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}
    _, listed = decode("iam", {"Action": "ListUsers", "MaxItems": "5"})
    assert listed == {"MaxItems": 5}
    _, sts = decode("sts", {"Action": "GetSessionToken", "DurationSeconds": "900"})
    assert sts == {"DurationSeconds": 900}


@pytest.mark.parametrize(
    "params, code",
    [
        ({}, "MissingAction"),
        ({"Action": "NoSuchThing"}, "InvalidAction"),
        ({"Action": "CreateUser", "Version": "2001-01-01", "UserName": "x"}, "InvalidAction"),
        ({"Action": "CreateUser"}, "ValidationError"),
        ({"Action": "CreateUser", "UserName": ""}, "ValidationError"),
        ({"Action": "CreateUser", "UserName": "x" * 65}, "ValidationError"),
        ({"Action": "ListUsers", "MaxItems": "lots"}, "ValidationError"),
        ({"Action": "ListUsers", "MaxItems": "0"}, "ValidationError"),
        ({"Action": "CreateUser", "UserName": "x", "Tags.member.0.Key": "a"}, "ValidationError"),
    ],
)
def test_bad_parameters_are_the_clients_error(params: dict[str, str], code: str) -> None:
    with pytest.raises(QueryError) as e:
        decode("iam", params)
    assert e.value.code == code and e.value.status == 400


def test_responses_and_errors_as_botocore_reads_them() -> None:
    body = wire.render_response(
        "iam",
        "ListUsers",
        {
            "Users": [
                {
                    "UserName": "a<b",
                    "Path": "/",
                    "UserId": "AIDA",
                    "Arn": "arn",
                    "CreateDate": datetime(2024, 5, 1, tzinfo=UTC),
                }
            ],
            "IsTruncated": False,
        },
        "rid",
    )
    root = ElementTree.fromstring(body)
    ns = "{https://iam.amazonaws.com/doc/2010-05-08/}"
    assert root.tag == f"{ns}ListUsersResponse"
    member = root.find(f"{ns}ListUsersResult/{ns}Users/{ns}member")
    assert member is not None and member.findtext(f"{ns}UserName") == "a<b"
    assert member.findtext(f"{ns}CreateDate") == "2024-05-01T00:00:00.000Z"
    assert root.findtext(f"{ns}ResponseMetadata/{ns}RequestId") == "rid"
    summary = ElementTree.fromstring(
        wire.render_response("iam", "GetAccountSummary", {"SummaryMap": {"Users": 2}}, "r")
    )
    assert summary.findtext(f"{ns}GetAccountSummaryResult/{ns}SummaryMap/{ns}entry/{ns}value") == "2"
    error = ElementTree.fromstring(wire.render_error("iam", QueryError("NoSuchEntity", "gone"), "rid"))
    assert error.findtext(f"{ns}Error/{ns}Type") == "Sender"
    assert error.findtext(f"{ns}Error/{ns}Code") == "NoSuchEntity"
    assert QueryError("NoSuchEntity", "x").status == 404
    assert QueryError("ServiceFailure", "x").fault == "Receiver"
    with pytest.raises(ValueError):
        wire.render_response("iam", "ListUsers", {"Nope": 1}, "r")
