"""What the SC holds: its volumes table (sc_volumes) in this host's store, the only module that touches it.

A row is written before the backend is asked (state creating / deleting) and changed after it answered, so
after a crash the SC knows what was in flight and redoes it at start (controller.py): backend calls are
idempotent. On a one-box the table sits in the same store as the CLC's tables, in a namespace of its own.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from euca.core.store import Store, Tx
from euca.protocol.cluster import ClusterFault, VolumeStatus
from euca.roles.sc.backend import BackendError, check_volume_id

MIGRATION = [
    """
    CREATE TABLE sc_volumes (
        volume_id TEXT PRIMARY KEY,
        size_gb INTEGER NOT NULL,
        -- creating | available | deleting | error
        state TEXT NOT NULL,
        reason TEXT,
        created REAL NOT NULL,
        changed REAL NOT NULL
    );
    """,
]


def migrate(store: Store) -> None:
    store.migrate("sc", MIGRATION)


@dataclass(frozen=True)
class ScVolume:
    volume_id: str
    size_gb: int
    state: str
    reason: str | None

    @property
    def status(self) -> VolumeStatus:
        return VolumeStatus(self.volume_id, self.state, self.size_gb, self.reason)  # type: ignore[arg-type]


# EBS's largest volume, in GiB.
MAX_SIZE_GB = 16384


def check_size(size_gb: int) -> None:
    """A size the SC makes a volume of (1 GiB to MAX_SIZE_GB), else InvalidParameterValue."""
    if not 1 <= size_gb <= MAX_SIZE_GB:
        raise ClusterFault("InvalidParameterValue", f"volume size {size_gb} GiB: 1..{MAX_SIZE_GB}", 400)


def check_id(volume_id: str) -> None:
    """A volume id as the CLC gives them (vol- and 8 or 17 hex digits), else InvalidParameterValue."""
    try:
        check_volume_id(volume_id)
    except BackendError as e:
        raise ClusterFault("InvalidParameterValue", str(e), 400) from None


def check_new(volume_id: str, size_gb: int) -> None:
    """CreateVolume's and RestoreVolume's volume: a well-formed id and a size the SC makes."""
    check_id(volume_id)
    check_size(size_gb)


def check_available(volume_id: str, found: ScVolume | None) -> ScVolume:
    """`found` (the row of `volume_id`, if any) when the volume is here and available; else the fault."""
    if found is None:
        raise ClusterFault("InvalidVolume.NotFound", f"no volume {volume_id} here", 404)
    if found.state != "available":
        raise ClusterFault("IncorrectState", f"{volume_id} is {found.state}", 409)
    return found


def _volume(row: sqlite3.Row) -> ScVolume:
    return ScVolume(row["volume_id"], row["size_gb"], row["state"], row["reason"])


def get(tx: Tx, volume_id: str) -> ScVolume | None:
    row = tx.one("SELECT * FROM sc_volumes WHERE volume_id=?", (volume_id,))
    return _volume(row) if row else None


def list_volumes(tx: Tx, ids: list[str] | None = None) -> list[ScVolume]:
    rows = tx.all("SELECT * FROM sc_volumes ORDER BY volume_id")
    wanted = set(ids or ())
    return [_volume(r) for r in rows if not wanted or r["volume_id"] in wanted]


def in_flight(tx: Tx) -> list[ScVolume]:
    return [_volume(r) for r in tx.all("SELECT * FROM sc_volumes WHERE state IN ('creating', 'deleting')")]


def allocated_gb(tx: Tx) -> int:
    return int(tx.scalar("SELECT COALESCE(SUM(size_gb), 0) FROM sc_volumes") or 0)


def begin_create(tx: Tx, volume_id: str, size_gb: int, capacity_gb: int) -> ScVolume | None:
    """Record a volume being made; the existing row if there is one (the caller answers with it), None
    when the new row was written. Over capacity: ValueError."""
    existing = get(tx, volume_id)
    if existing is not None:
        return existing
    if capacity_gb and allocated_gb(tx) + size_gb > capacity_gb:
        raise ValueError(
            f"the storage controller has {capacity_gb - allocated_gb(tx)} GiB left of {capacity_gb}; "
            f"{size_gb} GiB asked"
        )
    now = time.time()
    tx.execute(
        "INSERT INTO sc_volumes(volume_id, size_gb, state, created, changed) VALUES(?,?,'creating',?,?)",
        (volume_id, size_gb, now, now),
    )
    return None


def set_state(tx: Tx, volume_id: str, state: str, reason: str | None = None) -> None:
    tx.execute(
        "UPDATE sc_volumes SET state=?, reason=?, changed=? WHERE volume_id=?",
        (state, reason, time.time(), volume_id),
    )


def forget(tx: Tx, volume_id: str) -> None:
    tx.execute("DELETE FROM sc_volumes WHERE volume_id=?", (volume_id,))


def set_size(tx: Tx, volume_id: str, size_gb: int) -> None:
    tx.execute(
        "UPDATE sc_volumes SET size_gb=?, changed=? WHERE volume_id=?", (size_gb, time.time(), volume_id)
    )
