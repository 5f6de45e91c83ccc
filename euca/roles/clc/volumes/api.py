"""EBS volumes through EC2: CreateVolume, DescribeVolumes, DeleteVolume, DescribeVolumeStatus,
DescribeVolumeAttribute, ModifyVolume (grow; beyond Eucalyptus), DescribeVolumesModifications.

CreateVolume records the volume `creating` (durable), then asks the zone's SC (cluster.CreateVolume) and
answers `creating` as EC2 does; the SC's answer moves it to `available` (or `error`). When the SC cannot be
reached the volume stays `creating` and the poller asks again. DeleteVolume works the same way round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.cluster import ClusterFault
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.cluster_link import ask_storage
from euca.roles.clc.quota import limits_on, refuse_past
from euca.roles.clc.snapshots import records as snapshots
from euca.roles.clc.snapshots.poll import sweep_lock
from euca.roles.clc.snapshots.system import snapshot_store
from euca.roles.clc.tags import records as tags
from euca.roles.clc.tags.render import tag_list
from euca.roles.clc.topology import records as topology
from euca.roles.clc.volumes import records
from euca.roles.clc.volumes.attach import EC2_STATE, render_attachment
from euca.roles.clc.volumes.records import NewVolume, VolumeRecord

log = logging.getLogger("euca.clc")

# How long CreateVolume/DeleteVolume wait for the SC before answering anyway (the poller finishes the job).
PAGE_LIMITS = PageLimits(5, 500, capped=True)


def render(v: VolumeRecord) -> m.Volume:
    return m.Volume(
        volume_id=v.volume_id,
        size=v.size_gib,
        availability_zone=v.zone,
        state=v.state,
        create_time=datetime.fromtimestamp(v.created, UTC),
        volume_type=v.volume_type,
        snapshot_id=v.snapshot_id or "",
        iops=v.iops,
        attachments=[render_attachment(v.attachment)] if v.attachment else [],
        tags=tag_list(v.tags),
    )


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _created(v: VolumeRecord) -> str:
    return _time(v.created)


def _attached(v: VolumeRecord) -> list[records.Attachment]:
    return [v.attachment] if v.attachment else []


VOLUME_FILTERS: FilterSet[VolumeRecord] = FilterSet(
    {
        "volume-id": lambda v: v.volume_id,
        "status": lambda v: v.state,
        "availability-zone": lambda v: v.zone,
        "size": lambda v: str(v.size_gib),
        "volume-type": lambda v: v.volume_type,
        "snapshot-id": lambda v: v.snapshot_id or "",
        "create-time": _created,
        "encrypted": lambda v: "false",
        "multi-attach-enabled": lambda v: "false",
        "attachment.instance-id": lambda v: [a.instance_id for a in _attached(v)],
        "attachment.device": lambda v: [a.device for a in _attached(v)],
        "attachment.status": lambda v: [EC2_STATE.get(a.state, a.state) for a in _attached(v)],
        "attachment.attach-time": lambda v: [_time(a.attach_time) for a in _attached(v)],
        "attachment.delete-on-termination": lambda v: [
            str(a.delete_on_termination).lower() for a in _attached(v)
        ],
    },
    tags=lambda v: v.tags,
)


async def _ask_sc(
    call: Ec2Call, sc_url: str, cluster_name: str, message: object
) -> cluster.VolumeStatus | None:
    """The SC's answer, or None when it could not be reached in time (the poller asks again)."""
    status: cluster.VolumeStatus | None = await ask_storage(call.cluster, sc_url, cluster_name, message)
    return status


def _volume_type(req: m.CreateVolumeRequest) -> tuple[str, int | None]:
    volume_type = req.volume_type or records.DEFAULT_TYPE
    if volume_type not in records.SIZE_RANGES:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({volume_type}) for parameter volumeType is invalid. "
            f"Valid types: {', '.join(records.SIZE_RANGES)}.",
        )
    if volume_type in records.IOPS_TYPES:
        if req.iops is None:
            raise Ec2Error(
                "MissingParameter", f"The parameter iops must be specified for {volume_type} volumes."
            )
        return volume_type, req.iops
    if req.iops is not None and volume_type != "gp3":
        raise Ec2Error(
            "InvalidParameterCombination", f"The parameter iops is not supported for {volume_type} volumes."
        )
    return volume_type, req.iops


