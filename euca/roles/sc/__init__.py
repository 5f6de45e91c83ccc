"""SC: the storage controller of one cluster (= availability zone): EBS volumes and their snapshots.

    controller.py  the cluster messages it answers (CreateVolume, DeleteVolume, DescribeVolumes,
                   ExportVolume, UnexportVolume), recovery
    exports.py     what it exported for attachments (sc_exports): exported again after a restart
    nbd.py         the qemu-storage-daemon child serving attached volumes over NBD (QMP)
    volumes.py     what it holds (sc_volumes in this host's store): survives restarts
    backend.py     VolumeBackend, the one interface to where bytes live
    files.py       the default backend: sparse raw files in sc.volumes_dir
    snapshots.py   snapshots streamed into Walrus as chunks + a manifest, and volumes restored from them
    walrus.py      the S3 requests those make (as the system account, credentials from the CLC's message)

It answers the CLC (and later the NCs of its cluster) on its mutual-TLS listener (8776) with the
certificate OU=sc, CN=<cluster>. The CLC finds it registered per cluster (`euca admin register-sc`; a
one-box registers its own at start) and polls it; the SC pushes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import trio

from euca.core.cluster_app import ClusterApp
from euca.core.http import Peer
from euca.core.roles import App, RoleContext
from euca.protocol.cluster import ClusterFault
from euca.roles.sc import exports, volumes
from euca.roles.sc.backend import VolumeBackend
from euca.roles.sc.controller import StorageController
from euca.roles.sc.files import FileBackend
from euca.roles.sc.nbd import NbdExporter
from euca.roles.sc.snapshots import SnapshotService

log = logging.getLogger("euca.sc")


def _from_clc(handler: Any) -> Any:
    """Making and removing volumes is the CLC's to ask: the listener also admits NCs (for the exports they
    will fetch once volumes attach), so the OU is checked again here."""

    async def call(message: Any, peer: Peer) -> msgspec.Struct:
        if peer.role != "clc":
            raise ClusterFault("Unauthorized", f"{type(message).__name__} is the CLC's to send", 403)
        result: msgspec.Struct = await handler(message)
        return result

    return call


class ScRole:
    name = "sc"

    def __init__(self, ctx: RoleContext, *, backend: VolumeBackend | None = None):
        sc = ctx.config.sc
        self.ctx = ctx
        volumes.migrate(ctx.store)
        exports.migrate(ctx.store)
        self.backend: VolumeBackend = (
            backend if backend is not None else FileBackend(ctx.config.path(sc.volumes_dir), sc.capacity_gb)
        )
        self.exporter: NbdExporter | None = None
        if NbdExporter.available():
            self.exporter = NbdExporter(ctx.config.path("sc/nbd"), host=sc.nbd_host, port=sc.nbd_port)
        else:
            log.warning("qemu-storage-daemon not found: volumes attach only to nodes on this host (files)")
        self.controller = StorageController(
            ctx.store, self.backend, capacity_gb=sc.capacity_gb, exporter=self.exporter
        )
        self.snapshots = SnapshotService(ctx.store, self.backend, capacity_gb=self.controller.capacity_gb)
        handlers = {cls: _from_clc(fn) for cls, fn in self.controller.handlers().items()}
        handlers.update({cls: _from_clc(fn) for cls, fn in self.snapshots.handlers().items()})
        self.apps: list[App] = [ClusterApp("sc", handlers)]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            # Snapshot uploads and restores a crash cut short end `error` first (a restore's volume is
            # `creating` and must not be finished empty by the controller's recovery).
            await nursery.start(self.snapshots.run)
            await self.controller.recover()
            if self.exporter is not None:
                await nursery.start(self.exporter.run)
                await self.controller.export_again()
            task_status.started()


def create(ctx: RoleContext) -> ScRole:
    return ScRole(ctx)
