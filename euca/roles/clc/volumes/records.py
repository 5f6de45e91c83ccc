"""The volume table (clc_volumes) and the volume rules: the only module that reads or writes it.

A volume belongs to an account and one zone (= cluster), whose SC holds its bytes. The CLC records a volume
`creating` before it asks the SC (so a crash in between leaves a row the poller finishes), `available` once
the SC made it, `deleting` from DeleteVolume until the SC confirmed, and then forgets it (a volume id
asked for after that is InvalidVolume.NotFound, as in EC2). `error`: the SC could not make it or lost it.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from euca.core.store import Tx
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.ids import unused_id
from euca.roles.clc.tags import records as tags
from euca.roles.clc.usage import records as usage

VOLUME_ID_RE = re.compile(r"^vol-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]{8}(?:[0-9a-f]{9})?$")

# Volume type -> (smallest, largest) size in GiB, as EC2 bounds them. "standard" was Eucalyptus's only type.
SIZE_RANGES: dict[str, tuple[int, int]] = {
    "standard": (1, 16384),
    "gp2": (1, 16384),
    "gp3": (1, 16384),
    "io1": (4, 16384),
    "io2": (4, 16384),
    "st1": (125, 16384),
    "sc1": (125, 16384),
}
DEFAULT_TYPE = "standard"
IOPS_TYPES = ("io1", "io2")


@dataclass(frozen=True)
class Modification:
    """A volume's latest ModifyVolume."""

    state: str  # modifying | completed | failed
    message: str | None
    original_size: int
    target_size: int
    original_type: str
    target_type: str
    original_iops: int | None
    target_iops: int | None
    start: float
    end: float | None


@dataclass(frozen=True)
class Attachment:
    """A volume's attachment (clc_volume_attachments)."""

    volume_id: str
    instance_id: str
    device: str
    state: str  # attaching | attached | detaching
    attach_time: float
    delete_on_termination: bool
    force: bool = False


@dataclass(frozen=True)
class VolumeRecord:
    volume_id: str
    account_id: str
    zone: str
    cluster: str
    size_gib: int
    volume_type: str
    iops: int | None
    snapshot_id: str | None
    state: str
    reason: str | None
    created: float
    tags: dict[str, str] = field(default_factory=dict)
    modification: Modification | None = None
    attachment: Attachment | None = None


@dataclass(frozen=True)
class NewVolume:
    account_id: str
    zone: str
    cluster: str
    size_gib: int
    volume_type: str
    iops: int | None
    client_token: str | None
    tags: list[tuple[str, str]]
    snapshot_id: str | None = None  # made from this snapshot (the SC restores it)

    @property
    def digest(self) -> str:
        """What an idempotent retry must repeat (ClientToken): the request's parameters."""
        text = f"{self.zone}|{self.size_gib}|{self.volume_type}|{self.iops}|{sorted(self.tags)}"
        if self.snapshot_id:
            text += f"|{self.snapshot_id}"
        return hashlib.sha256(text.encode()).hexdigest()


def check_volume_id(volume_id: str) -> str:
    if not VOLUME_ID_RE.match(volume_id):
        raise Ec2Error("InvalidVolumeID.Malformed", f'Invalid id: "{volume_id}" (expecting "vol-...")')
    return volume_id


def check_volume_ids(ids: Iterable[str]) -> list[str]:
    return [check_volume_id(i) for i in dict.fromkeys(ids)]


def check_size(volume_type: str, size: int) -> None:
    low, high = SIZE_RANGES[volume_type]
    if not low <= size <= high:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Volume of {size}GiB is out of range for volume type {volume_type}: "
            f"the size must be {low}-{high}GiB.",
        )


def not_found(ids: Sequence[str]) -> Ec2Error:
    if len(ids) == 1:
        return Ec2Error("InvalidVolume.NotFound", f"The volume '{ids[0]}' does not exist.")
    return Ec2Error("InvalidVolume.NotFound", f"The volumes '{', '.join(ids)}' do not exist.")


def _record(
    row: sqlite3.Row, tagged: dict[str, str] | None = None, attachment: Attachment | None = None
) -> VolumeRecord:
    return VolumeRecord(
        volume_id=row["volume_id"],
        account_id=row["account_id"],
        zone=row["zone"],
        cluster=row["cluster"],
        size_gib=row["size_gib"],
        volume_type=row["volume_type"],
        iops=row["iops"],
        snapshot_id=row["snapshot_id"],
        state=row["state"],
        reason=row["reason"],
        created=row["created"],
        tags=tagged or {},
        modification=_modification(row),
        attachment=attachment,
    )