def _check_volume_quota(tx: Tx, limits: dict[str, int], new: VolumeRecord) -> None:
    """VolumeLimitExceeded (the transaction rolls back) when the account's live volumes besides `new`, plus
    `new`, pass its number or GiB limit. Counted after the insert, so a ClientToken retry is never refused."""
    others = [
        v
        for v in records.load_volumes(tx, new.account_id)
        if v.volume_id != new.volume_id and v.state not in ("deleting", "deleted")
    ]
    refuse_past(limits, "ec2:quota-volumenumber", current=len(others), adding=1)
    refuse_past(
        limits, "ec2:quota-volumetotalsize", current=sum(v.size_gib for v in others), adding=new.size_gib
    )


async def create_volume(call: Ec2Call, req: m.CreateVolumeRequest) -> m.Volume:
    zone = req.availability_zone or req.availability_zone_id
    if not zone:
        raise Ec2Error("MissingParameter", "The request must contain the parameter availabilityZone")
    if req.encrypted:
        raise Ec2Error("InvalidParameterValue", "Encrypted volumes are not supported by this cloud.")
    if req.multi_attach_enabled:
        raise Ec2Error("InvalidParameterValue", "Multi-attach volumes are not supported by this cloud.")
    volume_type, iops = _volume_type(req)
    size = req.size
    restore_from: cluster.SnapshotStore | None = None
    if req.snapshot_id is not None:
        # From a snapshot the caller may restore (own, shared, public): its zone's SC fetches the chunks.
        snapshot_id = snapshots.check_snapshot_id(req.snapshot_id)
        (snapshot,) = await call.ctx.store.read(
            lambda tx: snapshots.visible(tx, call.account_id, [snapshot_id])
        )
        if snapshot.state != "completed":
            raise Ec2Error(
                "IncorrectState", f"The snapshot '{snapshot_id}' is '{snapshot.state}', not 'completed'."
            )
        if size is not None and size < snapshot.volume_size:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Volume of {size}GiB is smaller than snapshot '{snapshot_id}' ({snapshot.volume_size}GiB).",
            )
        size = snapshot.volume_size if size is None else size
        restore_from = await snapshot_store(call.ctx)
    if size is None:
        raise Ec2Error("MissingParameter", "The request must contain the parameter size or snapshotId")
    records.check_size(volume_type, size)
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "volume")

    def place(tx: Tx) -> tuple[topology.Cluster, topology.StorageController]:
        c = topology.cluster_of_zone(tx, zone)
        if c is None:
            raise Ec2Error("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
        sc = topology.get_storage(tx, c.name)
        if sc is None:
            raise Ec2Error(
                "Unsupported",
                f"The availability zone {zone} has no storage controller: volumes cannot be created there.",
            )
        return c, sc

    c, sc = await call.ctx.store.read(place)
    new = NewVolume(
        call.account_id, c.zone, c.name, size, volume_type, iops, req.client_token, tag_pairs, req.snapshot_id
    )
    limits = await limits_on(call, "CreateVolume")

    def record(tx: Tx) -> tuple[VolumeRecord, bool]:
        volume, fresh = records.insert_volume(tx, new)
        if fresh and limits:  # in this transaction, so a concurrent CreateVolume is counted (quota.py)
            _check_volume_quota(tx, limits, volume)
        return volume, fresh

    async with sweep_lock(call.ctx.store):  # a volume `creating` from a snapshot holds off the snapshot sweep
        volume, fresh = await call.ctx.store.write(record, durable=True)
    if not fresh:
        return render(volume)
    log.info("volume creating id=%s zone=%s size=%dGiB type=%s", volume.volume_id, c.zone, size, volume_type)
    make: cluster.CreateVolume | cluster.RestoreVolume = cluster.CreateVolume(volume.volume_id, size)
    if restore_from is not None and req.snapshot_id is not None:
        make = cluster.RestoreVolume(volume.volume_id, size, req.snapshot_id, restore_from)
    try:
        status = await _ask_sc(call, sc.url, c.name, make)
    except ClusterFault as e:
        if e.code == "InsufficientVolumeCapacity":
            # Nothing was made: the volume never was, as in EC2.
            await call.ctx.store.write(lambda tx: records.forget(tx, volume.volume_id))
            log.info("volume refused id=%s: %s", volume.volume_id, e.message)
            raise Ec2Error(e.code, f"There is not enough free space in {zone} for this volume.") from None
        status = cluster.VolumeStatus(volume.volume_id, "error", size, f"{e.code}: {e.message}")
    if status is not None and status.state in ("available", "error"):
        await call.ctx.store.write(
            lambda tx: records.set_state(
                tx, volume.volume_id, status.state, only_from=("creating",), reason=status.reason
            )
        )
        log.info("volume state id=%s from=creating to=%s", volume.volume_id, status.state)
    return render(volume)  # EC2 answers CreateVolume with the volume `creating`


def _described(call: Ec2Call, ids: list[str]) -> Callable[[Tx], list[VolumeRecord]]:
    def read(tx: Tx) -> list[VolumeRecord]:
        if ids:
            return records.owned(tx, call.account_id, ids)
        return records.load_volumes(tx, call.account_id)

    return read


async def describe_volumes(call: Ec2Call, req: m.DescribeVolumesRequest) -> m.DescribeVolumesResult:
    # euca-describe-volumes verbose: the cloud admin sees every account's volumes.
    everyone = call.principal.is_cloud_admin and "verbose" in req.volume_ids
    ids = records.check_volume_ids([i for i in req.volume_ids if not (everyone and i == "verbose")])
    if ids and req.max_results is not None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter volumeSet cannot be used with the parameter maxResults",
        )
    if everyone:
        found = await call.ctx.store.read(records.load_all_volumes)
        missing = [i for i in ids if i not in {v.volume_id for v in found}]
        if missing:
            raise records.not_found(missing)
        found = [v for v in found if not ids or v.volume_id in ids]
    else:
        found = await call.ctx.store.read(_described(call, ids))
    found = VOLUME_FILTERS.apply(req.filters, found)
    page, token = paginate(found, lambda v: v.volume_id, req.max_results, req.next_token, PAGE_LIMITS)
    return m.DescribeVolumesResult(volumes=[render(v) for v in page], next_token=token)


