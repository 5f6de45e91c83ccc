"""NC: the node controller. Runs instances as libvirt domains and answers the CC's Nc* messages.

controller.py  the instances' lifecycle and the message handlers (NodeController)
domain.py      the domain XML (pure) and the kvm/qemu choice
hypervisor.py  the one libvirt connection (blocking calls in worker threads, reconnects)
disks.py       root overlay, ephemeral and swap disks, console tail, the instance directory
images.py      download manifests -> the node's image cache
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import trio

from euca.core.supervisor import App, RoleContext
from euca.roles.nc.controller import NcSettings, NodeController
from euca.roles.nc.hypervisor import Hypervisor
from euca.roles.nc.images import NodeKeys

# Part fetches are 10 MiB each from Walrus, usually on the same network.
FETCH_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def _with_peer(
    handler: Callable[[Any], Awaitable[msgspec.Struct]],
) -> Callable[[Any, Any], Awaitable[msgspec.Struct]]:
    async def call(message: Any, peer: Any) -> msgspec.Struct:
        return await handler(message)

    return call


def _cluster_apps(controller: NodeController) -> list[App]:
    try:
        from euca.core.cluster_app import ClusterApp
    except ImportError:  # the transport is not here yet: the controller runs, nobody can call it
        return []
    handlers = {cls: _with_peer(fn) for cls, fn in controller.handlers().items()}
    return [ClusterApp("nc", handlers)]


class NcRole:
    name = "nc"

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        settings = NcSettings.from_config(ctx.config)
        self.controller = NodeController(
            settings,
            Hypervisor(settings.libvirt_uri),
            keys=lambda: NodeKeys.from_components(ctx.components),
        )
        self.apps: list[App] = _cluster_apps(self.controller)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT) as client:
            self.controller.client = client
            try:
                await self.controller.run(task_status=task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await self.controller.hv.close()


def create(ctx: RoleContext) -> NcRole:
    return NcRole(ctx)
