"""EBS-backed instances (issue 10): the volumes RunInstances makes for an instance, StopInstances and
StartInstances.

RunInstances of an image whose root device is a snapshot (images/ebs.py), or with EBS block device mappings
of its own, makes each instance's volumes in its zone as CreateVolume does (recorded `creating`, the zone's
SC asked to restore the snapshot or make an empty volume), records them attached to the instance from the
start (clc_volume_attachments, at their device names, with their DeleteOnTermination), waits until the SC
has them, asks it for their exports and hands them to the CC in the InstanceSpec (`volumes`): the node
defines the domain with the root as vda and the others after it. Terminating ends the attachments as it
does any (a DeleteOnTermination volume is deleted once its instance ended: volumes/attach.py).

The export is asked for the instance's cluster, not its node: the CC picks the node after the CLC asked,
and exports are not restricted to a node yet (ARCHITECTURE.md, "Attach and detach"); when NBD over TLS
restricts them, the node will ask the SC itself.

StopInstances (EBS-backed only; instance-store instances answer UnsupportedOperation): `stopping`, the CC
told (StopInstances -> the node's NcStopInstance: ACPI power-off, destroyed after a timeout, the node and
the CC forget it and free its slot), `stopped` once the node reports it ended (instances/reconcile.py); its
volumes stay attached and exported, its private and public addresses go (EC2-Classic). StartInstances: the
instance is placed again in its zone (capacity checked as for a launch), `pending`, and sent to the CC as a
RunInstances of the same id with the same volumes (exported again: idempotent), its current instance type
and user data (ModifyInstanceAttribute changes them while it is stopped), on whatever node has room.

CreateImage (`create_image_handler`): a snapshot of each of the instance's volumes, registered as an EBS
image that is `pending` until they completed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.cluster import BootVolume, ClusterFault, ImageRef, InstanceSpec, VmType
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc import placement
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.cluster_link import ClusterLink, connected, ec2_error_of
from euca.roles.clc.images import bundles
from euca.roles.clc.images import ebs as image_ebs
from euca.roles.clc.images import records as images
from euca.roles.clc.images.api import IMAGE_NAME_RE
from euca.roles.clc.images.records import ImageBlockDevice, device_key
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.instances import records
from euca.roles.clc.instances.records import ClcInstance
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.snapshots.poll import sweep_lock
from euca.roles.clc.snapshots.system import snapshot_store
from euca.roles.clc.tags import records as tags
from euca.roles.clc.topology import records as topology
from euca.roles.clc.volumes import records as volumes
from euca.roles.clc.volumes.records import NewVolume

log = logging.getLogger("euca.clc")

SC_TIMEOUT = 30.0
# How long RunInstances waits for the SC to make an instance's volumes (a root restored from a snapshot
# streams its chunks from Walrus: about 5 s for a GiB of data here).
READY_TIMEOUT = 600.0
READY_POLL = 0.2


@dataclass(frozen=True)
class LaunchVolume:
    """One volume each instance of a launch gets."""

    device: str
    snapshot_id: str | None
    size_gib: int
    volume_type: str
    delete_on_termination: bool
    root: bool


def launch_volumes(
    image: images.ImageRecord, launch: Sequence[ImageBlockDevice]
) -> tuple[list[LaunchVolume], str | None]:
    """The volumes a launch makes for each instance (the image's mappings with RunInstances' over them;
    ephemeral ones are left to the instance type's disk) and the root device name (None: instance-store)."""
    root_name = image.root_device_name if image.root_device_type == "ebs" else None
    merged = image_ebs.merge(image.block_devices if root_name else [], launch)
    out: list[LaunchVolume] = []
    for d in merged:
        if d.virtual_name is not None or d.no_device or d.size_gib is None:
            continue
        root = root_name is not None and device_key(d.device) == device_key(root_name)
        out.append(
            LaunchVolume(
                d.device,
                d.snapshot_id,
                d.size_gib,
                d.volume_type or volumes.DEFAULT_TYPE,
                d.delete_on_termination,
                root,
            )
        )
    if root_name is not None and not any(v.root for v in out):
        raise Ec2Error(
            "InvalidBlockDeviceMapping", f"The root device {root_name} of the image cannot be removed."
        )
    return sorted(out, key=lambda v: not v.root), root_name


async def _sc_call(link: ClusterLink, sc: topology.StorageController, message: object) -> object:
    with trio.fail_after(SC_TIMEOUT):
        return await link.caller.call(sc.url, message, expect_name=sc.cluster)


async def make_volumes(
    call: Ec2Call,
    link: ClusterLink,
    target: topology.Cluster,
    instance_ids: Sequence[str],
    wanted: Sequence[LaunchVolume],
) -> dict[str, list[BootVolume]]:
    """Each instance's volumes made in its zone, attached to it, and exported: instance id -> its
    BootVolumes. An Ec2Error when the zone has no SC, the SC refuses, or a volume ends in error."""
    if not wanted:
        return {}
    store = call.ctx.store
    sc = await store.read(lambda tx: topology.get_storage(tx, target.name))
    if sc is None:
        raise Ec2Error(
            "Unsupported",
            f"The availability zone {target.zone} has no storage controller: no EBS volumes there.",
        )
    restore_from = await snapshot_store(call.ctx) if any(v.snapshot_id for v in wanted) else None
    now = time.time()
    made: dict[str, list[tuple[str, LaunchVolume]]] = {}

    def record(tx: Tx) -> None:
        for instance_id in instance_ids:
            for v in wanted:
                new = NewVolume(
                    call.account_id,
                    target.zone,
                    target.name,
                    v.size_gib,
                    v.volume_type,
                    None,
                    None,
                    [],
                    v.snapshot_id,
                )
                volume, _ = volumes.insert_volume(tx, new)
                volumes.attach_at_launch(
                    tx,
                    volume.volume_id,
                    instance_id,
                    call.account_id,
                    target.name,
                    v.device,
                    v.delete_on_termination,
                    now,
                )
                made.setdefault(instance_id, []).append((volume.volume_id, v))

    async with sweep_lock(store):  # volumes from snapshots hold off the snapshot sweep
        await store.write(record, durable=True)
    all_ids = [volume_id for pairs in made.values() for volume_id, _ in pairs]
    try:
        for pairs in made.values():
            for volume_id, v in pairs:
                message: cluster.CreateVolume | cluster.RestoreVolume = cluster.CreateVolume(
                    volume_id, v.size_gib
                )
                if v.snapshot_id is not None and restore_from is not None:
                    message = cluster.RestoreVolume(volume_id, v.size_gib, v.snapshot_id, restore_from)
                await _sc_call(link, sc, message)
        await _wait_available(link, sc, all_ids)
    except ClusterFault as e:
        raise ec2_error_of(e) from None
    except trio.TooSlowError:
        raise Ec2Error(
            "Unavailable", f"The storage controller of {target.zone} did not answer in time."
        ) from None

    def in_use(tx: Tx) -> None:
        for volume_id in all_ids:
            volumes.set_state(tx, volume_id, "in-use", only_from=("creating", "available"))

    await store.write(in_use)
    out: dict[str, list[BootVolume]] = {}
    for instance_id, pairs in made.items():
        out[instance_id] = [
            await _boot_volume(link, sc, target.name, volume_id, v.device, v.root) for volume_id, v in pairs
        ]
    log.info("instance volumes made zone=%s ids=%s", target.zone, ",".join(all_ids))
    return out


async def _boot_volume(
    link: ClusterLink,
    sc: topology.StorageController,
    cluster_name: str,
    volume_id: str,
    device: str,
    root: bool,
) -> BootVolume:
    try:
        export = await _sc_call(link, sc, cluster.ExportVolume(volume_id, cluster_name))
    except ClusterFault as e:
        raise ec2_error_of(e) from None
    except trio.TooSlowError:
        raise Ec2Error("Unavailable", f"The export of {volume_id} did not complete in time.") from None
    assert isinstance(export, cluster.VolumeExport)
    return BootVolume(volume_id, device, export, root)


async def _wait_available(link: ClusterLink, sc: topology.StorageController, ids: list[str]) -> None:
    with trio.fail_after(READY_TIMEOUT):
        while True:
            reply = await _sc_call(link, sc, cluster.DescribeVolumes(ids))
            assert isinstance(reply, cluster.VolumesReply)
            states = {v.volume_id: v for v in reply.volumes}
            failed = [v for v in states.values() if v.state == "error"]
            if failed:
                raise Ec2Error(
                    "InternalError", f"The volume {failed[0].volume_id} could not be made: {failed[0].reason}"
                )
            if all(states.get(i) is not None and states[i].state == "available" for i in ids):
                return
            await trio.sleep(READY_POLL)


# -- StopInstances, StartInstances -----------------------------------------------------------------------


def _when(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S GMT")


def _change(r: ClcInstance, state: str) -> m.InstanceStateChange:
    return m.InstanceStateChange(
        instance_id=r.instance_id,
        previous_state=m.InstanceState(code=r.state_code, name=r.state),
        current_state=m.InstanceState(code=cluster.STATE_CODES[state], name=state),
    )


def _only_ebs(found: Sequence[ClcInstance], what: str) -> None:
    for r in found:
        if not r.ebs:
            raise Ec2Error(
                "UnsupportedOperation",
                f"The instance '{r.instance_id}' does not have an 'ebs' root device type and cannot be {what}.",
            )


async def stop_instances(call: Ec2Call, req: m.StopInstancesRequest) -> m.StopInstancesResult:
    ids = records.check_instance_ids(req.instance_ids)
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    if req.hibernate:
        raise Ec2Error("UnsupportedHibernationConfiguration", "Hibernation is not supported by this cloud.")
    now = time.time()

    def write(tx: Tx) -> tuple[list[ClcInstance], dict[str, str]]:
        found = records.owned(tx, call.account_id, ids)
        _only_ebs(found, "stopped")
        current: dict[str, str] = {}
        for r in found:
            if r.state == "running":
                records.mark_stopping(tx, r, f"User initiated ({_when(now)})")
                current[r.instance_id] = "stopping"
            elif r.state in ("stopping", "stopped"):
                current[r.instance_id] = r.state
            else:
                raise Ec2Error(
                    "IncorrectInstanceState",
                    f"The instance '{r.instance_id}' is not in a state from which it can be stopped.",
                )
        return found, current

    found, current = await call.ctx.store.write(write)
    to_tell = [r for r in found if r.state == "running" and r.cluster]
    if to_tell:
        log.info(
            "stop instances account=%s ids=%s force=%s",
            call.account_id,
            ",".join(r.instance_id for r in to_tell),
            req.force,
        )
        if call.cluster is not None:
            await tell_stop(call, call.cluster, to_tell, req.force)
            call.cluster.poke()
    return m.StopInstancesResult(stopping_instances=[_change(r, current[r.instance_id]) for r in found])


async def tell_stop(call: Ec2Call, link: ClusterLink, found: Sequence[ClcInstance], force: bool) -> None:
    """Best effort: a CC that missed it is told again by the poll (reconcile's stop_again)."""
    clusters = {c.name: c.url for c in await call.ctx.store.read(topology.list_clusters)}
    grouped: dict[str, list[str]] = {}
    for r in found:
        if r.cluster:
            grouped.setdefault(r.cluster, []).append(r.instance_id)
    for name, ids in grouped.items():
        url = clusters.get(name)
        if url is None:
            continue
        try:
            with trio.fail_after(SC_TIMEOUT):
                await link.caller.call(url, cluster.StopInstances(ids, force), expect_name=name)
        except (ClusterFault, trio.TooSlowError) as e:
            log.warning("stop not delivered cluster=%s ids=%s: %s", name, ",".join(ids), e)


@dataclass(frozen=True)
class _Start:
    instance: ClcInstance
    target: topology.Cluster
    vm: VmType
    public_ip: str | None


async def start_instances(call: Ec2Call, req: m.StartInstancesRequest) -> m.StartInstancesResult:
    ids = records.check_instance_ids(req.instance_ids)
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    link = connected(call.cluster)

    def write(tx: Tx) -> tuple[list[ClcInstance], list[_Start]]:
        found = records.owned(tx, call.account_id, ids)
        _only_ebs(found, "started")
        for r in found:
            if r.state not in ("stopped", "pending", "running"):
                raise Ec2Error(
                    "IncorrectInstanceState",
                    f"The instance '{r.instance_id}' is not in a state from which it can be started.",
                )
        auto = call.ctx.config.clc.auto_public_address and not addresses.pool_is_empty(tx)
        starts: list[_Start] = []
        for r in found:
            if r.state != "stopped":
                continue
            target = topology.cluster_of_zone(tx, r.zone)
            vm_type = instance_types.load_instance_type(tx, r.instance_type)
            if target is None or vm_type is None:
                raise Ec2Error(
                    "InsufficientInstanceCapacity", f"The zone {r.zone} cannot run the instance now."
                )
            free = next((t.free for t in target.capacity if t.vm_type == vm_type.name), 0)
            if free < 1 or not target.available:
                raise Ec2Error(
                    "InsufficientInstanceCapacity",
                    f"There is not enough capacity in {r.zone} for a {vm_type.name} instance.",
                )
            nodes, capacity = placement.capacity_after(
                target.capacity, target.nodes, instance_types.vm_types(tx), vm_type.vm_type, 1
            )
            topology.record_resources(tx, target.name, nodes, capacity)
            public_ip = records.mark_starting(tx, r.instance_id, call.account_id, auto)
            starts.append(_Start(r, target, vm_type.vm_type, public_ip))
        return found, starts

    found, starts = await call.ctx.store.write(write)
    if starts:
        log.info(
            "start instances account=%s ids=%s",
            call.account_id,
            ",".join(s.instance.instance_id for s in starts),
        )
    for start in starts:
        try:
            spec = await _start_spec(call, link, start)
            reply = await link.caller.call(
                start.target.url, cluster.RunInstances([spec]), expect_name=start.target.name
            )
        except (Ec2Error, ClusterFault) as e:
            await _start_failed(call, start.instance, e.message)
            link.poke()
            raise ec2_error_of(e) if isinstance(e, ClusterFault) else e from None
        await _started(call, reply)
    link.poke()
    started = {s.instance.instance_id for s in starts}
    return m.StartInstancesResult(
        starting_instances=[_change(r, "pending" if r.instance_id in started else r.state) for r in found]
    )


async def _start_failed(call: Ec2Call, r: ClcInstance, message: str) -> None:
    """The start did not reach a node: back to stopped (through stopping, which the poll ends)."""
    log.warning("start failed id=%s: %s", r.instance_id, message)

    def write(tx: Tx) -> None:
        records.mark_stopping(tx, r, f"Start failed: {message[:200]}")

    await call.ctx.store.write(write)


async def _started(call: Ec2Call, reply: cluster.InstancesReply) -> None:
    now = time.time()

    def write(tx: Tx) -> None:
        records.apply_statuses(tx, reply.instances, now)

    await call.ctx.store.write(write)


async def _start_spec(call: Ec2Call, link: ClusterLink, start: _Start) -> InstanceSpec:
    r = start.instance

    def read(
        tx: Tx,
    ) -> tuple[
        bytes, str | None, list[str], list[volumes.Attachment], str | None, topology.StorageController | None
    ]:
        user_data, key_name, group_ids, _ = records.user_data_and_key(tx, r.instance_id)
        try:
            public_key = keypairs.public_key_of(tx, r.account_id, key_name) if key_name else None
        except Ec2Error:
            public_key = None  # the key pair was deleted since the launch
        attached = volumes.attachments_of_instances(tx, [r.instance_id]).get(r.instance_id, [])
        return (
            user_data,
            key_name,
            group_ids,
            attached,
            public_key,
            topology.get_storage(tx, start.target.name),
        )

    user_data, key_name, group_ids, attached, public_key, sc = await call.ctx.store.read(read)
    if sc is None:
        raise Ec2Error("Unsupported", f"The availability zone {r.zone} has no storage controller now.")
    root = device_key(r.root_device_name or image_ebs.DEFAULT_ROOT_DEVICE)
    boot = [
        await _boot_volume(link, sc, start.target.name, a.volume_id, a.device, device_key(a.device) == root)
        for a in attached
        if a.state in ("attached", "attaching")
    ]
    if not any(b.root for b in boot):
        raise Ec2Error(
            "IncorrectInstanceState", f"The instance '{r.instance_id}' has no root volume attached."
        )
    cert = await trio.to_thread.run_sync(link.node_image_cert_pem)

    async def ref(image_id: str, kind: str) -> ImageRef:
        manifest = await bundles.download_manifest_for(call.ctx, image_id, cert)
        return ImageRef(image_id, kind, manifest.decode())  # type: ignore[arg-type]

    return InstanceSpec(
        instance_id=r.instance_id,
        reservation_id=r.reservation_id,
        account_id=r.account_id,
        launch_index=r.launch_index,
        vm_type=start.vm,
        machine=ImageRef(r.image_id, "machine", ""),
        kernel=await ref(r.kernel_id, "kernel") if r.kernel_id else None,
        ramdisk=await ref(r.ramdisk_id, "ramdisk") if r.ramdisk_id else None,
        key_name=key_name,
        public_key=public_key,
        user_data=user_data,
        launch_time=time.time(),
        security_groups=group_ids,
        public_ip=start.public_ip,
        volumes=boot,
    )


# -- CreateImage -----------------------------------------------------------------------------------------

# (call, CreateSnapshot's request) -> its answer: the snapshots package's handler, handed in (clc/__init__.py).
SnapshotMaker = Callable[[Ec2Call, m.CreateSnapshotRequest], Awaitable[m.Snapshot]]


def create_image_handler(make_snapshot: SnapshotMaker) -> Handler:
    """CreateImage of an EBS-backed instance: a snapshot of each of its volumes (CreateSnapshot, as the user
    would make them), registered at once as an EBS image `pending` whose mappings name them; the poll makes
    it `available` once they completed (block_devices.created_images_ended). The snapshots are of the
    volumes as they are (crash-consistent): NoReboot or not, the instance is not rebooted here."""

    async def create_image(call: Ec2Call, req: m.CreateImageRequest) -> m.CreateImageResult:
        if not IMAGE_NAME_RE.match(req.name):
            raise Ec2Error(
                "InvalidAMIName.Malformed",
                "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, "
                "'(', ')', '.', '-', '/' and '_'",
            )
        (instance_id,) = records.check_instance_ids([req.instance_id])
        tag_pairs = tags.tags_from_specifications(req.tag_specifications, "image")

        def read(tx: Tx) -> tuple[ClcInstance, list[volumes.Attachment], images.ImageRecord | None]:
            (r,) = records.owned(tx, call.account_id, [instance_id])
            images.check_name_free(tx, call.account_id, req.name)
            attached = volumes.attachments_of_instances(tx, [instance_id]).get(instance_id, [])
            return r, attached, images.load_image(tx, r.image_id)

        r, attached, source = await call.ctx.store.read(read)
        if not r.ebs:
            raise Ec2Error(
                "UnsupportedOperation",
                f"The instance '{instance_id}' does not have an 'ebs' root device type: CreateImage needs one.",
            )
        if r.state not in ("running", "stopped", "stopping"):
            raise Ec2Error(
                "IncorrectInstanceState",
                f"The instance '{instance_id}' is not in a state to create an image from.",
            )
        root_name = r.root_device_name or image_ebs.DEFAULT_ROOT_DEVICE
        mapped = [a for a in attached if a.state in ("attaching", "attached")]
        if not any(device_key(a.device) == device_key(root_name) for a in mapped):
            raise Ec2Error(
                "IncorrectInstanceState", f"The instance '{instance_id}' has no root volume attached."
            )
        mappings: list[ImageBlockDevice] = []
        for a in mapped:
            snapshot = await make_snapshot(
                call,
                m.CreateSnapshotRequest(
                    volume_id=a.volume_id,
                    description=f"Created by CreateImage({instance_id}) from {a.volume_id}",
                ),
            )
            mappings.append(
                ImageBlockDevice(
                    a.device,
                    snapshot_id=snapshot.snapshot_id,
                    size_gib=snapshot.volume_size,
                    delete_on_termination=a.delete_on_termination,
                    volume_type=volumes.DEFAULT_TYPE,
                )
            )
        new = images.NewEbsImage(
            account_id=call.account_id,
            name=req.name,
            description=req.description,
            architecture=r.architecture or (source.architecture if source else "x86_64"),
            kernel_id=r.kernel_id,
            ramdisk_id=r.ramdisk_id,
            root_device_name=root_name,
            virtualization_type="paravirtual" if r.kernel_id else "hvm",
            block_devices=mappings,
            tags=tag_pairs,
            state="pending",
        )
        image_id = await call.ctx.store.write(lambda tx: images.insert_ebs_image(tx, new))
        log.info("image creating image_id=%s instance=%s snapshots=%d", image_id, instance_id, len(mappings))
        if call.cluster is not None:
            call.cluster.poke()
        return m.CreateImageResult(image_id=image_id)

    return create_image