def _attachment(row: sqlite3.Row) -> Attachment:
    return Attachment(
        volume_id=row["volume_id"],
        instance_id=row["instance_id"],
        device=row["device"],
        state=row["state"],
        attach_time=row["attach_time"],
        delete_on_termination=bool(row["delete_on_termination"]),
        force=bool(row["force"]),
    )


def _attachments(tx: Tx, rows: Sequence[sqlite3.Row]) -> dict[str, Attachment]:
    if not rows:
        return {}
    ids = [r["volume_id"] for r in rows]
    found: dict[str, Attachment] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for a in tx.all(f"SELECT * FROM clc_volume_attachments WHERE volume_id IN ({marks})", chunk):
            found[a["volume_id"]] = _attachment(a)
    return found


def _modification(row: sqlite3.Row) -> Modification | None:
    if row["mod_state"] is None:
        return None
    return Modification(
        state=row["mod_state"],
        message=row["mod_message"],
        original_size=row["mod_original_size"],
        target_size=row["mod_target_size"],
        original_type=row["mod_original_type"],
        target_type=row["mod_target_type"],
        original_iops=row["mod_original_iops"],
        target_iops=row["mod_target_iops"],
        start=row["mod_start"],
        end=row["mod_end"],
    )


def load_volumes(tx: Tx, account_id: str, ids: Sequence[str] = ()) -> list[VolumeRecord]:
    """The account's volumes (those named, when ids are given), with their tags."""
    rows = tx.all("SELECT * FROM clc_volumes WHERE account_id=? ORDER BY volume_id", (account_id,))
    if ids:
        wanted = set(ids)
        rows = [r for r in rows if r["volume_id"] in wanted]
    tagged = tags.tags_of(tx, account_id, [r["volume_id"] for r in rows])
    attached = _attachments(tx, rows)
    return [_record(r, tagged.get(r["volume_id"]), attached.get(r["volume_id"])) for r in rows]


def load_all_volumes(tx: Tx) -> list[VolumeRecord]:
    """Every account's volumes, each with its owner's tags (the cloud admin's verbose view)."""
    rows = tx.all("SELECT * FROM clc_volumes ORDER BY volume_id")
    by_account: dict[str, list[str]] = {}
    for r in rows:
        by_account.setdefault(r["account_id"], []).append(r["volume_id"])
    tagged: dict[str, dict[str, str]] = {}
    for account_id, ids in by_account.items():
        tagged.update(tags.tags_of(tx, account_id, ids))
    attached = _attachments(tx, rows)
    return [_record(r, tagged.get(r["volume_id"]), attached.get(r["volume_id"])) for r in rows]


