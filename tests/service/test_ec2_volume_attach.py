"""AttachVolume / DetachVolume through the EC2 API (boto3 and the aws CLI): a CLC whose zone has a real SC
(its files backend and its qemu-storage-daemon serving attached volumes over NBD on a unix socket) beside an
in-process stand-in for the zone's CC (helpers/fake_cluster.py), and a second zone with a CC and no SC.

The stand-in CC plays the node (it records the attachment and reports it in the instance's status); the
export it receives is the SC's real one, so the test also reads and writes the volume through it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from euca.roles.sc.nbd import NbdExporter
from helpers.ec2 import error_code
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.instances import register_tiny_image, unique, wait_for
from helpers.server import admin_cli, start_euca

pytestmark = pytest.mark.skipif(not NbdExporter.available(), reason="qemu-storage-daemon is not installed")

ZONE = unique("zatt")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # The SC's certificate names its cluster (cc.cluster): the zone registered below.
    server = start_euca(
        tmp_path_factory.mktemp("euca-attach"),
        roles="clc,walrus,sc",
        overrides={"clc.poll_interval": 0.2, "cc.cluster": ZONE, "sc.capacity_gb": 50},
    )
    yield next(server)
    server.close()


@pytest.fixture(scope="module")
def ec2(cloud: Any) -> Any:
    return cloud.client("ec2")


@pytest.fixture(scope="module")
def zones(
    cloud: Any, ec2: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeCluster, str]]:
    """(the stand-in CC of the zone with an SC, the name of a second zone without one)."""
    with_sc = FakeCluster(cloud.ctx.ca, tmp_path_factory.mktemp("cc-a"), ZONE, [FakeNode(f"{ZONE}-n1")], 56)
    other = unique("zoth")
    bare = FakeCluster(cloud.ctx.ca, tmp_path_factory.mktemp("cc-b"), other, [FakeNode(f"{other}-n1")], 57)
    with with_sc, bare:
        register_with(cloud, ec2, with_sc)
        register_with(cloud, ec2, bare)
        sc_port = cloud.ctx.endpoints["sc"].rsplit(":", 1)[1]
        admin_cli(cloud, "register-sc", ZONE, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")
        wait_for(
            "the SC polled up",
            lambda: any(
                "\tstorage\t" in line and ZONE in line and "\tup\t" in line
                for line in admin_cli(cloud, "describe-services").splitlines()
            ),
        )
        yield with_sc, other


@pytest.fixture(scope="module")
def image(cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    image_id = register_tiny_image(cloud, tmp_path_factory.mktemp("attach-image"))
    cloud.client("ec2").modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    return image_id


def run_one(ec2: Any, image: str, zone: str) -> str:
    made = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="m1.small", Placement={"AvailabilityZone": zone}
    )
    instance_id: str = made["Instances"][0]["InstanceId"]
    wait_for(f"{instance_id} running", lambda: instance_state(ec2, instance_id) == "running")
    return instance_id


def instance_state(ec2: Any, instance_id: str) -> str:
    (r,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    state: str = r["Instances"][0]["State"]["Name"]
    return state


def new_volume(ec2: Any, zone: str, size: int = 1) -> str:
    volume_id: str = ec2.create_volume(AvailabilityZone=zone, Size=size)["VolumeId"]
    wait_for(f"{volume_id} available", lambda: volume(ec2, volume_id)["State"] == "available")
    return volume_id


def volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    (v,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    return dict(v)


def ids_where(ec2: Any, name: str, value: str) -> set[str]:
    found = ec2.describe_volumes(Filters=[{"Name": name, "Values": [value]}])["Volumes"]
    return {v["VolumeId"] for v in found}


def test_attach_detach(cloud: Any, ec2: Any, zones: tuple[FakeCluster, str], image: str) -> None:
    cc, _ = zones
    instance_id = run_one(ec2, image, ZONE)
    volume_id = new_volume(ec2, ZONE)

    answer = ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    assert answer["State"] == "attaching"
    assert (answer["VolumeId"], answer["InstanceId"], answer["Device"]) == (
        volume_id,
        instance_id,
        "/dev/sdf",
    )
    v = volume(ec2, volume_id)
    assert v["State"] == "in-use"
    (a,) = v["Attachments"]
    assert (a["InstanceId"], a["Device"], a["State"]) == (instance_id, "/dev/sdf", "attached")
    assert a["DeleteOnTermination"] is False and "AttachTime" in a

    # The CC got the SC's real export: NBD on the SC's unix socket, the export named after the volume.
    (call,) = [m for m in cc.attach_calls if m.volume_id == volume_id]
    assert (call.instance_id, call.device, call.export.kind, call.export.name) == (
        instance_id,
        "/dev/sdf",
        "nbd",
        volume_id,
    )
    assert call.export.path is not None and Path(call.export.path).is_socket()
    if shutil.which("qemu-io"):
        url = f"nbd+unix:///{volume_id}?socket={call.export.path}"
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x42 0 4k", url], check=True, timeout=30)
        data = (Path(cloud.data_dir) / "sc" / "volumes" / f"{volume_id}.raw").read_bytes()[:4]
        assert data == b"\x42" * 4

    (r,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    (bdm,) = r["Instances"][0]["BlockDeviceMappings"]
    assert bdm["DeviceName"] == "/dev/sdf"
    assert (bdm["Ebs"]["VolumeId"], bdm["Ebs"]["Status"]) == (volume_id, "attached")
    for name, value in (
        ("block-device-mapping.volume-id", volume_id),
        ("block-device-mapping.device-name", "/dev/sdf"),
        ("block-device-mapping.status", "attached"),
    ):
        found = ec2.describe_instances(Filters=[{"Name": name, "Values": [value]}])["Reservations"]
        assert [i["InstanceId"] for r in found for i in r["Instances"]] == [instance_id], name

    assert volume_id in ids_where(ec2, "attachment.instance-id", instance_id)
    assert volume_id in ids_where(ec2, "attachment.device", "/dev/sdf")
    assert volume_id in ids_where(ec2, "attachment.status", "attached")
    assert volume_id in ids_where(ec2, "attachment.delete-on-termination", "false")
    assert volume_id not in ids_where(ec2, "attachment.status", "detaching")
    assert volume_id in ids_where(ec2, "status", "in-use")
    (status,) = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"]
    assert status["VolumeStatus"]["Status"] == "ok"  # in use is healthy

    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_volume(VolumeId=volume_id)
    assert error_code(e) == "VolumeInUse"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdg")
    assert error_code(e) == "VolumeInUse"
    other = new_volume(ec2, ZONE)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.attach_volume(VolumeId=other, InstanceId=instance_id, Device="sdf")  # the same point
    assert error_code(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.detach_volume(VolumeId=volume_id, InstanceId=run_one(ec2, image, ZONE))
    assert error_code(e) == "InvalidAttachment.NotFound"

    detached = ec2.detach_volume(VolumeId=volume_id)  # by the volume id alone
    assert detached["State"] in ("detaching", "detached")
    wait_for(f"{volume_id} available", lambda: volume(ec2, volume_id)["State"] == "available")
    assert volume(ec2, volume_id)["Attachments"] == []
    (r,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert r["Instances"][0].get("BlockDeviceMappings", []) == []
    assert not Path(call.export.path).exists() or not _serves(call.export.path, volume_id)
    ec2.delete_volume(VolumeId=volume_id)
    ec2.delete_volume(VolumeId=other)


def _serves(socket: str, volume_id: str) -> bool:
    if not shutil.which("qemu-io"):
        return False
    url = f"nbd+unix:///{volume_id}?socket={socket}"
    return (
        subprocess.run(["qemu-io", "-f", "raw", "-c", "read 0 512", url], capture_output=True).returncode == 0
    )


def test_attach_and_detach_errors(ec2: Any, zones: tuple[FakeCluster, str], image: str) -> None:
    _, other_zone = zones
    instance_id = run_one(ec2, image, ZONE)
    elsewhere = run_one(ec2, image, other_zone)
    volume_id = new_volume(ec2, ZONE)

    def code(**kwargs: Any) -> str:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.attach_volume(**{"Device": "/dev/sdh", **kwargs})
        return error_code(e)

    assert code(VolumeId="vol-00000000", InstanceId=instance_id) == "InvalidVolume.NotFound"
    assert code(VolumeId="vol-x", InstanceId=instance_id) == "InvalidVolumeID.Malformed"
    assert code(VolumeId=volume_id, InstanceId="i-00000000") == "InvalidInstanceID.NotFound"
    assert code(VolumeId=volume_id, InstanceId=elsewhere) == "InvalidVolume.ZoneMismatch"
    for bad in ("/dev/sda1", "/dev/xvda", "/dev/hdz", "sdf9x", "/dev/sdf/../x"):
        assert code(VolumeId=volume_id, InstanceId=instance_id, Device=bad) == "InvalidParameterValue", bad

    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.detach_volume(VolumeId=volume_id)
    assert error_code(e) == "IncorrectState"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.detach_volume(VolumeId="vol-00000000")
    assert error_code(e) == "InvalidVolume.NotFound"

    ec2.terminate_instances(InstanceIds=[elsewhere])
    wait_for("terminated", lambda: instance_state(ec2, elsewhere) == "terminated")
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_for("terminated", lambda: instance_state(ec2, instance_id) == "terminated")
    assert code(VolumeId=volume_id, InstanceId=instance_id) == "IncorrectState"
    assert volume(ec2, volume_id)["State"] == "available"  # nothing was left of the refused attempts
    ec2.delete_volume(VolumeId=volume_id)


def test_terminate_detaches(ec2: Any, zones: tuple[FakeCluster, str], image: str) -> None:
    instance_id = run_one(ec2, image, ZONE)
    volume_id = new_volume(ec2, ZONE)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/xvdg")
    wait_for("attached", lambda: volume(ec2, volume_id)["Attachments"][0]["State"] == "attached")
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_for(f"{volume_id} available again", lambda: volume(ec2, volume_id)["State"] == "available")
    assert volume(ec2, volume_id)["Attachments"] == []
    ec2.delete_volume(VolumeId=volume_id)


def test_aws_cli(cloud: Any, ec2: Any, zones: tuple[FakeCluster, str], image: str) -> None:
    instance_id = run_one(ec2, image, ZONE)
    volume_id = new_volume(ec2, ZONE)
    out = json.loads(
        cloud.aws(
            "ec2",
            "attach-volume",
            "--volume-id",
            volume_id,
            "--instance-id",
            instance_id,
            "--device",
            "/dev/sdk",
        ).stdout
    )
    assert out["State"] == "attaching" and out["Device"] == "/dev/sdk"
    shown = json.loads(
        cloud.aws(
            "ec2", "describe-volumes", "--filters", f"Name=attachment.instance-id,Values={instance_id}"
        ).stdout
    )
    assert [v["VolumeId"] for v in shown["Volumes"]] == [volume_id]
    refused = cloud.aws("ec2", "delete-volume", "--volume-id", volume_id, check=False)
    assert refused.returncode != 0 and "VolumeInUse" in refused.stderr
    out = json.loads(cloud.aws("ec2", "detach-volume", "--volume-id", volume_id, "--force").stdout)
    assert out["VolumeId"] == volume_id
    wait_for(f"{volume_id} available", lambda: volume(ec2, volume_id)["State"] == "available")
    again = cloud.aws("ec2", "detach-volume", "--volume-id", volume_id, check=False)
    assert again.returncode != 0 and "IncorrectState" in again.stderr
    cloud.aws("ec2", "delete-volume", "--volume-id", volume_id)
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_delete_on_termination(ec2: Any, zones: tuple[FakeCluster, str], image: str) -> None:
    instance_id = run_one(ec2, image, ZONE)
    volume_id = new_volume(ec2, ZONE)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    ec2.modify_instance_attribute(
        InstanceId=instance_id,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}}],
    )
    assert volume(ec2, volume_id)["Attachments"][0]["DeleteOnTermination"] is True
    (mapping,) = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="blockDeviceMapping")[
        "BlockDeviceMappings"
    ]
    assert mapping["DeviceName"] == "/dev/sdf" and mapping["Ebs"]["VolumeId"] == volume_id
    assert mapping["Ebs"]["DeleteOnTermination"] is True
    assert volume_id in ids_where(ec2, "attachment.delete-on-termination", "true")
    ec2.terminate_instances(InstanceIds=[instance_id])

    def gone() -> bool:
        try:
            volume(ec2, volume_id)
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"] == "InvalidVolume.NotFound"
        return False

    wait_for(f"{volume_id} deleted with its instance", gone)


def test_an_instance_that_ends_by_itself_detaches_too(
    ec2: Any, zones: tuple[FakeCluster, str], image: str
) -> None:
    """The guest powered off (its node reports it terminated): its volumes come back, and one marked
    DeleteOnTermination goes."""
    cc, _ = zones
    instance_id = run_one(ec2, image, ZONE)
    kept, dropped = new_volume(ec2, ZONE), new_volume(ec2, ZONE)
    ec2.attach_volume(VolumeId=kept, InstanceId=instance_id, Device="/dev/sdf")
    ec2.attach_volume(VolumeId=dropped, InstanceId=instance_id, Device="/dev/sdg")
    ec2.modify_instance_attribute(
        InstanceId=instance_id,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdg", "Ebs": {"DeleteOnTermination": True}}],
    )
    with cc.lock:
        cc.instances[instance_id].state = "terminated"
        cc.instances[instance_id].volumes.clear()
    wait_for(f"{kept} available again", lambda: volume(ec2, kept)["State"] == "available")
    wait_for(
        f"{dropped} deleted",
        lambda: dropped not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]},
    )
    ec2.delete_volume(VolumeId=kept)