async def delete_volume(call: Ec2Call, req: m.DeleteVolumeRequest) -> None:
    volume_id = records.check_volume_id(req.volume_id)
    volume = await call.ctx.store.write(lambda tx: records.begin_delete(tx, call.account_id, volume_id))
    sc = await call.ctx.store.read(lambda tx: topology.get_storage(tx, volume.cluster))
    log.info("volume deleting id=%s", volume_id)
    if sc is None:
        return  # its SC was deregistered: the poller has nobody to ask; the row stays `deleting`
    try:
        status = await _ask_sc(call, sc.url, volume.cluster, cluster.DeleteVolume(volume_id))
    except ClusterFault as e:
        log.warning(
            "volume delete refused by the storage controller id=%s: %s %s", volume_id, e.code, e.message
        )
        return
    if status is not None and status.state == "deleted":
        await call.ctx.store.write(lambda tx: records.forget(tx, volume_id))
        log.info("volume deleted id=%s", volume_id)


def _status(v: VolumeRecord) -> m.VolumeStatusItem:
    ok = v.state in ("available", "in-use", "creating", "deleting")
    status = "ok" if ok else "impaired"
    return m.VolumeStatusItem(
        volume_id=v.volume_id,
        availability_zone=v.zone,
        volume_status=m.VolumeStatusInfo(
            status=status,
            details=[
                m.VolumeStatusDetails(name="io-enabled", status="passed" if ok else "failed"),
                m.VolumeStatusDetails(name="io-performance", status="not-applicable"),
            ],
        ),
    )


