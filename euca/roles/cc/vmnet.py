"""What the cluster controller needs from the VM network, and the in-memory default.

The CC owns its cluster's VM network: every instance gets a MAC (Eucalyptus's d0:0d:..., see
`cluster.mac_for_instance`) and a private IP from `cc.subnet`, handed to the NC in `InstanceSpec.net`.
The real network (euca/roles/cc/network.py: bridge, dnsmasq in a network namespace) plugs in behind
`VmNetwork` by defining `create_network(ctx) -> VmNetwork`; without it the CC uses `SubnetAllocator`,
which only hands out addresses.

The CC keeps no state on disk: after a restart it learns its instances from the nodes' reports and calls
`adopt` for each live one before it places anything new, so addresses in use are never handed out twice;
once every node has answered it calls `retain` with all the instances alive, so an address kept across the
restart for an instance that ended meanwhile is freed.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import trio

from euca.protocol.cluster import InstanceSpec, NetConfig, NetworkView, mac_for_instance
from euca.roles.cc.metadata import Catalog

log = logging.getLogger("euca.cc.net")


class NetworkFull(Exception):
    """No address left in the subnet."""


class VmNetwork(Protocol):
    catalog: Catalog  # what the metadata service knows of each instance beyond its lease

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background service (DHCP server, ...); calls task_status.started() when ready; runs until
        cancelled."""
        ...

    async def allocate(self, instance_id: str) -> NetConfig:
        """An address for a new instance (the same one again if it already has one); raises NetworkFull."""
        ...

    async def release(self, instance_id: str) -> None:
        """The instance has ended: its address may be reused. Unknown ids are ignored."""
        ...

    async def adopt(self, instance_id: str, mac: str, ip: str) -> None:
        """A running instance reported by a node (after a CC restart): keep its address reserved."""
        ...

    async def retain(self, instance_ids: Iterable[str]) -> None:
        """Every node has answered and these are all the instances alive: release any other address (one
        kept from before a restart for an instance that ended meanwhile)."""
        ...

    def note_launch(self, spec: InstanceSpec) -> None:
        """An instance about to start (with its address in spec.net): what the metadata service tells it."""
        ...

    @property
    def subnet(self) -> str:
        """The private subnet it serves."""
        ...

    def set_subnet(self, subnet: str) -> bool:
        """Serve this subnet from now on (the CLC's); False, and nothing changed, while an instance holds an
        address of the current one."""
        ...

    def apply_view(self, view: NetworkView) -> None:
        """The CLC's network view (security groups, public addresses) to enforce from now on; returns at
        once (the service applies it behind the call), and a view of the version in force is ignored."""
        ...


class SubnetAllocator:
    """Addresses from a subnet, in memory. The first host address is the gateway (the bridge's address);
    instances get the lowest free one after it."""

    def __init__(self, subnet: str, bridge: str | None = None):
        self.network = ipaddress.ip_network(subnet, strict=False)
        self.bridge = bridge or None
        hosts = self.network.hosts()
        self.gateway = str(next(hosts, self.network.network_address))
        self._hosts = [str(h) for h in hosts]
        self._by_instance: dict[str, NetConfig] = {}
        self._used: set[str] = set()
        self.view: NetworkView | None = None  # kept, not enforced: there is no real network here
        self.catalog = Catalog()  # kept, not served: no metadata service without a real network

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def allocate(self, instance_id: str) -> NetConfig:
        net = self._by_instance.get(instance_id)
        if net is not None:
            return net
        for ip in self._hosts:
            if ip not in self._used:
                return self._reserve(instance_id, mac_for_instance(instance_id), ip)
        raise NetworkFull(f"no free address in {self.network}")

    async def release(self, instance_id: str) -> None:
        self.catalog.forget(instance_id)
        net = self._by_instance.pop(instance_id, None)
        if net is not None:
            self._used.discard(net.private_ip)

    async def adopt(self, instance_id: str, mac: str, ip: str) -> None:
        current = self._by_instance.get(instance_id)
        if current is not None and current.private_ip == ip:
            return
        if current is not None:
            self._used.discard(current.private_ip)
        if ip in self._used:
            log.warning("address claimed twice ip=%s instance=%s", ip, instance_id)
        self._reserve(instance_id, mac, ip)

    async def retain(self, instance_ids: Iterable[str]) -> None:
        keep = set(instance_ids)
        for instance_id in [i for i in self._by_instance if i not in keep]:
            await self.release(instance_id)

    @property
    def subnet(self) -> str:
        return str(self.network)

    def set_subnet(self, subnet: str) -> bool:
        wanted = ipaddress.ip_network(subnet, strict=False)
        if wanted == self.network:
            return True
        if self._by_instance:
            return False
        self.network = wanted
        hosts = wanted.hosts()
        self.gateway = str(next(hosts, wanted.network_address))
        self._hosts = [str(h) for h in hosts]
        self._used.clear()
        return True

    def apply_view(self, view: NetworkView) -> None:
        self.view = view

    def note_launch(self, spec: InstanceSpec) -> None:
        self.catalog.note_launch(spec)

    def _reserve(self, instance_id: str, mac: str, ip: str) -> NetConfig:
        net = NetConfig(mac=mac, private_ip=ip, bridge=self.bridge)
        self._by_instance[instance_id] = net
        self._used.add(ip)
        return net

    def address_of(self, instance_id: str) -> NetConfig | None:
        return self._by_instance.get(instance_id)
