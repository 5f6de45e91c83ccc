"""DescribeInstanceAttribute / ModifyInstanceAttribute and termination protection (issue 10), with boto3 and
the aws CLI, against a CLC whose zone is an in-process stand-in CC (helpers/fake_cluster.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from helpers.ec2 import error_code
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.instances import register_tiny_image, unique, wait_for
from helpers.server import start_euca


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = start_euca(
        tmp_path_factory.mktemp("euca-attributes"), roles="clc,walrus", overrides={"clc.poll_interval": 0.2}
    )
    yield next(server)
    server.close()


@pytest.fixture(scope="module")
def zone(cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = unique("zattr")
    fake = FakeCluster(
        cloud.ctx.ca, tmp_path_factory.mktemp("cc"), name, [FakeNode(f"{name}-n1", cores=8)], 58
    )
    with fake:
        register_with(cloud, cloud.client("ec2"), fake)
        yield name


@pytest.fixture(scope="module")
def image(cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return register_tiny_image(cloud, tmp_path_factory.mktemp("attr-image"))


def run_one(ec2: Any, image: str, zone: str, **extra: Any) -> str:
    made = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="m1.small",
        Placement={"AvailabilityZone": zone},
        **extra,
    )
    instance_id: str = made["Instances"][0]["InstanceId"]
    wait_for(f"{instance_id} running", lambda: state(ec2, instance_id) == "running")
    return instance_id


def state(ec2: Any, instance_id: str) -> str:
    (r,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(r["Instances"][0]["State"]["Name"])


def attribute(ec2: Any, instance_id: str, name: str) -> dict[str, Any]:
    answer = dict(ec2.describe_instance_attribute(InstanceId=instance_id, Attribute=name))
    answer.pop("ResponseMetadata", None)
    assert answer.pop("InstanceId") == instance_id
    return answer


def refused(fn: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(**kwargs)
    return error_code(e)


def test_describe_every_attribute(cloud: Any, zone: str, image: str, tmp_path: Path) -> None:
    ec2 = cloud.client("ec2")
    instance_id = run_one(ec2, image, zone, UserData="hello, guest", DisableApiTermination=True)
    assert attribute(ec2, instance_id, "instanceType") == {"InstanceType": {"Value": "m1.small"}}
    assert attribute(ec2, instance_id, "userData") == {
        "UserData": {"Value": base64.b64encode(b"hello, guest").decode()}
    }
    assert attribute(ec2, instance_id, "disableApiTermination") == {"DisableApiTermination": {"Value": True}}
    assert attribute(ec2, instance_id, "instanceInitiatedShutdownBehavior") == {
        "InstanceInitiatedShutdownBehavior": {"Value": "terminate"}
    }
    assert attribute(ec2, instance_id, "rootDeviceName") == {"RootDeviceName": {"Value": "/dev/sda1"}}
    assert attribute(ec2, instance_id, "blockDeviceMapping") == {"BlockDeviceMappings": []}
    groups = attribute(ec2, instance_id, "groupSet")["Groups"]
    assert [g["GroupName"] for g in groups] == ["default"] and groups[0]["GroupId"].startswith("sg-")
    assert attribute(ec2, instance_id, "kernel") == {"KernelId": {}}
    assert attribute(ec2, instance_id, "ramdisk") == {"RamdiskId": {}}
    assert attribute(ec2, instance_id, "productCodes") == {"ProductCodes": []}

    assert refused(ec2.describe_instance_attribute, InstanceId="i-00000000", Attribute="kernel") == (
        "InvalidInstanceID.NotFound"
    )
    assert refused(ec2.describe_instance_attribute, InstanceId="i-bad", Attribute="kernel") == (
        "InvalidInstanceID.Malformed"
    )
    assert refused(ec2.describe_instance_attribute, InstanceId=instance_id, Attribute="colour") == (
        "InvalidParameterValue"
    )
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": False})
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_termination_protection(cloud: Any, zone: str, image: str) -> None:
    ec2 = cloud.client("ec2")
    protected = run_one(ec2, image, zone, DisableApiTermination=True)
    other = run_one(ec2, image, zone)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.terminate_instances(InstanceIds=[other, protected])
    assert error_code(e) == "OperationNotPermitted"
    assert e.value.response["Error"]["Message"] == (
        f"The instance '{protected}' may not be terminated. "
        "Modify its 'disableApiTermination' instance attribute and try again."
    )
    assert state(ec2, protected) == "running" and state(ec2, other) == "running"  # nothing was terminated
    # The Attribute/Value form, as older clients send it.
    ec2.modify_instance_attribute(InstanceId=protected, Attribute="disableApiTermination", Value="false")
    assert attribute(ec2, protected, "disableApiTermination") == {"DisableApiTermination": {"Value": False}}
    ec2.modify_instance_attribute(InstanceId=other, DisableApiTermination={"Value": True})
    assert refused(ec2.terminate_instances, InstanceIds=[other]) == "OperationNotPermitted"
    ec2.modify_instance_attribute(InstanceId=other, DisableApiTermination={"Value": False})
    ec2.terminate_instances(InstanceIds=[protected, other])
    wait_for("both terminated", lambda: {state(ec2, protected), state(ec2, other)} == {"terminated"})


def test_what_may_change_while_running(cloud: Any, zone: str, image: str) -> None:
    ec2 = cloud.client("ec2")
    instance_id = run_one(ec2, image, zone)
    modify = ec2.modify_instance_attribute
    assert (
        refused(modify, InstanceId=instance_id, InstanceType={"Value": "m1.large"})
        == "IncorrectInstanceState"
    )
    assert refused(modify, InstanceId=instance_id, Attribute="instanceType", Value="m1.large") == (
        "IncorrectInstanceState"
    )
    assert refused(modify, InstanceId=instance_id, UserData={"Value": b"new"}) == "IncorrectInstanceState"
    assert attribute(ec2, instance_id, "instanceType") == {"InstanceType": {"Value": "m1.small"}}
    modify(InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": "terminate"})
    assert refused(modify, InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": "stop"}) == (
        "UnsupportedOperation"
    )
    assert refused(
        modify, InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": "explode"}
    ) == ("InvalidParameterValue")
    assert refused(modify, InstanceId=instance_id, Groups=["sg-00000000"]) == "UnsupportedOperation"
    assert refused(modify, InstanceId=instance_id) == "MissingParameter"
    assert refused(modify, InstanceId="i-00000000", DisableApiTermination={"Value": True}) == (
        "InvalidInstanceID.NotFound"
    )
    assert refused(
        modify,
        InstanceId=instance_id,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdz", "Ebs": {"DeleteOnTermination": True}}],
    ) == ("InvalidInstanceAttributeValue")
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_aws_cli(cloud: Any, zone: str, image: str) -> None:
    ec2 = cloud.client("ec2")
    instance_id = run_one(ec2, image, zone)
    cloud.aws("ec2", "modify-instance-attribute", "--instance-id", instance_id, "--disable-api-termination")
    shown = json.loads(
        cloud.aws(
            "ec2",
            "describe-instance-attribute",
            "--instance-id",
            instance_id,
            "--attribute",
            "disableApiTermination",
        ).stdout
    )
    assert shown == {"InstanceId": instance_id, "DisableApiTermination": {"Value": True}}
    no = cloud.aws("ec2", "terminate-instances", "--instance-ids", instance_id, check=False)
    assert no.returncode != 0 and "OperationNotPermitted" in no.stderr
    cloud.aws(
        "ec2", "modify-instance-attribute", "--instance-id", instance_id, "--no-disable-api-termination"
    )
    typed = cloud.aws(
        "ec2",
        "modify-instance-attribute",
        "--instance-id",
        instance_id,
        "--instance-type",
        "m1.large",
        check=False,
    )
    assert typed.returncode != 0 and "IncorrectInstanceState" in typed.stderr
    cloud.aws("ec2", "terminate-instances", "--instance-ids", instance_id)
