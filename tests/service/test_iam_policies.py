"""Identity policies enforced on EC2, S3 and IAM (issue 12's proof): only what a policy allows, Deny beats
Allow, conditions on the source address, the account's admin unrestricted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from helpers.iam import new_account, new_user, refused
from helpers.server import Credentials, EucaServer


def allow(*actions: str, resource: str = "*", effect: str = "Allow", **condition: Any) -> str:
    statement: dict[str, Any] = {"Effect": effect, "Action": list(actions), "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture(scope="module")
def account(euca: EucaServer) -> Credentials:
    return new_account(euca)


@pytest.fixture(scope="module")
def iam(euca: EucaServer, account: Credentials) -> Any:
    return euca.client("iam", creds=account)


def test_describe_only_user_is_refused_run_instances(
    euca: EucaServer, account: Credentials, iam: Any
) -> None:
    ec2 = euca.client("ec2", creds=new_user(iam, account, "describer", allow("ec2:Describe*")))
    ec2.describe_instances()
    ec2.describe_availability_zones()
    assert refused(lambda: ec2.run_instances(ImageId="emi-00000000", MinCount=1, MaxCount=1)) == (
        "UnauthorizedOperation"
    )
    assert refused(lambda: ec2.create_key_pair(KeyName="k")) == "UnauthorizedOperation"
    # AWS checks permission before DryRun: an allowed dry run answers DryRunOperation, a refused one not.
    assert refused(lambda: ec2.describe_instances(DryRun=True)) == "DryRunOperation"
    assert refused(lambda: ec2.create_key_pair(KeyName="k", DryRun=True)) == "UnauthorizedOperation"


def test_a_user_without_policies_may_do_nothing(euca: EucaServer, account: Credentials, iam: Any) -> None:
    creds = new_user(iam, account, "nobody")
    assert refused(lambda: euca.client("ec2", creds=creds).describe_instances()) == "UnauthorizedOperation"
    assert refused(lambda: euca.client("s3", creds=creds).list_buckets()) == "AccessDenied"
    assert refused(lambda: euca.client("iam", creds=creds).list_users()) == "AccessDenied"
    # Who am I needs no permission.
    arn = euca.client("sts", creds=creds).get_caller_identity()["Arn"]
    assert arn.endswith(":user/nobody")


def test_read_only_s3_user_is_refused_put(euca: EucaServer, account: Credentials, iam: Any) -> None:
    admin_s3 = euca.client("s3", creds=account)
    bucket = "ro-" + account.account
    admin_s3.create_bucket(Bucket=bucket)
    admin_s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    reader = euca.client(
        "s3",
        creds=new_user(iam, account, "reader", allow("s3:GetObject", "s3:ListBucket", "s3:ListAllMyBuckets")),
    )
    assert reader.get_object(Bucket=bucket, Key="k")["Body"].read() == b"data"
    assert [o["Key"] for o in reader.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    assert refused(lambda: reader.put_object(Bucket=bucket, Key="k2", Body=b"x")) == "AccessDenied"
    assert refused(lambda: reader.delete_object(Bucket=bucket, Key="k")) == "AccessDenied"


def test_deny_beats_allow(euca: EucaServer, account: Credentials, iam: Any) -> None:
    admin_s3 = euca.client("s3", creds=account)
    bucket = "deny-" + account.account
    admin_s3.create_bucket(Bucket=bucket)
    creds = new_user(
        iam,
        account,
        "denied",
        allow("s3:*"),
        allow("s3:PutObject", resource=f"arn:aws:s3:::{bucket}/secret/*", effect="Deny"),
    )
    s3 = euca.client("s3", creds=creds)
    s3.put_object(Bucket=bucket, Key="open/x", Body=b"1")
    assert refused(lambda: s3.put_object(Bucket=bucket, Key="secret/x", Body=b"1")) == "AccessDenied"
    # The same through a group's managed policy.
    arn = iam.create_policy(PolicyName="no-ec2", PolicyDocument=allow("ec2:*", effect="Deny"))["Policy"][
        "Arn"
    ]
    iam.create_group(GroupName="restricted")
    iam.attach_group_policy(GroupName="restricted", PolicyArn=arn)
    iam.put_user_policy(UserName="denied", PolicyName="ec2", PolicyDocument=allow("ec2:*"))
    ec2 = euca.client("ec2", creds=creds)
    ec2.describe_instances()
    iam.add_user_to_group(GroupName="restricted", UserName="denied")
    assert (
        refused(lambda: ec2.describe_instances()) == "UnauthorizedOperation"
    )  # at once, no cache to wait for
    iam.remove_user_from_group(GroupName="restricted", UserName="denied")
    ec2.describe_instances()


def test_source_ip_condition(euca: EucaServer, account: Credentials, iam: Any) -> None:
    here = new_user(iam, account, "local", allow("ec2:Describe*", IpAddress={"aws:SourceIp": "127.0.0.0/8"}))
    elsewhere = new_user(
        iam, account, "remote", allow("ec2:Describe*", IpAddress={"aws:SourceIp": "192.0.2.0/24"})
    )
    euca.client("ec2", creds=here).describe_instances()
    assert (
        refused(lambda: euca.client("ec2", creds=elsewhere).describe_instances()) == "UnauthorizedOperation"
    )
    not_here = new_user(
        iam,
        account,
        "notlocal",
        allow("ec2:*"),
        allow("ec2:*", effect="Deny", NotIpAddress={"aws:SourceIp": "10.0.0.0/8"}),
    )
    assert refused(lambda: euca.client("ec2", creds=not_here).describe_instances()) == "UnauthorizedOperation"


def test_iam_actions_by_policy_and_username_variable(
    euca: EucaServer, account: Credentials, iam: Any
) -> None:
    own_keys = allow(
        "iam:ListAccessKeys",
        "iam:CreateAccessKey",
        "iam:GetUser",
        resource="arn:aws:iam::*:user/${aws:username}",
    )
    user = euca.client("iam", creds=new_user(iam, account, "selfserve", own_keys))
    assert user.get_user()["User"]["UserName"] == "selfserve"
    assert len(user.list_access_keys()["AccessKeyMetadata"]) == 1
    assert refused(lambda: user.list_access_keys(UserName="reader")) == "AccessDenied"
    assert refused(lambda: user.create_user(UserName="x")) == "AccessDenied"


def test_the_account_admin_needs_no_policy(euca: EucaServer, account: Credentials) -> None:
    euca.client("ec2", creds=account).describe_instances()
    euca.client("iam", creds=account).list_users()
    euca.client("s3", creds=account).list_buckets()


def test_copies_and_form_uploads_are_judged_too(euca: EucaServer, account: Credentials, iam: Any) -> None:
    import httpx

    admin_s3 = euca.client("s3", creds=account)
    secret, public = "src-" + account.account, "dst-" + account.account
    admin_s3.create_bucket(Bucket=secret)
    admin_s3.create_bucket(Bucket=public)
    admin_s3.put_object(Bucket=secret, Key="k", Body=b"hidden")
    writer = euca.client(
        "s3",
        creds=new_user(iam, account, "copier", allow("s3:PutObject", resource=f"arn:aws:s3:::{public}/*")),
    )
    writer.put_object(Bucket=public, Key="own", Body=b"1")
    # Writing the destination is not reading the source.
    copy = {"Bucket": secret, "Key": "k"}
    assert refused(lambda: writer.copy_object(Bucket=public, Key="stolen", CopySource=copy)) == "AccessDenied"
    # A browser form signed by a user is that user's PutObject.
    form = writer.generate_presigned_post(public, "posted")
    assert httpx.post(form["url"], data=form["fields"], files={"file": b"ok"}).status_code == 204
    elsewhere = writer.generate_presigned_post(secret, "posted")
    refused_form = httpx.post(elsewhere["url"], data=elsewhere["fields"], files={"file": b"no"})
    assert refused_form.status_code == 403 and b"AccessDenied" in refused_form.content


def test_resource_tag_condition_without_the_tag(euca: EucaServer, account: Credentials, iam: Any) -> None:
    only_red = allow("ec2:TerminateInstances", StringEquals={"ec2:ResourceTag/team": "red"})
    ec2 = euca.client("ec2", creds=new_user(iam, account, "red-team", only_red))
    assert (
        refused(lambda: ec2.terminate_instances(InstanceIds=["i-0123456789abcdef0"]))
        == "UnauthorizedOperation"
    )


def test_delete_objects_judges_each_key(euca: EucaServer, account: Credentials, iam: Any) -> None:
    admin_s3 = euca.client("s3", creds=account)
    bucket = "multi-" + account.account
    admin_s3.create_bucket(Bucket=bucket)
    for key in ("tmp/a", "keep/b", "other/c"):
        admin_s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3 = euca.client(
        "s3",
        creds=new_user(
            iam,
            account,
            "cleaner",
            allow("s3:DeleteObject", resource=f"arn:aws:s3:::{bucket}/*"),
            allow("s3:DeleteObject", resource=f"arn:aws:s3:::{bucket}/keep/*", effect="Deny"),
            allow("s3:ListBucket", resource=f"arn:aws:s3:::{bucket}"),
        ),
    )
    answer = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "tmp/a"}, {"Key": "keep/b"}, {"Key": "other/c"}]}
    )
    assert [d["Key"] for d in answer.get("Deleted", [])] == ["tmp/a", "other/c"]
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [("keep/b", "AccessDenied")]
    assert [o["Key"] for o in admin_s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep/b"]
