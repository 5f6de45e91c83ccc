"""The cluster controller's state and message handlers.

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
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgspec
import trio

from euca.protocol.cluster import (
    Ack,
    ClusterFault,
    ConsoleOutput,
    DescribeInstances,
    DescribeResources,
    GetConsoleOutput,
    InstanceSpec,
    InstancesReply,
    InstanceStatus,
    NcDescribeInstances,
    NcDescribeResource,
    NcGetConsoleOutput,
    NcRebootInstance,
    NcRunInstances,
    NcTerminateInstance,
    NodeAddress,
    NodeResources,
    RebootInstances,
    ResourcesReply,
    RunInstances,
    TerminateInstances,
    VmType,
)
from euca.roles.cc.nodes import (
    Node,
    NodeClient,
    Tracked,
    available,
    describe_error,
    fault_for,
    unpolled,
)
from euca.roles.cc.scheduler import Scheduler, capacity
from euca.roles.cc.vmnet import NetworkFull, VmNetwork

log = logging.getLogger("euca.cc")

T = TypeVar("T")


# After a RunInstances or TerminateInstances its nodes are polled this soon, then at doubling intervals up to
# WATCH_MAX_POLL while instances are on the way (IN_TRANSITION).
WATCH_FIRST_POLL = 0.1
WATCH_MAX_POLL = 1.0
IN_TRANSITION = frozenset({"pending", "shutting-down"})


class ClusterController:
    def __init__(
        self,
        cluster: str,
        client: NodeClient,
        network: VmNetwork,
        *,
        scheduler: str = "GREEDY",
        poll_interval: float = 6.0,
        poll_fanout: int = 16,
        call_timeout: float = 30.0,
    ):
        self.cluster = cluster
        self.client = client
        self.network = network
        self.scheduler = Scheduler(scheduler)
        self.poll_interval = poll_interval
        # A node that takes longer than this to answer a poll is down.
        self.poll_timeout = max(poll_interval, 5.0)
        self.call_timeout = call_timeout
        self.poll_limiter = trio.CapacityLimiter(max(1, poll_fanout))
        self.call_limiter = trio.CapacityLimiter(max(1, poll_fanout))
        self.nodes: dict[str, Node] = {}  # in the order the CLC lists them (GREEDY's order)
        self.vm_types: dict[str, VmType] = {}
        self.instances: dict[str, Tracked] = {}
        self._kick = trio.Event()
        self._cluster_name_warned = False
        self._ticks = 0
        self._topology_known = False  # a DescribeResources has told us the nodes
        self._nursery: trio.Nursery | None = None  # run()'s: where a run's watch goes
        self._watching: dict[str, trio.Event] = {}  # node name -> set to start its watch over

    def tick(self) -> int:
        """The next number of a sequence that orders what the CC learns (reports, replies); a clock could
        stand still between two events."""
        self._ticks += 1
        return self._ticks

    # ------------------------------------------------------------------------------------------------
    # Background: the poll loop

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.network.run)
            nursery.start_soon(self._poll_loop)
            self._nursery = nursery
            task_status.started()

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.poll_round()
            except Exception:
                # A bug here must not take the whole process (every role in it) down: said, and next round.
                log.exception("poll round failed")
            with trio.move_on_after(self.poll_interval):
                await self._kick.wait()
            self._kick = trio.Event()

    def kick(self) -> None:
        """Poll now rather than at the end of the interval."""
        self._kick.set()

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
                # Instances first: whatever they list is counted in the resources asked for after.
                listed: InstancesReply = await self.client.call(
                    node.url, NcDescribeInstances(), expect_name=node.name
                )
                resources: NodeResources = await self.client.call(
                    node.url, NcDescribeResource(), expect_name=node.name
                )
        except Exception as e:
            self._node_failed(node, started, describe_error(e))
            return
        await self._apply_report(node, started, listed.instances, resources)

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

    # ------------------------------------------------------------------------------------------------
    # Views

    def node_view(self) -> list[NodeResources]:
        """Each node's resources as the scheduler should see them now (nodes.available)."""
        return [available(node) for node in self.nodes.values()]

    # ------------------------------------------------------------------------------------------------
    # Handlers (CLC -> CC); each takes the message and returns the reply or raises ClusterFault.

    async def describe_resources(self, message: DescribeResources) -> ResourcesReply:
        if message.cluster and message.cluster != self.cluster and not self._cluster_name_warned:
            self._cluster_name_warned = True
            log.warning("cluster name differs configured=%s clc=%s", self.cluster, message.cluster)
        self.vm_types = {vm.name: vm for vm in message.vm_types}
        for tracked in self.instances.values():
            if tracked.vm is None:
                tracked.vm = self.vm_types.get(tracked.status.vm_type)
        added = await self._set_nodes(message.nodes)
        self._topology_known = True
        if added:
            # A node just registered (or this CC just restarted): learn it now, so this very reply has
            # its capacity and its instances are known before anything new is placed.
            await self.poll_round(added)
        view = self.node_view()
        return ResourcesReply(
            cluster=message.cluster or self.cluster,
            nodes=view,
            capacity=capacity(message.vm_types, view),
        )

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

    async def describe_instances(self, message: DescribeInstances) -> InstancesReply:
        if message.instance_ids:
            ids = list(dict.fromkeys(message.instance_ids))
            # The CLC asks about a few while they are on their way (pending, shutting down): what their
            # nodes say now, not at our last poll.
            moving: dict[str, list[str]] = {}
            for t in (self.instances.get(i) for i in ids):
                if t is not None and t.status.state in IN_TRANSITION:
                    moving.setdefault(t.status.node, []).append(t.status.instance_id)
            if moving:
                await self._poll_moving(moving)
            found = (self.instances.get(i) for i in ids)
            return InstancesReply([t.status for t in found if t is not None])
        return InstancesReply([t.status for t in self.instances.values()])

    async def run_instances(self, message: RunInstances) -> InstancesReply:
        specs = list({s.instance_id: s for s in message.instances}.values())
        new = [s for s in specs if s.instance_id not in self.instances]
        if new:
            await self._place_and_start(new)
            self._watch({self.instances[s.instance_id].status.node for s in new})
        return InstancesReply([self.instances[s.instance_id].status for s in specs])

    def _watch(self, node_names: Iterable[str]) -> None:
        """A run's instances stay pending until their nodes report them started, which for a cached image
        takes a fraction of a second (and a terminate's are shutting-down until the node has torn them
        down): poll those nodes soon, then less often (0.1 s, 0.2 s, 0.4 s, 0.8 s, then every second) while
        they have instances on the way, rather than after a whole poll interval. One watch per node; a new
        request on a watched node starts its watch over."""
        if self._nursery is None:
            return
        for name in node_names:
            restart = self._watching.get(name)
            if restart is not None:
                restart.set()
            else:
                self._watching[name] = trio.Event()
                self._nursery.start_soon(self._watch_node, name)

    async def _watch_node(self, name: str) -> None:
        delay = WATCH_FIRST_POLL
        try:
            while delay < self.poll_interval:
                with trio.move_on_after(delay):
                    await self._watching[name].wait()
                if self._watching[name].is_set():  # a new request there: from the first short delay
                    self._watching[name] = trio.Event()
                    delay = WATCH_FIRST_POLL
                    continue
                delay = min(delay * 2, WATCH_MAX_POLL)
                node = self.nodes.get(name)
                moving = (
                    [i for i, t in node.instances.items() if t.status.state in IN_TRANSITION] if node else []
                )
                if not moving:
                    return
                await self._poll_moving({name: moving})
        finally:
            del self._watching[name]

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

    async def _place_and_start(self, specs: list[InstanceSpec]) -> None:
        reservation = specs[0].reservation_id
        chosen = self.scheduler.plan([s.vm_type for s in specs], self.node_view())
        if chosen is None:
            log.info(
                "run refused reservation=%s count=%d type=%s reason=InsufficientInstanceCapacity",
                reservation,
                len(specs),
                ",".join(sorted({s.vm_type.name for s in specs})),
            )
            raise ClusterFault(
                "InsufficientInstanceCapacity",
                f"cluster {self.cluster} cannot hold {len(specs)} more instance(s) of the requested type",
            )
        # Reserve before the first await, so a request handled meanwhile sees these resources as used.
        now = self.tick()
        batch: list[tuple[InstanceSpec, Node, Tracked]] = []
        for spec, node_name in zip(specs, chosen, strict=True):
            node = self.nodes[node_name]
            tracked = Tracked(
                status=self._pending(spec, node_name), vm=spec.vm_type, updated=now, in_flight=True
            )
            self.instances[spec.instance_id] = tracked
            node.instances[spec.instance_id] = tracked
            batch.append((spec, node, tracked))
        try:
            await self._allocate_and_start(reservation, batch)
        finally:
            # Cancelled half way (the CLC hung up): what was not answered is left to the next reports,
            # which keep what the nodes have and drop the rest.
            for _, _, tracked in batch:
                if tracked.in_flight:
                    tracked.in_flight = False
                    tracked.updated = self.tick()
                    tracked.started.set()

    async def _allocate_and_start(
        self, reservation: str, batch: list[tuple[InstanceSpec, Node, Tracked]]
    ) -> None:
        try:
            for i, (spec, node, tracked) in enumerate(batch):
                net = await self.network.allocate(spec.instance_id)
                tracked.status = msgspec.structs.replace(
                    tracked.status, private_ip=net.private_ip, mac=net.mac
                )
                batch[i] = (msgspec.structs.replace(spec, net=net), node, tracked)
        except NetworkFull as e:
            for _, _, tracked in batch:
                await self._forget(tracked, "no address")
            raise ClusterFault("InsufficientFreeAddressesInSubnet", str(e)) from None
        log.info(
            "run placed reservation=%s instances=%s",
            reservation,
            ",".join(f"{s.instance_id}@{n.name}" for s, n, _ in batch),
        )
        failures: list[tuple[InstanceSpec, Node, Exception]] = []
        by_node: dict[str, list[tuple[InstanceSpec, Node, Tracked]]] = {}
        for item in batch:
            by_node.setdefault(item[1].name, []).append(item)

        async def start(node: Node, items: list[tuple[InstanceSpec, Node, Tracked]]) -> None:
            # One call per node for all of its instances of this request (the NC admits all or none).
            try:
                reply = await self._call(node, NcRunInstances([spec for spec, _, _ in items]))
            except Exception as e:
                failures.extend((spec, node, e) for spec, _, _ in items)
                return
            finally:
                for _, _, tracked in items:
                    tracked.in_flight = False
                    tracked.updated = self.tick()
                    tracked.started.set()
            answered = {status.instance_id: status for status in reply.instances}
            for spec, _, tracked in items:
                status = answered.get(spec.instance_id)
                if status is None:
                    failures.append(
                        (spec, node, ClusterFault("InternalError", "the node did not answer for it"))
                    )
                    continue
                if status.node != node.name:
                    status = msgspec.structs.replace(status, node=node.name)
                tracked.status = self._keep_address(tracked.status, status)

        async with trio.open_nursery() as nursery:
            for items in by_node.values():
                nursery.start_soon(start, items[0][1], items)
        if not failures:
            return
        spec, node, error = failures[0]
        log.warning(
            "run failed reservation=%s instance=%s node=%s error=%s; rolling back %d",
            reservation,
            spec.instance_id,
            node.name,
            describe_error(error),
            len(batch),
        )
        await self._roll_back(batch)
        raise fault_for(
            error,
            "InsufficientInstanceCapacity",
            f"node {node.name} could not start {spec.instance_id} (none of the request was started)",
        )

    async def _roll_back(self, batch: list[tuple[InstanceSpec, Node, Tracked]]) -> None:
        """Terminate every instance of a failed request, the failed ones too (a call that timed out may
        have started one), and forget them; what is left on a node shows in its next report."""

        async def undo(spec: InstanceSpec, node: Node, tracked: Tracked) -> None:
            try:
                await self._call(node, NcTerminateInstance(spec.instance_id))
            except Exception as e:
                log.warning(
                    "rollback terminate failed id=%s node=%s error=%s",
                    spec.instance_id,
                    node.name,
                    describe_error(e),
                )
            await self._forget(tracked, "run rolled back")

        async with trio.open_nursery() as nursery:
            for spec, node, tracked in batch:
                nursery.start_soon(undo, spec, node, tracked)

    @staticmethod
    def _pending(spec: InstanceSpec, node: str) -> InstanceStatus:
        return InstanceStatus(
            instance_id=spec.instance_id,
            reservation_id=spec.reservation_id,
            account_id=spec.account_id,
            state="pending",
            nc_state="staging",
            node=node,
            vm_type=spec.vm_type.name,
            image_id=spec.machine.image_id,
            launch_index=spec.launch_index,
            private_ip=spec.net.private_ip if spec.net else None,
            mac=spec.net.mac if spec.net else None,
            launch_time=spec.launch_time,
        )

    async def terminate_instances(self, message: TerminateInstances) -> InstancesReply:
        """Instances this CC does not know are left out of the reply (the CLC decides what that means)."""
        targets = [t for t in (self.instances.get(i) for i in dict.fromkeys(message.instance_ids)) if t]

        async def terminate(tracked: Tracked) -> None:
            with trio.move_on_after(self.call_timeout):
                await tracked.started.wait()  # a run still on the wire: terminate after it, not before
            instance_id = tracked.status.instance_id
            node = self.nodes.get(tracked.status.node)
            if node is None:
                return
            try:
                status = await self._call(node, NcTerminateInstance(instance_id))
            except Exception as e:
                log.warning(
                    "terminate failed id=%s node=%s error=%s", instance_id, node.name, describe_error(e)
                )
                return
            if status.node != node.name:
                status = msgspec.structs.replace(status, node=node.name)
            tracked.status = self._keep_address(tracked.status, status)
            tracked.updated = self.tick()
            log.info("terminate id=%s node=%s state=%s", instance_id, node.name, status.state)
            if status.state == "terminated":
                await self._release(tracked)

        async with trio.open_nursery() as nursery:
            for tracked in targets:
                nursery.start_soon(terminate, tracked)
        self._watch({t.status.node for t in targets})
        return InstancesReply([t.status for t in targets])

    def _known(self, instance_ids: Iterable[str]) -> list[tuple[Tracked, Node]]:
        found = []
        for instance_id in dict.fromkeys(instance_ids):
            tracked = self.instances.get(instance_id)
            node = self.nodes.get(tracked.status.node) if tracked else None
            if tracked is None or node is None:
                raise ClusterFault(
                    "InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist"
                )
            found.append((tracked, node))
        return found

    async def reboot_instances(self, message: RebootInstances) -> Ack:
        targets = self._known(message.instance_ids)
        errors: list[tuple[str, Exception]] = []

        async def reboot(tracked: Tracked, node: Node) -> None:
            instance_id = tracked.status.instance_id
            try:
                await self._call(node, NcRebootInstance(instance_id))
            except Exception as e:
                log.warning("reboot failed id=%s node=%s error=%s", instance_id, node.name, describe_error(e))
                errors.append((instance_id, e))
                return
            log.info("reboot id=%s node=%s", instance_id, node.name)

        async with trio.open_nursery() as nursery:
            for tracked, node in targets:
                nursery.start_soon(reboot, tracked, node)
        if errors:
            instance_id, error = errors[0]
            raise fault_for(error, "Unavailable", f"reboot of {instance_id}")
        return Ack()

    async def get_console_output(self, message: GetConsoleOutput) -> ConsoleOutput:
        [(tracked, node)] = self._known([message.instance_id])
        try:
            output: ConsoleOutput = await self._call(node, NcGetConsoleOutput(message.instance_id))
        except Exception as e:
            raise fault_for(
                e, "Unavailable", f"console of {message.instance_id} on node {node.name}"
            ) from None
        return output

    async def _call(self, node: Node, message: Any) -> Any:
        async with self.call_limiter:
            with trio.fail_after(self.call_timeout):
                return await self.client.call(node.url, message, expect_name=node.name)

    def handlers(self) -> dict[type, Callable[[Any], Awaitable[Any]]]:
        """Message type -> handler, for the CC's listener."""
        return {
            DescribeResources: self.describe_resources,
            DescribeInstances: self.describe_instances,
            RunInstances: self.run_instances,
            TerminateInstances: self.terminate_instances,
            RebootInstances: self.reboot_instances,
            GetConsoleOutput: self.get_console_output,
        }
