"""AttachVolume and DetachVolume (issue 10), and what the poll does with the nodes' reports of attachments.

AttachVolume checks the volume (the caller's, `available`, in the instance's zone), the instance (running)
and the device name, and records the attachment `attaching` (the volume `in-use`, as EC2 shows it at once)
durably; then asks the zone's SC for an export for the instance's node (cluster.ExportVolume) and the CC to
attach it (cluster.AttachVolume, passed to the node, which hot-plugs a virtio disk). The node's answer, or
the next poll's report of the instance's volumes, makes the attachment `attached`. A refusal on the way
undoes it all (export dropped, row gone, volume available again).

DetachVolume (by volume id; InstanceId and Device, when given, must match) marks it `detaching`, asks the CC
to detach (the node unplugs the disk), and once the node no longer has it asks the SC to drop the export and
forgets the attachment (the volume available). When the node or SC cannot be reached, or the guest has not
let go of the disk yet, the attachment stays `detaching` and the poll finishes it (reconcile.py).

Instances are a higher resource: what attaching needs of one (InstancePlace) is handed in (clc/__init__.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import trio

from euca.core.store import Store, Tx
from euca.protocol import cluster
from euca.protocol.cluster import ClusterFault
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.cluster_link import ClusterCaller, connected, ec2_error_of
from euca.roles.clc.topology import records as topology
from euca.roles.clc.volumes import records
from euca.roles.clc.volumes.records import Attachment, InstancePlace, VolumeRecord

log = logging.getLogger("euca.clc")

InstanceLookup = Callable[[Tx, str, str], InstancePlace]
# (tx, account id, volume id) -> raises when the volume may not be detached now (an EBS-backed instance's
# root while it is not stopped: instances/records.check_root_detach, handed in).
DetachGuard = Callable[[Tx, str, str], None]

CALL_TIMEOUT = 30.0

# The EC2 view of an attachment's state (`terminating`: detached by its instance's end).
EC2_STATE = {
    "attaching": "attaching",
    "attached": "attached",
    "detaching": "detaching",
    "terminating": "detaching",
}


def render_attachment(a: Attachment) -> m.VolumeAttachment:
    return m.VolumeAttachment(
        volume_id=a.volume_id,
        instance_id=a.instance_id,
        device=a.device,
        state=EC2_STATE.get(a.state, a.state),
        attach_time=datetime.fromtimestamp(a.attach_time, UTC),
        delete_on_termination=a.delete_on_termination,
    )


async def _urls(call: Ec2Call, cluster_name: str) -> tuple[str | None, str | None]:
    """(the CC's url, the SC's url) of a cluster."""

    def read(tx: Tx) -> tuple[str | None, str | None]:
        c = topology.get_cluster(tx, cluster_name)
        sc = topology.get_storage(tx, cluster_name)
        return (c.url if c else None), (sc.url if sc else None)

    return await call.ctx.store.read(read)


async def _call(caller: ClusterCaller, url: str, cluster_name: str, message: object) -> object:
    with trio.fail_after(CALL_TIMEOUT):
        return await caller.call(url, message, expect_name=cluster_name)


def _attached_on_node(status: object, volume_id: str) -> str | None:
    """The volume's state in an instance's status from its node ("attached", "detaching"), None if absent."""
    if not isinstance(status, cluster.InstanceStatus):
        return None
    for v in status.volumes:
        if v.volume_id == volume_id:
            return v.state
    return None


class AttachApi:
    def __init__(self, instance_place: InstanceLookup, detach_guard: DetachGuard | None = None):
        self.instance_place = instance_place
        self.detach_guard = detach_guard

    async def attach_volume(self, call: Ec2Call, req: m.AttachVolumeRequest) -> m.VolumeAttachment:
        volume_id = records.check_volume_id(req.volume_id)
        device = records.check_device(req.device)
        link = connected(call.cluster)
        now = time.time()

        def write(tx: Tx) -> tuple[VolumeRecord, InstancePlace]:
            records.owned(tx, call.account_id, [volume_id])  # an unknown volume is named first
            place = self.instance_place(tx, call.account_id, req.instance_id)
            return records.begin_attach(tx, call.account_id, volume_id, place, device, now), place

        volume, place = await call.ctx.store.write(write, durable=True)
        assert volume.attachment is not None
        if place.state == "stopped":
            # Nothing to plug: StartInstances defines the domain with it (instances/ebs.py).
            await call.ctx.store.write(
                lambda tx: records.set_attachment_state(tx, volume_id, "attached", only_from="attaching")
            )
            log.info("volume attached id=%s instance=%s (stopped)", volume_id, place.instance_id)
            return render_attachment(volume.attachment)
        assert place.cluster is not None and place.node is not None
        cc_url, sc_url = await _urls(call, volume.cluster)
        log.info("volume attaching id=%s instance=%s device=%s", volume_id, place.instance_id, device)
        exported = False
        try:
            if sc_url is None:
                raise Ec2Error(
                    "Unsupported", f"The availability zone {volume.zone} has no storage controller."
                )
            if cc_url is None:
                raise Ec2Error("Unavailable", f"The cluster {place.cluster} is no longer registered.")
            export = await _call(
                link.caller, sc_url, volume.cluster, cluster.ExportVolume(volume_id, place.node)
            )
            exported = True
            assert isinstance(export, cluster.VolumeExport)
            status = await _call(
                link.caller,
                cc_url,
                place.cluster,
                cluster.AttachVolume(place.instance_id, volume_id, device, export),
            )
        except (ClusterFault, trio.TooSlowError, Ec2Error) as e:
            await self._undo(call, volume, sc_url if exported else None)
            if isinstance(e, Ec2Error):
                raise
            if isinstance(e, trio.TooSlowError):
                raise Ec2Error(
                    "Unavailable", f"The attachment of {volume_id} did not complete in time."
                ) from None
            log.warning("volume attach failed id=%s: %s %s", volume_id, e.code, e.message)
            raise ec2_error_of(e) from None
        if _attached_on_node(status, volume_id) == "attached":
            await call.ctx.store.write(
                lambda tx: records.set_attachment_state(tx, volume_id, "attached", only_from="attaching")
            )
        assert volume.attachment is not None
        return render_attachment(volume.attachment)  # EC2 answers `attaching`

    async def _undo(self, call: Ec2Call, volume: VolumeRecord, sc_url: str | None) -> None:
        """A refused attach leaves nothing: the export dropped (best effort), the attachment gone."""
        if sc_url is not None and call.cluster is not None:
            try:
                await _call(
                    call.cluster.caller, sc_url, volume.cluster, cluster.UnexportVolume(volume.volume_id)
                )
            except (ClusterFault, trio.TooSlowError):
                log.warning("unexport after a failed attach failed id=%s: the poll retries", volume.volume_id)
                return  # the poll finds the attachment `attaching` and never reported, and ends it
        await call.ctx.store.write(lambda tx: records.end_attachment(tx, volume.volume_id))

    async def detach_volume(self, call: Ec2Call, req: m.DetachVolumeRequest) -> m.VolumeAttachment:
        volume_id = records.check_volume_id(req.volume_id)
        if req.device is not None:
            records.check_device(req.device)

        def write(tx: Tx) -> VolumeRecord:
            if self.detach_guard is not None:
                self.detach_guard(tx, call.account_id, volume_id)
            return records.begin_detach(
                tx, call.account_id, volume_id, req.instance_id, req.device, req.force
            )

        volume = await call.ctx.store.write(write, durable=True)
        a = volume.attachment
        assert a is not None
        log.info("volume detaching id=%s instance=%s force=%s", volume_id, a.instance_id, req.force)
        if call.cluster is not None:
            await finish_detach(call.cluster.caller, call.ctx.store, volume.cluster, a, force=req.force)
        return render_attachment(a)


async def finish_detach(
    caller: ClusterCaller, store: Store, cluster_name: str, a: Attachment, *, force: bool
) -> bool:
    """Detach on the node, then drop the export and the attachment. True when it is over; False when the
    node or SC could not finish now (the attachment stays detaching; the poll asks again)."""

    def read(tx: Tx) -> tuple[str | None, str | None]:
        c = topology.get_cluster(tx, cluster_name)
        sc = topology.get_storage(tx, cluster_name)
        return (c.url if c else None), (sc.url if sc else None)

    cc_url, sc_url = await store.read(read)
    if a.state in ("attaching", "attached", "detaching") and cc_url is not None:
        try:
            status = await _call(
                caller, cc_url, cluster_name, cluster.DetachVolume(a.instance_id, a.volume_id, force)
            )
        except (ClusterFault, trio.TooSlowError) as e:
            gone = isinstance(e, ClusterFault) and e.code == "InvalidInstanceID.NotFound"
            if not gone and not force:
                log.warning("volume detach not done id=%s: %s", a.volume_id, e)
                return False
        else:
            if _attached_on_node(status, a.volume_id) is not None:
                return False  # the guest has not let go yet
    return await finish_unexport(caller, store, cluster_name, sc_url, a.volume_id)


async def finish_unexport(
    caller: ClusterCaller,
    store: Store,
    cluster_name: str,
    sc_url: str | None,
    volume_id: str,
    *,
    instance_ended: bool = False,
) -> bool:
    """Drop the export, then the attachment (the volume available, or deleting with its instance)."""
    if sc_url is not None:
        try:
            await _call(caller, sc_url, cluster_name, cluster.UnexportVolume(volume_id))
        except (ClusterFault, trio.TooSlowError) as e:
            log.warning("volume unexport not done id=%s: %s", volume_id, e)
            return False
    delete = await store.write(
        lambda tx: records.end_attachment(tx, volume_id, instance_ended=instance_ended)
    )
    log.info("volume detached id=%s%s", volume_id, " (deleting: DeleteOnTermination)" if delete else "")
    if delete and sc_url is not None:
        try:
            await _call(caller, sc_url, cluster_name, cluster.DeleteVolume(volume_id))
        except (ClusterFault, trio.TooSlowError):
            pass  # the SC poll asks again
    return True


def handlers(instance_place: InstanceLookup, detach_guard: DetachGuard | None = None) -> dict[str, Handler]:
    api = AttachApi(instance_place, detach_guard)
    return {"AttachVolume": api.attach_volume, "DetachVolume": api.detach_volume}
