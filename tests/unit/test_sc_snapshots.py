"""The SC's snapshot service on real sparse files, against an in-memory S3 (httpx.MockTransport): what an upload
sends (holes and zero chunks never, unchanged chunks not again), its manifest and progress, a restore, a
copy, the sweep, and the recovery of uploads a crash cut short."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
import trio

from euca.core.store import Store
from euca.protocol import cluster as c
from euca.protocol import snapshot_manifest as sm
from euca.roles.sc import volumes
from euca.roles.sc.backend import GIB
from euca.roles.sc.files import FileBackend
from euca.roles.sc.snapshots import SnapshotService

CHUNK = sm.CHUNK_SIZE
STORE = c.SnapshotStore("http://walrus.test/services/objectstorage", "snaps", "AKID", "secret", "eucalyptus")
VOL = "vol-0123abcd"


class FakeS3:
    """Path-style S3 for one bucket: PUT, GET, HEAD, DELETE, ListObjectsV2 (one page)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.bucket_made = False
        self.puts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        path = unquote(url.path).removeprefix("/services/objectstorage/snaps")
        key = path.lstrip("/")
        if request.method == "PUT" and not key:
            self.bucket_made = True
            return httpx.Response(200)
        if not key and request.method == "HEAD":
            return httpx.Response(200 if self.bucket_made else 404)
        if not key and request.method == "GET":
            prefix = parse_qs(url.query).get("prefix", [""])[0]
            items = "".join(
                f"<Contents><Key>{k}</Key><Size>{len(v)}</Size></Contents>"
                for k, v in sorted(self.objects.items())
                if k.startswith(prefix)
            )
            return httpx.Response(200, content=f"<ListBucketResult>{items}</ListBucketResult>".encode())
        if request.method == "PUT":
            body = request.read()
            assert request.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
            self.objects[key] = body
            self.puts.append(key)
            return httpx.Response(200)
        if request.method == "GET":
            if key not in self.objects:
                return httpx.Response(404, content=b"<Error><Code>NoSuchKey</Code></Error>")
            return httpx.Response(200, content=self.objects[key])
        if request.method == "DELETE":
            self.objects.pop(key, None)
            return httpx.Response(204)
        return httpx.Response(405)

    def chunks(self) -> set[str]:
        return {k for k in self.objects if k.startswith("chunks/")}


@pytest.fixture
def s3() -> FakeS3:
    return FakeS3()


def service(tmp_path: Path, s3: FakeS3) -> tuple[SnapshotService, FileBackend, Store]:
    store = Store(tmp_path / "sc.db")
    volumes.migrate(store)
    backend = FileBackend(tmp_path / "volumes")
    svc = SnapshotService(
        store, backend, http=lambda: httpx.AsyncClient(transport=httpx.MockTransport(s3)), in_flight=3
    )
    return svc, backend, store


def make_volume(store: Store, backend: FileBackend, volume_id: str = VOL) -> Path:
    store.write_sync(lambda tx: volumes.begin_create(tx, volume_id, 1, 0))
    backend.create(volume_id, 1)
    store.write_sync(lambda tx: volumes.set_state(tx, volume_id, "available"))
    return backend.path(volume_id)


def write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


async def finished(svc: SnapshotService, snapshot_id: str) -> c.SnapshotStatus:
    while True:
        (status,) = (await svc.describe_snapshot_tasks(c.DescribeSnapshotTasks([snapshot_id]))).snapshots
        if status.state != "pending":
            return status
        await trio.sleep(0.01)


