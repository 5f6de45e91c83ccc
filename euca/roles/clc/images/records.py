"""The image tables (clc_images, clc_image_launch_permissions, clc_image_bundles) and the image rules: the
only module that reads or writes them.

An image is visible to its owner, to every account when public, and to the accounts it was shared with
(launch permissions). Only the owner changes or removes it.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from euca.core.store import Tx
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.tags import records as tags

ID_PREFIX = {"machine": "emi", "kernel": "eki", "ramdisk": "eri"}
ARCHITECTURES = ("i386", "x86_64", "arm64")
# Eucalyptus ids carry 8 hex digits, today's AWS 17; clients send both.
IMAGE_ID_RE = re.compile(r"^[a-z]{3}-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

_COLUMNS = (
    "image_id, account_id, image_type, name, description, location, architecture, kernel_id, ramdisk_id, "
    "platform, root_device_type, root_device_name, virtualization_type, state, public, created, block_devices"
)


class ImageBlockDevice(msgspec.Struct, frozen=True):
    """One block device mapping of an EBS image (RegisterImage's BlockDeviceMappings, as settled): an EBS
    volume made from `snapshot_id` (or empty) of `size_gib`, an ephemeral store (`virtual_name`), or a
    device suppressed (`no_device`)."""

    device: str
    snapshot_id: str | None = None
    size_gib: int | None = None
    delete_on_termination: bool = True
    volume_type: str | None = None
    virtual_name: str | None = None
    no_device: bool = False


_block_devices = msgspec.json.Decoder(list[ImageBlockDevice])


def device_key(device: str) -> str:
    """/dev/sda1 and sda1 name the same device."""
    return device.removeprefix("/dev/")


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    account_id: str
    image_type: str
    name: str
    description: str | None
    location: str | None
    architecture: str
    kernel_id: str | None
    ramdisk_id: str | None
    platform: str | None
    root_device_type: str
    root_device_name: str | None
    virtualization_type: str | None
    state: str
    public: bool
    created: float
    launch_accounts: frozenset[str] = frozenset()
    tags: dict[str, str] = field(default_factory=dict)
    block_devices: list[ImageBlockDevice] = field(default_factory=list)

    @property
    def root_device(self) -> ImageBlockDevice | None:
        """An EBS image's root mapping (the snapshot it boots from); None for instance-store images."""
        if self.root_device_type != "ebs" or self.root_device_name is None:
            return None
        root = device_key(self.root_device_name)
        return next((d for d in self.block_devices if device_key(d.device) == root), None)

    def visible_to(self, account_id: str) -> bool:
        return self.public or self.account_id == account_id or account_id in self.launch_accounts


def _record(r: sqlite3.Row, launch: Iterable[str] = (), tagged: dict[str, str] | None = None) -> ImageRecord:
    return ImageRecord(
        image_id=r["image_id"],
        account_id=r["account_id"],
        image_type=r["image_type"],
        name=r["name"],
        description=r["description"],
        location=r["location"],
        architecture=r["architecture"],
        kernel_id=r["kernel_id"],
        ramdisk_id=r["ramdisk_id"],
        platform=r["platform"],
        root_device_type=r["root_device_type"],
        root_device_name=r["root_device_name"],
        virtualization_type=r["virtualization_type"],
        state=r["state"],
        public=bool(r["public"]),
        created=r["created"],
        launch_accounts=frozenset(launch),
        tags=tagged or {},
        block_devices=_block_devices.decode(r["block_devices"]) if r["block_devices"] else [],
    )


# -- reading ---------------------------------------------------------------------------------------------


def load_visible_images(tx: Tx, account_id: str) -> list[ImageRecord]:
    """Every image the account can see, with its launch permissions and the account's tags on it."""
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM clc_images i WHERE i.account_id=? OR i.public=1 OR EXISTS("
        "SELECT 1 FROM clc_image_launch_permissions p WHERE p.image_id=i.image_id AND p.account_id=?)",
        (account_id, account_id),
    )
    launch: dict[str, list[str]] = {}
    for p in tx.all(
        "SELECT p.image_id, p.account_id FROM clc_image_launch_permissions p JOIN clc_images i "
        "ON i.image_id=p.image_id WHERE i.account_id=? OR i.public=1 OR p.account_id=?",
        (account_id, account_id),
    ):
        launch.setdefault(p["image_id"], []).append(p["account_id"])
    tagged = tags.tags_of(tx, account_id, (r["image_id"] for r in rows))
    return [_record(r, launch.get(r["image_id"], ()), tagged.get(r["image_id"])) for r in rows]


def load_image(tx: Tx, image_id: str) -> ImageRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM clc_images WHERE image_id=?", (image_id,))
    if row is None:
        return None
    launch = [
        p["account_id"]
        for p in tx.all("SELECT account_id FROM clc_image_launch_permissions WHERE image_id=?", (image_id,))
    ]
    return _record(row, launch)


def image_visible(tx: Tx, image_id: str, account_id: str) -> bool:
    return bool(
        tx.one(
            "SELECT 1 FROM clc_images i WHERE i.image_id=? AND (i.account_id=? OR i.public=1 OR EXISTS("
            "SELECT 1 FROM clc_image_launch_permissions p WHERE p.image_id=i.image_id AND p.account_id=?))",
            (image_id, account_id, account_id),
        )
    )


# Machine, kernel and ramdisk images are one taggable kind (tags record them all as "image").
TAG_KIND = tags.ResourceKind(("emi", "eki", "eri"), "image", "InvalidAMIID.NotFound", image_visible)


@dataclass(frozen=True)
class Bundle:
    """Where an image's bundle is and the manifest it was registered from (None: none was recorded)."""

    account_id: str
    location: str | None
    manifest: bytes | None
    access_key_id: str | None


def load_bundle(tx: Tx, image_id: str) -> Bundle | None:
    row = tx.one(
        "SELECT i.account_id, i.location, b.manifest, b.access_key_id FROM clc_images i "
        "LEFT JOIN clc_image_bundles b ON b.image_id = i.image_id WHERE i.image_id=?",
        (image_id,),
    )
    if row is None:
        return None
    manifest = row["manifest"]
    return Bundle(
        row["account_id"],
        row["location"],
        bytes(manifest) if manifest is not None else None,
        row["access_key_id"],
    )


# -- the rules -------------------------------------------------------------------------------------------


def check_image_id(image_id: str) -> None:
    if not IMAGE_ID_RE.match(image_id):
        raise Ec2Error("InvalidAMIID.Malformed", f'Invalid id: "{image_id}"')


def not_found(image_id: str) -> Ec2Error:
    return Ec2Error("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")


def visible_image(tx: Tx, image_id: str, account_id: str) -> ImageRecord:
    """The image, if the account can see it (else NotFound, as for an image that is not there)."""
    check_image_id(image_id)
    image = load_image(tx, image_id)
    if image is None or not image.visible_to(account_id):
        raise not_found(image_id)
    return image


def owned_image(tx: Tx, image_id: str, account_id: str) -> ImageRecord:
    image = visible_image(tx, image_id, account_id)
    if image.account_id != account_id:
        raise Ec2Error("AuthFailure", f"Not authorized for image:{image_id}")
    return image


def check_boot_image(tx: Tx, image_id: str | None, want: str, account_id: str) -> None:
    """A kernel or ramdisk an image names: one the account can see, of that type."""
    if image_id is None:
        return
    image = visible_image(tx, image_id, account_id)
    if image.image_type != want:
        raise Ec2Error("InvalidParameterValue", f"Image {image_id} is not a {want} image")


def check_architecture(architecture: str | None) -> None:
    if architecture is not None and architecture not in ARCHITECTURES:
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({architecture}) for parameter architecture is invalid."
        )


