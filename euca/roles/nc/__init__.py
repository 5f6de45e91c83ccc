"""NC: the node controller. Runs instances as libvirt domains and answers the CC's Nc* messages.

controller.py  the instances' lifecycle and the message handlers (NodeController)
instance.py    one instance: instance.json, its state in memory, the spec checks
settings.py    the node's settings and what it offers (capacity, over-commit)
domain.py      the domain XML (pure) and the kvm/qemu choice
hypervisor.py  the one libvirt connection (blocking calls in worker threads, reconnects)
disks.py       root overlay, ephemeral and swap disks, console tail, the instance directory
image_fetch.py download manifests -> the node's image cache
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import trio

from euca.core.cluster_app import ClusterApp
from euca.core.components import Components
from euca.core.roles import App, RoleContext
from euca.roles.nc.controller import NodeController
from euca.roles.nc.hypervisor import Hypervisor
from euca.roles.nc.image_fetch import NodeKeys
from euca.roles.nc.settings import NcSettings

log = logging.getLogger("euca.nc")

# Part fetches are 10 MiB each from Walrus, usually on the same network.
FETCH_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def _with_peer(
    handler: Callable[[Any], Awaitable[msgspec.Struct]],
) -> Callable[[Any, Any], Awaitable[msgspec.Struct]]:
    async def call(message: Any, peer: Any) -> msgspec.Struct:
        return await handler(message)

    return call


def own_cluster(components: Components) -> str | None:
    """The cluster this node's certificate attests: only that cluster's CC (CN = the cluster) may call it.
    A node that joined before certificates named the cluster takes any CC of the cloud, and says so."""
    cluster = components.cluster_of("nc")
    if cluster is None:
        log.warning(
            "nc certificate names no cluster: any cc of the cloud may call this node; join again with a new "
            "token (euca admin register-node --cluster NAME) to bind it to its cluster"
        )
    return cluster


def _cluster_apps(controller: NodeController, cluster: str | None) -> list[App]:
    handlers = {cls: _with_peer(fn) for cls, fn in controller.handlers().items()}
    return [ClusterApp("nc", handlers, caller_name=cluster)]


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
        self.apps: list[App] = _cluster_apps(self.controller, own_cluster(ctx.components))

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
