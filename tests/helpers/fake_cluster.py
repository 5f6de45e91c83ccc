"""An in-process stand-in for a CC, for the CLC's service tests: the real cluster listener (ClusterApp on a
mutual-TLS HttpServer with a certificate from the cloud CA), answering the CLC->CC messages from a small
model of nodes and instances that tests control (capacity, faults, a node that loses an instance).

The CLC talks to it exactly as to a real CC (ClusterClient, mTLS, JSON messages); only the scheduling and the
virtual machines are simulated. Tests of the real CC and NC roles live with them.

    with FakeCluster(euca.ctx.ca, tmp_path / "fake-a", "fake-a", nodes=[FakeNode("n1", cores=4)]) as cc:
        register it at cc.port, run instances, look at cc.specs ...

Each stand-in holds its own CC certificate (OU=cc, CN=its name, or `cert_name`), issued by the cloud CA into
its own directory, as a CC that joined the cloud would.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from euca.core.cluster_app import ClusterApp
from euca.core.components import Components, ensure_components
from euca.core.config import HttpLimits
from euca.core.http import HttpServer, Peer
from euca.core.pki import CloudCA
from euca.protocol import cluster as c
from euca.protocol.cluster import ClusterFault, NodeResources, VmType, mac_for_instance, vm_type_fits
from euca.roles.clc.placement import type_capacity
from helpers.instances import wait_for
from helpers.server import EucaServer, admin_cli


@dataclass
class FakeNode:
    name: str
    cores: int = 4
    memory_mb: int = 4096
    disk_gb: int = 100


@dataclass
class FakeInstance:
    spec: c.InstanceSpec
    node: str
    ip: str
    state: str = "pending"  # becomes running at the next DescribeInstances
    reason: str | None = None
    reboots: int = 0
    volumes: dict[str, c.AttachedVolume] = field(default_factory=dict)  # EBS volumes attached, by id


@dataclass
class FakeCluster:
    ca: CloudCA
    directory: Path
    name: str
    nodes: list[FakeNode] = field(default_factory=lambda: [FakeNode("node-1")])
    subnet: int = 99
    cert_name: str | None = None  # the CN of its certificate (default: its name)

    def __post_init__(self) -> None:
        self.components = Components(self.directory)
        ensure_components(self.components, self.ca, [("cc", self.cert_name or self.name, ["127.0.0.1"])])
        self.lock = threading.Lock()
        self.instances: dict[str, FakeInstance] = {}
        self.run_calls: list[list[c.InstanceSpec]] = []  # each RunInstances received
        self.terminate_calls: list[list[str]] = []
        self.attach_calls: list[c.AttachVolume] = []
        self.detach_calls: list[c.DetachVolume] = []
        self.stop_calls: list[c.StopInstances] = []  # EBS-backed instances (issue 10)
        self.last_topology: c.DescribeResources | None = None
        # The metadata the CLC sent (PutInstanceMetadata), as a real CC keeps it for its metadata service;
        # asked for in each reply whose view names a version it does not hold.
        self.metadata: dict[str, c.InstanceMetadata] = {}
        self.refuse_calls = False  # answer every call with Unavailable (a CC that is down)
        self.run_fault: tuple[str, str] | None = None  # answer RunInstances with this fault
        self.port = 0
        self._token: Any = None
        self._thread: threading.Thread | None = None

    # -- control (from the test's thread) ---------------------------------------------------------------

    @property
    def specs(self) -> list[c.InstanceSpec]:
        with self.lock:
            return [s for call in self.run_calls for s in call]

    def forget(self, instance_id: str) -> None:
        """The instance's node vanished: the CC no longer reports it."""
        with self.lock:
            self.instances.pop(instance_id, None)

    def power_off(self, instance_id: str) -> None:
        """The guest powered itself off: its node ended it (reason GUEST_POWERED_OFF)."""
        with self.lock:
            i = self.instances[instance_id]
            i.state, i.reason = "terminated", c.GUEST_POWERED_OFF
            i.volumes.clear()

    def reboots(self, instance_id: str) -> int:
        with self.lock:
            return self.instances[instance_id].reboots

    # -- the model --------------------------------------------------------------------------------------

    def _free(self) -> list[NodeResources]:
        out = []
        for n in self.nodes:
            used = [
                i.spec.vm_type
                for i in self.instances.values()
                if i.node == n.name and i.state != "terminated"
            ]
            out.append(
                NodeResources(
                    node=n.name,
                    state="up",
                    cores_max=n.cores,
                    cores_free=n.cores - sum(v.cores for v in used),
                    memory_mb_max=n.memory_mb,
                    memory_mb_free=n.memory_mb - sum(v.memory_mb for v in used),
                    disk_gb_max=n.disk_gb,
                    disk_gb_free=n.disk_gb - sum(v.disk_gb for v in used),
                    hypervisor="qemu",
                )
            )
        return out

    def _status(self, i: FakeInstance) -> c.InstanceStatus:
        nc_state = {"pending": "staging", "running": "running", "terminated": "terminated"}[i.state]
        return c.InstanceStatus(
            instance_id=i.spec.instance_id,
            reservation_id=i.spec.reservation_id,
            account_id=i.spec.account_id,
            state=i.state,  # type: ignore[arg-type]
            nc_state=nc_state,  # type: ignore[arg-type]
            node=i.node,
            vm_type=i.spec.vm_type.name,
            image_id=i.spec.machine.image_id,
            launch_index=i.spec.launch_index,
            private_ip=i.ip,
            mac=mac_for_instance(i.spec.instance_id),
            launch_time=i.spec.launch_time,
            reason=i.reason,
            volumes=list(i.volumes.values()),
        )

    def _check(self) -> None:
        if self.refuse_calls:
            raise ClusterFault("Unavailable", f"{self.name} is down", 503)

    async def describe_resources(self, msg: c.DescribeResources, peer: Peer) -> c.ResourcesReply:
        with self.lock:
            self._check()
            self.last_topology = msg
            nodes = self._free()
            wanted = [
                i.instance_id
                for i in (msg.network.instances if msg.network is not None else [])
                if i.metadata_version
                and (
                    i.instance_id not in self.metadata
                    or self.metadata[i.instance_id].version != i.metadata_version
                )
            ]
            return c.ResourcesReply(msg.cluster, nodes, type_capacity(msg.vm_types, nodes), wanted)

    async def put_instance_metadata(self, msg: c.PutInstanceMetadata, peer: Peer) -> c.Ack:
        with self.lock:
            self._check()
            self.metadata.update((m.instance_id, m) for m in msg.instances)
            return c.Ack()

    async def describe_instances(self, msg: c.DescribeInstances, peer: Peer) -> c.InstancesReply:
        with self.lock:
            self._check()
            out = []
            for i in self.instances.values():
                if not msg.instance_ids or i.spec.instance_id in msg.instance_ids:
                    out.append(self._status(i))
                    if i.state == "pending":
                        i.state = "running"
            return c.InstancesReply(out)

    async def run_instances(self, msg: c.RunInstances, peer: Peer) -> c.InstancesReply:
        with self.lock:
            self._check()
            self.run_calls.append(list(msg.instances))
            if self.run_fault is not None:
                raise ClusterFault(*self.run_fault)
            free = self._free()
            placed: list[tuple[c.InstanceSpec, str]] = []
            for spec in msg.instances:
                known = self.instances.get(spec.instance_id)
                if known is not None and known.state == "terminated" and known.reason in c.STARTABLE_AFTER:
                    del self.instances[spec.instance_id]  # started again after a stop
                elif known is not None:
                    continue
                node = self._fit(free, spec.vm_type)
                if node is None:
                    raise ClusterFault(
                        "InsufficientInstanceCapacity", f"{self.name}: not enough room for all"
                    )
                placed.append((spec, node))
            for spec, node in placed:
                n = len(self.instances) + 2
                self.instances[spec.instance_id] = FakeInstance(
                    spec, node, f"10.{self.subnet}.{n // 250}.{n % 250}"
                )
                # An EBS-backed instance's volumes, as its node defines them: the root vda, the rest after.
                for k, v in enumerate(sorted(spec.volumes, key=lambda v: not v.root)):
                    self.instances[spec.instance_id].volumes[v.volume_id] = c.AttachedVolume(
                        v.volume_id, v.device, f"vd{'abcdefghijklmnop'[k]}"
                    )
            return c.InstancesReply([self._status(self.instances[s.instance_id]) for s in msg.instances])

    def _fit(self, free: list[NodeResources], vm: VmType) -> str | None:
        for k, n in enumerate(free):
            if vm_type_fits(vm, n):
                free[k] = NodeResources(
                    n.node,
                    n.state,
                    n.cores_max,
                    n.cores_free - vm.cores,
                    n.memory_mb_max,
                    n.memory_mb_free - vm.memory_mb,
                    n.disk_gb_max,
                    n.disk_gb_free - vm.disk_gb,
                )
                return n.node
        return None

    async def terminate_instances(self, msg: c.TerminateInstances, peer: Peer) -> c.InstancesReply:
        with self.lock:
            self._check()
            self.terminate_calls.append(list(msg.instance_ids))
            out = []
            for instance_id in msg.instance_ids:
                i = self.instances.get(instance_id)
                if i is not None:
                    i.state = "terminated"
                    out.append(self._status(i))
            return c.InstancesReply(out)

    async def stop_instances(self, msg: c.StopInstances, peer: Peer) -> c.InstancesReply:
        """As a node stops an EBS-backed instance: it ends (reason STOPPED_REASON); its volumes are the SC's."""
        with self.lock:
            self._check()
            self.stop_calls.append(msg)
            out = []
            for instance_id in msg.instance_ids:
                i = self.instances.get(instance_id)
                if i is not None:
                    i.state = "terminated"
                    i.reason = c.STOPPED_REASON
                    i.volumes.clear()
                    out.append(self._status(i))
            return c.InstancesReply(out)

    async def reboot_instances(self, msg: c.RebootInstances, peer: Peer) -> c.Ack:
        with self.lock:
            self._check()
            for instance_id in msg.instance_ids:
                if instance_id not in self.instances:
                    raise ClusterFault("InvalidInstanceID.NotFound", f"no instance {instance_id}")
                self.instances[instance_id].reboots += 1
            return c.Ack()

    async def get_console_output(self, msg: c.GetConsoleOutput, peer: Peer) -> c.ConsoleOutput:
        with self.lock:
            self._check()
            i = self.instances.get(msg.instance_id)
            if i is None or i.state == "terminated":
                raise ClusterFault("InvalidInstanceID.NotFound", f"no instance {msg.instance_id}")
            text = f"euca-guest: booted {msg.instance_id}\n" * (1 + i.reboots)
            return c.ConsoleOutput(msg.instance_id, text.encode(), time.time())

    async def attach_volume(self, msg: c.AttachVolume, peer: Peer) -> c.InstanceStatus:
        """As a node does: the volume becomes the next virtio disk (vdb, vdc, ...)."""
        with self.lock:
            self._check()
            self.attach_calls.append(msg)
            i = self.instances.get(msg.instance_id)
            if i is None or i.state == "terminated":
                raise ClusterFault("InvalidInstanceID.NotFound", f"no instance {msg.instance_id}", 404)
            if msg.volume_id not in i.volumes:
                target = f"vd{'bcdefghijklmnop'[len(i.volumes)]}"
                i.volumes[msg.volume_id] = c.AttachedVolume(msg.volume_id, msg.device, target)
            return self._status(i)

    async def detach_volume(self, msg: c.DetachVolume, peer: Peer) -> c.InstanceStatus:
        with self.lock:
            self._check()
            self.detach_calls.append(msg)
            i = self.instances.get(msg.instance_id)
            if i is None:
                raise ClusterFault("InvalidInstanceID.NotFound", f"no instance {msg.instance_id}", 404)
            i.volumes.pop(msg.volume_id, None)
            return self._status(i)

    # -- serving ----------------------------------------------------------------------------------------

    def __enter__(self) -> FakeCluster:
        app = ClusterApp(
            "cc",
            {
                c.DescribeResources: self.describe_resources,
                c.DescribeInstances: self.describe_instances,
                c.RunInstances: self.run_instances,
                c.TerminateInstances: self.terminate_instances,
                c.RebootInstances: self.reboot_instances,
                c.GetConsoleOutput: self.get_console_output,
                c.PutInstanceMetadata: self.put_instance_metadata,
                c.AttachVolume: self.attach_volume,
                c.DetachVolume: self.detach_volume,
                c.StopInstances: self.stop_instances,
            },
        )
        server = HttpServer(
            app.handle, "127.0.0.1", 0, HttpLimits(), ssl_context=self.components.server_context("cc")
        )
        ready = threading.Event()

        def main() -> None:
            async def serve() -> None:
                self._token = trio.lowlevel.current_trio_token()
                async with trio.open_nursery() as nursery:
                    self.port = await nursery.start(server.serve)
                    ready.set()

            trio.run(serve)

        self._server = server
        self._thread = threading.Thread(target=main, name=f"fake-cc-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(30)
        assert self.port, "the fake CC did not start"
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __exit__(self, *exc: Any) -> None:
        trio.from_thread.run_sync(self._server.shutdown, trio_token=self._token)
        assert self._thread is not None
        self._thread.join(30)


def register_cluster(cloud: EucaServer, fake: FakeCluster) -> None:
    """Register the stand-in as an operator would (`euca admin register-cluster`, no join token)."""
    admin_cli(
        cloud,
        "register-cluster",
        fake.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(fake.port),
        "--no-join-token",
    )


def register_with(cloud: EucaServer, ec2: Any, fake: FakeCluster) -> None:
    """Register the stand-in and its nodes with the cloud as an operator would (`euca admin register-cluster`,
    `register-node`, no join tokens), then wait until its zone is available to `ec2`."""
    register_cluster(cloud, fake)
    for node in fake.nodes:
        admin_cli(
            cloud,
            "register-node",
            "--cluster",
            fake.name,
            "--host",
            "127.0.0.1",
            "--name",
            node.name,
            "--no-join-token",
        )
    wait_for(
        f"zone {fake.name} available",
        lambda: any(
            z["ZoneName"] == fake.name and z["State"] == "available"
            for z in ec2.describe_availability_zones()["AvailabilityZones"]
        ),
    )