def check_name_free(tx: Tx, account_id: str, name: str) -> None:
    if tx.one("SELECT 1 FROM clc_images WHERE account_id=? AND name=?", (account_id, name)):
        raise Ec2Error("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI")


# -- writing ---------------------------------------------------------------------------------------------


def _new_image_id(tx: Tx, image_type: str) -> str:
    while True:
        image_id = f"{ID_PREFIX[image_type]}-{secrets.token_hex(4)}"
        if not tx.one("SELECT 1 FROM clc_images WHERE image_id=?", (image_id,)):
            return image_id


@dataclass(frozen=True)
class NewImage:
    """A bundle image about to be registered, as RegisterImage settled it."""

    account_id: str
    image_type: str
    name: str
    description: str | None
    location: str
    architecture: str
    kernel_id: str | None
    ramdisk_id: str | None
    root_device_name: str
    virtualization_type: str
    manifest: bytes | None
    access_key_id: str | None
    tags: list[tuple[str, str]]


def insert_image(tx: Tx, new: NewImage) -> str:
    """Record the image (available, private, instance-store), its manifest and its tags, once its kernel and
    ramdisk are still there and its name still free; the new image id."""
    check_boot_image(tx, new.kernel_id, "kernel", new.account_id)
    check_boot_image(tx, new.ramdisk_id, "ramdisk", new.account_id)
    check_name_free(tx, new.account_id, new.name)
    image_id = _new_image_id(tx, new.image_type)
    tx.execute(
        f"INSERT INTO clc_images({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            image_id,
            new.account_id,
            new.image_type,
            new.name,
            new.description,
            new.location,
            new.architecture,
            new.kernel_id,
            new.ramdisk_id,
            None,
            "instance-store",
            new.root_device_name,
            new.virtualization_type,
            "available",
            0,
            time.time(),
            None,
        ),
    )
    if new.manifest is not None:
        tx.execute(
            "INSERT INTO clc_image_bundles(image_id, manifest, access_key_id) VALUES(?,?,?)",
            (image_id, new.manifest, new.access_key_id),
        )
    tags.write_tags(tx, new.account_id, image_id, "image", new.tags)
    return image_id