STATUS_FILTERS: FilterSet[m.VolumeStatusItem] = FilterSet(
    {
        "availability-zone": lambda s: s.availability_zone,
        "volume-status.status": lambda s: s.volume_status.status,
        "volume-status.details-name": lambda s: [d.name for d in s.volume_status.details],
        "volume-status.details-status": lambda s: [d.status for d in s.volume_status.details],
        "action.code": lambda s: [],
        "action.description": lambda s: [],
        "action.event-id": lambda s: [],
        "event.description": lambda s: [],
        "event.event-id": lambda s: [],
        "event.event-type": lambda s: [],
        "event.not-after": lambda s: [],
        "event.not-before": lambda s: [],
    }
)


async def describe_volume_status(
    call: Ec2Call, req: m.DescribeVolumeStatusRequest
) -> m.DescribeVolumeStatusResult:
    ids = records.check_volume_ids(req.volume_ids)
    found = await call.ctx.store.read(_described(call, ids))
    statuses = STATUS_FILTERS.apply(req.filters, [_status(v) for v in found])
    page, token = paginate(
        statuses, lambda s: s.volume_id, req.max_results, req.next_token, PageLimits(5, 1000)
    )
    return m.DescribeVolumeStatusResult(volume_statuses=page, next_token=token)


async def describe_volume_attribute(
    call: Ec2Call, req: m.DescribeVolumeAttributeRequest
) -> m.DescribeVolumeAttributeResult:
    volume_id = records.check_volume_id(req.volume_id)
    await call.ctx.store.read(lambda tx: records.owned(tx, call.account_id, [volume_id]))
    if req.attribute == "autoEnableIO":
        return m.DescribeVolumeAttributeResult(
            volume_id=volume_id, auto_enable_io=m.AttributeBooleanValue(value=False)
        )
    if req.attribute == "productCodes":
        return m.DescribeVolumeAttributeResult(volume_id=volume_id, product_codes=[])
    raise Ec2Error("InvalidParameterValue", f"Value ({req.attribute}) for parameter attribute is invalid.")


def render_modification(v: VolumeRecord) -> m.VolumeModification:
    mod = v.modification
    assert mod is not None
    return m.VolumeModification(
        volume_id=v.volume_id,
        modification_state=mod.state,
        status_message=mod.message,
        original_size=mod.original_size,
        target_size=mod.target_size,
        original_volume_type=mod.original_type,
        target_volume_type=mod.target_type,
        original_iops=mod.original_iops,
        target_iops=mod.target_iops,
        start_time=datetime.fromtimestamp(mod.start, UTC),
        end_time=datetime.fromtimestamp(mod.end, UTC) if mod.end is not None else None,
        progress=0 if mod.state == "modifying" else 100,
    )


def _volume_and_storage(
    account_id: str, volume_id: str
) -> Callable[[Tx], tuple[VolumeRecord, topology.StorageController | None]]:
    def read(tx: Tx) -> tuple[VolumeRecord, topology.StorageController | None]:
        (volume,) = records.owned(tx, account_id, [volume_id])
        return volume, topology.get_storage(tx, volume.cluster)

    return read


