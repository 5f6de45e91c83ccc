"""How the snapshot table follows the SCs (the CLC's poller calls this each round), and the sweep.

Each round, an SC with snapshots pending is asked about those alone (cluster.DescribeSnapshotTasks), and
`reconcile_snapshots` (pure) decides: the SC's progress is recorded; `completed` or `error` ends the
snapshot; a snapshot the SC does not know (`unknown`: the CLC crashed between recording it and asking, or
the message was lost) is asked for again (CreateSnapshot and CopySnapshot are idempotent per snapshot id).
An SC restarted mid-upload answers `error` for it (its recovery), so a pending snapshot always ends.

The sweep: when snapshots were deleted and none is pending anywhere (a pending upload may rely on chunks
that only a deleted snapshot's manifest names) and no volume is being restored from one, one up SC is sent SweepSnapshots with the deleted and the
failed snapshots: it removes their manifests and every chunk no remaining manifest names; the deleted rows
are then forgotten. The first round after a CLC start sweeps too, for what a crash left behind.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from euca.protocol import cluster
from euca.protocol.cluster import ClusterFault, SnapshotStatus, SnapshotStore
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.snapshots import records
from euca.roles.clc.snapshots.records import SnapshotRecord
from euca.roles.clc.topology.records import StorageController

log = logging.getLogger("euca.clc")


_sweep_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()


def sweep_lock(store: Any) -> trio.Lock:
    """Held by the sweep from its "nothing is being written" check to its end, and by whatever starts to
    write or read chunks (CreateSnapshot, CopySnapshot, CreateVolume from a snapshot) while it records that
    it does: so a sweep never deletes a chunk an upload or a restore that began meanwhile relies on."""
    lock = _sweep_locks.get(store)
    if lock is None:
        lock = _sweep_locks[store] = trio.Lock()
    return lock


@dataclass
class SnapshotReconciliation:
    progress: list[SnapshotStatus] = field(default_factory=list)
    ask_again: list[SnapshotRecord] = field(default_factory=list)


def reconcile_snapshots(
    pending: Sequence[SnapshotRecord], reported: Sequence[SnapshotStatus]
) -> SnapshotReconciliation:
    said = {s.snapshot_id: s for s in reported}
    out = SnapshotReconciliation()
    for snapshot in pending:
        status = said.get(snapshot.snapshot_id)
        if status is None or status.state == "unknown":
            out.ask_again.append(snapshot)
        else:
            out.progress.append(status)
    return out


class SnapshotPoll:
    def __init__(
        self,
        store: Any,
        caller: Any,
        snapshot_store: Callable[[], Awaitable[SnapshotStore]],
        *,
        restoring: Callable[[Any], bool] = lambda tx: False,
        call_timeout: float = 30.0,
    ):
        self.store = store
        # (tx) -> some volume is being made from a snapshot (its chunks are being read): no sweep then.
        self.restoring = restoring
        self.caller = caller
        self.snapshot_store = snapshot_store
        self.call_timeout = call_timeout
        self._swept_once = False

    async def _call(self, sc: StorageController, message: Any) -> Any:
        with trio.fail_after(self.call_timeout):
            return await self.caller.call(sc.url, message, expect_name=sc.cluster)

    async def poll(self, sc: StorageController) -> None:
        """Follow the pending snapshots this SC writes."""
        pending = await self.store.read(lambda tx: records.pending(tx, sc.cluster))
        if not pending:
            return
        try:
            reply = await self._call(sc, cluster.DescribeSnapshotTasks([s.snapshot_id for s in pending]))
        except (ClusterFault, trio.TooSlowError):
            return  # the volume poll logs the SC down
        result = reconcile_snapshots(pending, reply.snapshots)

        def write(tx: Any) -> list[SnapshotStatus]:
            return [s for s in result.progress if records.record_progress(tx, s) and s.state != "pending"]

        for s in await self.store.write(write):
            log.info(
                "snapshot state id=%s to=%s uploaded_bytes=%d%s",
                s.snapshot_id,
                s.state,
                s.bytes_uploaded,
                f" reason={s.reason}" if s.reason else "",
            )
        for snapshot in result.ask_again:
            await self._ask_again(sc, snapshot)

    async def _ask_again(self, sc: StorageController, snapshot: SnapshotRecord) -> None:
        try:
            store = await self.snapshot_store()
        except Ec2Error as e:
            log.warning("snapshot resend id=%s: %s", snapshot.snapshot_id, e.message)
            return
        message: cluster.CopySnapshot | cluster.CreateSnapshot
        if snapshot.copied_from is not None:
            message = cluster.CopySnapshot(snapshot.copied_from, snapshot.snapshot_id, store)
        else:
            message = cluster.CreateSnapshot(snapshot.snapshot_id, snapshot.volume_id, store, snapshot.parent)
        try:
            status = await self._call(sc, message)
        except (ClusterFault, trio.TooSlowError) as e:
            why = f"{e.code}: {e.message}" if isinstance(e, ClusterFault) else "no answer in time"
            log.warning("snapshot resend failed id=%s cluster=%s: %s", snapshot.snapshot_id, sc.cluster, why)
            if isinstance(e, ClusterFault) and e.code != "Unavailable":
                status = SnapshotStatus(snapshot.snapshot_id, "error", reason=why)
            else:
                return
        log.info("snapshot resent id=%s cluster=%s", snapshot.snapshot_id, sc.cluster)
        await self.store.write(lambda tx: records.record_progress(tx, status))

    async def restore_message(self, volume_id: str, size_gb: int, snapshot_id: str) -> cluster.RestoreVolume:
        return cluster.RestoreVolume(volume_id, size_gb, snapshot_id, await self.snapshot_store())

    async def sweep(self, storage: Sequence[StorageController]) -> None:
        """Remove deleted (and failed) snapshots from Walrus, when nothing is being written or restored."""
        async with sweep_lock(self.store):
            await self._sweep(storage)

    async def _sweep(self, storage: Sequence[StorageController]) -> None:
        def read(tx: Any) -> tuple[bool, list[str], list[str]]:
            deleted, failed = records.dead(tx)
            if not deleted and self._swept_once:
                return False, deleted, failed  # nothing to do: the busy checks are not worth a read
            return not (records.pending(tx) or self.restoring(tx)), deleted, failed

        up = [sc for sc in storage if sc.state == "up"]
        if not up:
            return
        due, deleted, failed = await self.store.read(read)
        if not due:
            return
        try:
            store = await self.snapshot_store()
            reply = await self._call(up[0], cluster.SweepSnapshots(store, deleted + failed))
        except (ClusterFault, trio.TooSlowError, Ec2Error) as e:
            why = getattr(e, "message", "no answer in time")
            log.warning("snapshot sweep failed cluster=%s: %s", up[0].cluster, why)
            return
        self._swept_once = True
        await self.store.write(lambda tx: records.forget(tx, deleted))
        if deleted or reply.chunks_deleted:
            log.info(
                "snapshots swept forgotten=%d chunks_deleted=%d bytes_freed=%d",
                len(deleted),
                reply.chunks_deleted,
                reply.bytes_freed,
            )