@dataclass(frozen=True)
class NewEbsImage:
    """An EBS-backed image about to be registered (RegisterImage with a root device snapshot)."""

    account_id: str
    name: str
    description: str | None
    architecture: str
    kernel_id: str | None
    ramdisk_id: str | None
    root_device_name: str
    virtualization_type: str
    block_devices: list[ImageBlockDevice]
    tags: list[tuple[str, str]]
    state: str = "available"  # CreateImage's: pending until its snapshots complete


def insert_ebs_image(tx: Tx, new: NewEbsImage) -> str:
    """Record an EBS-backed machine image (available, private, no bundle: its root is a snapshot)."""
    check_boot_image(tx, new.kernel_id, "kernel", new.account_id)
    check_boot_image(tx, new.ramdisk_id, "ramdisk", new.account_id)
    check_name_free(tx, new.account_id, new.name)
    image_id = _new_image_id(tx, "machine")
    tx.execute(
        f"INSERT INTO clc_images({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            image_id,
            new.account_id,
            "machine",
            new.name,
            new.description,
            None,
            new.architecture,
            new.kernel_id,
            new.ramdisk_id,
            None,
            "ebs",
            new.root_device_name,
            new.virtualization_type,
            new.state,
            0,
            time.time(),
            msgspec.json.encode(new.block_devices).decode(),
        ),
    )
    tags.write_tags(tx, new.account_id, image_id, "image", new.tags)
    return image_id


def images_using_snapshot(tx: Tx, snapshot_id: str) -> list[str]:
    """The registered images whose block devices name the snapshot (DeleteSnapshot refuses it then)."""
    return [
        r["image_id"]
        for r in tx.all(
            "SELECT image_id, block_devices FROM clc_images WHERE block_devices LIKE ? ORDER BY image_id",
            (f'%"{snapshot_id}"%',),
        )
        if any(d.snapshot_id == snapshot_id for d in _block_devices.decode(r["block_devices"]))
    ]


def pending_ebs_images(tx: Tx) -> list[ImageRecord]:
    """EBS images CreateImage made whose snapshots are not all completed yet."""
    return [
        _record(r)
        for r in tx.all(f"SELECT {_COLUMNS} FROM clc_images WHERE state='pending' AND root_device_type='ebs'")
    ]


def set_image_state(tx: Tx, image_id: str, state: str) -> None:
    tx.execute("UPDATE clc_images SET state=? WHERE image_id=? AND state='pending'", (state, image_id))


def delete_image(tx: Tx, image_id: str, account_id: str) -> None:
    """The owner deregisters the image: it goes with its permissions, its manifest and everybody's tags."""
    image = owned_image(tx, image_id, account_id)
    tx.execute("DELETE FROM clc_image_launch_permissions WHERE image_id=?", (image.image_id,))
    tx.execute("DELETE FROM clc_images WHERE image_id=?", (image.image_id,))
    tx.execute("DELETE FROM clc_image_bundles WHERE image_id=?", (image.image_id,))
    tags.forget_resource(tx, image.image_id)


@dataclass
class LaunchChange:
    """What a ModifyImageAttribute does to launch permissions (public: None leaves it as it is)."""

    add_accounts: set[str] = field(default_factory=set)
    remove_accounts: set[str] = field(default_factory=set)
    public: bool | None = None


def modify_image(
    tx: Tx, image_id: str, account_id: str, *, description: str | None, launch: LaunchChange | None
) -> None:
    """The owner changes the image's description and/or launch permissions."""
    image = owned_image(tx, image_id, account_id)
    if description is not None:
        tx.execute("UPDATE clc_images SET description=? WHERE image_id=?", (description, image.image_id))
    if launch is None:
        return
    if launch.public is not None:
        tx.execute("UPDATE clc_images SET public=? WHERE image_id=?", (int(launch.public), image.image_id))
    tx.executemany(
        "INSERT INTO clc_image_launch_permissions(image_id, account_id) VALUES(?,?) ON CONFLICT DO NOTHING",
        [(image.image_id, a) for a in sorted(launch.add_accounts)],
    )
    tx.executemany(
        "DELETE FROM clc_image_launch_permissions WHERE image_id=? AND account_id=?",
        [(image.image_id, a) for a in sorted(launch.remove_accounts)],
    )


def reset_launch_permissions(tx: Tx, image_id: str, account_id: str) -> None:
    """The owner makes the image private again, shared with nobody."""
    image = owned_image(tx, image_id, account_id)
    tx.execute("UPDATE clc_images SET public=0 WHERE image_id=?", (image.image_id,))
    tx.execute("DELETE FROM clc_image_launch_permissions WHERE image_id=?", (image.image_id,))