def run_with(svc: SnapshotService, body: Any) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.run)
            await body()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_full_then_incremental_then_restore(tmp_path: Path, s3: FakeS3) -> None:
    svc, backend, store = service(tmp_path, s3)
    path = make_volume(store, backend)
    a, b = os.urandom(CHUNK), os.urandom(100)
    write(path, 0, a)  # chunk 0
    write(path, 5 * CHUNK, bytes(CHUNK))  # chunk 5: written, but zeros
    write(path, 200 * CHUNK + 7, b)  # chunk 200
    write(path, 201 * CHUNK, a)  # chunk 201: the same bytes as chunk 0

    async def body() -> None:
        first = await svc.create_snapshot(c.CreateSnapshot("snap-00000001", VOL, STORE))
        assert first.state == "pending"
        done = await finished(svc, "snap-00000001")
        assert done.state == "completed" and done.chunks_done == done.chunks_total == 256
        assert done.bytes_uploaded == 2 * CHUNK  # chunk 0 (= 201) and 200; never 5 nor the holes
        manifest = sm.decode(s3.objects[sm.manifest_key("snap-00000001")])
        assert [i for i, _ in manifest.chunks] == [0, 200, 201]
        assert manifest.size_bytes == GIB and manifest.parent is None
        assert len(s3.chunks()) == 2

        write(path, 200 * CHUNK, os.urandom(10))  # chunk 200 changes
        reader = backend.open_chunks(VOL)
        changed = sm.chunk_key(hashlib.sha256(reader.read_chunk(200, CHUNK)).hexdigest())
        reader.close()
        s3.puts.clear()
        await svc.create_snapshot(c.CreateSnapshot("snap-00000002", VOL, STORE, parent="snap-00000001"))
        done = await finished(svc, "snap-00000002")
        assert done.bytes_uploaded == CHUNK
        assert [k for k in s3.puts if k.startswith("chunks/")] == [changed]
        assert s3.puts[-1] == sm.manifest_key("snap-00000002")  # the manifest last

        restored = await svc.restore_volume(c.RestoreVolume("vol-00000002", 2, "snap-00000002", STORE))
        assert restored.state == "creating"
        while (v := await store.read(lambda tx: volumes.get(tx, "vol-00000002"))) and v.state == "creating":
            await trio.sleep(0.01)
        assert v is not None and v.state == "available"

    run_with(svc, body)
    out = backend.path("vol-00000002")
    assert out.stat().st_size == 2 * GIB
    with open(path, "rb") as src, open(out, "rb") as dst:
        assert hashlib.sha256(src.read()).digest() == hashlib.sha256(dst.read(GIB)).digest()
        assert dst.read(CHUNK) == bytes(CHUNK)
    assert os.stat(out).st_blocks * 512 <= 4 * CHUNK  # only the chunks with data were written


def test_copy_and_sweep(tmp_path: Path, s3: FakeS3) -> None:
    svc, backend, store = service(tmp_path, s3)
    path = make_volume(store, backend)
    write(path, 0, os.urandom(CHUNK))

    async def body() -> None:
        await svc.create_snapshot(c.CreateSnapshot("snap-00000001", VOL, STORE))
        await finished(svc, "snap-00000001")
        write(path, 0, os.urandom(CHUNK))
        await svc.create_snapshot(c.CreateSnapshot("snap-00000002", VOL, STORE, parent="snap-00000001"))
        await finished(svc, "snap-00000002")
        copied = await svc.copy_snapshot(c.CopySnapshot("snap-00000001", "snap-00000003", STORE))
        assert copied.state == "completed" and copied.volume_id == VOL
        assert len(s3.chunks()) == 2
        s3.objects["chunks/" + "f" * 64] = b"left by a killed upload"
        swept = await svc.sweep(c.SweepSnapshots(STORE, ["snap-00000001"]))
        assert (swept.manifests_deleted, swept.chunks_deleted) == (1, 1)  # the copy keeps the first's chunk
        assert len(s3.chunks()) == 2
        swept = await svc.sweep(c.SweepSnapshots(STORE, ["snap-00000003"]))
        assert swept.chunks_deleted == 1 and len(s3.chunks()) == 1
        with pytest.raises(c.ClusterFault) as e:
            await svc.copy_snapshot(c.CopySnapshot("snap-00000009", "snap-0000000a", STORE))
        assert e.value.code == "InvalidSnapshot.NotFound"

    run_with(svc, body)


