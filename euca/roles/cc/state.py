"""The cluster as the CC knows it: its nodes and their instances, learned from the nodes' reports.

Nothing here is stored on disk: the CLC's DescribeResources poll carries the cluster's nodes and instance
types, and the nodes' reports carry the instances, so a restarted CC rebuilds everything from its first
poll. What the CC knows on its own is only what it did since: instances it placed that no node has
reported yet (pending), and the ROUNDROBIN cursor.

Resource accounting (nodes.available): a node reports free = max - what its non-terminated instances use.
An instance the CC placed counts against the node's free resources until a full report that includes it
arrives (the poller asks for instances before resources, so every instance in a report is also counted in
the resources the same round reports); one that a node reports terminated after a full report counted it
frees its share at once. Only a full poll (instances, then resources) marks instances as counted: the
short polls of instances on their way update states alone.

Reports and our own knowledge are ordered by a sequence number taken when a poll's request *starts* and
when a reply of our own arrives: a report may only remove an instance if it was asked for after the CC last
learned something about that instance. An NcRunInstance still on the wire is never removed by a report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec
import trio

from euca.protocol.cluster import (
    ClusterFault,
    InstancesReply,
    InstanceStatus,
    NcDescribeInstances,
    NcDescribeNode,
    NcDescribeResource,
    NodeAddress,
    NodeReport,
    NodeResources,
    VmType,
)
from euca.roles.cc.nodes import Node, NodeClient, Tracked, available, describe_error, unpolled
from euca.roles.cc.vmnet import VmNetwork

log = logging.getLogger("euca.cc")


class ClusterState:
    """Nodes, instances and the sequence that orders what is learned about them; the polls that learn it.
    ClusterController (controller.py) adds the CLC's requests."""

    def __init__(
        self,
        cluster: str,
        client: NodeClient,
        network: VmNetwork,
        *,
        poll_interval: float = 6.0,
        poll_fanout: int = 64,
        call_timeout: float = 30.0,
    ):
        self.cluster = cluster
        self.client = client
        self.network = network
        self.poll_interval = poll_interval
        # A node that takes longer than this to answer a poll is down.
        self.poll_timeout = max(poll_interval, 5.0)
        self.call_timeout = call_timeout
        self.poll_limiter = trio.CapacityLimiter(max(1, poll_fanout))
        self.call_limiter = trio.CapacityLimiter(max(1, poll_fanout))
        self.nodes: dict[str, Node] = {}  # in the order the CLC lists them (GREEDY's order)
        self.vm_types: dict[str, VmType] = {}
        self.instances: dict[str, Tracked] = {}
        self._ticks = 0
        self._topology_known = False  # a DescribeResources has told us the nodes

    def tick(self) -> int:
        """The next number of a sequence that orders what the CC learns (reports, replies); a clock could
        stand still between two events."""
        self._ticks += 1
        return self._ticks

    # ------------------------------------------------------------------------------------------------
    # Reports

    async def poll_round(self, nodes: Iterable[Node] | None = None) -> None:
        """Ask every node (or the ones given) for its instances and resources, a bounded number at once."""
        targets = list(self.nodes.values() if nodes is None else nodes)
        async with trio.open_nursery() as nursery:
            for node in targets:
                nursery.start_soon(self._poll_limited, node)
        if self._topology_known and all(node.up for node in self.nodes.values()):
            # Every node has answered since it was added: what is not tracked now is not alive anywhere.
            await self.network.retain(list(self.instances))

    async def _poll_limited(self, node: Node) -> None:
        async with self.poll_limiter:
            await self.poll_node(node)

    async def poll_node(self, node: Node) -> None:
        started = self.tick()
        try:
            with trio.fail_after(self.poll_timeout):
                instances, resources = await self._ask_node(node)
        except Exception as e:
            self._node_failed(node, started, describe_error(e))
            return
        await self._apply_report(node, started, instances, resources)

    async def _ask_node(self, node: Node) -> tuple[list[InstanceStatus], NodeResources]:
        if node.one_call:
            try:
                report: NodeReport = await self.client.call(node.url, NcDescribeNode(), expect_name=node.name)
            except ClusterFault as e:
                if e.code != "BadMessage":
                    raise
                node.one_call = False  # an NC from before NcDescribeNode
                log.info("node polled with two calls name=%s (it does not answer NcDescribeNode)", node.name)
            else:
                return report.instances, report.resources
        # Instances first: whatever they list is counted in the resources asked for after.
        listed: InstancesReply = await self.client.call(
            node.url, NcDescribeInstances(), expect_name=node.name
        )
        resources: NodeResources = await self.client.call(
            node.url, NcDescribeResource(), expect_name=node.name
        )
        return listed.instances, resources

    def _current(self, node: Node, started: int) -> bool:
        """Whether a poll begun at `started` is still news for `node` (not removed, nothing newer applied)."""
        return self.nodes.get(node.name) is node and started > node.report_started

    def _node_failed(self, node: Node, started: int, reason: str) -> None:
        if not self._current(node, started):
            return
        node.report_started = started
        self._mark_down(node, reason)

    def _mark_down(self, node: Node, reason: str) -> None:
        if node.up is not False:
            log.warning("node down name=%s url=%s reason=%s", node.name, node.url, reason)
        node.up = False
        node.resources = NodeResources(node=node.name, state="down", reason=reason)
        for tracked in node.instances.values():
            tracked.counted = False  # a node that comes back reports afresh

    async def _apply_report(
        self, node: Node, started: int, listed: list[InstanceStatus], resources: NodeResources
    ) -> None:
        if not self._current(node, started):
            return
        node.report_started = started
        if resources.state != "up":
            # The NC answers but cannot run instances (starting, libvirt gone): down, and its instance
            # list (perhaps not restored yet) is not taken as the truth.
            self._mark_down(node, resources.reason or "the node reports itself down")
            return
        if node.up is not True:
            log.info(
                "node up name=%s cores=%d/%d memory_mb=%d/%d disk_gb=%d/%d hypervisor=%s",
                node.name,
                resources.cores_free,
                resources.cores_max,
                resources.memory_mb_free,
                resources.memory_mb_max,
                resources.disk_gb_free,
                resources.disk_gb_max,
                resources.hypervisor or "-",
            )
        node.up = True
        node.resources = msgspec.structs.replace(resources, node=node.name, state="up", reason=None)
        seen: set[str] = set()
        for status in listed:
            if status.node != node.name:
                status = msgspec.structs.replace(status, node=node.name)
            seen.add(status.instance_id)
            await self._reported(node, started, status, full=True)
        for instance_id, tracked in list(node.instances.items()):
            if instance_id in seen:
                continue
            if tracked.in_flight or tracked.updated > started:
                tracked.counted = False  # placed after this report was asked for: still pending
                continue
            await self._forget(tracked, "gone from its node")

    async def _reported(
        self, node: Node, started: int, status: InstanceStatus, *, full: bool = False
    ) -> None:
        """Take what a node says about one instance; `full`: in a full report, whose resources (asked
        for next) count the instance's use unless it is listed terminated."""
        tracked = self.instances.get(status.instance_id)
        if tracked is not None and tracked.status.node != node.name:
            if tracked.in_flight or tracked.updated > started:
                return  # a stale report from a node it left (rolled back and placed elsewhere)
            log.warning(
                "instance moved id=%s from=%s to=%s", status.instance_id, tracked.status.node, node.name
            )
            await self._forget(tracked, "reported by another node", release=False)
            tracked = None
        if tracked is None:
            tracked = Tracked(status=status, vm=self.vm_types.get(status.vm_type), updated=started)
            tracked.started.set()
            self.instances[status.instance_id] = tracked
            node.instances[status.instance_id] = tracked
            log.info(
                "instance found id=%s node=%s state=%s ip=%s",
                status.instance_id,
                node.name,
                status.state,
                status.private_ip or "-",
            )
            if status.state != "terminated" and status.private_ip and status.mac:
                await self.network.adopt(status.instance_id, status.mac, status.private_ip)
        else:
            if (tracked.status.state, tracked.status.nc_state) != (status.state, status.nc_state):
                log.info(
                    "instance state id=%s node=%s state=%s nc_state=%s%s",
                    status.instance_id,
                    node.name,
                    status.state,
                    status.nc_state,
                    f" reason={status.reason}" if status.reason else "",
                )
            tracked.status = self._keep_address(tracked.status, status)
            tracked.updated = max(tracked.updated, started)
        if full:
            tracked.counted = True
            tracked.charged = status.state != "terminated"
        if status.state == "terminated":
            await self._release(tracked)

    @staticmethod
    def _keep_address(old: InstanceStatus, new: InstanceStatus) -> InstanceStatus:
        if new.private_ip or not old.private_ip:
            return new
        return msgspec.structs.replace(new, private_ip=old.private_ip, mac=new.mac or old.mac)

    async def _release(self, tracked: Tracked) -> None:
        if not tracked.released:
            tracked.released = True
            await self.network.release(tracked.status.instance_id)

    async def _forget(self, tracked: Tracked, why: str, *, release: bool = True) -> None:
        instance_id = tracked.status.instance_id
        if self.instances.get(instance_id) is tracked:
            del self.instances[instance_id]
        node = self.nodes.get(tracked.status.node)
        if node is not None and node.instances.get(instance_id) is tracked:
            del node.instances[instance_id]
        tracked.started.set()
        log.info("instance forgotten id=%s node=%s why=%s", instance_id, tracked.status.node, why)
        if release:
            await self._release(tracked)

    async def _poll_moving(self, moving: dict[str, list[str]]) -> None:
        """Ask nodes about some of their instances (node name -> ids): a short NcDescribeInstances whose
        answer updates those alone. A node that does not answer is left to the regular poll."""

        async def ask(node: Node, ids: list[str]) -> None:
            started = self.tick()
            try:
                with trio.fail_after(self.poll_timeout):
                    listed: InstancesReply = await self._call(node, NcDescribeInstances(ids))
            except Exception as e:
                log.debug(
                    "poll of instances on the way failed node=%s error=%s", node.name, describe_error(e)
                )
                return
            if self.nodes.get(node.name) is not node:
                return
            wanted = set(ids)
            for status in listed.instances:
                if status.instance_id in wanted:
                    if status.node != node.name:
                        status = msgspec.structs.replace(status, node=node.name)
                    await self._reported(node, started, status)

        async with trio.open_nursery() as nursery:
            for name, ids in moving.items():
                node = self.nodes.get(name)
                if node is not None and node.up:
                    nursery.start_soon(ask, node, ids)

    async def _set_nodes(self, addresses: list[NodeAddress]) -> list[Node]:
        wanted = {a.name: a for a in addresses}
        for name in [n for n in self.nodes if n not in wanted]:
            gone = self.nodes.pop(name)
            log.info("node removed name=%s instances=%d", name, len(gone.instances))
            for tracked in list(gone.instances.values()):
                await self._forget(tracked, "node removed")
        added: list[Node] = []
        ordered: dict[str, Node] = {}
        for address in addresses:
            known = self.nodes.get(address.name)
            if known is None:
                node = Node(name=address.name, url=address.url, resources=unpolled(address.name))
                added.append(node)
                log.info("node added name=%s url=%s", address.name, address.url)
            else:
                node = known
            if node.url != address.url:
                log.info("node moved name=%s url=%s", address.name, address.url)
                node.url = address.url
            ordered[address.name] = node
        self.nodes = ordered
        return added

    # ------------------------------------------------------------------------------------------------
    # Views

    def node_view(self) -> list[NodeResources]:
        """Each node's resources as the scheduler should see them now (nodes.available)."""
        return [available(node) for node in self.nodes.values()]

    async def _call(self, node: Node, message: Any) -> Any:
        async with self.call_limiter:
            with trio.fail_after(self.call_timeout):
                return await self.client.call(node.url, message, expect_name=node.name)
