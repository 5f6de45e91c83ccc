"""The snapshot tables (clc_snapshots, clc_snapshot_permissions) and the snapshot rules: the only module that
reads or writes them.

A snapshot belongs to an account; its chunks and manifest are in Walrus, written by the SC of the volume's
zone (`cluster`). The CLC records it `pending` before it asks the SC (so a crash in between leaves a row
the poller finishes), follows the SC's progress while it uploads, and records `completed` or `error`.
DeleteSnapshot makes it `deleted`: gone for every caller at once (later ids answer InvalidSnapshot.NotFound),
the row kept until the sweep removed its manifest from Walrus, then forgotten. createVolumePermission:
`public` (group all) and the accounts in clc_snapshot_permissions.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from euca.core.store import Tx
from euca.protocol.cluster import SnapshotStatus
from euca.protocol.ec2.wire import Ec2Error
from euca.protocol.snapshot_manifest import SNAPSHOT_ID_RE
from euca.roles.clc.ids import unused_id
from euca.roles.clc.tags import records as tags
from euca.roles.clc.usage import records as usage

ACCOUNT_ID_RE = re.compile(r"^\d{12}$")
VISIBLE_STATES = ("pending", "completed", "error")


@dataclass(frozen=True)
class SnapshotRecord:
    snapshot_id: str
    account_id: str
    volume_id: str
    volume_size: int
    cluster: str
    description: str
    state: str
    reason: str | None
    parent: str | None
    copied_from: str | None
    chunks_done: int
    chunks_total: int
    bytes_uploaded: int
    public: bool
    started: float
    ended: float | None
    shared_with: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def progress(self) -> str:
        """EC2's Progress: 100% once completed; while pending, chunks done of the volume's (never 100)."""
        if self.state == "completed":
            return "100%"
        if not self.chunks_total:
            return "0%"
        return f"{min(99, self.chunks_done * 100 // self.chunks_total)}%"

    def restorable_by(self, account_id: str) -> bool:
        return self.account_id == account_id or self.public or account_id in self.shared_with


@dataclass(frozen=True)
class NewSnapshot:
    account_id: str
    volume_id: str
    volume_size: int
    cluster: str
    description: str
    tags: list[tuple[str, str]]
    parent: str | None = None
    copied_from: str | None = None


def check_snapshot_id(snapshot_id: str) -> str:
    if not SNAPSHOT_ID_RE.match(snapshot_id):
        raise Ec2Error("InvalidSnapshotID.Malformed", f'Invalid id: "{snapshot_id}" (expecting "snap-...")')
    return snapshot_id


def check_snapshot_ids(ids: Iterable[str]) -> list[str]:
    return [check_snapshot_id(i) for i in dict.fromkeys(ids)]


def not_found(ids: Sequence[str]) -> Ec2Error:
    if len(ids) == 1:
        return Ec2Error("InvalidSnapshot.NotFound", f"The snapshot '{ids[0]}' does not exist.")
    return Ec2Error("InvalidSnapshot.NotFound", f"The snapshots '{', '.join(ids)}' do not exist.")


def _record(
    row: sqlite3.Row, shared: Sequence[str] = (), tagged: dict[str, str] | None = None
) -> SnapshotRecord:
    return SnapshotRecord(
        snapshot_id=row["snapshot_id"],
        account_id=row["account_id"],
        volume_id=row["volume_id"],
        volume_size=row["volume_size"],
        cluster=row["cluster"],
        description=row["description"],
        state=row["state"],
        reason=row["reason"],
        parent=row["parent"],
        copied_from=row["copied_from"],
        chunks_done=row["chunks_done"],
        chunks_total=row["chunks_total"],
        bytes_uploaded=row["bytes_uploaded"],
        public=bool(row["public"]),
        started=row["started"],
        ended=row["ended"],
        shared_with=tuple(shared),
        tags=tagged or {},
    )


def _complete(tx: Tx, rows: list[sqlite3.Row], caller: str | None) -> list[SnapshotRecord]:
    """Records with their shares, and the caller's tags on the snapshots the caller owns."""
    ids = [r["snapshot_id"] for r in rows]
    shared: dict[str, list[str]] = {}
    if ids:
        marks = ",".join("?" * len(ids))
        for p in tx.all(
            f"SELECT * FROM clc_snapshot_permissions WHERE snapshot_id IN ({marks}) ORDER BY account_id",
            tuple(ids),
        ):
            shared.setdefault(p["snapshot_id"], []).append(p["account_id"])
    tagged = (
        tags.tags_of(tx, caller, [r["snapshot_id"] for r in rows if r["account_id"] == caller])
        if caller
        else {}
    )
    return [_record(r, shared.get(r["snapshot_id"], ()), tagged.get(r["snapshot_id"])) for r in rows]


