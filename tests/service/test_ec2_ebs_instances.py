"""EBS-backed images and instances through the EC2 API (boto3 and the aws CLI): RegisterImage with a root
device snapshot, RunInstances of it (a volume restored from the snapshot in the instance's zone, exported,
handed to the CC as the root), BlockDeviceMappings at RunInstances, StopInstances / StartInstances,
ModifyInstanceAttribute while stopped, TerminateInstances with DeleteOnTermination, and the error codes.
A real CLC, Walrus and SC in this process; the CC is a stand-in (helpers.fake_cluster)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from euca.roles.clc.usage import records as usage
from helpers.ec2 import error_code
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.instances import unique, wait_for
from helpers.server import EucaServer, admin_cli, start_euca
from helpers.snapshots import MIB, file_sha256, volume_path, wait_snapshot, write_random

ZONE = unique("zebs")
GIB = 1024**3


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    server = start_euca(
        tmp_path_factory.mktemp("euca-ebs"),
        roles="clc,walrus,sc",
        overrides={"clc.poll_interval": 0.2, "cc.cluster": ZONE, "sc.capacity_gb": 100},
    )
    yield next(server)
    server.close()


@pytest.fixture(scope="module")
def fake(cloud: EucaServer, tmp_path_factory: pytest.TempPathFactory, ec2: Any) -> Iterator[FakeCluster]:
    cc = FakeCluster(cloud.ctx.ca, tmp_path_factory.mktemp("cc-ebs"), ZONE, [FakeNode(f"{ZONE}-n1")], 57)
    with cc:
        register_with(cloud, ec2, cc)
        sc_port = cloud.ctx.endpoints["sc"].rsplit(":", 1)[1]
        admin_cli(cloud, "register-sc", ZONE, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")
        yield cc


def wait_volume(ec2: Any, volume_id: str, state: str = "available") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        (v,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        return v if v["State"] == state else None

    found: dict[str, Any] = wait_for(f"{volume_id} {state}", check, timeout=120)
    return found


def wait_state(ec2: Any, instance_id: str, state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        (r,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        i: dict[str, Any] = r["Instances"][0]
        return i if i["State"]["Name"] == state else None

    found: dict[str, Any] = wait_for(f"{instance_id} {state}", check, timeout=60)
    return found


@pytest.fixture(scope="module")
def root_snapshot(cloud: EucaServer, ec2: Any, fake: FakeCluster) -> tuple[str, str]:
    """(a snapshot of a 1 GiB "root disk" with 8 MiB of data, the SHA-256 of that disk)."""
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    wait_volume(ec2, volume_id)
    path = volume_path(cloud.data_dir, volume_id)
    write_random(path, 0, 8 * MIB)
    digest = file_sha256(path)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_snapshot(ec2, snapshot_id)
    return snapshot_id, digest


def register(ec2: Any, snapshot_id: str, name: str, **extra: Any) -> str:
    mappings = [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id, "DeleteOnTermination": True}}]
    image_id: str = ec2.register_image(
        Name=name,
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=mappings + extra.pop("more", []),
        **extra,
    )["ImageId"]
    return image_id


def test_register_describe_deregister(ec2: Any, root_snapshot: tuple[str, str]) -> None:
    snapshot_id, _ = root_snapshot
    image_id = register(
        ec2,
        snapshot_id,
        unique("ebs-image"),
        Description="root from a snapshot",
        more=[
            {
                "DeviceName": "/dev/sdf",
                "Ebs": {"VolumeSize": 2, "DeleteOnTermination": False, "VolumeType": "gp2"},
            },
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
        ],
    )
    assert image_id.startswith("emi-")
    (image,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert image["RootDeviceType"] == "ebs" and image["RootDeviceName"] == "/dev/sda1"
    assert image["ImageType"] == "machine" and image["State"] == "available" and "ImageLocation" not in image
    assert image["VirtualizationType"] == "hvm"
    by_device = {d["DeviceName"]: d for d in image["BlockDeviceMappings"]}
    assert by_device["/dev/sda1"]["Ebs"] == {
        "SnapshotId": snapshot_id,
        "VolumeSize": 1,
        "DeleteOnTermination": True,
        "VolumeType": "standard",
    }
    assert (
        by_device["/dev/sdf"]["Ebs"]["VolumeSize"] == 2
        and by_device["/dev/sdf"]["Ebs"]["DeleteOnTermination"] is False
    )
    assert by_device["/dev/sdb"]["VirtualName"] == "ephemeral0"
    found = ec2.describe_images(Filters=[{"Name": "root-device-type", "Values": ["ebs"]}])["Images"]
    assert image_id in {i["ImageId"] for i in found}
    found = ec2.describe_images(
        Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": [snapshot_id]}]
    )
    assert image_id in {i["ImageId"] for i in found["Images"]}
    attr = ec2.describe_image_attribute(ImageId=image_id, Attribute="blockDeviceMapping")
    assert {d["DeviceName"] for d in attr["BlockDeviceMappings"]} == {"/dev/sda1", "/dev/sdf", "/dev/sdb"}

    # The snapshot is in use while the image is registered; deregistering leaves it.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert error_code(e) == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=image_id)
    (snap,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert snap["State"] == "completed"


@pytest.mark.parametrize(
    ("mappings", "root", "code"),
    [
        (
            [{"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": "SNAP"}}],
            "/dev/sda1",
            "InvalidBlockDeviceMapping",
        ),
        ([{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 1}}], "/dev/sda1", "InvalidBlockDeviceMapping"),
        (
            [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-0000beef"}}],
            "/dev/sda1",
            "InvalidSnapshot.NotFound",
        ),
        (
            [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snapshot-1"}}],
            "/dev/sda1",
            "InvalidSnapshotID.Malformed",
        ),
        (
            [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "SNAP", "VolumeSize": 20000}}],
            "/dev/sda1",
            "InvalidParameterValue",
        ),
        (
            [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "SNAP", "VolumeType": "floppy"}}],
            "/dev/sda1",
            "InvalidParameterValue",
        ),
        (
            [
                {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "SNAP"}},
                {"DeviceName": "sda1", "Ebs": {"VolumeSize": 1}},
            ],
            "/dev/sda1",
            "InvalidBlockDeviceMapping",
        ),
        (
            [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "SNAP"}}],
            "/dev/xvda",
            "InvalidBlockDeviceMapping",
        ),
    ],
)
def test_register_refusals(
    ec2: Any, root_snapshot: tuple[str, str], mappings: list[dict[str, Any]], root: str, code: str
) -> None:
    snapshot_id, _ = root_snapshot
    given = json.loads(json.dumps(mappings).replace("SNAP", snapshot_id))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.register_image(Name=unique("bad-ebs"), RootDeviceName=root, BlockDeviceMappings=given)
    assert error_code(e) == code


def test_register_size_smaller_than_snapshot(ec2: Any, cloud: EucaServer, fake: FakeCluster) -> None:
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, Size=2)["VolumeId"]
    wait_volume(ec2, volume_id)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_snapshot(ec2, snapshot_id)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.register_image(
            Name=unique("small"),
            RootDeviceName="/dev/sda1",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 1}}
            ],
        )
    assert error_code(e) == "InvalidBlockDeviceMapping"


def _root_volume(instance: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in instance["BlockDeviceMappings"] if d["DeviceName"] == instance["RootDeviceName"])


def test_run_stop_start_terminate(
    cloud: EucaServer, ec2: Any, fake: FakeCluster, root_snapshot: tuple[str, str]
) -> None:
    snapshot_id, digest = root_snapshot
    image_id = register(ec2, snapshot_id, unique("ebs-run"))
    reservation = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        InstanceType="m1.small",
        Placement={"AvailabilityZone": ZONE},
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 2}},  # the root, grown
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": False}},
        ],
    )
    (launched,) = reservation["Instances"]
    instance_id = launched["InstanceId"]
    assert launched["RootDeviceType"] == "ebs" and launched["RootDeviceName"] == "/dev/sda1"
    running = wait_state(ec2, instance_id, "running")
    root = _root_volume(running)["Ebs"]
    assert root["Status"] == "attached" and root["DeleteOnTermination"] is True
    extra = next(d for d in running["BlockDeviceMappings"] if d["DeviceName"] == "/dev/sdf")["Ebs"]
    assert extra["DeleteOnTermination"] is False
    (volume,) = ec2.describe_volumes(VolumeIds=[root["VolumeId"]])["Volumes"]
    assert volume["State"] == "in-use" and volume["SnapshotId"] == snapshot_id and volume["Size"] == 2
    assert volume["AvailabilityZone"] == ZONE
    assert volume["Attachments"][0]["InstanceId"] == instance_id
    # The root holds the snapshot's bytes (its first GiB; the second reads as zeros).
    assert file_sha256(volume_path(cloud.data_dir, root["VolumeId"]), GIB) == digest
    (spec,) = [s for s in fake.specs if s.instance_id == instance_id]
    assert [(v.volume_id, v.device, v.root) for v in spec.volumes] == [
        (root["VolumeId"], "/dev/sda1", True),
        (extra["VolumeId"], "/dev/sdf", False),
    ]
    assert spec.volumes[0].export.kind in ("file", "nbd") and spec.machine.download_manifest == ""
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="rootDeviceName")
    assert attr["RootDeviceName"]["Value"] == "/dev/sda1"
    found = ec2.describe_instances(Filters=[{"Name": "root-device-type", "Values": ["ebs"]}])["Reservations"]
    assert instance_id in {i["InstanceId"] for r in found for i in r["Instances"]}

    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.detach_volume(VolumeId=root["VolumeId"])
    assert error_code(e) == "IncorrectState"  # the root of a running instance stays

    # Modifying the type is refused while it runs; stopping keeps its volumes.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "c1.medium"})
    assert error_code(e) == "IncorrectInstanceState"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.start_instances(InstanceIds=[instance_id, "i-0000dead"])
    assert error_code(e) == "InvalidInstanceID.NotFound"
    stopping = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"]
    assert stopping == [
        {
            "InstanceId": instance_id,
            "PreviousState": {"Code": 16, "Name": "running"},
            "CurrentState": {"Code": 64, "Name": "stopping"},
        }
    ]
    stopped = wait_state(ec2, instance_id, "stopped")
    assert stopped["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    assert stopped["StateTransitionReason"].startswith("User initiated (")
    assert "PrivateIpAddress" not in stopped or not stopped["PrivateIpAddress"]
    assert _root_volume(stopped)["Ebs"]["VolumeId"] == root["VolumeId"]
    (volume,) = ec2.describe_volumes(VolumeIds=[root["VolumeId"]])["Volumes"]
    assert volume["State"] == "in-use"
    again = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"]
    assert again[0]["CurrentState"]["Name"] == "stopped"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.stop_instances(InstanceIds=[instance_id], Hibernate=True)
    assert error_code(e) == "UnsupportedHibernationConfiguration"

    # While stopped: a volume may be attached (it joins the domain at the start).
    late = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    wait_volume(ec2, late)
    ec2.attach_volume(VolumeId=late, InstanceId=instance_id, Device="/dev/sdh")
    wait_volume(ec2, late, "in-use")
    # While stopped: the type and user data may change, and apply at the start.
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "c1.medium"})
    ec2.modify_instance_attribute(InstanceId=instance_id, UserData={"Value": b"#!/bin/sh\necho again\n"})
    starting = ec2.start_instances(InstanceIds=[instance_id])["StartingInstances"]
    assert (
        starting[0]["PreviousState"]["Name"] == "stopped" and starting[0]["CurrentState"]["Name"] == "pending"
    )
    running = wait_state(ec2, instance_id, "running")
    assert running["InstanceType"] == "c1.medium" and running["StateTransitionReason"] == ""
    assert running["LaunchTime"] >= launched["LaunchTime"]  # launched again (the start's time)
    assert _root_volume(running)["Ebs"]["VolumeId"] == root["VolumeId"]
    second = [s for s in fake.specs if s.instance_id == instance_id][-1]
    assert second.vm_type.name == "c1.medium" and second.user_data == b"#!/bin/sh\necho again\n"
    assert {v.volume_id for v in second.volumes} == {root["VolumeId"], extra["VolumeId"], late}
    assert [v.root for v in second.volumes].count(True) == 1
    assert len(fake.stop_calls) >= 1
    # The usage log follows it: it cost while running, not while stopped; the new type from the start on.
    log = cloud.ctx.store.read_sync(lambda tx: usage.events(tx, usage.INSTANCE, time.time() + 60))
    mine = [(e.event, e.detail) for e in log if e.resource_id == instance_id]
    states = [state for state, _ in mine]
    assert states[states.index("running") :] == ["running", "stopping", "stopped", "pending", "running"]
    assert mine[-1] == ("running", "c1.medium")

    # Terminate: the root (DeleteOnTermination) goes, the other stays, available.
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, instance_id, "terminated")
    wait_volume(ec2, extra["VolumeId"], "available")
    wait_volume(ec2, late, "available")

    def root_gone() -> bool:
        try:
            (v,) = ec2.describe_volumes(VolumeIds=[root["VolumeId"]])["Volumes"]
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"] == "InvalidVolume.NotFound"
        return bool(v["State"] == "deleting")

    wait_for("the root volume deleted", root_gone)


def test_stop_refusals(ec2: Any, fake: FakeCluster) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.stop_instances(InstanceIds=["i-0000beef"])
    assert error_code(e) == "InvalidInstanceID.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.stop_instances(InstanceIds=["bogus"])
    assert error_code(e) == "InvalidInstanceID.Malformed"


def test_aws_cli_register_stop_start(
    cloud: EucaServer, ec2: Any, fake: FakeCluster, root_snapshot: tuple[str, str]
) -> None:
    snapshot_id, _ = root_snapshot
    mapping = json.dumps([{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id}}])
    made = json.loads(
        cloud.aws(
            "ec2",
            "register-image",
            "--name",
            unique("cli-ebs"),
            "--root-device-name",
            "/dev/sda1",
            "--block-device-mappings",
            mapping,
        ).stdout
    )
    image_id = made["ImageId"]
    run = json.loads(
        cloud.aws(
            "ec2",
            "run-instances",
            "--image-id",
            image_id,
            "--instance-type",
            "m1.small",
            "--placement",
            f"AvailabilityZone={ZONE}",
        ).stdout
    )
    instance_id = run["Instances"][0]["InstanceId"]
    wait_state(ec2, instance_id, "running")
    stopped = json.loads(cloud.aws("ec2", "stop-instances", "--instance-ids", instance_id).stdout)
    assert stopped["StoppingInstances"][0]["CurrentState"]["Name"] == "stopping"
    wait_state(ec2, instance_id, "stopped")
    started = json.loads(cloud.aws("ec2", "start-instances", "--instance-ids", instance_id).stdout)
    assert started["StartingInstances"][0]["CurrentState"]["Name"] == "pending"
    wait_state(ec2, instance_id, "running")
    refused = cloud.aws("ec2", "delete-snapshot", "--snapshot-id", snapshot_id, check=False)
    assert refused.returncode != 0 and "InvalidSnapshot.InUse" in refused.stderr
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, instance_id, "terminated")


def test_create_image_from_an_ebs_instance(
    ec2: Any, fake: FakeCluster, root_snapshot: tuple[str, str]
) -> None:
    snapshot_id, _ = root_snapshot
    image_id = register(ec2, snapshot_id, unique("ebs-source"))
    (launched,) = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        Placement={"AvailabilityZone": ZONE},
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": True}}
        ],
    )["Instances"]
    instance_id = launched["InstanceId"]
    wait_state(ec2, instance_id, "running")
    name = unique("from-instance")
    made = ec2.create_image(InstanceId=instance_id, Name=name, Description="made", NoReboot=True)["ImageId"]

    def available() -> dict[str, Any] | None:
        (image,) = ec2.describe_images(ImageIds=[made])["Images"]
        assert image["State"] in ("pending", "available")
        return image if image["State"] == "available" else None

    image = wait_for(f"{made} available", available, timeout=120)
    assert image["RootDeviceType"] == "ebs" and image["Name"] == name and image["Description"] == "made"
    by_device = {d["DeviceName"]: d["Ebs"] for d in image["BlockDeviceMappings"]}
    assert set(by_device) == {"/dev/sda1", "/dev/sdg"}
    snaps = ec2.describe_snapshots(SnapshotIds=[by_device["/dev/sda1"]["SnapshotId"]])["Snapshots"]
    assert snaps[0]["State"] == "completed" and instance_id in snaps[0]["Description"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_image(InstanceId=instance_id, Name=name)
    assert error_code(e) == "InvalidAMIName.Duplicate"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_image(InstanceId=instance_id, Name="bad name {}")
    assert error_code(e) == "InvalidAMIName.Malformed"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_image(InstanceId="i-0000dead", Name=unique("none"))
    assert error_code(e) == "InvalidInstanceID.NotFound"
    # An instance of the new image boots from a volume of its root snapshot.
    (second,) = ec2.run_instances(ImageId=made, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": ZONE})[
        "Instances"
    ]
    running = wait_state(ec2, second["InstanceId"], "running")
    root = _root_volume(running)["Ebs"]["VolumeId"]
    (volume,) = ec2.describe_volumes(VolumeIds=[root])["Volumes"]
    assert volume["SnapshotId"] == by_device["/dev/sda1"]["SnapshotId"]
    ec2.terminate_instances(InstanceIds=[instance_id, second["InstanceId"]])
    wait_state(ec2, instance_id, "terminated")


def test_a_guest_that_powers_off_stops_unless_told_to_terminate(
    ec2: Any, fake: FakeCluster, root_snapshot: tuple[str, str]
) -> None:
    snapshot_id, _ = root_snapshot
    image_id = register(ec2, snapshot_id, unique("ebs-shutdown"))
    (one,) = ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": ZONE}
    )["Instances"]
    (two,) = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        Placement={"AvailabilityZone": ZONE},
        InstanceInitiatedShutdownBehavior="terminate",
    )["Instances"]
    first, second = one["InstanceId"], two["InstanceId"]
    for instance_id in (first, second):
        wait_state(ec2, instance_id, "running")
    attr = ec2.describe_instance_attribute(InstanceId=first, Attribute="instanceInitiatedShutdownBehavior")
    assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"  # EC2's default for an EBS root
    fake.power_off(first)
    fake.power_off(second)
    stopped = wait_state(ec2, first, "stopped")
    assert stopped["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"
    wait_state(ec2, second, "terminated")
    ec2.modify_instance_attribute(InstanceId=first, InstanceInitiatedShutdownBehavior={"Value": "terminate"})
    ec2.start_instances(InstanceIds=[first])
    wait_state(ec2, first, "running")
    ec2.stop_instances(InstanceIds=[first], Force=True)
    stopped = wait_state(ec2, first, "stopped")
    root = _root_volume(stopped)["Ebs"]["VolumeId"]
    # A stopped instance terminates at once (it is on no node); its root goes with it.
    ended = ec2.terminate_instances(InstanceIds=[first])["TerminatingInstances"]
    assert ended[0]["PreviousState"]["Name"] == "stopped" and ended[0]["CurrentState"]["Name"] == "terminated"

    def root_gone() -> bool:
        found = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [root]}])["Volumes"]
        return not found or found[0]["State"] == "deleting"

    wait_for("the stopped instance's root deleted", root_gone)
