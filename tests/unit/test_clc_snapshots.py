"""The CLC's snapshot records (visibility, progress, the delete rule, sharing) on a real store, and how the
poll reconciles pending snapshots with what their SC says (pure)."""

from __future__ import annotations

import pytest

from euca.core.store import Store
from euca.protocol.cluster import SnapshotStatus, SnapshotTaskState
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.snapshots import records
from euca.roles.clc.snapshots.poll import reconcile_snapshots
from euca.roles.clc.snapshots.records import NewSnapshot
from euca.roles.clc.usage import records as usage

OWNER = "123456789012"
OTHER = "210987654321"


def new(store: Store, **kw: object) -> records.SnapshotRecord:
    fields: dict[str, object] = {
        "account_id": OWNER,
        "volume_id": "vol-0123abcd",
        "volume_size": 1,
        "cluster": "c1",
        "description": "d",
        "tags": [("Name", "x")],
    }
    fields.update(kw)
    snapshot = NewSnapshot(**fields)  # type: ignore[arg-type]
    return store.write_sync(lambda tx: records.insert_snapshot(tx, snapshot))


def progress(store: Store, snapshot_id: str, state: SnapshotTaskState, done: int, total: int = 256) -> bool:
    status = SnapshotStatus(snapshot_id, state, chunks_done=done, chunks_total=total, bytes_uploaded=done * 4)
    return store.write_sync(lambda tx: records.record_progress(tx, status))


def test_progress_and_parent(clc_store: Store) -> None:
    s = new(clc_store)
    assert s.state == "pending" and s.progress == "0%" and s.tags == {"Name": "x"}
    assert progress(clc_store, s.snapshot_id, "pending", 128)
    got = clc_store.read_sync(lambda tx: records.get(tx, s.snapshot_id))
    assert got is not None and got.progress == "50%"
    assert progress(clc_store, s.snapshot_id, "pending", 256)
    got = clc_store.read_sync(lambda tx: records.get(tx, s.snapshot_id))
    assert got is not None and got.progress == "99%"  # 100% only once completed
    assert clc_store.read_sync(lambda tx: records.parent_for(tx, "vol-0123abcd")) is None
    assert progress(clc_store, s.snapshot_id, "completed", 256)
    assert not progress(clc_store, s.snapshot_id, "error", 0)  # only a pending one moves
    got = clc_store.read_sync(lambda tx: records.get(tx, s.snapshot_id))
    assert got is not None and got.state == "completed" and got.progress == "100%"
    assert clc_store.read_sync(lambda tx: records.parent_for(tx, "vol-0123abcd")) == s.snapshot_id
    copy = new(clc_store, volume_id="vol-ffffffff", copied_from=s.snapshot_id)
    progress(clc_store, copy.snapshot_id, "completed", 256)
    assert clc_store.read_sync(lambda tx: records.parent_for(tx, "vol-ffffffff")) is None


def test_visibility_and_sharing(clc_store: Store) -> None:
    s = new(clc_store)

    def seen_by(account: str) -> set[str]:
        return {x.snapshot_id for x in clc_store.read_sync(lambda tx: records.load_visible(tx, account))}

    assert s.snapshot_id in seen_by(OWNER) and s.snapshot_id not in seen_by(OTHER)
    with pytest.raises(Ec2Error) as e:
        clc_store.read_sync(lambda tx: records.visible(tx, OTHER, [s.snapshot_id]))
    assert e.value.code == "InvalidSnapshot.NotFound"
    clc_store.write_sync(lambda tx: records.change_permissions(tx, OWNER, s.snapshot_id, add=[OTHER]))
    assert s.snapshot_id in seen_by(OTHER)
    (shared,) = clc_store.read_sync(lambda tx: records.visible(tx, OTHER, [s.snapshot_id]))
    assert shared.restorable_by(OTHER) and shared.tags == {}  # the owner's tags stay the owner's
    with pytest.raises(Ec2Error):  # shared is not owned: no sharing it on
        clc_store.write_sync(lambda tx: records.change_permissions(tx, OTHER, s.snapshot_id, public=True))
    clc_store.write_sync(
        lambda tx: records.change_permissions(tx, OWNER, s.snapshot_id, remove=[OTHER], public=True)
    )
    assert s.snapshot_id in seen_by(OTHER)
    clc_store.write_sync(lambda tx: records.reset_permissions(tx, OWNER, s.snapshot_id))
    assert s.snapshot_id not in seen_by(OTHER)


