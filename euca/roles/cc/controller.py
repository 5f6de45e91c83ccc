"""The cluster controller's answers to the CLC (ClusterController): DescribeResources, DescribeInstances,
RunInstances (placement by the scheduler, addresses from the VM network, one NcRunInstances per node, all
or nothing), TerminateInstances, RebootInstances, GetConsoleOutput; and the background that keeps its
picture of the cluster current: the poll loop, and the watch that polls a node soon after a request while
its instances are on their way.

What the CC knows, and how reports and its own calls are ordered and counted, is ClusterState (state.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
import trio

from euca.protocol.cluster import (
    Ack,
    AttachVolume,
    ClusterFault,
    ConsoleOutput,
    DescribeInstances,
    DescribeResources,
    DetachVolume,
    GetConsoleOutput,
    InstanceSpec,
    InstancesReply,
    InstanceStatus,
    NcAttachVolume,
    NcDetachVolume,
    NcGetConsoleOutput,
    NcRebootInstance,
    NcRunInstances,
    NcTerminateInstance,
    PutInstanceMetadata,
    RebootInstances,
    ResourcesReply,
    RunInstances,
    TerminateInstances,
)
from euca.roles.cc.nodes import (
    Node,
    NodeClient,
    Tracked,
    describe_error,
    fault_for,
)
from euca.roles.cc.scheduler import Scheduler, capacity
from euca.roles.cc.state import ClusterState
from euca.roles.cc.vmnet import NetworkFull, VmNetwork

log = logging.getLogger("euca.cc")


# After a RunInstances or TerminateInstances its nodes are polled this soon, then at doubling intervals up to
# WATCH_MAX_POLL while instances are on the way (IN_TRANSITION).
WATCH_FIRST_POLL = 0.1
WATCH_MAX_POLL = 1.0
IN_TRANSITION = frozenset({"pending", "shutting-down"})


class ClusterController(ClusterState):
    """The CC's answers to the CLC, and the poll loop and watches that keep its ClusterState current."""

    def __init__(
        self,
        cluster: str,
        client: NodeClient,
        network: VmNetwork,
        *,
        scheduler: str = "GREEDY",
        poll_interval: float = 6.0,
        poll_fanout: int = 64,
        call_timeout: float = 30.0,
    ):
        super().__init__(
            cluster,
            client,
            network,
            poll_interval=poll_interval,
            poll_fanout=poll_fanout,
            call_timeout=call_timeout,
        )
        self.scheduler = Scheduler(scheduler)
        self._kick = trio.Event()
        self._cluster_name_warned = False
        self._subnet_refused: str | None = None  # the CLC's subnet last refused (logged once)
        self._nursery: trio.Nursery | None = None  # run()'s: where a run's watch goes
        self._watching: dict[str, trio.Event] = {}  # node name -> set to start its watch over

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
            started = trio.current_time()
            try:
                await self.poll_round()
                # One line a round: how long asking every node took (bench/scale.py reads it; the goal is
                # well under the poll interval, Eucalyptus's 6 s, with 1,000 nodes).
                log.info(
                    "poll round nodes=%d up=%d instances=%d seconds=%.3f",
                    len(self.nodes),
                    sum(1 for node in self.nodes.values() if node.up),
                    len(self.instances),
                    trio.current_time() - started,
                )
            except Exception:
                # A bug here must not take the whole process (every role in it) down: said, and next round.
                log.exception("poll round failed")
            with trio.move_on_after(self.poll_interval):
                await self._kick.wait()
            self._kick = trio.Event()

    def kick(self) -> None:
        """Poll now rather than at the end of the interval."""
        self._kick.set()

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
        if message.subnet and message.subnet != self.network.subnet:
            if self.network.set_subnet(message.subnet):
                log.info("cluster subnet now %s (the CLC's)", self.network.subnet)
            elif self._subnet_refused != message.subnet:
                self._subnet_refused = message.subnet
                log.warning(
                    "cluster subnet stays %s: instances hold addresses of it (the CLC's: %s)",
                    self.network.subnet,
                    message.subnet,
                )
        wanted: list[str] = []
        if message.network is not None:
            self.network.apply_view(message.network)
            wanted = self.network.catalog.wanted(message.network)
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
            metadata_wanted=wanted,
            subnet=self.network.subnet,
        )

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
                self.network.note_launch(batch[i][0])
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

    async def put_instance_metadata(self, message: PutInstanceMetadata) -> Ack:
        """The metadata this CC asked for (metadata_wanted), for its metadata service."""
        self.network.catalog.put(message.instances)
        return Ack()

    # -- EBS volumes (issue 10): passed to the instance's NC, whose answer is the instance's new status ----

    async def attach_volume(self, message: AttachVolume) -> InstanceStatus:
        [(tracked, node)] = self._known([message.instance_id])
        nc_message = NcAttachVolume(message.instance_id, message.volume_id, message.device, message.export)
        return await self._volume_call(tracked, node, nc_message)

    async def detach_volume(self, message: DetachVolume) -> InstanceStatus:
        [(tracked, node)] = self._known([message.instance_id])
        nc_message = NcDetachVolume(message.instance_id, message.volume_id, message.force)
        return await self._volume_call(tracked, node, nc_message)

    async def _volume_call(
        self, tracked: Tracked, node: Node, message: NcAttachVolume | NcDetachVolume
    ) -> InstanceStatus:
        what = type(message).__name__
        try:
            status: InstanceStatus = await self._call(node, message)
        except Exception as e:
            log.warning(
                "%s failed id=%s node=%s error=%s", what, message.volume_id, node.name, describe_error(e)
            )
            raise fault_for(e, "Unavailable", f"{what} of {message.volume_id} on node {node.name}") from None
        if status.node != node.name:
            status = msgspec.structs.replace(status, node=node.name)
        tracked.status = self._keep_address(tracked.status, status)
        tracked.updated = self.tick()
        log.info("%s id=%s instance=%s node=%s", what, message.volume_id, message.instance_id, node.name)
        return tracked.status

    def handlers(self) -> dict[type, Callable[[Any], Awaitable[Any]]]:
        """Message type -> handler, for the CC's listener."""
        return {
            DescribeResources: self.describe_resources,
            DescribeInstances: self.describe_instances,
            RunInstances: self.run_instances,
            TerminateInstances: self.terminate_instances,
            RebootInstances: self.reboot_instances,
            GetConsoleOutput: self.get_console_output,
            PutInstanceMetadata: self.put_instance_metadata,
            AttachVolume: self.attach_volume,
            DetachVolume: self.detach_volume,
        }
