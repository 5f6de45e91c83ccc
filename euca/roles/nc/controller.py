"""The node controller: instances on this host's libvirt, answering the CC's Nc* messages.

Lifecycle of one instance (NcState, see euca/protocol/cluster.py):

    staging --(images cached, disks made, domain defined and started)--> booting --(libvirt)--> running
       |                                                                    | blocked/paused as libvirt says
       +--(failure: reason)--> canceled                                     v
       +--(terminate)--------> teardown --> terminated   <--(terminate, guest powered off, crashed, vanished)

NcRunInstance (NcRunInstances: the CC's one call for a request's instances on this node) answers at once
with `staging`; the work runs as a task in the role's nursery. Terminated and
canceled instances leave nothing on the node (domain undefined, instance directory removed, cache pins
released) and stay in memory for `terminated_ttl` seconds so the CC's next polls see how they ended.

Restart: the instance directories (instance.json is the spec) and the domains carrying our metadata are
the state. At start, a running domain with a directory is adopted; a directory without a domain (the node
stopped while it staged) and a domain without a directory are cleaned away.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import libvirt
import msgspec
import trio

from euca.core.components import COMPONENTS_DIR, Components
from euca.images.cache import ImageCache
from euca.protocol.cluster import (
    Ack,
    ClusterFault,
    ConsoleOutput,
    InstancesReply,
    InstanceStatus,
    NcAttachVolume,
    NcDescribeInstances,
    NcDescribeNode,
    NcDescribeResource,
    NcDetachVolume,
    NcGetConsoleOutput,
    NcRebootInstance,
    NcRunInstance,
    NcRunInstances,
    NcState,
    NcTerminateInstance,
    NodeReport,
    NodeResources,
    ec2_state,
    vm_type_fits,
)
from euca.roles.nc import disks, volumes
from euca.roles.nc.attach import VolumeAttacher
from euca.roles.nc.disks import (
    CONSOLE_FILE,
    SPEC_FILE,
    GiB,
)
from euca.roles.nc.domain import (
    DEFAULT_CMDLINE,
    INSTANCE_ID,
    DomainSpec,
    DomainType,
    choose_domain_type,
    domain_xml,
    kvm_usable,
)
from euca.roles.nc.hypervisor import (
    ALIVE_STATES,
    HostInfo,
    Hypervisor,
    HypervisorError,
    nc_state_of,
    state_name,
)
from euca.roles.nc.image_fetch import KeySource, NodeImages, NodeKeys
from euca.roles.nc.instance import (
    ALIVE,
    ENDED,
    Instance,
    SavedInstance,
    check_spec,
    failure_reason,
    image_ids,
    saved_decoder,
)
from euca.roles.nc.settings import NcSettings, offered, up_resources

log = logging.getLogger("euca.nc")

# Instances whose disks are made at once (Eucalyptus' CONCURRENT_DISK_OPS): a RunInstances of 100 must not
# start 100 qemu-img/mkfs runs that starve the node's answers to its CC.
DISK_OPS_AT_ONCE = 4


def _not_found(instance_id: str) -> ClusterFault:
    return ClusterFault(
        "InvalidInstanceID.NotFound", f"the instance ID '{instance_id}' is not on this node", 404
    )


class NodeController:
    """The NC's state and its answers to the CC. `run` (or `open` with a nursery) before answering."""

    # The instance's disks, made in a worker thread (a class attribute: tests hold them back).
    _make_disks = staticmethod(disks.make_instance_disks)

    def __init__(
        self,
        settings: NcSettings,
        hypervisor: Hypervisor,
        *,
        keys: KeySource | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.hv = hypervisor
        self.keys: KeySource = keys or (
            lambda: NodeKeys.from_components(Components(settings.data_dir / COMPONENTS_DIR))
        )
        self.client = client
        self.clock = clock
        self.instances: dict[str, Instance] = {}
        self.images: NodeImages | None = None
        self.domain_type: DomainType = choose_domain_type(settings.hypervisor, kvm_usable())
        self.host: HostInfo | None = None
        self.host_error: str | None = None
        self.disk_max_gb = settings.disk_gb
        self.restored = False
        self._nursery: trio.Nursery | None = None
        self._owner = str(settings.instances_dir.resolve())
        # Its own thread limiter too, so staging never holds the threads the CC's calls need.
        self.disk_ops = trio.CapacityLimiter(DISK_OPS_AT_ONCE)
        self.attacher = VolumeAttacher(settings.name, hypervisor, self.instances.get)

    @property
    def name(self) -> str:
        return self.settings.name

    # -- start ------------------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await self.open(nursery)
            task_status.started()
            while True:
                await trio.sleep(self.settings.monitor_interval)
                await self.refresh()

    async def open(self, nursery: trio.Nursery) -> None:
        """Ready the controller: directories, image cache, host facts, and the instances already here."""
        self._nursery = nursery
        s = self.settings

        def prepare() -> None:
            s.instances_dir.mkdir(parents=True, exist_ok=True)
            s.cache_dir.mkdir(parents=True, exist_ok=True)

        await trio.to_thread.run_sync(prepare)
        cache = await ImageCache.open(s.cache_dir, s.cache_max_bytes)
        self.images = NodeImages(cache, self.keys, self.client)
        await self._host_info()
        await self._restore()
        log.info(
            "node ready name=%s hypervisor=%s uri=%s instances=%d",
            self.name,
            self.domain_type,
            s.libvirt_uri,
            sum(1 for i in self.instances.values() if i.state not in ENDED),
        )

    async def _host_info(self) -> HostInfo | None:
        try:
            self.host = await self.hv.host_info()
            self.host_error = None
        except HypervisorError as e:
            if self.host_error != str(e):
                log.error("libvirt unavailable uri=%s error=%s", self.settings.libvirt_uri, e)
            self.host_error = str(e)
        return self.host

    async def _restore(self) -> None:
        """Find what a previous run of this node left: adopt running instances, clean away the rest."""
        try:
            domains = await self.hv.list_domains()
        except HypervisorError as e:
            log.error("cannot list domains, will retry error=%s", e)
            return
        ours = {d.name: d for d in domains if INSTANCE_ID.fullmatch(d.name) and d.owner_dir == self._owner}

        def scan() -> dict[str, SavedInstance | None]:
            found: dict[str, SavedInstance | None] = {}
            for path in self.settings.instances_dir.iterdir():
                if not (path.is_dir() and INSTANCE_ID.fullmatch(path.name)):
                    continue
                try:
                    record = saved_decoder.decode((path / SPEC_FILE).read_bytes())
                except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                    record = None
                # A spec naming another instance is no instance of ours (it would name another domain).
                found[path.name] = record if record and record.spec.instance_id == path.name else None
            return found

        dirs = await trio.to_thread.run_sync(scan)
        for instance_id, record in sorted(dirs.items()):
            if instance_id in self.instances:
                continue
            directory = self.settings.instances_dir / instance_id
            domain = ours.get(instance_id)
            if record is None:
                try:
                    if domain is not None:
                        await self.hv.destroy(instance_id, owner=self._owner)
                    await trio.to_thread.run_sync(disks.remove_tree, directory)
                except (HypervisorError, OSError) as e:
                    log.error("leftover not removed id=%s error=%s", instance_id, e)
                else:
                    log.info("leftover removed id=%s what=directory-without-spec", instance_id)
                continue
            inst = Instance(record.spec, directory, record.domain_type)
            self.instances[instance_id] = inst
            if domain is None:
                # It was staging when the node stopped: there is no domain to adopt.
                reason = "the node restarted while the instance was being prepared"
                await self._cleanup_or_retry(inst, "canceled", reason)
            elif domain.state in ALIVE_STATES:
                inst.state = nc_state_of(domain.state)
                for image_id in image_ids(record.spec):
                    if self.images is not None and self.images.pin(image_id):
                        inst.pinned.append(image_id)
                    else:
                        log.warning("image not in the cache id=%s instance=%s", image_id, instance_id)
                saved = await trio.to_thread.run_sync(volumes.load, directory)
                inst.volumes = {a.volume.volume_id: a for a in saved}
                inst.settled.set()
                log.info(
                    "instance adopted id=%s node=%s state=%s",
                    instance_id,
                    self.name,
                    state_name(domain.state),
                )
            else:
                reason = f"the domain was {state_name(domain.state)} when the node started"
                await self._cleanup_or_retry(inst, "terminated", reason)
        for instance_id in sorted(set(ours) - set(dirs)):
            try:
                await self.hv.destroy(instance_id, owner=self._owner)
            except HypervisorError as e:
                log.error("leftover not removed id=%s error=%s", instance_id, e)
            else:
                log.info("leftover removed id=%s what=domain-without-directory", instance_id)
        if self.settings.disk_gb == 0:
            st = await trio.to_thread.run_sync(os.statvfs, self.settings.instances_dir)
            reserved = sum(i.spec.vm_type.disk_gb for i in self.instances.values() if i.state not in ENDED)
            self.disk_max_gb = st.f_bavail * st.f_frsize // GiB + reserved
        self.restored = True

    # -- watching libvirt -------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Bring instance states in line with libvirt; end instances whose guest stopped; forget old ends."""
        if not self.restored:
            await self._host_info()
            await self._restore()
            if not self.restored:
                return
        # Only what was alive before libvirt was asked is judged by its answer: an instance whose staging
        # started its domain while the answer was on its way is not in it, and has not disappeared.
        alive_before = {i.id for i in self.instances.values() if i.state in ALIVE}
        try:
            states = await self.hv.domain_states()
        except HypervisorError as e:
            log.warning("cannot read domain states error=%s", e)
            return
        now = self.clock()
        for inst in list(self.instances.values()):
            if inst.state in ALIVE and not inst.lock.locked():
                if inst.id not in alive_before:
                    continue  # the next look
                st = states.get(inst.id)
                if st is None:
                    self._begin_teardown(inst, "terminated", "the instance's domain disappeared")
                elif st == libvirt.VIR_DOMAIN_SHUTOFF:
                    self._begin_teardown(inst, "terminated", "the guest powered off")
                elif st == libvirt.VIR_DOMAIN_CRASHED:
                    self._begin_teardown(inst, "terminated", "the guest crashed")
                else:
                    new = nc_state_of(st)
                    if new != inst.state:
                        inst.state = new
                        log.info("instance %s id=%s node=%s", new, inst.id, self.name)
            elif inst.state == "teardown" and inst.staging is None and not inst.tearing_down:
                self._begin_teardown(inst, "terminated", inst.reason)  # an earlier teardown failed: again
            elif inst.ended_at is not None and now - inst.ended_at > self.settings.terminated_ttl:
                del self.instances[inst.id]

    # -- the CC's messages ------------------------------------------------------------------------------

    def handlers(self) -> dict[type, Callable[[Any], Awaitable[msgspec.Struct]]]:
        return {
            NcDescribeResource: self.describe_resource,
            NcDescribeInstances: self.describe_instances,
            NcDescribeNode: self.describe_node,
            NcRunInstance: self.run_instance,
            NcRunInstances: self.run_instances,
            NcTerminateInstance: self.terminate_instance,
            NcRebootInstance: self.reboot_instance,
            NcGetConsoleOutput: self.get_console_output,
            NcAttachVolume: self.attacher.attach,
            NcDetachVolume: self.attacher.detach,
        }

    def _used(self) -> tuple[int, int, int]:
        cores = memory = disk = 0
        for inst in self.instances.values():
            if inst.state not in ENDED:
                vm = inst.spec.vm_type
                cores, memory, disk = cores + vm.cores, memory + vm.memory_mb, disk + vm.disk_gb
        return cores, memory, disk

    def resources(self) -> NodeResources:
        host = self.host
        if host is None or self.host_error or not self.restored:
            return NodeResources(
                node=self.name,
                state="down",
                hypervisor=self.domain_type,
                reason=self.host_error or "starting",
            )
        maxima = (
            offered(self.settings.cores, host.cores),
            offered(self.settings.memory_mb, host.memory_mb),
            self.disk_max_gb,
        )
        return up_resources(self.name, self.domain_type, maxima, self._used())

    async def describe_resource(self, message: NcDescribeResource) -> NodeResources:
        await self._host_info()  # one cheap call: also how the CC learns that libvirt went away
        if not self.restored:
            await self.refresh()
        return self.resources()

    async def describe_instances(self, message: NcDescribeInstances) -> InstancesReply:
        await self.refresh()
        if not self.restored:
            # Before the instances already on this host are found again, an empty list would tell the CC
            # they are gone; a fault makes it keep what it knew.
            raise ClusterFault(
                "Unavailable", f"node {self.name} has not found its instances yet: {self.host_error}", 503
            )
        wanted = set(message.instance_ids)
        return InstancesReply(
            [inst.status(self.name) for inst in self.instances.values() if not wanted or inst.id in wanted]
        )

    async def describe_node(self, message: NcDescribeNode) -> NodeReport:
        """The CC's poll in one call: the instances, and the resources counted from that same list (no await
        between them, so an instance admitted meanwhile is in neither)."""
        await self._host_info()
        listed = await self.describe_instances(NcDescribeInstances())
        return NodeReport(listed.instances, self.resources())

    async def run_instance(self, message: NcRunInstance) -> InstanceStatus:
        reply = await self.run_instances(NcRunInstances([message.instance]))
        return reply.instances[0]

    async def run_instances(self, message: NcRunInstances) -> InstancesReply:
        """Admit the instances (all or none), write each one's instance.json, answer `staging` for each and
        stage them in the background. One already here (the CC resent it) answers as it is."""
        specs = list({s.instance_id: s for s in message.instances}.values())
        for spec in specs:
            if not INSTANCE_ID.fullmatch(spec.instance_id):
                raise ClusterFault("InvalidParameterValue", f"bad instance id {spec.instance_id[:40]!r}")
        new = [s for s in specs if s.instance_id not in self.instances]
        for spec in new:
            check_spec(spec)
        if new and (self._nursery is None or self.images is None or not self.restored):
            raise ClusterFault("ServiceUnavailable", f"node {self.name} is not ready: {self.host_error}", 503)
        free = self.resources()
        for spec in new:
            vm = spec.vm_type
            if not vm_type_fits(vm, free):
                raise ClusterFault(
                    "InsufficientInstanceCapacity",
                    f"node {self.name} has no room for a {vm.name} "
                    f"({vm.cores} cores, {vm.memory_mb} MiB, {vm.disk_gb} GiB)",
                    503,
                )
            free = msgspec.structs.replace(
                free,
                cores_free=free.cores_free - vm.cores,
                memory_mb_free=free.memory_mb_free - vm.memory_mb,
                disk_gb_free=free.disk_gb_free - vm.disk_gb,
            )
        admitted = [Instance(s, self.settings.instances_dir / s.instance_id, self.domain_type) for s in new]
        now = time.time()
        records = []
        for inst in admitted:
            inst.staging = trio.CancelScope()
            self.instances[inst.id] = inst  # counted from now on: a second run cannot take its room
            record = SavedInstance(spec=inst.spec, node=self.name, domain_type=self.domain_type, created=now)
            records.append((inst.dir, msgspec.json.encode(record)))
        if records:
            try:
                await trio.to_thread.run_sync(disks.write_specs, records)
            except OSError as e:
                for inst in admitted:
                    del self.instances[inst.id]
                await trio.to_thread.run_sync(disks.remove_dirs, [inst.dir for inst in admitted])
                raise ClusterFault("InternalError", f"cannot make the instance directory: {e}", 500) from e
        assert self._nursery is not None
        for inst in admitted:
            log.info(
                "instance staging id=%s node=%s type=%s image=%s",
                inst.id,
                self.name,
                inst.spec.vm_type.name,
                inst.spec.machine.image_id,
            )
            self._nursery.start_soon(self._stage, inst)
        return InstancesReply([self.instances[s.instance_id].status(self.name) for s in specs])

    async def terminate_instance(self, message: NcTerminateInstance) -> InstanceStatus:
        inst = self.instances.get(message.instance_id)
        if inst is None:
            raise _not_found(message.instance_id)
        if inst.state == "staging":
            inst.terminate_requested = True
            inst.state = "teardown"
            if inst.staging is not None:
                inst.staging.cancel()  # _stage cleans up once its work has stopped
            log.info("instance teardown id=%s node=%s while=staging", inst.id, self.name)
        elif inst.state in ALIVE:
            inst.terminate_requested = True
            self._begin_teardown(inst, "terminated", None)
        return inst.status(self.name)

    async def reboot_instance(self, message: NcRebootInstance) -> Ack:
        inst = self.instances.get(message.instance_id)
        if inst is None:
            raise _not_found(message.instance_id)
        if inst.state == "staging":
            log.info("instance reboot skipped id=%s node=%s why=staging", inst.id, self.name)
            return Ack()
        if inst.state not in ALIVE:
            raise ClusterFault(
                "IncorrectInstanceState", f"the instance '{inst.id}' is {ec2_state(inst.state)}", 400
            )
        async with inst.lock:
            if inst.state not in ALIVE:
                raise ClusterFault(
                    "IncorrectInstanceState", f"the instance '{inst.id}' is {ec2_state(inst.state)}", 400
                )
            try:
                how = await self.hv.reboot(inst.id)
            except HypervisorError as e:
                log.warning("instance reboot failed id=%s node=%s error=%s", inst.id, self.name, e)
                raise ClusterFault("InternalError", f"cannot reboot {inst.id}: {e}", 500) from e
            inst.reboots += 1
        log.info("instance rebooted id=%s node=%s how=%s", inst.id, self.name, how)
        return Ack()

    async def get_console_output(self, message: NcGetConsoleOutput) -> ConsoleOutput:
        inst = self.instances.get(message.instance_id)
        if inst is None:
            raise _not_found(message.instance_id)
        if inst.state in ENDED:
            output = inst.console
        else:
            output = await trio.to_thread.run_sync(disks.read_tail, inst.dir / CONSOLE_FILE)
        return ConsoleOutput(instance_id=inst.id, output=output, timestamp=time.time())

    # -- staging ----------------------------------------------------------------------------------------

    async def _stage(self, inst: Instance) -> None:
        assert inst.staging is not None
        started = self.clock()
        try:
            with inst.staging:
                await self._prepare(inst)
        except Exception as e:
            inst.staging = None
            if inst.terminate_requested:  # it was ending anyway: a terminate, not a failure
                final: NcState = "terminated"
                reason: str | None = None
            else:
                final, reason = "canceled", failure_reason(e)
                log.warning("instance staging failed id=%s node=%s reason=%s", inst.id, self.name, reason)
            with trio.CancelScope(shield=True):
                await self._cleanup_or_retry(inst, final, reason)
            return
        inst.staging = None
        if inst.terminate_requested:
            with trio.CancelScope(shield=True):
                await self._cleanup_or_retry(inst, "terminated", None)
            return
        inst.settled.set()
        log.info(
            "instance booting id=%s node=%s hypervisor=%s in=%.2fs",
            inst.id,
            self.name,
            inst.domain_type,
            self.clock() - started,
        )

    async def _prepare(self, inst: Instance) -> None:
        assert self.images is not None
        images = self.images
        spec = inst.spec
        paths: dict[str, Path] = {}
        await trio.to_thread.run_sync(disks.sync_tree, inst.dir, limiter=self.disk_ops)

        async def fetch(kind: str, ref: Any) -> None:
            paths[kind] = await images.acquire(ref, spec.instance_id)
            inst.pinned.append(ref.image_id)

        async with trio.open_nursery() as nursery:
            for kind, ref in (("machine", spec.machine), ("kernel", spec.kernel), ("ramdisk", spec.ramdisk)):
                if ref is not None:
                    nursery.start_soon(fetch, kind, ref)

        machine = paths["machine"]
        image_bytes = (await trio.to_thread.run_sync(machine.stat)).st_size
        layout = disks.disk_layout(spec.vm_type.disk_gb, image_bytes)
        devices = await trio.to_thread.run_sync(
            self._make_disks, inst.dir, machine, layout, limiter=self.disk_ops
        )
        kernel = paths.get("kernel")
        ramdisk = paths.get("ramdisk")
        xml = domain_xml(
            DomainSpec(
                name=spec.instance_id,
                domain_type="kvm" if inst.domain_type == "kvm" else "qemu",
                cores=spec.vm_type.cores,
                memory_mb=spec.vm_type.memory_mb,
                disks=devices,
                console_path=str(inst.dir / CONSOLE_FILE),
                owner_dir=self._owner,
                kernel=str(kernel) if kernel else None,
                ramdisk=str(ramdisk) if kernel and ramdisk else None,
                # The guest may print its id (the boot image's init does): no metadata service needed.
                cmdline=f"{DEFAULT_CMDLINE} euca.instance_id={spec.instance_id}",
                bridge=spec.net.bridge if spec.net else None,
                mac=spec.net.mac if spec.net and spec.net.mac else None,
            )
        )
        await self.hv.define_and_start(xml)
        if not inst.terminate_requested:
            inst.state = "booting"

    # -- ending -----------------------------------------------------------------------------------------

    def _begin_teardown(self, inst: Instance, final: NcState, reason: str | None) -> None:
        if inst.tearing_down or inst.state in ENDED:
            return
        inst.state = "teardown"
        inst.reason = reason
        inst.tearing_down = True
        log.info("instance teardown id=%s node=%s reason=%s", inst.id, self.name, reason or "requested")
        assert self._nursery is not None
        self._nursery.start_soon(self._teardown, inst, final, reason)

    async def _teardown(self, inst: Instance, final: NcState, reason: str | None) -> None:
        try:
            async with inst.lock:
                if inst.state not in ENDED:
                    await self._cleanup_or_retry(inst, final, reason)
        finally:
            inst.tearing_down = False

    async def _cleanup_or_retry(self, inst: Instance, final: NcState, reason: str | None) -> None:
        """Clean up and end the instance; if libvirt fails, stay in teardown (refresh tries again)."""
        try:
            await self._cleanup(inst)
        except (HypervisorError, OSError) as e:
            inst.state = "teardown"
            inst.reason = reason
            log.error("instance cleanup failed id=%s node=%s error=%s: will retry", inst.id, self.name, e)
            return
        self._end(inst, final, reason)

    async def _cleanup(self, inst: Instance) -> None:
        """Leave nothing of the instance on the node: domain, directory, cache pins."""
        await self.hv.destroy(inst.id, owner=self._owner)
        inst.console = await trio.to_thread.run_sync(disks.read_tail, inst.dir / CONSOLE_FILE)
        await trio.to_thread.run_sync(disks.remove_tree, inst.dir)
        if self.images is not None:
            for image_id in inst.pinned:
                self.images.release(image_id)
        inst.pinned.clear()

    def _end(self, inst: Instance, state: NcState, reason: str | None) -> None:
        inst.state = state
        inst.reason = reason
        inst.ended_at = self.clock()
        inst.settled.set()
        inst.ended.set()
        log.info("instance %s id=%s node=%s reason=%s", state, inst.id, self.name, reason or "requested")