def test_delete_rules(clc_store: Store) -> None:
    s = new(clc_store)
    with pytest.raises(Ec2Error) as e:
        clc_store.write_sync(lambda tx: records.begin_delete(tx, OWNER, s.snapshot_id, ()))
    assert e.value.code == "IncorrectState"  # pending
    progress(clc_store, s.snapshot_id, "completed", 256)
    with pytest.raises(Ec2Error) as e:
        clc_store.write_sync(lambda tx: records.begin_delete(tx, OWNER, s.snapshot_id, ["emi-12345678"]))
    assert e.value.code == "InvalidSnapshot.InUse"
    with pytest.raises(Ec2Error) as e:
        clc_store.write_sync(lambda tx: records.begin_delete(tx, OTHER, s.snapshot_id, ()))
    assert e.value.code == "InvalidSnapshot.NotFound"
    clc_store.write_sync(lambda tx: records.begin_delete(tx, OWNER, s.snapshot_id, ()))
    assert clc_store.read_sync(lambda tx: records.load_visible(tx, OWNER)) == []
    failed = new(clc_store)
    progress(clc_store, failed.snapshot_id, "error", 3)
    assert clc_store.read_sync(records.dead) == ([s.snapshot_id], [failed.snapshot_id])
    clc_store.write_sync(lambda tx: records.forget(tx, [s.snapshot_id, failed.snapshot_id]))
    assert clc_store.read_sync(records.dead) == (
        [],
        [failed.snapshot_id],
    )  # an error one stays, for its owner


def test_reconcile_pending_snapshots(clc_store: Store) -> None:
    a, b, c = new(clc_store), new(clc_store), new(clc_store)
    reported = [
        SnapshotStatus(a.snapshot_id, "pending", chunks_done=3, chunks_total=256),
        SnapshotStatus(b.snapshot_id, "unknown"),
    ]
    out = reconcile_snapshots([a, b, c], reported)
    assert [s.snapshot_id for s in out.progress] == [a.snapshot_id]
    assert {s.snapshot_id for s in out.ask_again} == {b.snapshot_id, c.snapshot_id}
    out = reconcile_snapshots([a], [SnapshotStatus(a.snapshot_id, "error", reason="boom")])
    assert out.progress[0].state == "error" and not out.ask_again


def test_usage_log_follows_snapshots(clc_store: Store) -> None:
    """Created when recorded, deleted when DeleteSnapshot hides it or when it fails: once each."""
    kept, failed = new(clc_store, volume_size=3), new(clc_store)
    progress(clc_store, kept.snapshot_id, "completed", 256)
    progress(clc_store, failed.snapshot_id, "error", 2)
    clc_store.write_sync(lambda tx: records.begin_delete(tx, OWNER, kept.snapshot_id, ()))
    clc_store.write_sync(lambda tx: records.begin_delete(tx, OWNER, failed.snapshot_id, ()))
    logged = clc_store.read_sync(lambda tx: usage.events(tx, usage.SNAPSHOT, float("inf")))
    by_id: dict[str, list[tuple[str, int | None]]] = {}
    for e in logged:
        by_id.setdefault(e.resource_id, []).append((e.event, e.size_gib))
    assert by_id[kept.snapshot_id] == [("created", 3), ("deleted", 3)]
    assert [ev for ev, _ in by_id[failed.snapshot_id]] == ["created", "deleted"]
