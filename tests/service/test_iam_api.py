"""The IAM Query API (Eucalyptus's Euare) with boto3 and the aws CLI, and its answers checked against moto's
IAM in the same run (same calls, same error codes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers.iam import new_account, new_user, refused
from helpers.moto_iam import available, moto_client, moto_server
from helpers.server import Credentials, EucaServer

DOC = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]}
)
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def _steps(account: str) -> list[tuple[str, dict[str, Any]]]:
    """Calls whose outcome AWS documents and moto implements alike (where moto is laxer than AWS, e.g. deleting
    a user that still has keys, the step is left to the tests below)."""
    parn = f"arn:aws:iam::{account}:policy/pol"
    return [
        ("create_user", {"UserName": "alice", "Path": "/team/"}),
        ("create_user", {"UserName": "alice"}),
        ("get_user", {"UserName": "nobody"}),
        ("create_access_key", {"UserName": "alice"}),
        ("create_access_key", {"UserName": "alice"}),
        ("create_access_key", {"UserName": "alice"}),
        ("create_access_key", {"UserName": "nobody"}),
        ("create_group", {"GroupName": "devs"}),
        ("create_group", {"GroupName": "devs"}),
        ("add_user_to_group", {"GroupName": "devs", "UserName": "alice"}),
        ("add_user_to_group", {"GroupName": "nogroup", "UserName": "alice"}),
        ("add_user_to_group", {"GroupName": "devs", "UserName": "nobody"}),
        ("delete_group", {"GroupName": "nogroup"}),
        ("put_user_policy", {"UserName": "alice", "PolicyName": "p1", "PolicyDocument": DOC}),
        ("put_user_policy", {"UserName": "alice", "PolicyName": "p2", "PolicyDocument": "{}"}),
        ("put_user_policy", {"UserName": "nobody", "PolicyName": "p1", "PolicyDocument": DOC}),
        ("get_user_policy", {"UserName": "alice", "PolicyName": "p1"}),
        ("get_user_policy", {"UserName": "alice", "PolicyName": "nope"}),
        ("put_group_policy", {"GroupName": "devs", "PolicyName": "g1", "PolicyDocument": DOC}),
        ("delete_group_policy", {"GroupName": "devs", "PolicyName": "nope"}),
        ("create_policy", {"PolicyName": "pol", "PolicyDocument": DOC}),
        ("create_policy", {"PolicyName": "pol", "PolicyDocument": DOC}),
        ("create_policy", {"PolicyName": "bad", "PolicyDocument": "{}"}),
        ("get_policy", {"PolicyArn": f"arn:aws:iam::{account}:policy/nope"}),
        ("attach_user_policy", {"UserName": "alice", "PolicyArn": parn}),
        ("attach_user_policy", {"UserName": "alice", "PolicyArn": f"arn:aws:iam::{account}:policy/nope"}),
        ("attach_group_policy", {"GroupName": "devs", "PolicyArn": parn}),
        ("create_policy_version", {"PolicyArn": parn, "PolicyDocument": DOC, "SetAsDefault": True}),
        ("create_policy_version", {"PolicyArn": parn, "PolicyDocument": DOC}),
        ("create_policy_version", {"PolicyArn": parn, "PolicyDocument": DOC}),
        ("create_policy_version", {"PolicyArn": parn, "PolicyDocument": DOC}),
        ("create_policy_version", {"PolicyArn": parn, "PolicyDocument": DOC}),
        ("delete_policy_version", {"PolicyArn": parn, "VersionId": "v2"}),
        ("get_policy_version", {"PolicyArn": parn, "VersionId": "v9"}),
        ("detach_user_policy", {"UserName": "alice", "PolicyArn": parn}),
        ("detach_user_policy", {"UserName": "alice", "PolicyArn": parn}),
        ("create_role", {"RoleName": "r", "AssumeRolePolicyDocument": TRUST}),
        ("create_role", {"RoleName": "r", "AssumeRolePolicyDocument": TRUST}),
        ("get_role", {"RoleName": "nope"}),
        ("create_instance_profile", {"InstanceProfileName": "ip"}),
        ("create_instance_profile", {"InstanceProfileName": "ip"}),
        ("add_role_to_instance_profile", {"InstanceProfileName": "ip", "RoleName": "r"}),
        ("delete_role", {"RoleName": "r"}),
        ("delete_instance_profile", {"InstanceProfileName": "ip"}),
        ("remove_role_from_instance_profile", {"InstanceProfileName": "ip", "RoleName": "r"}),
        ("delete_instance_profile", {"InstanceProfileName": "ip"}),
        ("get_instance_profile", {"InstanceProfileName": "ip"}),
        ("put_role_policy", {"RoleName": "r", "PolicyName": "rp", "PolicyDocument": DOC}),
        ("delete_role", {"RoleName": "r"}),
        ("delete_role_policy", {"RoleName": "r", "PolicyName": "rp"}),
        ("delete_role", {"RoleName": "r"}),
        ("remove_user_from_group", {"GroupName": "devs", "UserName": "alice"}),
        ("get_login_profile", {"UserName": "alice"}),
        (
            "update_access_key",
            {"UserName": "alice", "AccessKeyId": "AKIAXXXXXXXXXXXXXXXX", "Status": "Inactive"},
        ),
        ("delete_access_key", {"UserName": "alice", "AccessKeyId": "AKIAXXXXXXXXXXXXXXXX"}),
        ("get_account_summary", {}),
    ]


def _outcomes(iam: Any, account: str) -> list[tuple[str, str]]:
    out = []
    for name, kwargs in _steps(account):
        try:
            getattr(iam, name)(**kwargs)
            out.append((name, "ok"))
        except ClientError as e:
            out.append((name, e.response["Error"]["Code"]))
    return out


@pytest.fixture(scope="module")
def account(euca: EucaServer) -> Credentials:
    """A fresh account of its own (its admin user's keys), so these tests see only their own users."""
    return new_account(euca)


def _account_id(iam: Any) -> str:
    return str(iam.get_user()["User"]["Arn"].split(":")[4])


@pytest.mark.skipif(not available(), reason="moto_server is not installed")
def test_same_answers_as_moto(euca: EucaServer) -> None:
    with moto_server() as url:
        expected = _outcomes(moto_client(url, "iam"), "123456789012")
    iam = euca.client("iam", creds=new_account(euca))
    assert _outcomes(iam, _account_id(iam)) == expected
    assert ("create_access_key", "LimitExceeded") in expected  # the comparison covers refusals, not only "ok"


def test_users_paths_and_paging(euca: EucaServer, account: Credentials) -> None:
    iam = euca.client("iam", creds=account)
    for i in range(5):
        iam.create_user(UserName=f"pager{i}", Path="/pages/")
    first = iam.list_users(PathPrefix="/pages/", MaxItems=2)
    assert [u["UserName"] for u in first["Users"]] == ["pager0", "pager1"] and first["IsTruncated"]
    rest = iam.list_users(PathPrefix="/pages/", Marker=first["Marker"])
    assert [u["UserName"] for u in rest["Users"]] == ["pager2", "pager3", "pager4"] and not rest[
        "IsTruncated"
    ]
    user = iam.get_user(UserName="pager0")["User"]
    assert user["Arn"].endswith(":user/pages/pager0") and user["UserId"].startswith("AIDA")
    iam.update_user(UserName="pager0", NewUserName="renamed", NewPath="/moved/")
    assert iam.get_user(UserName="renamed")["User"]["Path"] == "/moved/"
    assert refused(lambda: iam.get_user(UserName="pager0")) == "NoSuchEntity"
    # The caller, when no user is named.
    assert iam.get_user()["User"]["UserName"] == "admin"


def test_delete_conflicts_as_aws(euca: EucaServer, account: Credentials) -> None:
    """AWS refuses to delete what still has parts (moto is laxer here)."""
    iam = euca.client("iam", creds=account)
    iam.create_user(UserName="owner")
    key = iam.create_access_key(UserName="owner")["AccessKey"]
    assert refused(lambda: iam.delete_user(UserName="owner")) == "DeleteConflict"
    iam.delete_access_key(UserName="owner", AccessKeyId=key["AccessKeyId"])
    iam.create_group(GroupName="crew")
    iam.add_user_to_group(GroupName="crew", UserName="owner")
    assert refused(lambda: iam.delete_user(UserName="owner")) == "DeleteConflict"
    assert refused(lambda: iam.delete_group(GroupName="crew")) == "DeleteConflict"
    iam.remove_user_from_group(GroupName="crew", UserName="owner")
    parn = iam.create_policy(PolicyName="conflicted", PolicyDocument=DOC)["Policy"]["Arn"]
    iam.attach_group_policy(GroupName="crew", PolicyArn=parn)
    assert refused(lambda: iam.delete_policy(PolicyArn=parn)) == "DeleteConflict"
    assert refused(lambda: iam.delete_group(GroupName="crew")) == "DeleteConflict"
    iam.detach_group_policy(GroupName="crew", PolicyArn=parn)
    iam.delete_policy(PolicyArn=parn)
    iam.delete_group(GroupName="crew")
    iam.create_login_profile(UserName="owner", Password="Secret-Passw0rd!")
    assert refused(lambda: iam.delete_user(UserName="owner")) == "DeleteConflict"
    iam.delete_login_profile(UserName="owner")
    iam.delete_user(UserName="owner")
    assert refused(lambda: iam.delete_user(UserName="admin")) == "DeleteConflict"


def test_documents_come_back_as_sent(euca: EucaServer, account: Credentials) -> None:
    iam = euca.client("iam", creds=account)
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=DOC)
    assert iam.get_user_policy(UserName="reader", PolicyName="read")["PolicyDocument"] == json.loads(DOC)
    assert iam.list_user_policies(UserName="reader")["PolicyNames"] == ["read"]
    role = iam.create_role(RoleName="svc", AssumeRolePolicyDocument=TRUST, Description="d")["Role"]
    assert role["AssumeRolePolicyDocument"] == json.loads(TRUST) and role["MaxSessionDuration"] == 3600
    assert (
        refused(
            lambda: iam.create_role(
                RoleName="nop", AssumeRolePolicyDocument=DOC
            )  # a trust policy names a principal
        )
        == "MalformedPolicyDocument"
    )
    with_principal = json.dumps(
        {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}]}
    )
    assert (
        refused(lambda: iam.put_user_policy(UserName="reader", PolicyName="x", PolicyDocument=with_principal))
        == "MalformedPolicyDocument"
    )
    big = json.dumps(
        {
            "Statement": [
                {"Effect": "Allow", "Action": f"s3:Get{'x' * 40}{i}", "Resource": "*"} for i in range(60)
            ]
        }
    )
    assert (
        refused(lambda: iam.put_user_policy(UserName="reader", PolicyName="big", PolicyDocument=big))
        == "LimitExceeded"
    )
    summary = iam.get_account_summary()["SummaryMap"]
    assert summary["AccessKeysPerUserQuota"] == 2 and summary["Roles"] >= 1