def load_visible(tx: Tx, account_id: str) -> list[SnapshotRecord]:
    """The snapshots the account may see: its own, those shared with it, the public ones (by id)."""
    rows = tx.all(
        "SELECT * FROM clc_snapshots WHERE state IN ('pending', 'completed', 'error') AND (account_id=? OR "
        "public=1 OR snapshot_id IN (SELECT snapshot_id FROM clc_snapshot_permissions WHERE account_id=?)) "
        "ORDER BY snapshot_id",
        (account_id, account_id),
    )
    return _complete(tx, rows, account_id)


def load_all(tx: Tx) -> list[SnapshotRecord]:
    rows = tx.all(
        "SELECT * FROM clc_snapshots WHERE state IN ('pending', 'completed', 'error') ORDER BY snapshot_id"
    )
    return _complete(tx, rows, None)


def visible(tx: Tx, account_id: str, ids: Sequence[str]) -> list[SnapshotRecord]:
    """These snapshots as the account may see them, in the order asked; one it cannot see is NotFound."""
    found = {s.snapshot_id: s for s in load_visible(tx, account_id) if s.snapshot_id in set(ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise not_found(missing)
    return [found[i] for i in ids]


def owned(tx: Tx, account_id: str, snapshot_id: str) -> SnapshotRecord:
    """The caller's own snapshot; another account's (even shared) or none: InvalidSnapshot.NotFound."""
    (found,) = visible(tx, account_id, [snapshot_id])
    if found.account_id != account_id:
        raise not_found([snapshot_id])
    return found


def get(tx: Tx, snapshot_id: str) -> SnapshotRecord | None:
    row = tx.one("SELECT * FROM clc_snapshots WHERE snapshot_id=?", (snapshot_id,))
    return _complete(tx, [row], None)[0] if row is not None else None


def snapshot_visible(tx: Tx, snapshot_id: str, account_id: str) -> bool:
    """Tagging takes the owner's snapshots only."""
    return (
        tx.one(
            "SELECT 1 FROM clc_snapshots WHERE snapshot_id=? AND account_id=? AND state != 'deleted'",
            (snapshot_id, account_id),
        )
        is not None
    )


TAG_KIND = tags.ResourceKind(("snap",), "snapshot", "InvalidSnapshot.NotFound", snapshot_visible)


def parent_for(tx: Tx, volume_id: str) -> str | None:
    """The volume's last completed snapshot, made from the volume itself (not a copy): the base a new
    snapshot of it uploads only its changes against."""
    row = tx.one(
        "SELECT snapshot_id FROM clc_snapshots WHERE volume_id=? AND state='completed' AND copied_from IS NULL "
        "ORDER BY started DESC LIMIT 1",
        (volume_id,),
    )
    return row["snapshot_id"] if row else None


def insert_snapshot(tx: Tx, new: NewSnapshot) -> SnapshotRecord:
    """Record a snapshot `pending`."""
    snapshot_id = unused_id(
        "snap", lambda new: tx.one("SELECT 1 FROM clc_snapshots WHERE snapshot_id=?", (new,)) is not None
    )
    tx.execute(
        "INSERT INTO clc_snapshots(snapshot_id, account_id, volume_id, volume_size, cluster, description, state, "
        "parent, copied_from, started) VALUES(?,?,?,?,?,?,'pending',?,?,?)",
        (
            snapshot_id,
            new.account_id,
            new.volume_id,
            new.volume_size,
            new.cluster,
            new.description,
            new.parent,
            new.copied_from,
            time.time(),
        ),
    )
    if new.tags:
        tags.write_tags(tx, new.account_id, snapshot_id, "snapshot", new.tags)
    usage.snapshot_created(tx, snapshot_id, new.account_id, None, new.volume_size)
    row = tx.one("SELECT * FROM clc_snapshots WHERE snapshot_id=?", (snapshot_id,))
    assert row is not None
    return _complete(tx, [row], new.account_id)[0]


def pending(tx: Tx, cluster: str | None = None) -> list[SnapshotRecord]:
    """Snapshots being written (of one cluster's SC, if named)."""
    if cluster is None:
        rows = tx.all("SELECT * FROM clc_snapshots WHERE state='pending' ORDER BY snapshot_id")
    else:
        rows = tx.all(
            "SELECT * FROM clc_snapshots WHERE state='pending' AND cluster=? ORDER BY snapshot_id", (cluster,)
        )
    return _complete(tx, rows, None)


def record_progress(tx: Tx, status: SnapshotStatus) -> bool:
    """What the SC said of a pending snapshot; True if it moved (only a pending one does)."""
    ended = time.time() if status.state != "pending" else None
    moved = bool(
        tx.execute(
            "UPDATE clc_snapshots SET state=?, chunks_done=?, chunks_total=?, bytes_uploaded=?, reason=?, ended=? "
            "WHERE snapshot_id=? AND state='pending'",
            (
                status.state,
                status.chunks_done,
                status.chunks_total,
                status.bytes_uploaded,
                status.reason,
                ended,
                status.snapshot_id,
            ),
        )
    )
    if moved and status.state == "error":
        usage.snapshot_deleted(tx, status.snapshot_id)  # a failed snapshot holds nothing
    return moved


def begin_delete(tx: Tx, account_id: str, snapshot_id: str, in_use_by: Sequence[str]) -> SnapshotRecord:
    """DeleteSnapshot's rules: the caller's own snapshot, not pending, not the snapshot of a registered image;
    it becomes `deleted` (gone for everyone) until the sweep removed it from Walrus."""
    found = owned(tx, account_id, snapshot_id)
    if in_use_by:
        raise Ec2Error(
            "InvalidSnapshot.InUse",
            f"The snapshot {snapshot_id} is currently in use by {in_use_by[0]}",
        )
    if found.state == "pending":
        raise Ec2Error(
            "IncorrectState", f"The snapshot '{snapshot_id}' is pending: delete it once it completed."
        )
    tx.execute(
        "UPDATE clc_snapshots SET state='deleted', ended=? WHERE snapshot_id=?", (time.time(), snapshot_id)
    )
    tx.execute("DELETE FROM clc_snapshot_permissions WHERE snapshot_id=?", (snapshot_id,))
    tags.forget_resource(tx, snapshot_id)
    usage.snapshot_deleted(tx, snapshot_id)  # logged once: a failed one was at its failure
    return found


def dead(tx: Tx) -> tuple[list[str], list[str]]:
    """(deleted snapshots, snapshots that ended in error): the manifests a sweep removes from Walrus."""
    deleted = [
        r["snapshot_id"] for r in tx.all("SELECT snapshot_id FROM clc_snapshots WHERE state='deleted'")
    ]
    failed = [r["snapshot_id"] for r in tx.all("SELECT snapshot_id FROM clc_snapshots WHERE state='error'")]
    return deleted, failed


def forget(tx: Tx, snapshot_ids: Sequence[str]) -> None:
    """The sweep removed these deleted snapshots' manifests: their rows go."""
    for snapshot_id in snapshot_ids:
        tx.execute("DELETE FROM clc_snapshots WHERE snapshot_id=? AND state='deleted'", (snapshot_id,))


def change_permissions(
    tx: Tx,
    account_id: str,
    snapshot_id: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    public: bool | None = None,
) -> None:
    owned(tx, account_id, snapshot_id)
    for other in add:
        tx.execute(
            "INSERT INTO clc_snapshot_permissions(snapshot_id, account_id) VALUES(?,?) ON CONFLICT DO NOTHING",
            (snapshot_id, other),
        )
    for other in remove:
        tx.execute(
            "DELETE FROM clc_snapshot_permissions WHERE snapshot_id=? AND account_id=?", (snapshot_id, other)
        )
    if public is not None:
        tx.execute("UPDATE clc_snapshots SET public=? WHERE snapshot_id=?", (int(public), snapshot_id))


def reset_permissions(tx: Tx, account_id: str, snapshot_id: str) -> None:
    owned(tx, account_id, snapshot_id)
    tx.execute("DELETE FROM clc_snapshot_permissions WHERE snapshot_id=?", (snapshot_id,))
    tx.execute("UPDATE clc_snapshots SET public=0 WHERE snapshot_id=?", (snapshot_id,))
