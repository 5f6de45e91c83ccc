"""One instance on a node: instance.json (what survives a restart) and its state in memory, the NC state
sets, and the checks a spec must pass before the node takes it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import trio

from euca.protocol.cluster import ClusterFault, InstanceSpec, InstanceStatus, NcState, ec2_state
from euca.roles.nc.volumes import SavedAttachment

ALIVE: frozenset[NcState] = frozenset({"booting", "running", "blocked", "paused"})
ENDED: frozenset[NcState] = frozenset({"terminated", "canceled"})


class SavedInstance(msgspec.Struct):
    """instance.json: what the node needs to know about an instance after a restart."""

    spec: InstanceSpec
    node: str
    domain_type: str
    created: float


saved_decoder = msgspec.json.Decoder(SavedInstance)


class Instance:
    """One instance on this node, in memory."""

    def __init__(self, spec: InstanceSpec, directory: Path, domain_type: str, state: NcState = "staging"):
        # domain_type: "kvm" or "qemu", fixed when it was staged (kept across restarts in instance.json)
        self.spec = spec
        self.dir = directory
        self.domain_type = domain_type
        self.state: NcState = state
        self.reason: str | None = None
        self.pinned: list[str] = []  # image cache keys this instance holds
        self.ended_at: float | None = None
        self.console = b""  # the console's tail, kept once the files are gone
        self.staging: trio.CancelScope | None = None
        self.terminate_requested = False
        self.stop_requested = False  # StopInstances: it ends as a terminated one, reason STOPPED_REASON
        self.tearing_down = False
        self.lock = trio.Lock()  # reboot and teardown, one at a time
        self.settled = trio.Event()  # left staging: booting, or ended
        self.ended = trio.Event()
        self.reboots = 0
        # EBS volumes attached (volumes.json in its directory), by volume id.
        self.volumes: dict[str, SavedAttachment] = {}

    @property
    def id(self) -> str:
        return self.spec.instance_id

    def status(self, node: str) -> InstanceStatus:
        spec = self.spec
        return InstanceStatus(
            instance_id=spec.instance_id,
            reservation_id=spec.reservation_id,
            account_id=spec.account_id,
            state=ec2_state(self.state),
            nc_state=self.state,
            node=node,
            vm_type=spec.vm_type.name,
            image_id=spec.machine.image_id,
            launch_index=spec.launch_index,
            private_ip=spec.net.private_ip if spec.net else None,
            mac=spec.net.mac if spec.net and spec.net.mac else None,
            launch_time=spec.launch_time,
            reason=self.reason,
            volumes=[a.volume for a in self.volumes.values()],
        )


def image_ids(spec: InstanceSpec) -> list[str]:
    return [ref.image_id for ref in (spec.machine, spec.kernel, spec.ramdisk) if ref is not None]


def check_spec(spec: InstanceSpec) -> None:
    vm = spec.vm_type
    if vm.cores < 1 or vm.memory_mb < 1 or vm.disk_gb < 0:
        raise ClusterFault("InvalidParameterValue", f"instance type {vm.name} has no cores or no memory")
    if spec.machine.kind != "machine":
        raise ClusterFault("InvalidParameterValue", f"{spec.machine.image_id} is not a machine image")
    if spec.kernel is not None and spec.kernel.kind != "kernel":
        raise ClusterFault("InvalidParameterValue", f"{spec.kernel.image_id} is not a kernel image")
    if spec.ramdisk is not None and spec.ramdisk.kind != "ramdisk":
        raise ClusterFault("InvalidParameterValue", f"{spec.ramdisk.image_id} is not a ramdisk image")


def failure_reason(exc: BaseException) -> str:
    """Why staging failed, for the instance's reason: the first leaf of an exception group, shortened."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."
