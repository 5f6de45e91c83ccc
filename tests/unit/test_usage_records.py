"""The usage log (usage/records.py) as the resources write it, in their own transactions, on a real store
with the CLC's schema: each change once, with who, where and how big."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from euca.core.store import Store, Tx
from euca.protocol import cluster
from euca.roles.clc import schema
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.instances import records as instances
from euca.roles.clc.usage import records as usage
from euca.roles.clc.volumes import records as volumes
from helpers.clc_records import new_reservation

ACCOUNT = "123456789012"


@pytest.fixture
def clock() -> Iterator[list[float]]:
    """The usage log's clock, set by the test (now[0])."""
    now = [1000.0]
    usage.set_clock(lambda: now[0])
    yield now
    usage.set_clock(__import__("time").time)


def _log(
    store: Store, kind: str
) -> list[tuple[float, str, str, str | None, str | None, str | None, int | None]]:
    return [
        (e.at, e.resource_id, e.event, e.user, e.zone, e.detail, e.size_gib)
        for e in store.read_sync(lambda tx: usage.events(tx, kind, 1e12))
    ]


def _launch(tx: Tx) -> list[str]:
    new = new_reservation(ACCOUNT, requester=f"arn:aws:iam::{ACCOUNT}:user/alice")
    return instances.record_launch(tx, new, 0.0)[1]


def _status(instance_id: str, state: str) -> cluster.InstanceStatus:
    return cluster.InstanceStatus(instance_id, "r-1", ACCOUNT, state, "running", "n1", "m1.small", "emi-1")  # type: ignore[arg-type]


def test_instances_log_each_state_change_once(clc_store: Store, clock: list[float]) -> None:
    ids = clc_store.write_sync(_launch)
    clock[0] = 1100.0
    clc_store.write_sync(lambda tx: instances.apply_statuses(tx, [_status(i, "running") for i in ids], 0.0))
    clc_store.write_sync(lambda tx: instances.apply_statuses(tx, [_status(ids[0], "running")], 0.0))  # again
    clock[0] = 1200.0
    clc_store.write_sync(
        lambda tx: instances.mark_user_terminated(tx, instances.owned(tx, ACCOUNT, ids[:1])[0], "", 0.0)
    )
    clock[0] = 1300.0
    clc_store.write_sync(lambda tx: instances.mark_terminated(tx, ids, "Server.InternalError", "gone", 0.0))
    a, b = ids
    assert _log(clc_store, "instance") == [
        (1000.0, a, "pending", "alice", "z1", "m1.small", None),
        (1000.0, b, "pending", "alice", "z1", "m1.small", None),
        (1100.0, a, "running", "alice", "z1", "m1.small", None),
        (1100.0, b, "running", "alice", "z1", "m1.small", None),
        (1200.0, a, "shutting-down", "alice", "z1", "m1.small", None),
        (1300.0, a, "terminated", "alice", "z1", "m1.small", None),
        (1300.0, b, "terminated", "alice", "z1", "m1.small", None),
    ]


def test_a_rolled_back_change_takes_its_event_with_it(clc_store: Store, clock: list[float]) -> None:
    def launch_then_fail(tx: Tx) -> None:
        _launch(tx)
        raise RuntimeError("placement failed")

    with pytest.raises(RuntimeError):
        clc_store.write_sync(launch_then_fail)
    assert _log(clc_store, "instance") == []


def test_volumes_log_created_resized_deleted(clc_store: Store, clock: list[float]) -> None:
    new = volumes.NewVolume(ACCOUNT, "z1", "c1", 10, "standard", None, None, [])
    volume, _ = clc_store.write_sync(lambda tx: volumes.insert_volume(tx, new))
    vid = volume.volume_id
    clc_store.write_sync(lambda tx: volumes.set_state(tx, vid, "available"))
    clock[0] = 2000.0
    clc_store.write_sync(lambda tx: volumes.begin_modification(tx, ACCOUNT, vid, 20, None, None))
    clc_store.write_sync(lambda tx: volumes.end_modification(tx, vid, ok=True))
    clock[0] = 3000.0
    clc_store.write_sync(lambda tx: volumes.begin_delete(tx, ACCOUNT, vid))
    clock[0] = 3500.0
    clc_store.write_sync(lambda tx: volumes.forget(tx, vid))  # the SC confirmed: already logged
    assert _log(clc_store, "volume") == [
        (1000.0, vid, "created", None, "z1", None, 10),
        (2000.0, vid, "resized", None, "z1", None, 20),
        (3000.0, vid, "deleted", None, "z1", None, 20),
    ]


def test_snapshot_functions_for_the_snapshot_records(clc_store: Store, clock: list[float]) -> None:
    clc_store.write_sync(lambda tx: usage.snapshot_created(tx, "snap-00000001", ACCOUNT, "z1", 8, "alice"))
    clock[0] = 1500.0
    clc_store.write_sync(lambda tx: usage.snapshot_deleted(tx, "snap-00000001"))
    clc_store.write_sync(lambda tx: usage.snapshot_deleted(tx, "snap-00000001"))
    assert _log(clc_store, "snapshot") == [
        (1000.0, "snap-00000001", "created", "alice", "z1", None, 8),
        (1500.0, "snap-00000001", "deleted", "alice", "z1", None, 8),
    ]


