"""The SC's snapshots: volumes streamed into Walrus as chunks, and volumes made from them (issue 10).

A snapshot (CreateSnapshot): the volume's chunks that hold data (the backend skips holes) are read one at a
time in a worker thread and hashed; an all-zero chunk is left out (it restores as zeros); a chunk whose
digest the parent snapshot (the volume's last completed one, named by the CLC) has at the same offset is
not uploaded (incremental); the others go to Walrus as `chunks/<sha256>`, at most UPLOADS_IN_FLIGHT at a
time, so at most that many chunks (plus the one being read) are in memory, whatever the volume's size. The
manifest goes last; only then is the snapshot `completed` here. Progress (chunks done of the volume's
chunks, bytes uploaded) is kept in memory and answered to the CLC's polls (DescribeSnapshotTasks); the
state is a row in `sc_snapshots` written when the upload starts and ends.

A restore (RestoreVolume): the volume is recorded `creating` (sc_volumes, as any CreateVolume) with a row
in `sc_restores` saying where from; the backend makes it empty, then the manifest's chunks are fetched
(UPLOADS_IN_FLIGHT at a time), their SHA-256 checked, and written at their offsets; flushed, it becomes
`available`.

After a crash or kill: an upload still `pending` ends `error` at start (its manifest was never written, or
was written just before the crash: then it is never used, and the CLC's next sweep deletes it; the chunks
it left are swept too), and a restore still in flight ends `error` (its volume holds part of the snapshot).
The SC keeps no Walrus credentials: they arrive with each message (cluster.SnapshotStore), so after a
restart there is nothing to resume with; the user retries.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import trio

from euca.core.s3client import S3ClientError
from euca.core.store import Store, Tx
from euca.protocol import cluster as c
from euca.protocol import snapshot_manifest as sm
from euca.protocol.cluster import ClusterFault
from euca.roles.sc import volumes
from euca.roles.sc.backend import GIB, BackendError, ChunkReader, VolumeBackend
from euca.roles.sc.walrus import TIMEOUT, SnapshotBucket

log = logging.getLogger("euca.sc")

UPLOADS_IN_FLIGHT = 8  # chunks in flight: 8 x 4 MiB in memory at most (1.3x the speed of 4 here)
CHUNK = sm.CHUNK_SIZE
ZEROS = bytes(CHUNK)

MIGRATION = [
    """
    CREATE TABLE sc_snapshots (
        snapshot_id TEXT PRIMARY KEY,
        volume_id TEXT NOT NULL,
        parent TEXT,
        -- pending | completed | error
        state TEXT NOT NULL,
        reason TEXT,
        size_gb INTEGER NOT NULL DEFAULT 0,
        chunks_total INTEGER NOT NULL DEFAULT 0,
        bytes_uploaded INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        changed REAL NOT NULL
    );
    CREATE TABLE sc_restores (
        volume_id TEXT PRIMARY KEY,
        snapshot_id TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
]


def migrate(store: Store) -> None:
    store.migrate("sc_snapshots", MIGRATION)


@dataclass
class Progress:
    chunks_total: int = 0
    chunks_done: int = 0
    bytes_uploaded: int = 0


def _status(row: sqlite3.Row, progress: Progress | None) -> c.SnapshotStatus:
    done = row["chunks_total"] if row["state"] == "completed" else (progress.chunks_done if progress else 0)
    return c.SnapshotStatus(
        snapshot_id=row["snapshot_id"],
        state=row["state"],
        volume_id=row["volume_id"],
        size_gb=row["size_gb"],
        chunks_done=done,
        chunks_total=progress.chunks_total if progress and row["state"] == "pending" else row["chunks_total"],
        bytes_uploaded=progress.bytes_uploaded if progress else row["bytes_uploaded"],
        reason=row["reason"],
    )


def _get(tx: Tx, snapshot_id: str) -> sqlite3.Row | None:
    return tx.one("SELECT * FROM sc_snapshots WHERE snapshot_id=?", (snapshot_id,))


def _begin(tx: Tx, msg: c.CreateSnapshot | c.CopySnapshot, volume_id: str, state: str) -> sqlite3.Row | None:
    """Record a snapshot task; the existing row when there is one (a resend)."""
    row = _get(tx, msg.snapshot_id)
    if row is not None:
        return row
    now = time.time()
    parent = msg.parent if isinstance(msg, c.CreateSnapshot) else msg.source_id
    tx.execute(
        "INSERT INTO sc_snapshots(snapshot_id, volume_id, parent, state, created, changed) VALUES(?,?,?,?,?,?)",
        (msg.snapshot_id, volume_id, parent, state, now, now),
    )
    return None


