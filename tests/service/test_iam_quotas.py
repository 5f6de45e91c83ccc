"""Quotas as Eucalyptus had them: Limit policies the cloud administrator puts on an account's admin user (and
an account admin on its users). A quota of 2 instances refuses the third, and a launch past it launches none;
a bucket's object quota refuses the object past it; bucket and user counts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from euca.core.euare_client import EuareClient, EuareError
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.iam import new_account, new_user, refused
from helpers.instances import instances_of, register_tiny_image
from helpers.server import Credentials, EucaServer, start_euca


def limit(action: str, key: str, value: int) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Limit",
                    "Action": action,
                    "Resource": "*",
                    "Condition": {"NumericLessThanEquals": {key: str(value)}},
                }
            ],
        }
    )


def set_account_quota(euca: EucaServer, account: Credentials, name: str, document: str) -> None:
    """The cloud administrator's Limit policy on the account (its admin user), through Euare's DelegateAccount."""
    admin = EuareClient(euca.url, euca.admin.access_key, euca.admin.secret_key, euca.region)
    admin.call(
        "PutUserPolicy",
        {
            "UserName": "admin",
            "PolicyName": name,
            "PolicyDocument": document,
            "DelegateAccount": account.account,
        },
    )


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    server = start_euca(
        tmp_path_factory.mktemp("euca-quotas"), roles="clc,walrus", overrides={"clc.poll_interval": 0.2}
    )
    euca = next(server)
    yield euca
    server.close()


def test_instance_quota(cloud: EucaServer, tmp_path: Path) -> None:
    image_id = register_tiny_image(cloud, tmp_path)
    cloud.client("ec2").modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    account = new_account(cloud)
    ec2 = cloud.client("ec2", creds=account)
    with FakeCluster(
        cloud.ctx.ca, tmp_path / "zq", "zq", [FakeNode("zq-n1", cores=16, memory_mb=16384)], 77
    ) as fake:
        register_with(cloud, cloud.client("ec2"), fake)
        # The account admin cannot set its own quota.
        own = cloud.client("iam", creds=account)
        document = limit("ec2:RunInstances", "ec2:quota-vminstancenumber", 2)
        assert (
            refused(lambda: own.put_user_policy(UserName="admin", PolicyName="q", PolicyDocument=document))
            == "AccessDenied"
        )
        set_account_quota(cloud, account, "instances", document)
        # Past the limit in one launch: nothing is launched.
        assert (
            refused(
                lambda: ec2.run_instances(
                    ImageId=image_id, MinCount=3, MaxCount=3, Placement={"AvailabilityZone": "zq"}
                )
            )
            == "InstanceLimitExceeded"
        )
        assert ec2.describe_instances()["Reservations"] == []
        first = instances_of(ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2))
        assert len(first) == 2
        assert (
            refused(lambda: ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1))
            == "InstanceLimitExceeded"
        )
        # A terminated instance no longer counts.
        ec2.terminate_instances(InstanceIds=first[:1])
        instances_of(ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1))
        # The account's other users are held by the account's quota too, and by their own.
        iam = cloud.client("iam", creds=account)
        run_all = json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}
        )
        user = cloud.client("ec2", creds=new_user(iam, account, "launcher", run_all))
        assert (
            refused(lambda: user.run_instances(ImageId=image_id, MinCount=1, MaxCount=1))
            == "InstanceLimitExceeded"
        )
        alive = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        ec2.terminate_instances(InstanceIds=alive)


def test_concurrent_launches_cannot_both_pass_a_quota(cloud: EucaServer, tmp_path: Path) -> None:
    """Launches racing each other under a quota: the check runs in the transaction that records a launch,
    so exactly as many as the limit allows get through, however the requests interleave."""
    image_id = register_tiny_image(cloud, tmp_path)
    cloud.client("ec2").modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    account = new_account(cloud)
    set_account_quota(cloud, account, "instances", limit("ec2:RunInstances", "ec2:quota-vminstancenumber", 2))
    clients = [cloud.client("ec2", creds=account) for _ in range(6)]
    with FakeCluster(
        cloud.ctx.ca, tmp_path / "zr", "zr", [FakeNode("zr-n1", cores=16, memory_mb=16384)], 78
    ) as fake:
        register_with(cloud, cloud.client("ec2"), fake)
        start = threading.Barrier(len(clients))

        def launch(ec2: Any) -> str:
            start.wait()
            try:
                ec2.run_instances(
                    ImageId=image_id, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "zr"}
                )
            except ClientError as e:
                return str(e.response["Error"]["Code"])
            return "launched"

        with ThreadPoolExecutor(len(clients)) as pool:
            outcomes = sorted(pool.map(launch, clients))
        assert outcomes == ["InstanceLimitExceeded"] * 4 + ["launched"] * 2
        alive = [
            i["InstanceId"] for r in clients[0].describe_instances()["Reservations"] for i in r["Instances"]
        ]
        assert len(alive) == 2
        clients[0].terminate_instances(InstanceIds=alive)


def test_limit_documents_are_checked(cloud: EucaServer) -> None:
    account = new_account(cloud)
    bad = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Limit",
                    "Action": "ec2:RunInstances",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"a": "b"}},
                }
            ]
        }
    )
    with pytest.raises(EuareError) as e:
        set_account_quota(cloud, account, "bad", bad)
    assert e.value.code == "MalformedPolicyDocument"


def test_bucket_and_object_quotas(cloud: EucaServer) -> None:
    account = new_account(cloud)
    s3 = cloud.client("s3", creds=account)
    set_account_quota(cloud, account, "buckets", limit("s3:CreateBucket", "s3:quota-bucketnumber", 1))
    s3.create_bucket(Bucket=f"q1-{account.account}")
    assert refused(lambda: s3.create_bucket(Bucket=f"q2-{account.account}")) == "TooManyBuckets"
    set_account_quota(cloud, account, "objects", limit("s3:PutObject", "s3:quota-bucketobjectnumber", 2))
    bucket = f"q1-{account.account}"
    s3.put_object(Bucket=bucket, Key="a", Body=b"1")
    s3.put_object(Bucket=bucket, Key="b", Body=b"2")
    s3.put_object(Bucket=bucket, Key="a", Body=b"again")  # a new version of a key adds no object
    assert refused(lambda: s3.put_object(Bucket=bucket, Key="c", Body=b"3")) == "AccessDenied"
    s3.delete_object(Bucket=bucket, Key="b")
    s3.put_object(Bucket=bucket, Key="c", Body=b"3")
    set_account_quota(cloud, account, "bytes", limit("s3:PutObject", "s3:quota-buckettotalsize", 10))
    assert refused(lambda: s3.put_object(Bucket=bucket, Key="c", Body=b"x" * 64)) == "AccessDenied"


def test_user_number_quota(cloud: EucaServer) -> None:
    account = new_account(cloud)
    iam = cloud.client("iam", creds=account)
    set_account_quota(cloud, account, "users", limit("iam:CreateUser", "iam:quota-usernumber", 2))
    iam.create_user(UserName="one")  # admin and one: 2
    assert refused(lambda: iam.create_user(UserName="two")) == "LimitExceeded"
    # The account admin may read its quotas.
    assert iam.list_user_policies(UserName="admin")["PolicyNames"] == ["users"]


def test_volume_snapshot_and_address_quotas(cloud: EucaServer) -> None:
    account = new_account(cloud)
    ec2 = cloud.client("ec2", creds=account)
    set_account_quota(cloud, account, "addresses", limit("ec2:AllocateAddress", "ec2:quota-addressnumber", 1))
    ec2.allocate_address(Domain="standard")
    assert refused(lambda: ec2.allocate_address(Domain="standard")) == "AddressLimitExceeded"
    set_account_quota(cloud, account, "volumes", limit("ec2:CreateVolume", "ec2:quota-volumetotalsize", 5))
    zone = "no-zone-needed"  # refused before the zone is looked at
    assert refused(lambda: ec2.create_volume(Size=6, AvailabilityZone=zone)) == "VolumeLimitExceeded"
    set_account_quota(cloud, account, "snapshots", limit("ec2:CreateSnapshot", "ec2:quota-snapshotnumber", 0))
    assert refused(lambda: ec2.create_snapshot(VolumeId="vol-12345678")) == "SnapshotLimitExceeded"
