"""Issue 10's EBS-boot proof with a real guest: an EBS-backed image registered from a snapshot of a root disk
boots, and a file written before StopInstances is there after StartInstances.

The cloud is a one-box (`euca --role all`: CLC, Walrus, SC, CC, NC; helpers.onebox_cloud) with its VM
network in libvirtd's namespace, so the guest reads its user data from the metadata service. In order:
1. A 1 GiB volume holds the default image's root file system (its ext2 root.img written into the SC's volume
   file, as `dd` onto an attached volume would), is snapshotted, and the snapshot is registered as an EBS
   image with the default image's kernel and ramdisk (their initramfs mounts /dev/vda: the root volume).
2. RunInstances of it: the guest boots from the volume restored from the snapshot (its console shows the
   boot marker and the root file system's marker file read from /dev/vda) and its user-data script writes a
   token into that file system.
3. StopInstances -> stopped (the guest powered off on ACPI's request); StartInstances -> running on a new
   domain: the same user data finds the token written before the stop on the root volume and prints it.
4. TerminateInstances: the root volume (DeleteOnTermination) goes.
One guest; polls wait with a long deadline that only stops a hang; nothing asserts how long things take.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from euca.images import bootimage as bi
from euca.images.guest_init import BOOT_MARKER
from helpers.onebox_cloud import (
    INSTANCE_TYPE,
    Cloud,
    GuestBridges,
    start_cloud_in_netns,
)
from helpers.polling import wait_until
from helpers.qemu_host import unusable_reason
from helpers.snapshots import volume_path

_REASON = unusable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

# This module's boot image lives apart from the shared cache (another checkout may build another recipe
# there at the same time); kept between runs.
IMAGE_CACHE = Path("/var/tmp/euca-e2e-ebs-cache")
PROOF = "ebs-proof"

# Run at every boot: the first writes the token into the root volume (mounted read-only at /mnt/root by the
# initramfs), a later one finds it there.
USER_DATA = f"""#!/bin/sh
if [ -f /mnt/root/{PROOF} ]; then
    echo "{PROOF} found: $(cat /mnt/root/{PROOF})"
else
    mount -o remount,rw /mnt/root && echo "$1TOKEN" > /mnt/root/{PROOF} && sync \\
        && mount -o remount,ro /mnt/root && echo "{PROOF} written: $(cat /mnt/root/{PROOF})"
fi
"""


@pytest.fixture(scope="module")
def cloud(guest_bridges: GuestBridges) -> Iterator[Cloud]:
    with start_cloud_in_netns(guest_bridges, IMAGE_CACHE, subnet_prefix="10.73") as c:
        yield c


def _wait_state(ec2: Any, instance_id: str, state: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        (r,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        i: dict[str, Any] = r["Instances"][0]
        if i["State"]["Name"] == "terminated" and state != "terminated":
            raise AssertionError(f"{instance_id} terminated: {i.get('StateReason')}")
        return i if i["State"]["Name"] == state else None

    found: dict[str, Any] = wait_until(f"{instance_id} {state}", probe)
    return found


def _wait_volume(ec2: Any, volume_id: str, state: str) -> None:
    wait_until(
        f"{volume_id} {state}",
        lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == state,
    )


def test_an_ebs_image_boots_and_keeps_its_root_across_stop_and_start(cloud: Cloud) -> None:
    ec2 = cloud.ec2()
    image = bi.find_boot_image(IMAGE_CACHE / "euca" / "bootimage")
    assert image is not None, "the one-box built its default image"
    root_img = image.directory / "root.img"

    # 1. A root disk in a volume, snapshotted, registered with the default image's kernel and ramdisk.
    volume_id = ec2.create_volume(AvailabilityZone=cloud.zone, Size=1)["VolumeId"]
    _wait_volume(ec2, volume_id, "available")
    with open(volume_path(cloud.data_dir, volume_id), "r+b") as disk:
        disk.write(root_img.read_bytes())
        disk.flush()
        os.fsync(disk.fileno())
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id, Description="the default image's root")[
        "SnapshotId"
    ]
    wait_until(
        f"{snapshot_id} completed",
        lambda: ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == "completed",
    )
    image_id = ec2.register_image(
        Name=f"ebs-root-{uuid.uuid4().hex[:6]}",
        RootDeviceName="/dev/sda1",
        KernelId=cloud.eki,
        RamdiskId=cloud.eri,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id, "DeleteOnTermination": True}}
        ],
    )["ImageId"]
    (registered,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert registered["RootDeviceType"] == "ebs"

    # 2. It boots from a volume restored from the snapshot; the user data writes a token into it.
    token = uuid.uuid4().hex
    run = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        InstanceType=INSTANCE_TYPE,
        UserData=USER_DATA.replace("$1TOKEN", token),
    )
    instance_id = run["Instances"][0]["InstanceId"]
    cloud.launched.add(instance_id)
    running = _wait_state(ec2, instance_id, "running")
    assert running["RootDeviceType"] == "ebs" and running["RootDeviceName"] == "/dev/sda1"
    root = next(d for d in running["BlockDeviceMappings"] if d["DeviceName"] == "/dev/sda1")["Ebs"]
    root_volume = root["VolumeId"]
    assert root_volume != volume_id
    console = cloud.wait_console(instance_id, f"{PROOF} written: {token}")
    assert f"{BOOT_MARKER} {instance_id}" in console
    assert "root marker:" in console  # the root file system's marker, read from /dev/vda: the volume

    # 3. Stopped (the guest powers off on ACPI's request), started again: the token is on the root volume.
    ec2.stop_instances(InstanceIds=[instance_id])
    stopped = _wait_state(ec2, instance_id, "stopped")
    assert stopped["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    assert ec2.describe_volumes(VolumeIds=[root_volume])["Volumes"][0]["State"] == "in-use"
    ec2.start_instances(InstanceIds=[instance_id])
    _wait_state(ec2, instance_id, "running")
    console = cloud.wait_console(instance_id, f"{PROOF} found: {token}")
    assert f"{PROOF} written" not in console  # a new domain's console: this boot found it

    # 4. Terminated: the root volume goes with it.
    ec2.terminate_instances(InstanceIds=[instance_id])
    _wait_state(ec2, instance_id, "terminated")

    def root_gone() -> bool:
        found = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [root_volume]}])["Volumes"]
        return not found or found[0]["State"] == "deleting"

    wait_until("the root volume deleted", root_gone)
    ec2.deregister_image(ImageId=image_id)
    ec2.delete_snapshot(SnapshotId=snapshot_id)