def _end(
    tx: Tx,
    snapshot_id: str,
    state: str,
    *,
    reason: str | None = None,
    size_gb: int = 0,
    chunks_total: int = 0,
    bytes_uploaded: int = 0,
) -> None:
    tx.execute(
        "UPDATE sc_snapshots SET state=?, reason=?, size_gb=?, chunks_total=?, bytes_uploaded=?, changed=? "
        "WHERE snapshot_id=?",
        (state, reason, size_gb, chunks_total, bytes_uploaded, time.time(), snapshot_id),
    )


def _interrupted(tx: Tx) -> tuple[list[str], list[str]]:
    """At start: uploads and restores a stop or kill cut short, marked `error`."""
    why = "interrupted by a restart of the storage controller"
    uploads = [r["snapshot_id"] for r in tx.all("SELECT snapshot_id FROM sc_snapshots WHERE state='pending'")]
    for snapshot_id in uploads:
        _end(tx, snapshot_id, "error", reason=why)
    restores = [r["volume_id"] for r in tx.all("SELECT volume_id FROM sc_restores")]
    for volume_id in restores:
        found = volumes.get(tx, volume_id)
        if found is not None and found.state == "creating":
            volumes.set_state(tx, volume_id, "error", f"restore from a snapshot {why}")
    tx.execute("DELETE FROM sc_restores")
    return uploads, restores


def _check_snapshot_id(snapshot_id: str) -> None:
    if not sm.SNAPSHOT_ID_RE.match(snapshot_id):
        raise ClusterFault("InvalidParameterValue", f"invalid snapshot id {snapshot_id!r}", 400)


def _read_chunk(reader: ChunkReader, index: int) -> tuple[bytes, str | None]:
    """A chunk and its SHA-256 (None: all zeros, left out of the manifest). In a worker thread: hashlib
    lets go of the GIL on large buffers."""
    data = reader.read_chunk(index, CHUNK)
    if data == ZEROS[: len(data)]:
        return data, None
    return data, hashlib.sha256(data).hexdigest()


