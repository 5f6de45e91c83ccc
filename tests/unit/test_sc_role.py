"""The storage controller: its files backend, its volumes table and controller (recovery after a crash,
idempotent messages, capacity), how the CLC reconciles volumes with its reports, and the SC messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from euca.core.cluster_client import listener_role
from euca.core.store import Store
from euca.protocol import cluster as c
from euca.protocol.cluster import ClusterFault, VolumeStatus
from euca.roles.clc.volumes.reconcile import reconcile_volumes
from euca.roles.clc.volumes.records import Modification, VolumeRecord
from euca.roles.sc import volumes
from euca.roles.sc.backend import GIB, BackendError
from euca.roles.sc.controller import StorageController
from euca.roles.sc.files import FileBackend

VOL = "vol-0123abcd"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    volumes.migrate(s)
    yield s
    s.close()


# -- the files backend -----------------------------------------------------------------------------------


def test_files_backend_makes_sparse_volumes_idempotently(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "vols")
    backend.create(VOL, 3)
    path = backend.path(VOL)
    assert path.stat().st_size == 3 * GIB
    assert path.stat().st_blocks * 512 < GIB  # sparse
    backend.create(VOL, 3)  # again: nothing to do
    with pytest.raises(BackendError):
        backend.create(VOL, 4)
    assert backend.size_gb(VOL) == 3
    backend.grow(VOL, 5)
    assert backend.size_gb(VOL) == 5
    with pytest.raises(BackendError):
        backend.grow(VOL, 1)
    export = backend.export(VOL)
    assert export.kind == "file" and export.path == str(path)
    backend.delete(VOL)
    backend.delete(VOL)  # again: nothing to do
    assert backend.size_gb(VOL) is None
    assert backend.capacity_gb() > 0


@pytest.mark.parametrize("bad", ["../etc/passwd", "vol-XYZ", "vol-123", "snap-0123abcd", ""])
def test_files_backend_refuses_ids_that_are_not_volume_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BackendError):
        FileBackend(tmp_path).create(bad, 1)


def test_files_backend_replaces_a_stale_temporary_file(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    (tmp_path / f"{VOL}.raw.tmp").write_bytes(b"half")
    backend.create(VOL, 1)
    assert not (tmp_path / f"{VOL}.raw.tmp").exists()
    assert backend.size_gb(VOL) == 1


# -- the controller --------------------------------------------------------------------------------------


async def test_create_describe_delete(store: Store, tmp_path: Path) -> None:
    sc = StorageController(store, FileBackend(tmp_path / "v"), capacity_gb=10)
    made = await sc.create_volume(c.CreateVolume(VOL, 2))
    assert made == VolumeStatus(VOL, "available", 2)
    assert await sc.create_volume(c.CreateVolume(VOL, 2)) == made  # a resend
    with pytest.raises(ClusterFault) as e:
        await sc.create_volume(c.CreateVolume(VOL, 3))
    assert e.value.code == "IdempotentParameterMismatch"
    listed = await sc.describe_volumes(c.DescribeVolumes())
    assert listed.volumes == [made] and listed.allocated_gb == 2 and listed.capacity_gb == 10
    assert listed.backend == "files"
    asked = await sc.describe_volumes(c.DescribeVolumes(["vol-99999999"]))
    assert asked.volumes == [VolumeStatus("vol-99999999", "deleted")]
    assert await sc.delete_volume(c.DeleteVolume(VOL)) == VolumeStatus(VOL, "deleted")
    assert await sc.delete_volume(c.DeleteVolume(VOL)) == VolumeStatus(VOL, "deleted")
    assert (await sc.describe_volumes(c.DescribeVolumes())).volumes == []
    assert sc._locks == {}  # no lock kept per volume once nothing waits on it


async def test_capacity_is_enforced(store: Store, tmp_path: Path) -> None:
    sc = StorageController(store, FileBackend(tmp_path / "v"), capacity_gb=3)
    await sc.create_volume(c.CreateVolume(VOL, 2))
    with pytest.raises(ClusterFault) as e:
        await sc.create_volume(c.CreateVolume("vol-0123abce", 2))
    assert e.value.code == "InsufficientVolumeCapacity"
    with pytest.raises(ClusterFault) as e:
        await sc.create_volume(c.CreateVolume("vol-0123abce", 0))
    assert e.value.code == "InvalidParameterValue"


async def test_recovery_finishes_what_a_crash_interrupted(store: Store, tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "v")
    backend.create("vol-0000dead", 1)
    # As a crash leaves them: one volume recorded creating (no file yet), one recorded deleting.
    await store.write(lambda tx: volumes.begin_create(tx, VOL, 1, 0))
    await store.write(lambda tx: volumes.begin_create(tx, "vol-0000dead", 1, 0))
    await store.write(lambda tx: volumes.set_state(tx, "vol-0000dead", "deleting"))
    sc = StorageController(store, backend)
    await sc.recover()
    listed = (await sc.describe_volumes(c.DescribeVolumes())).volumes
    assert listed == [VolumeStatus(VOL, "available", 1)]
    assert backend.size_gb(VOL) == 1 and backend.size_gb("vol-0000dead") is None


async def test_grow(store: Store, tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "v")
    sc = StorageController(store, backend, capacity_gb=10)
    await sc.create_volume(c.CreateVolume(VOL, 2))
    assert await sc.grow_volume(c.GrowVolume(VOL, 5)) == VolumeStatus(VOL, "available", 5)
    assert await sc.grow_volume(c.GrowVolume(VOL, 5)) == VolumeStatus(VOL, "available", 5)  # a resend
    assert backend.size_gb(VOL) == 5
    for size, code in ((4, "InvalidParameterValue"), (11, "InsufficientVolumeCapacity")):
        with pytest.raises(ClusterFault) as e:
            await sc.grow_volume(c.GrowVolume(VOL, size))
        assert e.value.code == code
    with pytest.raises(ClusterFault) as e:
        await sc.grow_volume(c.GrowVolume("vol-99999999", 5))
    assert e.value.code == "InvalidVolume.NotFound"
    # a crash after the backend grew and before the row followed: the resend records it
    backend.grow(VOL, 7)
    assert await sc.grow_volume(c.GrowVolume(VOL, 7)) == VolumeStatus(VOL, "available", 7)


# -- the CLC's reconciliation ----------------------------------------------------------------------------


def _record(volume_id: str, state: str, size: int = 1, target: int | None = None) -> VolumeRecord:
    mod = None
    if target is not None:
        mod = Modification("modifying", None, size, target, "standard", "standard", None, None, 0.0, None)
    return VolumeRecord(volume_id, "a", "z", "z", size, "standard", None, None, state, None, 0.0, {}, mod)


def test_reconcile_volumes() -> None:
    known = [
        _record("vol-00000001", "creating"),  # SC made it
        _record("vol-00000002", "creating", 4),  # SC never heard of it: ask again
        _record("vol-00000003", "deleting"),  # SC has it gone
        _record("vol-00000004", "deleting"),  # SC still has it: ask again
        _record("vol-00000005", "available"),  # SC lost it
        _record("vol-00000006", "available"),  # as it should be
        _record("vol-00000007", "creating"),  # SC still making it
        _record("vol-00000008", "available", 1, target=4),  # SC grew it
        _record("vol-00000009", "available", 1, target=4),  # SC did not: ask again
    ]
    reported = [
        VolumeStatus("vol-00000001", "available", 1),
        VolumeStatus("vol-00000004", "available", 1),
        VolumeStatus("vol-00000006", "available", 1),
        VolumeStatus("vol-00000007", "creating", 1),
        VolumeStatus("vol-00000008", "available", 4),
        VolumeStatus("vol-00000009", "available", 1),
        VolumeStatus("vol-00000003", "deleted"),
        VolumeStatus("vol-000000ff", "available", 1),  # not the CLC's
    ]
    r = reconcile_volumes(known, reported)
    assert r.updates == [
        ("vol-00000001", "available", None),
        ("vol-00000005", "error", "the storage controller no longer has this volume"),
    ]
    assert r.create_again == [("vol-00000002", 4)]
    assert r.forget == ["vol-00000003"]
    assert r.delete_again == ["vol-00000004"]
    assert r.unknown == ["vol-000000ff"]
    assert r.grown == ["vol-00000008"]
    assert r.grow_again == [("vol-00000009", 4)]


# -- the messages ----------------------------------------------------------------------------------------


def test_sc_messages_go_to_the_sc_listener_and_round_trip() -> None:
    for message in (
        c.CreateVolume(VOL, 1),
        c.DeleteVolume(VOL),
        c.GrowVolume(VOL, 2),
        c.DescribeVolumes([VOL]),
    ):
        assert listener_role(type(message)) == "sc"
        path, body = c.encode_request(message)
        assert c.decode_request(path, body) == message
    reply = c.VolumesReply(
        [VolumeStatus(VOL, "available", 1)], capacity_gb=5, allocated_gb=1, backend="files"
    )
    assert c.decode_reply(c.DescribeVolumes, 200, c.encode_reply(reply)) == reply
    assert c.ALLOWED_CALLERS["sc"] == frozenset({"clc", "nc"})


async def test_only_the_clc_makes_or_removes_volumes(tmp_path: Path) -> None:
    from euca.core.http import Peer
    from euca.roles.sc import _from_clc

    calls: list[object] = []

    async def handler(message: object) -> VolumeStatus:
        calls.append(message)
        return VolumeStatus(VOL, "deleted")

    wrapped = _from_clc(handler)
    with pytest.raises(ClusterFault) as e:
        await wrapped(c.DeleteVolume(VOL), Peer("nc", "node1"))
    assert e.value.code == "Unauthorized" and calls == []
    assert await wrapped(c.DeleteVolume(VOL), Peer("clc", "clc")) == VolumeStatus(VOL, "deleted")