async def modify_volume(call: Ec2Call, req: m.ModifyVolumeRequest) -> m.ModifyVolumeResult:
    """Grow a volume, or change its recorded type or iops (beyond Eucalyptus). The SC grows the bytes
    (GrowVolume); when it cannot be reached the modification stays `modifying` and the poller asks again."""
    volume_id = records.check_volume_id(req.volume_id)
    if req.multi_attach_enabled:
        raise Ec2Error("InvalidParameterValue", "Multi-attach volumes are not supported by this cloud.")
    if req.size is None and req.volume_type is None and req.iops is None:
        raise Ec2Error("MissingParameter", "The request must contain the parameter size, volumeType or iops")
    current, sc = await call.ctx.store.read(_volume_and_storage(call.account_id, volume_id))
    target_type = req.volume_type or current.volume_type
    if req.size is not None and target_type in records.SIZE_RANGES:
        records.check_size(target_type, req.size)  # a size out of range reads as such, whatever the space
    if req.size is not None and sc is not None and sc.capacity_gb:
        # Refused before anything is recorded when the SC's last poll says it cannot hold it (the SC checks
        # again, for what changed since).
        if sc.allocated_gb - current.size_gib + req.size > sc.capacity_gb:
            raise Ec2Error(
                "InsufficientVolumeCapacity",
                f"There is not enough free space in {current.zone} for this size.",
            )
    volume = await call.ctx.store.write(
        lambda tx: records.begin_modification(
            tx, call.account_id, volume_id, req.size, req.volume_type, req.iops
        ),
        durable=True,
    )
    mod = volume.modification
    assert mod is not None
    log.info("volume modifying id=%s size=%d->%d", volume_id, mod.original_size, mod.target_size)
    status: cluster.VolumeStatus | None = None
    if sc is not None:
        try:
            status = await _ask_sc(
                call, sc.url, volume.cluster, cluster.GrowVolume(volume_id, mod.target_size)
            )
        except ClusterFault as e:
            failed = f"{e.code}: {e.message}"
            await call.ctx.store.write(
                lambda tx: records.end_modification(tx, volume_id, ok=False, message=failed)
            )
            log.warning("volume modification failed id=%s: %s", volume_id, failed)
            if e.code == "InsufficientVolumeCapacity":
                raise Ec2Error(
                    e.code, f"There is not enough free space in {volume.zone} for this size."
                ) from None
    if status is not None and status.size_gb >= mod.target_size:
        await call.ctx.store.write(lambda tx: records.end_modification(tx, volume_id, ok=True))
    (now,) = await call.ctx.store.read(lambda tx: records.owned(tx, call.account_id, [volume_id]))
    return m.ModifyVolumeResult(volume_modification=render_modification(now))


MODIFICATION_FILTERS: FilterSet[m.VolumeModification] = FilterSet(
    {
        "volume-id": lambda x: x.volume_id,
        "modification-state": lambda x: x.modification_state,
        "original-size": lambda x: str(x.original_size),
        "target-size": lambda x: str(x.target_size),
        "original-volume-type": lambda x: x.original_volume_type,
        "target-volume-type": lambda x: x.target_volume_type,
        "original-iops": lambda x: str(x.original_iops) if x.original_iops is not None else [],
        "target-iops": lambda x: str(x.target_iops) if x.target_iops is not None else [],
        "start-time": lambda x: x.start_time.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
)


async def describe_volumes_modifications(
    call: Ec2Call, req: m.DescribeVolumesModificationsRequest
) -> m.DescribeVolumesModificationsResult:
    ids = records.check_volume_ids(req.volume_ids)
    found = await call.ctx.store.read(_described(call, ids))
    never = [v.volume_id for v in found if v.modification is None and ids]
    if never:
        raise Ec2Error(
            "InvalidVolumeModification.NotFound", f"Modification for volume '{never[0]}' does not exist."
        )
    mods = MODIFICATION_FILTERS.apply(
        req.filters, [render_modification(v) for v in found if v.modification is not None]
    )
    page, token = paginate(mods, lambda x: x.volume_id, req.max_results, req.next_token, PageLimits(5, 500))
    return m.DescribeVolumesModificationsResult(volumes_modifications=page, next_token=token)


HANDLERS: dict[str, Handler] = {
    "ModifyVolume": modify_volume,
    "DescribeVolumesModifications": describe_volumes_modifications,
    "CreateVolume": create_volume,
    "DescribeVolumes": describe_volumes,
    "DeleteVolume": delete_volume,
    "DescribeVolumeStatus": describe_volume_status,
    "DescribeVolumeAttribute": describe_volume_attribute,
}
