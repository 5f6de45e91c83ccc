"""The SC's answers to cluster messages (CreateVolume, DeleteVolume, DescribeVolumes) and its start-up.

Each change is recorded (volumes.py) before the backend does it and after it is done; at start, what a
crash interrupted is finished: a volume still `creating` is made (the backend's create is idempotent), one
still `deleting` is removed. A volume the SC does not hold is reported `deleted`, so the CLC's poll can tell
"never made" and "gone" from "there".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from euca.core.store import Store
from euca.protocol import cluster as c
from euca.protocol.cluster import ClusterFault
from euca.roles.sc import exports, volumes
from euca.roles.sc.backend import BackendError, VolumeBackend
from euca.roles.sc.nbd import NbdExporter

log = logging.getLogger("euca.sc")


class StorageController:
    def __init__(
        self,
        store: Store,
        backend: VolumeBackend,
        *,
        capacity_gb: int = 0,
        exporter: NbdExporter | None = None,
    ):
        self.store = store
        self.backend = backend
        # Serves attached volumes over NBD; None: the backend's own export is handed out (a one-box whose
        # host has no qemu-storage-daemon hands QEMU the file).
        self.exporter = exporter
        exports.migrate(store)  # its own table, whoever made the store (tests hand one in)
        self._capacity_gb = capacity_gb
        # One change at a time per volume (a CLC resend racing the first call).
        self._locks: dict[str, trio.Lock] = {}

    def handlers(self) -> dict[type, Any]:
        return {
            c.CreateVolume: self.create_volume,
            c.DeleteVolume: self.delete_volume,
            c.GrowVolume: self.grow_volume,
            c.DescribeVolumes: self.describe_volumes,
            c.ExportVolume: self.export_volume,
            c.UnexportVolume: self.unexport_volume,
        }

    def capacity_gb(self) -> int:
        return self._capacity_gb or self.backend.capacity_gb()

    @asynccontextmanager
    async def _lock(self, volume_id: str) -> AsyncIterator[None]:
        """One change at a time per volume; the lock is dropped once nobody holds or awaits it."""
        lock = self._locks.setdefault(volume_id, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(volume_id, None)

    async def recover(self) -> None:
        """Finish what a stop or crash interrupted."""
        pending = await self.store.read(volumes.in_flight)
        for v in pending:
            log.info("volume %s was %s at the last stop; finishing it", v.volume_id, v.state)
            if v.state == "creating":
                await self._make(v.volume_id, v.size_gb)
            else:
                await self._remove(v.volume_id)

    async def create_volume(self, msg: c.CreateVolume) -> c.VolumeStatus:
        volumes.check_new(msg.volume_id, msg.size_gb)
        capacity = self.capacity_gb()
        async with self._lock(msg.volume_id):
            try:
                existing = await self.store.write(
                    lambda tx: volumes.begin_create(tx, msg.volume_id, msg.size_gb, capacity)
                )
            except ValueError as e:
                raise ClusterFault("InsufficientVolumeCapacity", str(e), 503) from None
            if existing is not None:
                if existing.size_gb != msg.size_gb:
                    raise ClusterFault(
                        "IdempotentParameterMismatch",
                        f"{msg.volume_id} exists with {existing.size_gb} GiB, not {msg.size_gb}",
                        400,
                    )
                if existing.state != "creating":
                    return existing.status
            return await self._make(msg.volume_id, msg.size_gb)

    async def _make(self, volume_id: str, size_gb: int) -> c.VolumeStatus:
        try:
            await trio.to_thread.run_sync(self.backend.create, volume_id, size_gb)
        except BackendError as e:
            why = str(e)
            log.warning("volume create failed id=%s: %s", volume_id, why)
            await self.store.write(lambda tx: volumes.set_state(tx, volume_id, "error", why))
            return c.VolumeStatus(volume_id, "error", size_gb, why)
        await self.store.write(lambda tx: volumes.set_state(tx, volume_id, "available"), durable=True)
        log.info("volume created id=%s size=%dGiB backend=%s", volume_id, size_gb, self.backend.name)
        return c.VolumeStatus(volume_id, "available", size_gb)

    async def grow_volume(self, msg: c.GrowVolume) -> c.VolumeStatus:
        """The backend grows first and the row follows: after a crash in between the row is smaller than
        the bytes, and the CLC's resend grows again (a no-op for the backend) and records it."""
        async with self._lock(msg.volume_id):
            found = volumes.check_available(
                msg.volume_id, await self.store.read(lambda tx: volumes.get(tx, msg.volume_id))
            )
            if msg.size_gb < found.size_gb:
                raise ClusterFault(
                    "InvalidParameterValue",
                    f"{msg.volume_id} has {found.size_gb} GiB: volumes only grow",
                    400,
                )
            volumes.check_size(msg.size_gb)
            capacity = self.capacity_gb()
            allocated = await self.store.read(volumes.allocated_gb)
            if capacity and allocated - found.size_gb + msg.size_gb > capacity:
                raise ClusterFault(
                    "InsufficientVolumeCapacity",
                    f"the storage controller has {capacity - allocated} GiB left of {capacity}",
                    503,
                )
            try:
                await trio.to_thread.run_sync(self.backend.grow, msg.volume_id, msg.size_gb)
            except BackendError as e:
                raise ClusterFault("InternalError", f"growing {msg.volume_id} failed: {e}", 500) from None
            await self.store.write(lambda tx: volumes.set_size(tx, msg.volume_id, msg.size_gb), durable=True)
            if msg.size_gb != found.size_gb:
                log.info("volume grown id=%s from=%dGiB to=%dGiB", msg.volume_id, found.size_gb, msg.size_gb)
            return c.VolumeStatus(msg.volume_id, "available", msg.size_gb)

    async def delete_volume(self, msg: c.DeleteVolume) -> c.VolumeStatus:
        async with self._lock(msg.volume_id):
            if await self.store.read(lambda tx: exports.is_exported(tx, msg.volume_id)):
                raise ClusterFault("VolumeInUse", f"{msg.volume_id} is exported to a node", 409)
            found = await self.store.read(lambda tx: volumes.get(tx, msg.volume_id))
            if found is None:
                return c.VolumeStatus(msg.volume_id, "deleted")
            await self.store.write(lambda tx: volumes.set_state(tx, msg.volume_id, "deleting"))
            return await self._remove(msg.volume_id)

    async def _remove(self, volume_id: str) -> c.VolumeStatus:
        try:
            await trio.to_thread.run_sync(self.backend.delete, volume_id)
        except BackendError as e:
            log.warning("volume delete failed id=%s: %s", volume_id, e)
            return c.VolumeStatus(volume_id, "deleting", reason=str(e))
        await self.store.write(lambda tx: volumes.forget(tx, volume_id), durable=True)
        log.info("volume deleted id=%s", volume_id)
        return c.VolumeStatus(volume_id, "deleted")

    async def describe_volumes(self, msg: c.DescribeVolumes) -> c.VolumesReply:
        held, allocated = await self.store.read(
            lambda tx: (volumes.list_volumes(tx, msg.volume_ids), volumes.allocated_gb(tx))
        )
        statuses = [v.status for v in held]
        known = {v.volume_id for v in held}
        statuses += [c.VolumeStatus(i, "deleted") for i in msg.volume_ids if i not in known]
        return c.VolumesReply(
            volumes=statuses,
            capacity_gb=self.capacity_gb(),
            allocated_gb=allocated,
            backend=self.backend.name,
        )

    # -- exports for attachments (AttachVolume / DetachVolume) ---------------------------------------------

    async def export_volume(self, msg: c.ExportVolume) -> c.VolumeExport:
        """The volume served to `msg.node`: recorded first (so a restart exports it again), then exported."""
        async with self._lock(msg.volume_id):
            volumes.check_available(
                msg.volume_id, await self.store.read(lambda tx: volumes.get(tx, msg.volume_id))
            )
            await self.store.write(lambda tx: exports.record(tx, msg.volume_id, msg.node), durable=True)
            return await self._export(msg.volume_id)

    async def _export(self, volume_id: str) -> c.VolumeExport:
        try:
            local: c.VolumeExport = await trio.to_thread.run_sync(self.backend.export, volume_id)
            if self.exporter is None or local.kind != "file" or local.path is None:
                return local
            return await self.exporter.export(volume_id, local.path)
        except BackendError as e:
            log.warning("volume export failed id=%s: %s", volume_id, e)
            raise ClusterFault("InternalError", f"exporting {volume_id} failed: {e}", 500) from None

    async def unexport_volume(self, msg: c.UnexportVolume) -> c.Ack:
        async with self._lock(msg.volume_id):
            if self.exporter is not None:
                try:
                    await self.exporter.unexport(msg.volume_id)
                except BackendError as e:
                    log.warning("volume unexport failed id=%s: %s", msg.volume_id, e)
                    raise ClusterFault("InternalError", f"unexporting {msg.volume_id}: {e}", 500) from None
            await self.store.write(lambda tx: exports.forget(tx, msg.volume_id), durable=True)
            return c.Ack()

    async def export_again(self) -> None:
        """After a start (a new qemu-storage-daemon): serve again what the store says is exported."""
        for volume_id, node in sorted((await self.store.read(exports.exported)).items()):
            try:
                await self._export(volume_id)
                log.info("volume exported again id=%s node=%s", volume_id, node)
            except ClusterFault as e:
                log.error("volume not exported again id=%s: %s", volume_id, e.message)
