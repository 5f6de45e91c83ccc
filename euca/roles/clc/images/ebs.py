"""EBS-backed images (issue 10): block device mappings as RegisterImage, RunInstances and DescribeImages take
and show them, and the rules on them.

An EBS image has no bundle: RegisterImage names a root device (`RootDeviceName`, /dev/sda1 by default) and a
block device mapping at that device with an `Ebs.SnapshotId`. Every mapping is settled here (device names,
sizes against the snapshot and the volume type's range, DeleteOnTermination true by default for the EBS
ones, as EC2 has it: instances/block_devices.py), so RunInstances only reads what was recorded.

How such an image boots (nc/domain.py): its root volume is the guest's first virtio disk, vda. With a
kernel (and ramdisk) the domain boots them with `root=/dev/vda`, as an instance-store image's kernel boots
its root overlay; without, the volume boots itself (hvm). The default image's initramfs runs from memory
and mounts /dev/vda whatever `root=` says, so an EBS image registered with the default image's eki/eri and
a snapshot of a root file system boots exactly as the default image does, with the volume as its root.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.images.records import ImageBlockDevice, ImageRecord, device_key

DEFAULT_ROOT_DEVICE = "/dev/sda1"
MAX_MAPPINGS = 32

# (tx, account id, the request's mappings) -> them checked and settled. Snapshots and volume types are
# resources above images (snapshots reach Walrus as images do), so the rule is handed in by the composition
# root: instances/block_devices.py.
SettleMappings = Callable[[Tx, str, Sequence[m.BlockDeviceMapping]], list[ImageBlockDevice]]


def bad_mapping(message: str) -> Ec2Error:
    return Ec2Error("InvalidBlockDeviceMapping", message)


def check_device_name(device: str | None) -> str:
    if not device:
        raise Ec2Error(
            "MissingParameter", "The request must contain the parameter BlockDeviceMapping.DeviceName"
        )
    name = device if device.startswith("/dev/") else f"/dev/{device}"
    key = device_key(name)
    if not key or len(name) > 32 or not key.replace("/", "").isalnum():
        raise bad_mapping(f"Invalid device name {device}")
    return name


def root_of(mappings: Sequence[ImageBlockDevice], root_device_name: str) -> ImageBlockDevice:
    """The root mapping of an EBS image: at the root device, from a snapshot."""
    root = next((d for d in mappings if device_key(d.device) == device_key(root_device_name)), None)
    if root is None or root.no_device or root.virtual_name is not None:
        raise bad_mapping(f"The root device {root_device_name} is not mapped to an EBS volume.")
    if root.snapshot_id is None:
        raise bad_mapping(f"The root device {root_device_name} needs a snapshot (Ebs.SnapshotId).")
    return root


def merge(image: Sequence[ImageBlockDevice], launch: Sequence[ImageBlockDevice]) -> list[ImageBlockDevice]:
    """The image's mappings with RunInstances' over them, device by device (NoDevice drops one; the root's
    snapshot stays the image's while its size and DeleteOnTermination may change)."""
    merged = {device_key(d.device): d for d in image}
    for d in launch:
        key = device_key(d.device)
        before = merged.get(key)
        if d.no_device:
            merged.pop(key, None)
        elif before is not None and before.snapshot_id is not None and d.snapshot_id is None and d.size_gib:
            if d.size_gib < (before.size_gib or 0):
                raise bad_mapping(
                    f"Volume of {d.size_gib}GiB at {d.device} is smaller than the image's mapping."
                )
            merged[key] = ImageBlockDevice(
                before.device,
                snapshot_id=before.snapshot_id,
                size_gib=d.size_gib,
                delete_on_termination=d.delete_on_termination,
                volume_type=d.volume_type,
            )
        else:
            merged[key] = d
    return [d for d in merged.values() if not d.no_device]


def render_mappings(image: ImageRecord) -> list[m.BlockDeviceMapping]:
    """DescribeImages' BlockDeviceMappings."""
    out: list[m.BlockDeviceMapping] = []
    for d in image.block_devices:
        if d.no_device:
            out.append(m.BlockDeviceMapping(device_name=d.device, no_device=""))
        elif d.virtual_name is not None:
            out.append(m.BlockDeviceMapping(device_name=d.device, virtual_name=d.virtual_name))
        else:
            out.append(
                m.BlockDeviceMapping(
                    device_name=d.device,
                    ebs=m.EbsBlockDevice(
                        snapshot_id=d.snapshot_id,
                        volume_size=d.size_gib,
                        delete_on_termination=d.delete_on_termination,
                        volume_type=d.volume_type,
                    ),
                )
            )
    return out
