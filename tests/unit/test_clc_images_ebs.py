"""EBS-backed images' block device mappings (pure): the root, RunInstances' mappings over the image's, and
how DescribeImages renders them."""

from __future__ import annotations

import pytest

from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.images.ebs import check_device_name, merge, render_mappings, root_of
from euca.roles.clc.images.records import ImageBlockDevice, ImageRecord
from euca.roles.clc.instances.ebs import launch_volumes

ROOT = ImageBlockDevice("/dev/sda1", snapshot_id="snap-00000001", size_gib=1, volume_type="standard")
DATA = ImageBlockDevice("/dev/sdf", size_gib=2, delete_on_termination=False, volume_type="gp2")
EPHEMERAL = ImageBlockDevice("/dev/sdb", virtual_name="ephemeral0")


def image(*devices: ImageBlockDevice, root: str | None = "/dev/sda1") -> ImageRecord:
    return ImageRecord(
        "emi-00000001", "123456789012", "machine", "ebs", None, None, "x86_64", None, None, None,
        "ebs" if root else "instance-store", root, "hvm", "available", False, 0.0,
        block_devices=list(devices),
    )  # fmt: skip


def test_device_names() -> None:
    assert check_device_name("sdf") == "/dev/sdf" and check_device_name("/dev/xvda") == "/dev/xvda"
    for bad in ("", "/dev/", "/dev/sd f", "/dev/" + "x" * 40):
        with pytest.raises(Ec2Error):
            check_device_name(bad)


def test_the_root_must_be_a_snapshot_at_the_root_device() -> None:
    assert root_of([DATA, ROOT], "sda1") == ROOT
    for mappings in ([DATA], [ImageBlockDevice("/dev/sda1", size_gib=1)], [EPHEMERAL]):
        with pytest.raises(Ec2Error) as e:
            root_of(mappings, "/dev/sda1")
        assert e.value.code == "InvalidBlockDeviceMapping"


def test_launch_mappings_over_the_images() -> None:
    grown = ImageBlockDevice("sda1", size_gib=5, delete_on_termination=False)
    merged = merge([ROOT, DATA, EPHEMERAL], [grown, ImageBlockDevice("/dev/sdf", no_device=True)])
    assert [(d.device, d.snapshot_id, d.size_gib, d.delete_on_termination) for d in merged] == [
        ("/dev/sda1", "snap-00000001", 5, False),
        ("/dev/sdb", None, None, True),
    ]
    volumes, root = launch_volumes(image(ROOT, DATA, EPHEMERAL), [])
    assert root == "/dev/sda1"
    assert [(v.device, v.root, v.size_gib) for v in volumes] == [
        ("/dev/sda1", True, 1),
        ("/dev/sdf", False, 2),
    ]
    with pytest.raises(Ec2Error):
        launch_volumes(image(ROOT), [ImageBlockDevice("/dev/sda1", no_device=True)])
    # An instance-store image takes EBS volumes at launch too; its root is not one.
    volumes, root = launch_volumes(image(root=None), [DATA])
    assert root is None and [(v.device, v.root) for v in volumes] == [("/dev/sdf", False)]


def test_rendered_as_describe_images_shows_them() -> None:
    rendered = render_mappings(image(ROOT, EPHEMERAL, ImageBlockDevice("/dev/sdc", no_device=True)))
    assert rendered[0].ebs is not None and rendered[0].ebs.snapshot_id == "snap-00000001"
    assert rendered[1].virtual_name == "ephemeral0" and rendered[2].no_device == ""