def owned(tx: Tx, account_id: str, ids: Sequence[str]) -> list[VolumeRecord]:
    """The caller's volumes with these ids, in the order asked; a missing one is InvalidVolume.NotFound."""
    found = {v.volume_id: v for v in load_volumes(tx, account_id, ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise not_found(missing)
    return [found[i] for i in ids]


def volumes_of_cluster(tx: Tx, cluster: str) -> list[VolumeRecord]:
    rows = tx.all("SELECT * FROM clc_volumes WHERE cluster=? ORDER BY volume_id", (cluster,))
    attached = _attachments(tx, rows)
    return [_record(r, attachment=attached.get(r["volume_id"])) for r in rows]


def volume_visible(tx: Tx, volume_id: str, account_id: str) -> bool:
    return (
        tx.one("SELECT 1 FROM clc_volumes WHERE volume_id=? AND account_id=?", (volume_id, account_id))
        is not None
    )


TAG_KIND = tags.ResourceKind(("vol",), "volume", "InvalidVolume.NotFound", volume_visible)


def insert_volume(tx: Tx, new: NewVolume) -> tuple[VolumeRecord, bool]:
    """Record a volume `creating`; with a ClientToken used before, that volume instead (False: not new),
    or IdempotentParameterMismatch when the parameters differ."""
    digest = new.digest
    if new.client_token:
        row = tx.one(
            "SELECT * FROM clc_volumes WHERE account_id=? AND client_token=?",
            (new.account_id, new.client_token),
        )
        if row is not None:
            if row["request_digest"] != digest:
                raise Ec2Error(
                    "IdempotentParameterMismatch",
                    "The client token was used before with other parameters.",
                )
            tagged = tags.tags_of(tx, new.account_id, [row["volume_id"]])
            return _record(row, tagged.get(row["volume_id"])), False
    volume_id = unused_id(
        "vol", lambda new: tx.one("SELECT 1 FROM clc_volumes WHERE volume_id=?", (new,)) is not None
    )
    tx.execute(
        "INSERT INTO clc_volumes(volume_id, account_id, zone, cluster, size_gib, volume_type, iops, state, "
        "created, client_token, request_digest, snapshot_id) VALUES(?,?,?,?,?,?,?,'creating',?,?,?,?)",
        (
            volume_id,
            new.account_id,
            new.zone,
            new.cluster,
            new.size_gib,
            new.volume_type,
            new.iops,
            time.time(),
            new.client_token,
            digest,
            new.snapshot_id,
        ),
    )
    usage.volume_created(tx, volume_id, new.account_id, new.zone, new.size_gib)
    if new.tags:
        tags.write_tags(tx, new.account_id, volume_id, "volume", new.tags)
    row = tx.one("SELECT * FROM clc_volumes WHERE volume_id=?", (volume_id,))
    assert row is not None
    return _record(row, dict(new.tags)), True


def set_state(
    tx: Tx, volume_id: str, state: str, *, only_from: Sequence[str] = (), reason: str | None = None
) -> bool:
    """Move a volume to `state` (when it is in one of `only_from`, if given). True if it moved."""
    if only_from:
        marks = ",".join("?" * len(only_from))
        return bool(
            tx.execute(
                f"UPDATE clc_volumes SET state=?, reason=? WHERE volume_id=? AND state IN ({marks})",
                (state, reason, volume_id, *only_from),
            )
        )
    return bool(
        tx.execute("UPDATE clc_volumes SET state=?, reason=? WHERE volume_id=?", (state, reason, volume_id))
    )


def begin_delete(tx: Tx, account_id: str, volume_id: str) -> VolumeRecord:
    """DeleteVolume's rule: the caller's volume goes `deleting` (one still `creating`, its SC perhaps
    down, too: the SC's delete is idempotent and the create's answer no longer moves it). An attached
    volume is VolumeInUse."""
    (volume,) = owned(tx, account_id, [volume_id])
    if volume.attachment is not None:
        raise Ec2Error(
            "VolumeInUse", f"Volume {volume_id} is currently attached to {volume.attachment.instance_id}"
        )
    if volume.state != "deleting":
        set_state(tx, volume_id, "deleting")
        usage.volume_deleted(tx, volume_id)
    return volume


def forget(tx: Tx, volume_id: str) -> None:
    """The SC confirmed the volume gone: its row and tags go."""
    tx.execute("DELETE FROM clc_volumes WHERE volume_id=?", (volume_id,))
    tags.forget_resource(tx, volume_id)
    usage.volume_deleted(tx, volume_id)


def begin_modification(
    tx: Tx, account_id: str, volume_id: str, size: int | None, volume_type: str | None, iops: int | None
) -> VolumeRecord:
    """ModifyVolume's rules: the caller's available volume, no modification in progress, a size only ever
    larger (the bytes only grow) and within the target type's range, something actually changing. Records
    the modification `modifying` and returns the volume with it."""
    (v,) = owned(tx, account_id, [volume_id])
    if v.modification is not None and v.modification.state == "modifying":
        raise Ec2Error("IncorrectModificationState", f"The volume '{volume_id}' is already being modified.")
    if v.state != "available":
        raise Ec2Error("IncorrectState", f"The volume '{volume_id}' is '{v.state}', not 'available'.")
    target_type = volume_type or v.volume_type
    if target_type not in SIZE_RANGES:
        raise Ec2Error("InvalidParameterValue", f"Value ({target_type}) for parameter volumeType is invalid.")
    target_size = v.size_gib if size is None else size
    if target_size < v.size_gib:
        raise Ec2Error(
            "InvalidParameterValue",
            f"New size ({target_size}GiB) cannot be smaller than the existing size ({v.size_gib}GiB).",
        )
    check_size(target_type, target_size)
    target_iops = iops if iops is not None else (v.iops if target_type in (*IOPS_TYPES, "gp3") else None)
    if target_type in IOPS_TYPES and target_iops is None:
        raise Ec2Error("MissingParameter", f"The parameter iops must be specified for {target_type} volumes.")
    if (target_size, target_type, target_iops) == (v.size_gib, v.volume_type, v.iops):
        raise Ec2Error(
            "InvalidParameterCombination", "New parameters are the same as the volume's: nothing to modify."
        )
    tx.execute(
        "UPDATE clc_volumes SET mod_state='modifying', mod_message=NULL, mod_original_size=?, mod_target_size=?, "
        "mod_original_type=?, mod_target_type=?, mod_original_iops=?, mod_target_iops=?, mod_start=?, "
        "mod_end=NULL WHERE volume_id=?",
        (v.size_gib, target_size, v.volume_type, target_type, v.iops, target_iops, time.time(), volume_id),
    )
    (found,) = owned(tx, account_id, [volume_id])
    return found


def end_modification(tx: Tx, volume_id: str, *, ok: bool, message: str | None = None) -> bool:
    """The SC grew the volume (ok: the target becomes the volume's size, type and iops) or could not.
    False if no modification was in progress."""
    row = tx.one("SELECT * FROM clc_volumes WHERE volume_id=? AND mod_state='modifying'", (volume_id,))
    if row is None:
        return False
    if ok:
        tx.execute(
            "UPDATE clc_volumes SET size_gib=mod_target_size, volume_type=mod_target_type, iops=mod_target_iops, "
            "mod_state='completed', mod_message=NULL, mod_end=? WHERE volume_id=?",
            (time.time(), volume_id),
        )
        usage.volume_resized(tx, volume_id, row["mod_target_size"])
    else:
        tx.execute(
            "UPDATE clc_volumes SET mod_state='failed', mod_message=?, mod_end=? WHERE volume_id=?",
            (message, time.time(), volume_id),
        )
    return True


# -- attachments (AttachVolume, DetachVolume) ----------------------------------------------------------

# Device names as EC2 takes them for EBS volumes on Linux instances (the root's /dev/sda1, /dev/xvda excepted).
DEVICE_RE = re.compile(r"^(?:/dev/)?(?:(?:sd|xvd)[b-z](?:[1-9]|1[0-5])?|xvd[b-c][a-z])$")


@dataclass(frozen=True)
class InstancePlace:
    """What attaching needs to know of an instance (instances/records.py answers it: a higher resource)."""

    instance_id: str
    state: str
    zone: str
    cluster: str | None
    node: str | None


def check_device(device: str) -> str:
    if not DEVICE_RE.match(device):
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({device}) for parameter device is invalid. {device} is not a valid EBS device name.",
        )
    return device


def _device_key(device: str) -> str:
    """/dev/sdf and sdf name the same attachment point."""
    return device.removeprefix("/dev/")


def begin_attach(
    tx: Tx, account_id: str, volume_id: str, instance: InstancePlace, device: str, now: float
) -> VolumeRecord:
    """AttachVolume's rules, and the attachment recorded `attaching` (the volume `in-use`)."""
    (v,) = owned(tx, account_id, [volume_id])
    if v.attachment is not None:
        raise Ec2Error("VolumeInUse", f"{volume_id} is already attached to an instance")
    if v.state != "available":
        raise Ec2Error("IncorrectState", f"vol '{volume_id}' is not 'available'.")
    # A stopped (EBS-backed) instance is on no node: its volumes join its domain when it starts again.
    on_node = instance.cluster is not None and (instance.node is not None or instance.state == "stopped")
    if instance.state not in ("running", "stopped") or not on_node:
        raise Ec2Error("IncorrectState", f"Instance '{instance.instance_id}' is not 'running'.")
    if v.zone != instance.zone:
        raise Ec2Error(
            "InvalidVolume.ZoneMismatch",
            f"The volume '{volume_id}' is not in the same availability zone as instance "
            f"'{instance.instance_id}'",
        )
    for a in tx.all("SELECT device FROM clc_volume_attachments WHERE instance_id=?", (instance.instance_id,)):
        if _device_key(a["device"]) == _device_key(device):
            raise Ec2Error(
                "InvalidParameterValue",
                f"Invalid value '{device}' for unixDevice. Attachment point {device} is already in use",
            )
    tx.execute(
        "INSERT INTO clc_volume_attachments(volume_id, instance_id, account_id, cluster, device, state, "
        "attach_time) VALUES(?,?,?,?,?,'attaching',?)",
        (volume_id, instance.instance_id, account_id, v.cluster, device, now),
    )
    set_state(tx, volume_id, "in-use")
    (found,) = owned(tx, account_id, [volume_id])
    return found


def begin_detach(
    tx: Tx, account_id: str, volume_id: str, instance_id: str | None, device: str | None, force: bool
) -> VolumeRecord:
    """DetachVolume's rules: the volume attached (to that instance, at that device, when they are named);
    the attachment goes `detaching`."""
    (v,) = owned(tx, account_id, [volume_id])
    a = v.attachment
    if a is None:
        raise Ec2Error("IncorrectState", f"Volume '{volume_id}' is in the '{v.state}' state.")
    if (instance_id is not None and instance_id != a.instance_id) or (
        device is not None and _device_key(device) != _device_key(a.device)
    ):
        raise Ec2Error(
            "InvalidAttachment.NotFound",
            f"The volume '{volume_id}' is not attached to instance '{instance_id or a.instance_id}' "
            f"at '{device or a.device}'",
        )
    tx.execute(
        "UPDATE clc_volume_attachments SET state='detaching', force=(force | ?) WHERE volume_id=?",
        (int(force), volume_id),
    )
    (found,) = owned(tx, account_id, [volume_id])
    return found


def set_attachment_state(tx: Tx, volume_id: str, state: str, *, only_from: str) -> bool:
    return bool(
        tx.execute(
            "UPDATE clc_volume_attachments SET state=? WHERE volume_id=? AND state=?",
            (state, volume_id, only_from),
        )
    )


def end_attachment(tx: Tx, volume_id: str, *, instance_ended: bool = False) -> bool:
    """The attachment is over (detached, or the attach failed): its row goes, the volume is available again,
    or deleting when it was to be deleted with its instance (terminated by request, or ended by itself).
    True if the volume is now to be deleted."""
    row = tx.one("SELECT * FROM clc_volume_attachments WHERE volume_id=?", (volume_id,))
    if row is None:
        return False
    tx.execute("DELETE FROM clc_volume_attachments WHERE volume_id=?", (volume_id,))
    ended = instance_ended or row["state"] == "terminating"
    delete = bool(row["delete_on_termination"]) and ended
    set_state(tx, volume_id, "deleting" if delete else "available", only_from=("in-use",))
    return delete


def attachments_of_cluster(tx: Tx, cluster: str) -> list[Attachment]:
    return [
        _attachment(r)
        for r in tx.all("SELECT * FROM clc_volume_attachments WHERE cluster=? ORDER BY volume_id", (cluster,))
    ]


def attachments_of_instances(tx: Tx, ids: Sequence[str]) -> dict[str, list[Attachment]]:
    """instance id -> its attachments (DescribeInstances' block device mappings)."""
    out: dict[str, list[Attachment]] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        for r in tx.all(
            f"SELECT * FROM clc_volume_attachments WHERE instance_id IN ({marks}) ORDER BY device", chunk
        ):
            out.setdefault(r["instance_id"], []).append(_attachment(r))
    return out


def instance_ended(tx: Tx, instance_id: str) -> None:
    """The instance terminates: its attachments go (`terminating`: detached by the instance's end, so a
    volume marked DeleteOnTermination is deleted once they are over)."""
    tx.execute("UPDATE clc_volume_attachments SET state='terminating' WHERE instance_id=?", (instance_id,))


def set_delete_on_termination(tx: Tx, instance_id: str, device: str, delete: bool) -> bool:
    """ModifyInstanceAttribute's blockDeviceMapping: whether the volume at `device` goes with its instance.
    False if no volume is attached there."""
    for r in tx.all(
        "SELECT volume_id, device FROM clc_volume_attachments WHERE instance_id=?", (instance_id,)
    ):
        if _device_key(r["device"]) == _device_key(device):
            tx.execute(
                "UPDATE clc_volume_attachments SET delete_on_termination=? WHERE volume_id=?",
                (int(delete), r["volume_id"]),
            )
            return True
    return False


# -- EBS-backed instances (issue 10): volumes made at launch, attached from the start ------------------------


def attach_at_launch(
    tx: Tx,
    volume_id: str,
    instance_id: str,
    account_id: str,
    cluster: str,
    device: str,
    delete_on_termination: bool,
    now: float,
) -> None:
    """A volume RunInstances made for an instance (its root, or another of its block device mappings):
    attached from the start (the domain is defined with it), `in-use` once the SC made it."""
    tx.execute(
        "INSERT INTO clc_volume_attachments(volume_id, instance_id, account_id, cluster, device, state, "
        "attach_time, delete_on_termination) VALUES(?,?,?,?,?,'attached',?,?)",
        (volume_id, instance_id, account_id, cluster, device, now, int(delete_on_termination)),
    )
