"""The one-box default image registered through the real EC2 and S3 APIs of a running euca (CLC + Walrus):
bundled as the admin, uploaded to euca-default-images, registered as eki/eri/emi, public, recorded once.
A small stand-in boot image keeps this fast; tests/e2e/test_bootimage_qemu.py boots the real one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from euca import onebox
from euca.images import bootimage as bi
from euca.images import default_image as di
from helpers.server import EucaServer, start_euca

KVER = "6.1.0-0-test-amd64"


def stand_in_image(root: Path) -> bi.BootImage:
    directory = root / KVER
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vmlinuz").write_bytes(b"MZ kernel" + bytes(20000))
    (directory / "initrd.img").write_bytes(b"\x1f\x8b initrd" + bytes(5000))
    (directory / "root.img").write_bytes(bytes(64 * 1024))
    (directory / bi.RECIPE_FILE).write_text(bi.recipe_id())
    return bi.BootImage(KVER, directory)


def uploader(server: EucaServer) -> di.Uploader:
    creds = server.data_dir / "credentials" / "eucalyptus" / "admin"
    account_id = re.search(r"EC2_USER_ID=(\d+)", (creds / "eucarc").read_text())
    assert account_id
    return di.Uploader(
        ec2_url=server.url + di.EC2_PATH,
        s3_url=server.url + di.S3_PATH,
        access_key_id=server.admin.access_key,
        secret_key=server.admin.secret_key,
        region=server.region,
        account_id=account_id.group(1),
        user_cert_pem=(creds / "cert.pem").read_bytes(),
        user_key_pem=(creds / "pk.pem").read_bytes(),
        cloud_cert_pem=(creds / "cloud-cert.pem").read_bytes(),
    )


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[EucaServer]:
    """A CLC + Walrus of its own (the images it gets would show in the shared server's listings)."""
    yield from start_euca(tmp_path / "data", roles="clc,walrus")


def _images(server: EucaServer, creds: Any = None, **kw: Any) -> dict[str, dict[str, Any]]:
    found = server.client("ec2", creds=creds).describe_images(**kw)["Images"]
    return {i["Name"]: i for i in found}


async def test_registered_public_and_once(
    cloud: EucaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = stand_in_image(tmp_path / "cache")
    builds: list[int] = []

    def build(*args: object, **kwargs: object) -> bi.BootImage:
        builds.append(1)
        return image

    monkeypatch.setattr(bi, "build_boot_image", build)
    state = tmp_path / di.STATE_FILE
    up = uploader(cloud)
    made = await di.ensure_default_image(up, state, work_dir=tmp_path)
    assert made is not None and made.kernel_version == KVER
    assert made.machine_id.startswith("emi-") and made.kernel_id.startswith("eki-")
    assert made.ramdisk_id.startswith("eri-")

    names = di.image_names(KVER)
    images = _images(cloud, Owners=["self"])
    assert {names[t] for t in ("kernel", "ramdisk", "machine")} <= set(images)
    emi = images[names["machine"]]
    assert emi["ImageId"] == made.machine_id
    assert (emi["KernelId"], emi["RamdiskId"]) == (made.kernel_id, made.ramdisk_id)
    assert images[names["kernel"]]["ImageType"] == "kernel"
    assert images[names["ramdisk"]]["ImageType"] == "ramdisk"
    assert all(images[n]["Public"] for n in names.values())
    assert emi["ImageLocation"] == f"{di.DEFAULT_IMAGE_BUCKET}/{KVER}/root.img.manifest.xml"
    # Another account sees (and may launch) the public images.
    assert made.machine_id in {i["ImageId"] for i in _images(cloud, creds=cloud.other).values()}
    # The bundle is in the admin's bucket.
    keys = [o["Key"] for o in cloud.client("s3").list_objects_v2(Bucket=di.DEFAULT_IMAGE_BUCKET)["Contents"]]
    assert f"{KVER}/root.img.manifest.xml" in keys and f"{KVER}/vmlinuz.part.00" in keys

    # Recorded: the next start neither builds nor registers.
    assert await di.ensure_default_image(up, state, work_dir=tmp_path) == made
    assert builds == [1]
    # A run interrupted before the record was written finds its images by name instead of failing on
    # InvalidAMIName.Duplicate.
    state.unlink()
    assert await di.ensure_default_image(up, state, work_dir=tmp_path) == made
    assert len(_images(cloud, Owners=["self"])) == 3
    # The bundles were made in a temporary directory that is gone.
    assert not list(tmp_path.glob("euca-default-image-*"))


async def test_refused_registration_leaves_no_record(
    cloud: EucaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = stand_in_image(tmp_path / "cache")
    monkeypatch.setattr(bi, "build_boot_image", lambda *a, **k: image)
    up = uploader(cloud)
    wrong = di.Uploader(**{**up.__dict__, "secret_key": "not-the-secret"})
    state = tmp_path / di.STATE_FILE
    assert await di.ensure_default_image(wrong, state, work_dir=tmp_path) is None
    assert not state.exists()


async def test_first_start_registers_it(
    cloud: EucaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-box start hook (what `euca --role all` hands the supervisor) on a running CLC + Walrus, with
    apt unavailable and a cached (stand-in) image. The supervisor running its start hooks is in
    tests/unit/test_supervisor_signals.py."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    stand_in_image(tmp_path / "xdg" / "euca" / "bootimage")

    def no_apt(meta: str = bi.KERNEL_META_PACKAGE) -> str:
        raise bi.BootImageUnavailable("apt-cache not found")

    monkeypatch.setattr(bi, "resolve_kernel_package", no_apt)
    assert onebox.start_hooks(["clc", "walrus"]) == [onebox.register_default_image]
    await onebox.register_default_image(cloud.ctx)
    record = di.DefaultImage(**json.loads((cloud.data_dir / di.STATE_FILE).read_text()))
    images = _images(cloud, Owners=["self"])
    assert images[di.image_names(KVER)["machine"]]["ImageId"] == record.machine_id
