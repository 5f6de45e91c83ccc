"""Block device mappings checked against snapshots and volume types (issue 10): RegisterImage's, RunInstances'
and CreateImage's. Here, above images, snapshots and volumes, since it reads all three; images/api.py gets it
handed in (clc/__init__.py)."""

from __future__ import annotations

from collections.abc import Sequence

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.images import records as images
from euca.roles.clc.images.ebs import MAX_MAPPINGS, bad_mapping, check_device_name
from euca.roles.clc.images.records import ImageBlockDevice, device_key
from euca.roles.clc.snapshots import records as snapshots
from euca.roles.clc.volumes import records as volumes


def settle_mappings(tx: Tx, account_id: str, given: Sequence[m.BlockDeviceMapping]) -> list[ImageBlockDevice]:
    """Check block device mappings (RegisterImage's, RunInstances' or CreateImage's) and settle each: a
    snapshot the account may restore, completed; a size within the type's range and no smaller than the
    snapshot; one mapping per device."""
    if len(given) > MAX_MAPPINGS:
        raise bad_mapping(f"At most {MAX_MAPPINGS} block device mappings may be given.")
    out: list[ImageBlockDevice] = []
    seen: set[str] = set()
    for mapping in given:
        device = check_device_name(mapping.device_name)
        if device_key(device) in seen:
            raise bad_mapping(f"The device {device} is mapped more than once.")
        seen.add(device_key(device))
        if mapping.no_device is not None:
            out.append(ImageBlockDevice(device, no_device=True))
            continue
        if mapping.virtual_name is not None and mapping.ebs is None:
            if not mapping.virtual_name.startswith("ephemeral"):
                raise bad_mapping(f"Invalid virtual name {mapping.virtual_name} for {device}")
            out.append(ImageBlockDevice(device, virtual_name=mapping.virtual_name))
            continue
        ebs = mapping.ebs
        if ebs is None:
            raise bad_mapping(f"The mapping of {device} needs Ebs, VirtualName or NoDevice.")
        volume_type = ebs.volume_type or volumes.DEFAULT_TYPE
        if volume_type not in volumes.SIZE_RANGES:
            raise Ec2Error(
                "InvalidParameterValue", f"Value ({volume_type}) for parameter volumeType is invalid."
            )
        size = ebs.volume_size
        if ebs.snapshot_id is not None:
            snapshot_id = snapshots.check_snapshot_id(ebs.snapshot_id)
            (snapshot,) = snapshots.visible(tx, account_id, [snapshot_id])
            if snapshot.state != "completed":
                raise Ec2Error(
                    "IncorrectState", f"The snapshot '{snapshot_id}' is '{snapshot.state}', not 'completed'."
                )
            if size is None:
                size = snapshot.volume_size
            elif size < snapshot.volume_size:
                raise bad_mapping(
                    f"Volume of {size}GiB at {device} is smaller than snapshot '{snapshot_id}' "
                    f"({snapshot.volume_size}GiB)."
                )
        elif size is None:
            raise bad_mapping(f"The EBS mapping of {device} needs a SnapshotId or a VolumeSize.")
        volumes.check_size(volume_type, size)
        out.append(
            ImageBlockDevice(
                device,
                snapshot_id=ebs.snapshot_id,
                size_gib=size,
                delete_on_termination=True
                if ebs.delete_on_termination is None
                else ebs.delete_on_termination,
                volume_type=volume_type,
            )
        )
    return out


def created_images_ended(tx: Tx) -> list[tuple[str, str]]:
    """CreateImage's images whose snapshots ended: (image id, `available` when every one completed, `failed`
    when one failed or is gone). A read (the poller asks each round and writes only what moved)."""
    moved: list[tuple[str, str]] = []
    for image in images.pending_ebs_images(tx):
        states = []
        for d in image.block_devices:
            if d.snapshot_id is not None:
                found = snapshots.get(tx, d.snapshot_id)
                states.append(found.state if found is not None else "deleted")
        if all(s == "completed" for s in states):
            new = "available"
        elif any(s in ("error", "deleted") for s in states):
            new = "failed"
        else:
            continue
        moved.append((image.image_id, new))
    return moved


def finish_created_images(tx: Tx, moved: Sequence[tuple[str, str]]) -> None:
    for image_id, state in moved:
        images.set_image_state(tx, image_id, state)