def test_refusals_and_a_missing_chunk(tmp_path: Path, s3: FakeS3) -> None:
    svc, backend, store = service(tmp_path, s3)
    path = make_volume(store, backend)
    write(path, 0, os.urandom(CHUNK))

    async def body() -> None:
        for message, code in [
            (c.CreateSnapshot("snap-00000001", "vol-99999999", STORE), "InvalidVolume.NotFound"),
            (c.CreateSnapshot("snap-bad", VOL, STORE), "InvalidParameterValue"),
            (c.CreateSnapshot("snap-00000001", "../etc", STORE), "InvalidParameterValue"),
        ]:
            with pytest.raises(c.ClusterFault) as e:
                await svc.create_snapshot(message)
            assert e.value.code == code
        await svc.create_snapshot(c.CreateSnapshot("snap-00000001", VOL, STORE))
        await finished(svc, "snap-00000001")
        again = await svc.create_snapshot(c.CreateSnapshot("snap-00000001", VOL, STORE))
        assert again.state == "completed"  # idempotent
        for key in list(s3.chunks()):
            del s3.objects[key]
        await svc.restore_volume(c.RestoreVolume("vol-00000002", 1, "snap-00000001", STORE))
        while (v := await store.read(lambda tx: volumes.get(tx, "vol-00000002"))) and v.state == "creating":
            await trio.sleep(0.01)
        assert v is not None and v.state == "error" and re.search("missing", v.reason or "")

    run_with(svc, body)


def test_recovery_ends_what_a_crash_cut_short(tmp_path: Path, s3: FakeS3) -> None:
    svc, backend, store = service(tmp_path, s3)
    make_volume(store, backend)
    store.write_sync(
        lambda tx: tx.execute(
            "INSERT INTO sc_snapshots(snapshot_id, volume_id, state, created, changed) "
            "VALUES('snap-00000001', ?, 'pending', 0, 0)",
            (VOL,),
        )
    )
    store.write_sync(lambda tx: volumes.begin_create(tx, "vol-00000002", 1, 0))
    store.write_sync(
        lambda tx: tx.execute(
            "INSERT INTO sc_restores(volume_id, snapshot_id, created) VALUES('vol-00000002', 'snap-00000001', 0)"
        )
    )

    async def body() -> None:
        (status,) = (await svc.describe_snapshot_tasks(c.DescribeSnapshotTasks(["snap-00000001"]))).snapshots
        assert status.state == "error" and "restart" in (status.reason or "")
        v = await store.read(lambda tx: volumes.get(tx, "vol-00000002"))
        assert v is not None and v.state == "error"
        (unknown,) = (await svc.describe_snapshot_tasks(c.DescribeSnapshotTasks(["snap-0000000f"]))).snapshots
        assert unknown.state == "unknown"

    run_with(svc, body)


def test_a_volume_deleted_while_it_uploads_still_snapshots_whole(tmp_path: Path, s3: FakeS3) -> None:
    svc, backend, store = service(tmp_path, s3)
    path = make_volume(store, backend)
    data = os.urandom(3 * CHUNK)
    write(path, 10 * CHUNK, data)

    async def body() -> None:
        await svc.create_snapshot(c.CreateSnapshot("snap-00000001", VOL, STORE))
        backend.delete(VOL)  # DeleteVolume right after CreateSnapshot answered
        done = await finished(svc, "snap-00000001")
        assert done.state == "completed" and done.bytes_uploaded == 3 * CHUNK
        manifest = sm.decode(s3.objects[sm.manifest_key("snap-00000001")])
        assert [i for i, _ in manifest.chunks] == [10, 11, 12]
        with pytest.raises(c.ClusterFault) as e:
            await svc.create_snapshot(c.CreateSnapshot("snap-00000002", "vol-00000009", STORE))
        assert e.value.code == "InvalidVolume.NotFound"

    run_with(svc, body)
