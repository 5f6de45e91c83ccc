"""The NC's answers to NcAttachVolume and NcDetachVolume (volumes.py has the pure parts).

Attach: the disk's target is the first virtio name the domain does not use; the attachment is recorded in
volumes.json first, then hot-plugged (a failure drops the record again). Detach: the guest is asked to let
go of the disk and the NC waits a little for it; a guest that has not let go yet keeps the attachment
`detaching` (the CLC asks again, and `force` drops the record whatever the guest does, leaving the SC to cut
the export). Both are idempotent: the CLC resends after a timeout or a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from euca.protocol.cluster import (
    AttachedVolume,
    ClusterFault,
    InstanceStatus,
    NcAttachVolume,
    NcDetachVolume,
    ec2_state,
)
from euca.roles.nc import volumes
from euca.roles.nc.hypervisor import Hypervisor, HypervisorError
from euca.roles.nc.instance import ALIVE, Instance
from euca.roles.nc.volumes import SavedAttachment

log = logging.getLogger("euca.nc")

# How long a detach waits for the guest to let go of the disk before answering `detaching`.
DETACH_WAIT = 10.0
DETACH_POLL = 0.1


class VolumeAttacher:
    def __init__(self, node: str, hv: Hypervisor, find: Callable[[str], Instance | None]):
        self.node = node
        self.hv = hv
        self.find = find

    def _instance(self, instance_id: str) -> Instance:
        inst = self.find(instance_id)
        if inst is None:
            raise ClusterFault(
                "InvalidInstanceID.NotFound", f"the instance ID '{instance_id}' is not on this node", 404
            )
        return inst

    async def _save(self, inst: Instance) -> None:
        await trio.to_thread.run_sync(volumes.save, inst.dir, list(inst.volumes.values()))

    async def attach(self, msg: NcAttachVolume) -> InstanceStatus:
        inst = self._instance(msg.instance_id)
        async with inst.lock:
            if msg.volume_id in inst.volumes:
                return inst.status(self.node)  # a resend
            if inst.state not in ALIVE:
                raise ClusterFault(
                    "IncorrectInstanceState", f"the instance '{inst.id}' is {ec2_state(inst.state)}", 400
                )
            try:
                used = volumes.used_targets(await self.hv.domain_xml(inst.id))
                used |= {a.volume.target for a in inst.volumes.values()}
                target = volumes.next_target(used)
                xml = volumes.disk_xml(msg.export, target, msg.volume_id)
            except (HypervisorError, ValueError) as e:
                raise ClusterFault("InvalidParameterValue", f"cannot attach {msg.volume_id}: {e}", 400) from e
            saved = SavedAttachment(AttachedVolume(msg.volume_id, msg.device, target), msg.export)
            inst.volumes[msg.volume_id] = saved
            try:
                await self._save(inst)
                await self.hv.attach_device(inst.id, xml)
            except (HypervisorError, OSError) as e:
                del inst.volumes[msg.volume_id]
                try:
                    await self._save(inst)
                except OSError:
                    pass
                log.warning("volume attach failed id=%s instance=%s error=%s", msg.volume_id, inst.id, e)
                raise ClusterFault("InternalError", f"cannot attach {msg.volume_id}: {e}", 500) from e
        log.info(
            "volume attached id=%s instance=%s device=%s target=%s export=%s",
            msg.volume_id,
            inst.id,
            msg.device,
            target,
            msg.export.kind,
        )
        return inst.status(self.node)

    async def detach(self, msg: NcDetachVolume) -> InstanceStatus:
        inst = self._instance(msg.instance_id)
        async with inst.lock:
            saved = inst.volumes.get(msg.volume_id)
            if saved is None:
                return inst.status(self.node)  # not (or no longer) attached
            xml = volumes.disk_xml(saved.export, saved.volume.target, msg.volume_id)
            gone = inst.state not in ALIVE
            if not gone:
                try:
                    if volumes.has_volume(await self.hv.domain_xml(inst.id), msg.volume_id):
                        await self.hv.detach_device(inst.id, xml)
                    gone = await self._wait_gone(inst.id, msg.volume_id)
                except HypervisorError as e:
                    if not msg.force:
                        raise ClusterFault("InternalError", f"cannot detach {msg.volume_id}: {e}", 500) from e
                    log.warning("volume detach forced id=%s instance=%s error=%s", msg.volume_id, inst.id, e)
            if gone or msg.force:
                del inst.volumes[msg.volume_id]
                log.info("volume detached id=%s instance=%s forced=%s", msg.volume_id, inst.id, msg.force)
            else:
                detaching = AttachedVolume(
                    msg.volume_id, saved.volume.device, saved.volume.target, "detaching"
                )
                inst.volumes[msg.volume_id] = SavedAttachment(detaching, saved.export)
                log.info(
                    "volume detaching id=%s instance=%s: the guest has not let go yet", msg.volume_id, inst.id
                )
            try:
                await self._save(inst)
            except OSError as e:
                raise ClusterFault("InternalError", f"cannot record the detach: {e}", 500) from e
        return inst.status(self.node)

    async def _wait_gone(self, instance_id: str, volume_id: str) -> bool:
        with trio.move_on_after(DETACH_WAIT):
            while volumes.has_volume(await self.hv.domain_xml(instance_id), volume_id):
                await trio.sleep(DETACH_POLL)
            return True
        return False