def test_elastic_ips_log_allocation_and_association(clc_store: Store, clock: list[float]) -> None:
    clc_store.write_sync(lambda tx: addresses.add_to_pool(tx, ["10.9.0.1", "10.9.0.2"]))
    eip = clc_store.write_sync(lambda tx: addresses.allocate(tx, ACCOUNT, "standard", "10.9.0.1", []))
    clock[0] = 1100.0
    clc_store.write_sync(lambda tx: addresses.associate(tx, eip, "i-00000001", False))
    clock[0] = 1200.0
    clc_store.write_sync(lambda tx: addresses.release_instances(tx, ["i-00000001"]))  # its instance ended
    clock[0] = 1300.0
    eip = clc_store.read_sync(
        lambda tx: addresses.find_owned(tx, ACCOUNT, public_ip="10.9.0.1", allocation_id=None)
    )
    clc_store.write_sync(lambda tx: addresses.associate(tx, eip, "i-00000002", False))
    clock[0] = 1400.0
    eip = clc_store.read_sync(
        lambda tx: addresses.find_owned(tx, ACCOUNT, public_ip="10.9.0.1", allocation_id=None)
    )
    clc_store.write_sync(lambda tx: addresses.disassociate(tx, eip))
    eip = clc_store.read_sync(
        lambda tx: addresses.find_owned(tx, ACCOUNT, public_ip="10.9.0.1", allocation_id=None)
    )
    clc_store.write_sync(lambda tx: addresses.release(tx, eip))
    # A system address given to an instance at launch is no elastic IP: not logged.
    clc_store.write_sync(lambda tx: addresses.assign_system(tx, ACCOUNT, ["i-00000003"]))
    assert [(at, ip, event, detail) for at, ip, event, _, _, detail, _ in _log(clc_store, "elastic-ip")] == [
        (1000.0, "10.9.0.1", "allocated", None),
        (1100.0, "10.9.0.1", "associated", "i-00000001"),
        (1200.0, "10.9.0.1", "disassociated", None),
        (1300.0, "10.9.0.1", "associated", "i-00000002"),
        (1400.0, "10.9.0.1", "disassociated", None),
        (1400.0, "10.9.0.1", "released", None),
    ]


def test_user_of_an_arn() -> None:
    assert usage.user_of("arn:aws:iam::123456789012:user/alice") == "alice"
    assert usage.user_of("arn:aws:iam::123456789012:user/dev/bob") == "bob"
    assert usage.user_of("arn:aws:iam::123456789012:root") == "root"


def test_a_cloud_older_than_the_log_has_what_costs_logged_at_the_upgrade(
    tmp_path: Any, clock: list[float]
) -> None:
    store = Store(tmp_path / "old.db")
    for migration in schema.MIGRATIONS:
        if migration is not schema.USAGE:
            schema.apply(store, migration)

    def old_cloud(tx: Tx) -> None:
        tx.execute(
            "INSERT INTO clc_reservations(reservation_id, account_id, requester, request_digest, groups, group_ids, "
            "created) VALUES('r-1', ?, ?, 'd', '[]', '[]', 0)",
            (ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/alice"),
        )
        for instance_id, state in (("i-00000001", "running"), ("i-00000002", "terminated")):
            tx.execute(
                "INSERT INTO clc_instances(instance_id, reservation_id, account_id, launch_index, image_id, "
                "instance_type, zone, state, launch_time, last_seen) VALUES(?, 'r-1', ?, 0, 'emi-1', 'm1.small', "
                "'z1', ?, 0, 0)",
                (instance_id, ACCOUNT, state),
            )
        tx.execute(
            "INSERT INTO clc_volumes(volume_id, account_id, zone, cluster, size_gib, volume_type, state, created) "
            "VALUES('vol-00000001', ?, 'z1', 'c1', 7, 'standard', 'available', 0)",
            (ACCOUNT,),
        )
        addresses.add_to_pool(tx, ["10.9.0.1"])
        tx.execute(
            "UPDATE clc_addresses SET account_id=?, allocation_id='eipalloc-1', instance_id='i-00000001', "
            "association_id='eipassoc-1', auto=0 WHERE public_ip='10.9.0.1'",
            (ACCOUNT,),
        )

    store.write_sync(old_cloud)
    schema.migrate(store)
    assert _log(store, "instance") == [(1000.0, "i-00000001", "running", "alice", "z1", "m1.small", None)]
    assert _log(store, "volume") == [(1000.0, "vol-00000001", "created", None, "z1", None, 7)]
    assert [(ip, event, detail) for _, ip, event, _, _, detail, _ in _log(store, "elastic-ip")] == [
        ("10.9.0.1", "allocated", None),
        ("10.9.0.1", "associated", "i-00000001"),
    ]
    store.close()
