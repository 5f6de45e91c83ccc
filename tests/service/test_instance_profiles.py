"""Instance profiles (issue 12): RunInstances with IamInstanceProfile (by name or ARN; unknown profiles and a
caller without iam:PassRole refused), shown by DescribeInstances; the metadata a CC receives for the
instance holds its role's temporary credentials, which work with boto3 against S3 and EC2 with the role's
policies, are refused once they expire (the identity clock is moved, no sleeping), and are replaced ahead
of their expiry, the new ones reaching the CC by the metadata path."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from euca.protocol import cluster as c
from euca.roles.cc import metadata
from euca.roles.clc.instances import profiles
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.iam import new_account, new_user, refused, session_client
from helpers.instances import instances_of, register_tiny_image, wait_for
from helpers.server import EucaServer, start_euca

ZONE = "zprof"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)
ROLE_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets", "ec2:DescribeInstances"], "Resource": "*"}
        ],
    }
)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    original = profiles.REFRESH_CHECK_SECONDS
    profiles.REFRESH_CHECK_SECONDS = 0.2
    server = start_euca(
        tmp_path_factory.mktemp("euca-profiles"), roles="clc,walrus", overrides={"clc.poll_interval": 0.2}
    )
    yield next(server)
    server.close()
    profiles.REFRESH_CHECK_SECONDS = original


@pytest.fixture(scope="module")
def setup(cloud: EucaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("profiles-image")
    image_id = register_tiny_image(cloud, tmp)
    cloud.client("ec2").modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    account = new_account(cloud)
    iam = cloud.client("iam", creds=account)
    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=TRUST)
    iam.put_role_policy(RoleName="reader", PolicyName="read", PolicyDocument=ROLE_POLICY)
    profile = iam.create_instance_profile(InstanceProfileName="web", Path="/app/")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="web", RoleName="reader")
    with FakeCluster(cloud.ctx.ca, tmp / "cc", ZONE, [FakeNode(f"{ZONE}-n1", cores=16)], 79) as fake:
        register_with(cloud, cloud.client("ec2"), fake)
        yield {"image": image_id, "account": account, "iam": iam, "profile": profile, "fake": fake}


def served(fake: FakeCluster, instance_id: str, path: str) -> metadata.Answer:
    """What the metadata service of a CC holding what `fake` was sent answers the instance for `path`."""
    catalog = metadata.Catalog()
    with fake.lock:
        catalog.put(list(fake.metadata.values()))
    record = catalog.record(metadata.MetadataRecord(instance_id, "10.99.0.5", "d0:0d:00:00:00:01", ZONE))
    return metadata.answer_get(record, "/latest/meta-data/" + path)


def held(fake: FakeCluster, instance_id: str) -> c.InstanceIam | None:
    with fake.lock:
        found = fake.metadata.get(instance_id)
    return found.iam if found is not None else None


def test_launch_refusals(cloud: EucaServer, setup: dict[str, Any]) -> None:
    ec2 = cloud.client("ec2", creds=setup["account"])
    run = {"ImageId": setup["image"], "MinCount": 1, "MaxCount": 1}
    assert refused(lambda: ec2.run_instances(**run, IamInstanceProfile={"Name": "nope"})) == (
        "InvalidParameterValue"
    )
    other_arn = setup["profile"]["Arn"].replace("/web", "/nope")
    assert refused(lambda: ec2.run_instances(**run, IamInstanceProfile={"Arn": other_arn})) == (
        "InvalidParameterValue"
    )
    # A user allowed to run instances but not to pass the profile's role.
    launcher = new_user(
        setup["iam"],
        setup["account"],
        "launcher",
        json.dumps({"Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}),
    )
    user_ec2 = cloud.client("ec2", creds=launcher)
    assert refused(lambda: user_ec2.run_instances(**run, IamInstanceProfile={"Name": "web"})) == (
        "UnauthorizedOperation"
    )
    assert ec2.describe_instances()["Reservations"] == []


def test_role_credentials_through_the_metadata_path(
    cloud: EucaServer, setup: dict[str, Any], tmp_path: Path
) -> None:
    fake, profile = setup["fake"], setup["profile"]
    ec2 = cloud.client("ec2", creds=setup["account"])
    launched = ec2.run_instances(
        ImageId=setup["image"], MinCount=1, MaxCount=1, IamInstanceProfile={"Arn": profile["Arn"]}
    )
    (instance_id,) = instances_of(launched)
    shown = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert shown["IamInstanceProfile"] == {"Arn": profile["Arn"], "Id": profile["InstanceProfileId"]}
    (association,) = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"]
    assert association["InstanceId"] == instance_id and association["State"] == "associated"
    assert association["IamInstanceProfile"] == shown["IamInstanceProfile"]
    assert association["AssociationId"].startswith("iip-assoc-")
    by_id = ec2.describe_iam_instance_profile_associations(AssociationIds=[association["AssociationId"]])
    assert by_id["IamInstanceProfileAssociations"] == [association]
    by_filter = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": ["i-00000000"]}]
    )
    assert by_filter["IamInstanceProfileAssociations"] == []
    assert (
        refused(lambda: ec2.describe_iam_instance_profile_associations(AssociationIds=["iip-assoc-0"]))
        == "InvalidAssociationID.NotFound"
    )

    first = wait_for("the CC holds the credentials", lambda: held(fake, instance_id) or None)
    assert first.access_key_id is not None and first.access_key_id.startswith("ASIA")
    info = json.loads(served(fake, instance_id, "iam/info").body)
    assert info["Code"] == "Success" and info["InstanceProfileArn"] == profile["Arn"]
    assert info["InstanceProfileId"] == profile["InstanceProfileId"]
    assert served(fake, instance_id, "iam/").body == b"info\nsecurity-credentials/"
    assert served(fake, instance_id, "iam/security-credentials/").body == b"reader"
    credentials = json.loads(served(fake, instance_id, "iam/security-credentials/reader").body)
    assert credentials["Type"] == "AWS-HMAC" and credentials["Code"] == "Success"
    assert credentials["AccessKeyId"] == first.access_key_id
    assert set(credentials) == {
        "Code",
        "LastUpdated",
        "Type",
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
    }

    # The role's policies: S3 buckets listed, instances described; nothing else.
    s3 = session_client(cloud, "s3", credentials)
    role_ec2 = session_client(cloud, "ec2", credentials)
    s3.list_buckets()
    assert [
        i["InstanceId"] for r in role_ec2.describe_instances()["Reservations"] for i in r["Instances"]
    ] == [instance_id]
    assert refused(lambda: s3.create_bucket(Bucket="by-the-role")) == "AccessDenied"
    assert (
        refused(lambda: role_ec2.run_instances(ImageId=setup["image"], MinCount=1, MaxCount=1))
        == "UnauthorizedOperation"
    )

    # Past their expiry they are refused; the CLC has replaced them by then, and the new ones reach the CC.
    identity = cloud.ctx.identity
    original = identity.clock
    try:
        identity.clock = lambda: time.time() + profiles.CREDENTIALS_SECONDS + 60
        assert refused(lambda: s3.list_buckets()) == "ExpiredToken"
        assert refused(lambda: role_ec2.describe_instances()) == "RequestExpired"
        second = wait_for(
            "new credentials at the CC",
            lambda: (
                (found := held(fake, instance_id)) is not None
                and found.access_key_id != first.access_key_id
                and found
            ),
        )
        renewed = json.loads(served(fake, instance_id, "iam/security-credentials/reader").body)
        assert renewed["AccessKeyId"] == second.access_key_id
        session_client(cloud, "s3", renewed).list_buckets()
    finally:
        identity.clock = original
    ec2.terminate_instances(InstanceIds=[instance_id])