class SnapshotService:
    def __init__(
        self,
        store: Store,
        backend: VolumeBackend,
        *,
        capacity_gb: Callable[[], int] | None = None,
        http: Callable[[], httpx.AsyncClient] | None = None,
        in_flight: int = UPLOADS_IN_FLIGHT,
    ):
        self.store = store
        self.backend = backend
        self.capacity_gb = capacity_gb or backend.capacity_gb
        self.in_flight = in_flight
        self._http = http or (lambda: httpx.AsyncClient(timeout=TIMEOUT))
        self._progress: dict[str, Progress] = {}
        self._restoring: set[str] = set()
        self._nursery: trio.Nursery | None = None
        migrate(store)

    def handlers(self) -> dict[type, Callable[[Any], Awaitable[msgspec.Struct]]]:
        return {
            c.CreateSnapshot: self.create_snapshot,
            c.DescribeSnapshotTasks: self.describe_snapshot_tasks,
            c.RestoreVolume: self.restore_volume,
            c.CopySnapshot: self.copy_snapshot,
            c.SweepSnapshots: self.sweep,
        }

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, then hold the nursery uploads and restores run in."""
        uploads, restores = await self.store.write(_interrupted, durable=True)
        for snapshot_id in uploads:
            log.warning("snapshot upload interrupted id=%s: error", snapshot_id)
        for volume_id in restores:
            log.warning("volume restore interrupted id=%s: error", volume_id)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is None:
            raise ClusterFault("Unavailable", "the storage controller is starting", 503)
        self._nursery.start_soon(fn, *args)

    # -- CreateSnapshot ----------------------------------------------------------------------------------

    async def create_snapshot(self, msg: c.CreateSnapshot) -> c.SnapshotStatus:
        _check_snapshot_id(msg.snapshot_id)
        if msg.parent is not None:
            _check_snapshot_id(msg.parent)
        volumes.check_id(msg.volume_id)

        def begin(tx: Tx) -> tuple[sqlite3.Row | None, volumes.ScVolume | None]:
            volume = volumes.get(tx, msg.volume_id)
            if volume is None or volume.state != "available":
                return _get(tx, msg.snapshot_id), volume
            return _begin(tx, msg, msg.volume_id, "pending"), volume

        existing, volume = await self.store.write(begin, durable=True)
        if existing is not None:
            return _status(existing, self._progress.get(msg.snapshot_id))
        volume = volumes.check_available(msg.volume_id, volume)
        try:
            # Opened now: the snapshot is of the volume as it is when CreateSnapshot is answered, even if
            # the volume is deleted while it uploads.
            reader = await trio.to_thread.run_sync(self.backend.open_chunks, msg.volume_id)
        except BackendError as e:
            why = str(e)
            await self.store.write(lambda tx: _end(tx, msg.snapshot_id, "error", reason=why), durable=True)
            return c.SnapshotStatus(msg.snapshot_id, "error", msg.volume_id, volume.size_gb, reason=why)
        progress = self._progress[msg.snapshot_id] = Progress()
        log.info(
            "snapshot upload started id=%s volume=%s parent=%s", msg.snapshot_id, msg.volume_id, msg.parent
        )
        try:
            self._spawn(self._upload, msg, progress, reader)
        except ClusterFault:
            reader.close()
            raise
        return c.SnapshotStatus(msg.snapshot_id, "pending", msg.volume_id, volume.size_gb)

    async def _upload(self, msg: c.CreateSnapshot, progress: Progress, reader: ChunkReader) -> None:
        try:
            await self._upload_from(msg, progress, reader)
        finally:
            reader.close()

    async def _upload_from(self, msg: c.CreateSnapshot, progress: Progress, reader: ChunkReader) -> None:
        started = time.monotonic()
        size_gb = 0
        try:
            size = reader.size_bytes()
            size_gb = -(-size // GIB)
            progress.chunks_total = sm.chunk_count(size)
            async with self._http() as http:
                bucket = SnapshotBucket(http, msg.store)
                await bucket.ensure()
                chunks = await self._send_chunks(bucket, msg, progress, reader)
                manifest = sm.SnapshotManifest(
                    snapshot_id=msg.snapshot_id,
                    volume_id=msg.volume_id,
                    size_bytes=size,
                    parent=msg.parent,
                    chunks=sorted(chunks.items()),
                )
                await bucket.put(sm.manifest_key(msg.snapshot_id), sm.encode(manifest))
        except (BackendError, S3ClientError, sm.ManifestError) as e:
            why = str(e)
            log.warning("snapshot upload failed id=%s: %s", msg.snapshot_id, why)
            await self.store.write(
                lambda tx: _end(tx, msg.snapshot_id, "error", reason=why, size_gb=size_gb), durable=True
            )
            self._progress.pop(msg.snapshot_id, None)
            return
        await self.store.write(
            lambda tx: _end(
                tx,
                msg.snapshot_id,
                "completed",
                size_gb=size_gb,
                chunks_total=progress.chunks_total,
                bytes_uploaded=progress.bytes_uploaded,
            ),
            durable=True,
        )
        self._progress.pop(msg.snapshot_id, None)
        took = max(time.monotonic() - started, 1e-6)
        log.info(
            "snapshot completed id=%s volume=%s chunks=%d uploaded_bytes=%d seconds=%.2f",
            msg.snapshot_id,
            msg.volume_id,
            progress.chunks_total,
            progress.bytes_uploaded,
            took,
        )

    async def _send_chunks(
        self, bucket: SnapshotBucket, msg: c.CreateSnapshot, progress: Progress, reader: ChunkReader
    ) -> dict[int, str]:
        """Read, hash and upload the volume's chunks; the manifest's map (index -> digest)."""
        parent: dict[int, str] | None = None
        if msg.parent is not None:
            found = await bucket.manifest(msg.parent)
            if found is not None and found.chunk_size == CHUNK:
                parent = found.digests()
            else:
                log.info(
                    "snapshot id=%s: parent %s has no manifest; uploading whole", msg.snapshot_id, msg.parent
                )
        indices = await trio.to_thread.run_sync(reader.data_chunks, CHUNK)
        chunks: dict[int, str] = {}
        sent: set[str] = set()
        send, receive = trio.open_memory_channel[tuple[str, bytes]](0)

        async def uploader(queue: trio.MemoryReceiveChannel[tuple[str, bytes]]) -> None:
            async with queue:
                async for digest, data in queue:
                    await bucket.put(sm.chunk_key(digest), data, digest)
                    progress.bytes_uploaded += len(data)
                    progress.chunks_done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(self.in_flight):
                nursery.start_soon(uploader, receive.clone())
            await receive.aclose()
            async with send:
                last = -1
                for index in indices:
                    progress.chunks_done += index - last - 1  # the holes passed over
                    last = index
                    data, digest = await trio.to_thread.run_sync(_read_chunk, reader, index)
                    if digest is None:
                        progress.chunks_done += 1
                        continue
                    chunks[index] = digest
                    if sm.unchanged(parent, index, digest) or digest in sent:
                        progress.chunks_done += 1
                        continue
                    sent.add(digest)
                    await send.send((digest, data))
                progress.chunks_done += progress.chunks_total - last - 1
        return chunks

    async def describe_snapshot_tasks(self, msg: c.DescribeSnapshotTasks) -> c.SnapshotsReply:
        def read(tx: Tx) -> list[sqlite3.Row]:
            if msg.snapshot_ids:
                marks = ",".join("?" * len(msg.snapshot_ids))
                return tx.all(
                    f"SELECT * FROM sc_snapshots WHERE snapshot_id IN ({marks})", tuple(msg.snapshot_ids)
                )
            return tx.all("SELECT * FROM sc_snapshots ORDER BY snapshot_id")

        rows = await self.store.read(read)
        found = [_status(r, self._progress.get(r["snapshot_id"])) for r in rows]
        known = {s.snapshot_id for s in found}
        found += [c.SnapshotStatus(i, "unknown") for i in msg.snapshot_ids if i not in known]
        return c.SnapshotsReply(found)

    # -- CopySnapshot ------------------------------------------------------------------------------------

    async def copy_snapshot(self, msg: c.CopySnapshot) -> c.SnapshotStatus:
        """A new manifest naming the source's chunks: nothing else travels."""
        _check_snapshot_id(msg.source_id)
        _check_snapshot_id(msg.snapshot_id)
        existing = await self.store.read(lambda tx: _get(tx, msg.snapshot_id))
        if existing is not None and existing["state"] == "completed":
            return _status(existing, None)
        try:
            async with self._http() as http:
                bucket = SnapshotBucket(http, msg.store)
                source = await bucket.manifest(msg.source_id)
                if source is None:
                    raise ClusterFault("InvalidSnapshot.NotFound", f"{msg.source_id} has no manifest", 404)
                copy = msgspec.structs.replace(source, snapshot_id=msg.snapshot_id, parent=msg.source_id)
                await bucket.put(sm.manifest_key(msg.snapshot_id), sm.encode(copy))
        except (S3ClientError, sm.ManifestError) as e:
            raise ClusterFault("InternalError", f"copying {msg.source_id}: {e}", 500) from None
        size_gb = -(-source.size_bytes // GIB)

        def record(tx: Tx) -> sqlite3.Row:
            _begin(tx, msg, source.volume_id, "completed")
            _end(tx, msg.snapshot_id, "completed", size_gb=size_gb, chunks_total=source.chunk_count)
            row = _get(tx, msg.snapshot_id)
            assert row is not None
            return row

        row = await self.store.write(record, durable=True)
        log.info("snapshot copied id=%s from=%s", msg.snapshot_id, msg.source_id)
        return _status(row, None)

    # -- RestoreVolume -----------------------------------------------------------------------------------

    async def restore_volume(self, msg: c.RestoreVolume) -> c.VolumeStatus:
        _check_snapshot_id(msg.snapshot_id)
        volumes.check_new(msg.volume_id, msg.size_gb)
        capacity = self.capacity_gb()

        def begin(tx: Tx) -> volumes.ScVolume | None:
            existing = volumes.begin_create(tx, msg.volume_id, msg.size_gb, capacity)
            if existing is None:
                tx.execute(
                    "INSERT INTO sc_restores(volume_id, snapshot_id, created) VALUES(?,?,?) ON CONFLICT(volume_id) "
                    "DO UPDATE SET snapshot_id=excluded.snapshot_id, created=excluded.created",
                    (msg.volume_id, msg.snapshot_id, time.time()),
                )
            return existing

        try:
            existing = await self.store.write(begin, durable=True)
        except ValueError as e:
            raise ClusterFault("InsufficientVolumeCapacity", str(e), 503) from None
        if existing is not None:
            return existing.status
        self._restoring.add(msg.volume_id)
        log.info(
            "volume restore started id=%s snapshot=%s size=%dGiB", msg.volume_id, msg.snapshot_id, msg.size_gb
        )
        self._spawn(self._restore, msg)
        return c.VolumeStatus(msg.volume_id, "creating", msg.size_gb)

    async def _restore(self, msg: c.RestoreVolume) -> None:
        started = time.monotonic()
        try:
            async with self._http() as http:
                bucket = SnapshotBucket(http, msg.store)
                manifest = await bucket.manifest(msg.snapshot_id)
                if manifest is None:
                    raise BackendError(f"snapshot {msg.snapshot_id} has no manifest in Walrus")
                if manifest.size_bytes > msg.size_gb * GIB:
                    raise BackendError(f"snapshot {msg.snapshot_id} is larger than {msg.size_gb} GiB")
                await trio.to_thread.run_sync(self.backend.create, msg.volume_id, msg.size_gb)
                await self._fetch_chunks(bucket, msg.volume_id, manifest)
                await trio.to_thread.run_sync(self.backend.flush, msg.volume_id)
        except (BackendError, S3ClientError, sm.ManifestError) as e:
            why = str(e)
            log.warning("volume restore failed id=%s snapshot=%s: %s", msg.volume_id, msg.snapshot_id, why)
            await self.store.write(lambda tx: self._restored(tx, msg.volume_id, "error", why), durable=True)
            return
        finally:
            self._restoring.discard(msg.volume_id)
        await self.store.write(lambda tx: self._restored(tx, msg.volume_id, "available"), durable=True)
        log.info(
            "volume restored id=%s snapshot=%s chunks=%d seconds=%.2f",
            msg.volume_id,
            msg.snapshot_id,
            len(manifest.chunks),
            time.monotonic() - started,
        )

    @staticmethod
    def _restored(tx: Tx, volume_id: str, state: str, reason: str | None = None) -> None:
        volumes.set_state(tx, volume_id, state, reason)
        tx.execute("DELETE FROM sc_restores WHERE volume_id=?", (volume_id,))

    async def _fetch_chunks(
        self, bucket: SnapshotBucket, volume_id: str, manifest: sm.SnapshotManifest
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[int, str]](0)

        async def fetcher(queue: trio.MemoryReceiveChannel[tuple[int, str]]) -> None:
            async with queue:
                async for index, digest in queue:
                    data = await bucket.get(sm.chunk_key(digest), max_bytes=manifest.chunk_size)
                    if data is None:
                        raise BackendError(f"chunk {digest} of snapshot {manifest.snapshot_id} is missing")
                    if (
                        len(data) != manifest.chunk_length(index)
                        or hashlib.sha256(data).hexdigest() != digest
                    ):
                        raise BackendError(f"chunk {digest} of snapshot {manifest.snapshot_id} is damaged")
                    await trio.to_thread.run_sync(
                        self.backend.write_chunk, volume_id, index, manifest.chunk_size, data
                    )

        async with trio.open_nursery() as nursery:
            for _ in range(self.in_flight):
                nursery.start_soon(fetcher, receive.clone())
            await receive.aclose()
            async with send:
                for index, digest in manifest.chunks:
                    await send.send((index, digest))

    # -- the sweep ---------------------------------------------------------------------------------------

    async def sweep(self, msg: c.SweepSnapshots) -> c.SweepReply:
        """Delete dead snapshots' manifests, then the chunks no manifest names (mark and sweep)."""
        for snapshot_id in msg.dead:
            _check_snapshot_id(snapshot_id)
        try:
            async with self._http() as http:
                bucket = SnapshotBucket(http, msg.store)
                if not await bucket.exists():
                    return c.SweepReply()  # no snapshot was ever written
                for snapshot_id in msg.dead:
                    await bucket.delete(sm.manifest_key(snapshot_id))
                manifests: list[sm.SnapshotManifest] = []
                for listed in await bucket.list(sm.MANIFESTS_PREFIX):
                    named = sm.snapshot_of_manifest_key(listed.key)
                    if named is None:
                        continue
                    found = await bucket.manifest(named)
                    if found is not None:
                        manifests.append(found)
                keep = sm.referenced(manifests)
                garbage = [
                    x
                    for x in await bucket.list(sm.CHUNKS_PREFIX)
                    if sm.digest_of_chunk_key(x.key) not in keep
                ]
                for listed in garbage:
                    await bucket.delete(listed.key)
        except (S3ClientError, sm.ManifestError) as e:
            # A manifest that cannot be read stops the sweep: a chunk it names must not go on a guess.
            raise ClusterFault("InternalError", f"snapshot sweep: {e}", 500) from None
        freed = sum(x.size for x in garbage)
        if msg.dead or garbage:
            log.info(
                "snapshot sweep manifests_deleted=%d chunks_deleted=%d bytes_freed=%d",
                len(msg.dead),
                len(garbage),
                freed,
            )
        return c.SweepReply(len(msg.dead), len(garbage), freed)
