"""The sweep of object files no metadata refers to (euca/roles/walrus/sweep.py), and the locks that keep it
away from files whose commit is not over (euca/roles/walrus/storage.py, in flight)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from euca.core.store import Store, open_store
from euca.protocol.s3 import S3Error
from euca.roles.walrus import meta, sweep
from euca.roles.walrus import storage as storage_module
from euca.roles.walrus.meta import ObjectRow, PartRow, UploadRow
from euca.roles.walrus.service import WalrusService
from euca.roles.walrus.storage import Storage, locked_by_other


class Body:
    def __init__(self, data: bytes):
        self.chunks = [data]

    async def read(self, max_bytes: int = 0) -> bytes:
        return self.chunks.pop() if self.chunks else b""


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = Storage(tmp_path / "objects")
    s.prepare()
    return s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:state.db", tmp_path)
    s.migrate("walrus", meta.SCHEMA)
    yield s
    s.close()


async def _file(storage: Storage, data: bytes = b"x" * 100) -> str:
    written = await storage.write_stream(Body(data), None)
    assert written.storage_id is not None
    return written.storage_id


def _row(key: str, **fields: Any) -> ObjectRow:
    values: dict[str, Any] = {
        "key": key,
        "version_id": "",
        "size": 1,
        "etag": "e",
        "last_modified": time.time(),
        "storage_id": None,
        "owner_id": "o",
        "owner_name": "o",
    }
    values.update(fields)
    return ObjectRow(**values)


async def _refer(
    store: Store, *, objects: Sequence[str] = (), segments: Sequence[str] = (), part: str = ""
) -> None:
    def work(tx: Any) -> None:
        meta.insert_bucket(tx, meta.BucketRow("b", "o", "o", time.time()))
        for i, sid in enumerate(objects):
            meta.put_object(tx, "b", _row(f"k{i}", storage_id=sid))
        if segments:
            meta.put_object(tx, "b", _row("seg", segments=list(segments), parts=[1] * len(segments)))
        if part:
            meta.create_upload(tx, UploadRow("u1", "b", "up", time.time(), "o", "o", {}, {}))
            meta.put_part(tx, "b", "up", "u1", PartRow(1, 1, "e", part, None, time.time()))

    await store.write(work)


# -- locks on files in flight -----------------------------------------------------------------------------


async def test_a_new_file_is_locked_until_its_commit_is_over(storage: Storage) -> None:
    sid = await _file(storage)
    assert locked_by_other(storage.path(sid))
    assert storage.claim([sid])
    storage.release([sid])
    assert not locked_by_other(storage.path(sid))
    assert storage.in_flight() == 0


async def test_removing_a_new_file_releases_it(storage: Storage) -> None:
    sid = await _file(storage)
    await storage.remove([sid])
    assert storage.in_flight() == 0 and not os.path.exists(storage.path(sid))


async def test_a_file_left_uncommitted_too_long_is_given_up_and_its_commit_refused(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await _file(storage)
    monkeypatch.setattr(storage_module, "INFLIGHT_MAX", -1.0)
    new = await _file(storage)  # placing a file expires the old ones (this one too, at -1)
    assert not locked_by_other(storage.path(old))
    assert not storage.claim([old])
    monkeypatch.setattr(storage_module, "INFLIGHT_MAX", 600.0)
    newer = await _file(storage)
    assert storage.claim([newer]) and not storage.claim([new])


async def test_a_committing_file_is_never_given_up(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = await _file(storage)
    assert storage.claim([sid])
    monkeypatch.setattr(storage_module, "INFLIGHT_MAX", -1.0)
    await _file(storage)
    assert locked_by_other(storage.path(sid))


def test_start_up_leaves_a_temp_file_another_process_is_writing(storage: Storage) -> None:
    busy = storage.tmp / "busy"
    dead = storage.tmp / "dead"
    dead.write_bytes(b"left by a killed writer")
    fd = os.open(busy, os.O_WRONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert storage.prepare() == 1
        assert busy.exists() and not dead.exists()
    finally:
        os.close(fd)


# -- the sweep --------------------------------------------------------------------------------------------


async def test_the_sweep_removes_only_files_nothing_refers_to_and_no_writer_holds(
    storage: Storage, store: Store
) -> None:
    referenced, segment, part, orphan, in_flight = [await _file(storage, b"y" * n) for n in (1, 2, 3, 40, 5)]
    storage.release([referenced, segment, part, orphan])  # committed, or left by a dead process
    await _refer(store, objects=[referenced], segments=[segment], part=part)
    (storage.root / "ab").mkdir(exist_ok=True)
    (storage.root / "ab" / "notes.txt").write_text("not an object file")
    (storage.tmp / ("f" * 32)).write_bytes(b"a temp file")

    result = await sweep.sweep(storage, store)

    assert result == sweep.SweepResult(checked=5, in_flight=1, files=1, bytes=40)
    assert not os.path.exists(storage.path(orphan))
    for sid in (referenced, segment, part, in_flight):
        assert os.path.exists(storage.path(sid))
    assert (storage.root / "ab" / "notes.txt").exists() and (storage.tmp / ("f" * 32)).exists()
    assert await sweep.sweep(storage, store) == sweep.SweepResult(checked=4, in_flight=1)


async def test_a_file_committed_while_the_sweep_looks_is_kept(storage: Storage, store: Store) -> None:
    """The writer commits after the sweep's first read of the references and releases its lock before the
    sweep probes it: the second read sees the reference."""
    sid = await _file(storage)
    reads: list[int] = []

    class Committing:
        async def read(self, fn: Callable[[Any], set[str]]) -> set[str]:
            refs = await store.read(fn)
            if not reads:
                await _refer(store, objects=[sid])
                storage.release([sid])
            reads.append(len(refs))
            return refs

    result = await sweep.sweep(storage, Committing())  # type: ignore[arg-type]
    assert result is not None and result.files == 0
    assert reads == [0, 1]
    assert os.path.exists(storage.path(sid))


async def test_one_sweep_at_a_time(storage: Storage, store: Store) -> None:
    sid = await _file(storage)
    storage.release([sid])
    fd = os.open(storage.root / sweep.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert await sweep.sweep(storage, store) is None
        assert os.path.exists(storage.path(sid))
    finally:
        os.close(fd)
    result = await sweep.sweep(storage, store)
    assert result is not None and result.files == 1


# -- commits of new files ---------------------------------------------------------------------------------


async def test_a_commit_releases_its_files_and_a_late_one_is_refused(
    storage: Storage, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = WalrusService(store, None, storage, "eucalyptus")  # type: ignore[arg-type]
    sid = await _file(storage)
    await svc.commit(lambda tx: None, [sid], "b", "k")
    assert storage.in_flight() == 0 and not locked_by_other(storage.path(sid))

    monkeypatch.setattr(storage_module, "INFLIGHT_MAX", -1.0)
    late = await _file(storage)  # given up at once
    ran: list[bool] = []
    with pytest.raises(S3Error) as e:
        await svc.commit_part(lambda tx: ran.append(True), [late])
    assert e.value.code == "InternalError" and ran == []
    assert not os.path.exists(storage.path(late))


async def test_a_failed_commit_removes_its_files(storage: Storage, store: Store) -> None:
    svc = WalrusService(store, None, storage, "eucalyptus")  # type: ignore[arg-type]
    sid = await _file(storage)

    def fail(tx: Any) -> None:
        raise S3Error("NoSuchUpload", UploadId="u")

    with pytest.raises(S3Error):
        await svc.commit_part(fail, [sid])
    assert storage.in_flight() == 0 and not os.path.exists(storage.path(sid))
