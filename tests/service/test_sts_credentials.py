"""STS: GetCallerIdentity, GetSessionToken and AssumeRole; temporary credentials accepted by EC2, S3, IAM and
STS (header-signed and presigned), and refused once they expire (the identity clock is moved, no sleeping)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers.iam import new_account, new_user, refused, session_client
from helpers.server import Credentials, EucaServer


@pytest.fixture(scope="module")
def account(euca: EucaServer) -> Credentials:
    return new_account(euca)


@pytest.fixture
def later(euca: EucaServer) -> Iterator[Any]:
    """`later(seconds)` moves the cloud's clock for temporary credentials forward; put back after the test."""
    identity = euca.ctx.identity
    original = identity.clock

    def move(seconds: float) -> None:
        identity.clock = lambda: time.time() + seconds

    yield move
    identity.clock = original


def test_get_caller_identity(euca: EucaServer, account: Credentials) -> None:
    sts = euca.client("sts", creds=account)
    me = sts.get_caller_identity()
    assert me["Arn"] == f"arn:aws:iam::{me['Account']}:user/admin" and me["UserId"]
    out = json.loads(euca.aws("sts", "get-caller-identity", creds=account).stdout)
    assert out["Arn"] == me["Arn"]


def test_session_token_works_everywhere_then_expires(
    euca: EucaServer, account: Credentials, later: Any
) -> None:
    credentials = euca.client("sts", creds=account).get_session_token(DurationSeconds=900)["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    s3 = session_client(euca, "s3", credentials)
    bucket = "sess-" + account.account
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=600)
    with urllib.request.urlopen(url) as answer:
        assert answer.read() == b"v"
    session_client(euca, "ec2", credentials).describe_instances()
    session_client(euca, "iam", credentials).list_users()
    me = session_client(euca, "sts", credentials).get_caller_identity()
    assert me["Arn"].endswith(":user/admin")
    # No GetSessionToken from a session.
    assert refused(lambda: session_client(euca, "sts", credentials).get_session_token()) == "AccessDenied"
    # The key without its token, or with another's, is refused.
    tokenless = dict(credentials, SessionToken="")
    assert refused(lambda: session_client(euca, "s3", tokenless).list_buckets()) in (
        "InvalidToken",
        "AccessDenied",
    )
    wrong = dict(credentials, SessionToken=credentials["SessionToken"][:-4] + "AAAA")
    assert refused(lambda: session_client(euca, "s3", wrong).list_buckets()) == "InvalidToken"
    assert refused(lambda: session_client(euca, "iam", wrong).list_users()) == "InvalidClientTokenId"

    form = s3.generate_presigned_post(bucket, "posted")
    assert "x-amz-security-token" in form["fields"]
    assert httpx.post(form["url"], data=form["fields"], files={"file": b"p"}).status_code == 204
    tokenless_form = {k: v for k, v in form["fields"].items() if k != "x-amz-security-token"}
    assert b"InvalidToken" in httpx.post(form["url"], data=tokenless_form, files={"file": b"p"}).content

    later(901)
    assert refused(lambda: s3.list_buckets()) == "ExpiredToken"
    assert b"ExpiredToken" in httpx.post(form["url"], data=form["fields"], files={"file": b"p"}).content
    assert refused(lambda: session_client(euca, "ec2", credentials).describe_instances()) == "RequestExpired"
    assert refused(lambda: session_client(euca, "iam", credentials).list_users()) == "ExpiredToken"
    assert refused(lambda: session_client(euca, "sts", credentials).get_caller_identity()) == "ExpiredToken"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url)
    assert b"ExpiredToken" in e.value.read()


def _trust(principal: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}],
        }
    )


def _allow(*actions: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
        }
    )


def test_assume_role_credentials_work_against_s3_and_ec2_then_expire(
    euca: EucaServer, account: Credentials, later: Any
) -> None:
    iam = euca.client("iam", creds=account)
    account_id = iam.get_user()["User"]["Arn"].split(":")[4]
    role = iam.create_role(
        RoleName="worker", AssumeRolePolicyDocument=_trust(f"arn:aws:iam::{account_id}:root")
    )["Role"]
    iam.put_role_policy(RoleName="worker", PolicyName="work", PolicyDocument=_allow("s3:*", "ec2:Describe*"))
    admin_s3 = euca.client("s3", creds=account)
    bucket = "role-" + account.account
    admin_s3.create_bucket(Bucket=bucket)

    # A user of the account needs its own permission to assume the role (the trust names the account).
    plain = new_user(iam, account, "plain")
    assert (
        refused(
            lambda: euca.client("sts", creds=plain).assume_role(RoleArn=role["Arn"], RoleSessionName="s1")
        )
        == "AccessDenied"
    )
    caller = new_user(iam, account, "caller", _allow("sts:AssumeRole"))
    answer = euca.client("sts", creds=caller).assume_role(RoleArn=role["Arn"], RoleSessionName="job-1")
    assert answer["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{account_id}:assumed-role/worker/job-1"
    credentials = answer["Credentials"]

    s3 = session_client(euca, "s3", credentials)
    s3.put_object(Bucket=bucket, Key="made-by-role", Body=b"r")
    assert admin_s3.get_object(Bucket=bucket, Key="made-by-role")["Body"].read() == b"r"
    ec2 = session_client(euca, "ec2", credentials)
    ec2.describe_instances()
    assert refused(lambda: ec2.create_key_pair(KeyName="nope")) == "UnauthorizedOperation"
    assert refused(lambda: session_client(euca, "iam", credentials).list_users()) == "AccessDenied"
    who = session_client(euca, "sts", credentials).get_caller_identity()
    assert (
        who["Arn"] == answer["AssumedRoleUser"]["Arn"]
        and who["UserId"] == answer["AssumedRoleUser"]["AssumedRoleId"]
    )

    later(3601)
    assert refused(lambda: s3.list_objects_v2(Bucket=bucket)) == "ExpiredToken"
    assert refused(lambda: ec2.describe_instances()) == "RequestExpired"


def test_trust_policy_decides_who_may_assume(euca: EucaServer, account: Credentials) -> None:
    iam = euca.client("iam", creds=account)
    other = new_account(euca)
    other_id = euca.client("iam", creds=other).get_user()["User"]["Arn"].split(":")[4]
    role = iam.create_role(
        RoleName="for-other", AssumeRolePolicyDocument=_trust(f"arn:aws:iam::{other_id}:root")
    )["Role"]
    own_admin = euca.client("sts", creds=account)
    assert refused(lambda: own_admin.assume_role(RoleArn=role["Arn"], RoleSessionName="s1")) == "AccessDenied"
    # The other account's admin is trusted, and its own admin needs no policy to leave its account.
    credentials = euca.client("sts", creds=other).assume_role(RoleArn=role["Arn"], RoleSessionName="s1")[
        "Credentials"
    ]
    assert session_client(euca, "sts", credentials).get_caller_identity()["Account"] != other_id
    missing = role["Arn"].replace("for-other", "no-such-role")
    assert refused(lambda: own_admin.assume_role(RoleArn=missing, RoleSessionName="s1")) == "AccessDenied"
    trusted = euca.client("sts", creds=other)
    too_long = 7200  # beyond the role's MaxSessionDuration
    assert (
        refused(
            lambda: trusted.assume_role(RoleArn=role["Arn"], RoleSessionName="s1", DurationSeconds=too_long)
        )
        == "ValidationError"
    )
