"""CC: the cluster controller. Places instances on its cluster's nodes and owns the cluster's VM network.

    controller.py  the CLC -> CC message handlers, the poll loop and watches (ClusterController)
    state.py       what the CC knows, rebuilt from the nodes' reports (ClusterState)
    nodes.py       what it knows per node and instance, and the resource accounting between reports
    scheduler.py   GREEDY / ROUNDROBIN / POWERSAVE placement and per-type capacity (pure functions)
    vmnet.py       what the CC needs from the VM network (VmNetwork) and an in-memory allocator
    network.py     the real VM network: bridge, dnsmasq, iptables (create_network)
    addresses.py   the subnet's address pool and the dnsmasq hosts file (pure)
    dnsmasq.py     the cluster's DHCP server process, kept running

The CC answers the CLC on its mutual-TLS listener (8774) and calls the NCs as component "cc". It keeps no
configuration beyond its name and network: the CLC's DescribeResources poll carries the nodes and the
instance types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from euca.core.cluster_app import ClusterApp
from euca.core.cluster_client import ClusterClient
from euca.core.roles import App, RoleContext
from euca.roles.cc.controller import ClusterController
from euca.roles.cc.nodes import NodeClient
from euca.roles.cc.vmnet import VmNetwork


def _with_peer(
    handler: Callable[[Any], Awaitable[msgspec.Struct]],
) -> Callable[[Any, Any], Awaitable[msgspec.Struct]]:
    async def call(message: Any, peer: Any) -> msgspec.Struct:
        return await handler(message)

    return call


def _network(ctx: RoleContext) -> VmNetwork:
    from euca.roles.cc.network import create_network

    return create_network(ctx)


class CcRole:
    name = "cc"

    def __init__(
        self, ctx: RoleContext, *, client: NodeClient | None = None, network: VmNetwork | None = None
    ):
        cc = ctx.config.cc
        self.ctx = ctx
        self._own_client = client is None
        self.client: NodeClient = client if client is not None else ClusterClient(ctx.components, "cc")
        self.network = network if network is not None else _network(ctx)
        self.controller = ClusterController(
            cc.cluster,
            self.client,
            self.network,
            scheduler=cc.scheduler,
            poll_interval=cc.poll_interval,
            poll_fanout=cc.poll_fanout,
        )
        handlers = {cls: _with_peer(fn) for cls, fn in self.controller.handlers().items()}
        self.apps: list[App] = [ClusterApp("cc", handlers)]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.controller.run(task_status=task_status)
        finally:
            if self._own_client and isinstance(self.client, ClusterClient):
                with trio.CancelScope(shield=True):
                    await self.client.aclose()


def create(ctx: RoleContext) -> CcRole:
    return CcRole(ctx)
