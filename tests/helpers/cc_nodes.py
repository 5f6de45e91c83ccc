"""In-memory node controllers for the cluster controller's tests: a node's resources and instances, answering
the CC->NC messages as a real NC would (capacity, faults, a node that is unreachable), and the instance specs
the CC places on them."""

from __future__ import annotations

from typing import Any

import trio

from euca.protocol import cluster as c
from euca.protocol.cluster import ClusterFault

SMALL = c.VmType("m1.small", 1, 256, 5)
LARGE = c.VmType("c1.xlarge", 2, 2048, 10)
VM_TYPES = [SMALL, LARGE]


class NodeUnreachable(OSError):
    pass


class InMemoryNodeController:
    """A node controller's behaviour, in memory: resources max minus what its live instances use."""

    def __init__(self, name: str, cores: int = 4, memory_mb: int = 4096, disk_gb: int = 100):
        self.name = name
        self.cores, self.memory_mb, self.disk_gb = cores, memory_mb, disk_gb
        self.instances: dict[str, tuple[c.InstanceSpec, str]] = {}  # id -> (spec, nc_state)
        self.unreachable = False
        self.fail_runs = False
        self.run_gate: trio.Event | None = None  # when set, NcRunInstance waits for it
        self.calls: list[Any] = []
        self.run_calls: list[list[str]] = []  # instance ids of each NcRunInstances
        self.terminate_to = "terminated"  # "teardown": a terminate ends later, as on a real node
        self.volumes: dict[str, list[c.AttachedVolume]] = {}  # instance id -> its attached volumes
        self.one_call = (
            True  # False: an NC from before NcDescribeNode (answers BadMessage, as ClusterApp does)
        )

    def status(self, instance_id: str) -> c.InstanceStatus:
        spec, nc_state = self.instances[instance_id]
        return c.InstanceStatus(
            instance_id=instance_id,
            reservation_id=spec.reservation_id,
            account_id=spec.account_id,
            state=c.ec2_state(nc_state),
            nc_state=nc_state,  # type: ignore[arg-type]
            node=self.name,
            vm_type=spec.vm_type.name,
            image_id=spec.machine.image_id,
            launch_index=spec.launch_index,
            private_ip=spec.net.private_ip if spec.net else None,
            mac=spec.net.mac if spec.net else None,
            launch_time=spec.launch_time,
            volumes=list(self.volumes.get(instance_id, [])),
        )

    def set_state(self, instance_id: str, nc_state: str) -> None:
        spec, _ = self.instances[instance_id]
        self.instances[instance_id] = (spec, nc_state)

    def _not_found(self, instance_id: str) -> ClusterFault:
        return ClusterFault("InvalidInstanceID.NotFound", f"{instance_id} is not on {self.name}")

    async def handle(self, message: Any) -> Any:
        if self.unreachable:
            raise NodeUnreachable(f"connection to {self.name} refused")
        self.calls.append(message)
        if isinstance(message, c.NcDescribeResource):
            live = [s for s, st in self.instances.values() if st not in ("terminated", "canceled")]
            return c.NodeResources(
                node=self.name,
                state="up",
                cores_max=self.cores,
                cores_free=self.cores - sum(s.vm_type.cores for s in live),
                memory_mb_max=self.memory_mb,
                memory_mb_free=self.memory_mb - sum(s.vm_type.memory_mb for s in live),
                disk_gb_max=self.disk_gb,
                disk_gb_free=self.disk_gb - sum(s.vm_type.disk_gb for s in live),
                hypervisor="qemu",
            )
        if isinstance(message, c.NcDescribeNode):
            if not self.one_call:
                raise ClusterFault("BadMessage", "a nc does not answer NcDescribeNode", 400)
            # Logged as the two calls it stands for, which the tests count.
            self.calls.pop()
            listed = await self.handle(c.NcDescribeInstances())
            return c.NodeReport(listed.instances, await self.handle(c.NcDescribeResource()))
        if isinstance(message, c.NcDescribeInstances):
            ids = message.instance_ids or list(self.instances)
            return c.InstancesReply([self.status(i) for i in ids if i in self.instances])
        if isinstance(message, c.NcRunInstances):
            # The CC sends a request's instances on this node in one call; counted here per instance
            # (as NcRunInstance), and all or none, as the NC admits them.
            self.calls.pop()
            self.run_calls.append([spec.instance_id for spec in message.instances])
            before = dict(self.instances)
            try:
                return c.InstancesReply([await self.handle(c.NcRunInstance(s)) for s in message.instances])
            except BaseException:
                self.instances = before
                raise
        if isinstance(message, c.NcRunInstance):
            if self.run_gate is not None:
                await self.run_gate.wait()
            if self.fail_runs:
                raise ClusterFault("InsufficientInstanceCapacity", f"{self.name} refuses")
            spec = message.instance
            if spec.instance_id not in self.instances:
                self.instances[spec.instance_id] = (spec, "staging")
            return self.status(spec.instance_id)
        if isinstance(message, c.NcTerminateInstance):
            if message.instance_id not in self.instances:
                raise self._not_found(message.instance_id)
            self.set_state(message.instance_id, self.terminate_to)
            return self.status(message.instance_id)
        if isinstance(message, c.NcRebootInstance):
            if message.instance_id not in self.instances:
                raise self._not_found(message.instance_id)
            return c.Ack()
        if isinstance(message, c.NcGetConsoleOutput):
            if message.instance_id not in self.instances:
                raise self._not_found(message.instance_id)
            return c.ConsoleOutput(message.instance_id, f"booted {message.instance_id}\n".encode(), 1.0)
        if isinstance(message, c.NcAttachVolume):
            if message.instance_id not in self.instances:
                raise self._not_found(message.instance_id)
            attached = self.volumes.setdefault(message.instance_id, [])
            if all(v.volume_id != message.volume_id for v in attached):
                attached.append(
                    c.AttachedVolume(message.volume_id, message.device, f"vd{'bcdefgh'[len(attached)]}")
                )
            return self.status(message.instance_id)
        if isinstance(message, c.NcDetachVolume):
            if message.instance_id not in self.instances:
                raise self._not_found(message.instance_id)
            kept = [v for v in self.volumes.get(message.instance_id, []) if v.volume_id != message.volume_id]
            self.volumes[message.instance_id] = kept
            return self.status(message.instance_id)
        raise AssertionError(f"unexpected {message!r}")

    def count(self, kind: type) -> int:
        return sum(1 for m in self.calls if isinstance(m, kind))


def spec(n: int, vm: c.VmType = SMALL, reservation: str = "r-00000001") -> c.InstanceSpec:
    return c.InstanceSpec(
        instance_id=f"i-{n:08x}",
        reservation_id=reservation,
        account_id="000000000001",
        launch_index=n,
        vm_type=vm,
        machine=c.ImageRef("emi-12345678", "machine", "<manifest/>"),
    )


class WireCheckedNodeClient:
    """The CC's node client without sockets: each message and its reply cross the wire format (encode,
    decode) as over HTTP, to the in-memory node registered at the URL."""

    def __init__(self, nodes: dict[str, InMemoryNodeController]):
        self.nodes = nodes  # url -> node

    async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any:
        path, body = c.encode_request(message)
        node = self.nodes[base_url]
        if expect_name is not None and expect_name != node.name:
            raise ClusterFault("Unauthorized", f"{base_url} is not nc/{expect_name}")
        try:
            reply = await node.handle(c.decode_request(path, body))
        except ClusterFault as fault:
            c.decode_reply(type(message), fault.status, c.encode_fault(fault.code, fault.message))
            raise AssertionError("unreachable") from None
        return c.decode_reply(type(message), 200, c.encode_reply(reply))