def test_a_deleted_or_disabled_key_stops_at_once(euca: EucaServer, account: Credentials) -> None:
    iam = euca.client("iam", creds=account)
    listing = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}],
        }
    )
    creds = new_user(iam, account, "keyed", listing)
    key = {"AccessKeyId": creds.access_key}
    s3 = euca.client("s3", creds=creds)
    s3.list_buckets()  # known and cached
    iam.update_access_key(UserName="keyed", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    assert refused(lambda: s3.list_buckets()) == "InvalidAccessKeyId"
    iam.update_access_key(UserName="keyed", AccessKeyId=key["AccessKeyId"], Status="Active")
    s3.list_buckets()
    iam.delete_access_key(UserName="keyed", AccessKeyId=key["AccessKeyId"])
    assert refused(lambda: s3.list_buckets()) == "InvalidAccessKeyId"
    listed = iam.list_access_keys(UserName="keyed")["AccessKeyMetadata"]
    assert listed == []
    last = iam.get_access_key_last_used(AccessKeyId=account.access_key)
    assert last["UserName"] == "admin"
    assert last["AccessKeyLastUsed"]["ServiceName"] == "iam" and "LastUsedDate" in last["AccessKeyLastUsed"]
    fresh = new_user(iam, account, "unused")
    never = iam.get_access_key_last_used(AccessKeyId=fresh.access_key)["AccessKeyLastUsed"]
    assert never["ServiceName"] == "N/A" and "LastUsedDate" not in never


def test_users_other_than_admin_are_refused_without_a_policy(euca: EucaServer, account: Credentials) -> None:
    iam = euca.client("iam", creds=account)
    plain = euca.client("iam", creds=new_user(iam, account, "plain"))
    assert refused(lambda: plain.create_user(UserName="sneaky")) == "AccessDenied"


def test_the_aws_cli_and_the_euare_path(euca: EucaServer, account: Credentials) -> None:
    out = euca.aws("iam", "create-user", "--user-name", "clied", creds=account).stdout
    assert json.loads(out)["User"]["UserName"] == "clied"
    listed = json.loads(euca.aws("iam", "list-users", creds=account).stdout)
    assert "clied" in [u["UserName"] for u in listed["Users"]]
    # Eucalyptus's path for Euare.
    import boto3

    euare = boto3.client(
        "iam",
        endpoint_url=euca.url + "/services/Euare",
        region_name=euca.region,
        aws_access_key_id=account.access_key,
        aws_secret_access_key=account.secret_key,
    )
    assert euare.get_user(UserName="clied")["User"]["UserName"] == "clied"
    assert refused(lambda: euare.get_user(UserName="nobody-here")) == "NoSuchEntity"
