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
from euca.roles.sc import volumes
from euca.roles.sc.backend import BackendError, VolumeBackend, check_volume_id

log = logging.getLogger("euca.sc")


class StorageController:
    def __init__(self, store: Store, backend: VolumeBackend, *, capacity_gb: int = 0):
        self.store = store
        self.backend = backend
        self._capacity_gb = capacity_gb
        # One change at a time per volume (a CLC resend racing the first call).
        self._locks: dict[str, trio.Lock] = {}

    def handlers(self) -> dict[type, Any]:
        return {
            c.CreateVolume: self.create_volume,
            c.DeleteVolume: self.delete_volume,
            c.GrowVolume: self.grow_volume,
            c.DescribeVolumes: self.describe_volumes,
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
        try:
            check_volume_id(msg.volume_id)
        except BackendError as e:
            raise ClusterFault("InvalidParameterValue", str(e), 400) from None
        if not 1 <= msg.size_gb <= 16384:
            raise ClusterFault("InvalidParameterValue", f"volume size {msg.size_gb} GiB: 1..16384", 400)
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
            found = await self.store.read(lambda tx: volumes.get(tx, msg.volume_id))
            if found is None:
                raise ClusterFault("InvalidVolume.NotFound", f"no volume {msg.volume_id} here", 404)
            if found.state != "available":
                raise ClusterFault("IncorrectState", f"{msg.volume_id} is {found.state}", 409)
            if msg.size_gb < found.size_gb:
                raise ClusterFault(
                    "InvalidParameterValue",
                    f"{msg.volume_id} has {found.size_gb} GiB: volumes only grow",
                    400,
                )
            if not msg.size_gb <= 16384:
                raise ClusterFault("InvalidParameterValue", f"volume size {msg.size_gb} GiB: 1..16384", 400)
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
