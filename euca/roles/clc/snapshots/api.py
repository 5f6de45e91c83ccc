"""EBS snapshots through EC2: CreateSnapshot, DescribeSnapshots, DeleteSnapshot, Describe/Modify/
ResetSnapshotAttribute (createVolumePermission), CopySnapshot (within the region).

CreateSnapshot records the snapshot `pending` (durable), asks the volume's SC (cluster.CreateSnapshot, with
the volume's last completed snapshot as the parent an incremental upload compares against) and answers
`pending`; the poller follows the SC's progress (poll.py) to `completed` or `error`. DeleteSnapshot hides a
snapshot at once; the poller's sweep removes its manifest and the chunks no manifest names any more.

The volumes resource sits above this one (CreateVolume with a SnapshotId reads records.py), so the volume a
snapshot is made of is looked up through a function the composition root hands in (`handlers`), as is the
rule "a registered image uses this snapshot" (EBS-backed images: `images_using`, none yet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from euca.core.identity import ADMIN_ACCOUNT
from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.cluster import ClusterFault
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.cluster_link import ask_storage
from euca.roles.clc.quota import limits_on, refuse_past
from euca.roles.clc.snapshots import records
from euca.roles.clc.snapshots.poll import sweep_lock
from euca.roles.clc.snapshots.records import ACCOUNT_ID_RE, NewSnapshot, SnapshotRecord
from euca.roles.clc.snapshots.system import snapshot_store
from euca.roles.clc.tags import records as tags
from euca.roles.clc.tags.render import tag_list
from euca.roles.clc.topology import records as topology

log = logging.getLogger("euca.clc")

PAGE_LIMITS = PageLimits(5, 1000, capped=True)
# The volume id EC2 shows for a copied snapshot (its volume is another's, perhaps in another region).
COPY_VOLUME_ID = "vol-ffffffff"


class VolumeOfSnapshot(Protocol):
    """What CreateSnapshot needs of a volume (volumes.records.VolumeRecord has it)."""

    @property
    def volume_id(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def size_gib(self) -> int: ...
    @property
    def state(self) -> str: ...


# (tx, caller's account id, volume id) -> the caller's volume; InvalidVolume.NotFound / .Malformed otherwise.
VolumeLookup = Callable[[Tx, str, str], VolumeOfSnapshot]
# (tx, snapshot id) -> the registered images whose block devices use it (EBS-backed images, later).
ImagesUsing = Callable[[Tx, str], Sequence[str]]


def no_images(tx: Tx, snapshot_id: str) -> Sequence[str]:
    """No image is EBS-backed yet: no snapshot is in use by one. RegisterImage with a root device snapshot
    hands the real rule in (clc/__init__.py), and DeleteSnapshot then answers InvalidSnapshot.InUse."""
    return ()


def render(s: SnapshotRecord) -> m.Snapshot:
    return m.Snapshot(
        snapshot_id=s.snapshot_id,
        volume_id=s.volume_id,
        state=s.state,
        state_message=s.reason if s.state == "error" else None,
        start_time=datetime.fromtimestamp(s.started, UTC),
        completion_time=datetime.fromtimestamp(s.ended, UTC) if s.ended and s.state == "completed" else None,
        progress=s.progress,
        owner_id=s.account_id,
        description=s.description,
        volume_size=s.volume_size,
        tags=tag_list(s.tags),
    )


def _started(s: SnapshotRecord) -> str:
    return datetime.fromtimestamp(s.started, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


SNAPSHOT_FILTERS: FilterSet[SnapshotRecord] = FilterSet(
    {
        "snapshot-id": lambda s: s.snapshot_id,
        "volume-id": lambda s: s.volume_id,
        "status": lambda s: s.state,
        "owner-id": lambda s: s.account_id,
        "progress": lambda s: s.progress,
        "start-time": _started,
        "description": lambda s: s.description,
        "volume-size": lambda s: str(s.volume_size),
        "encrypted": lambda s: "false",
        "storage-tier": lambda s: "standard",
        "owner-alias": lambda s: [],
    },
    tags=lambda s: s.tags,
)


async def _ask_sc(call: Ec2Call, sc: topology.StorageController, message: object) -> object | None:
    """The SC's answer, or None when it could not be reached in time (the poller asks again)."""
    answer: object | None = await ask_storage(call.cluster, sc.url, sc.cluster, message)
    return answer


async def _record_status(call: Ec2Call, status: cluster.SnapshotStatus) -> None:
    if status.state in ("pending", "completed", "error"):
        await call.ctx.store.write(lambda tx: records.record_progress(tx, status))


def _check_snapshot_quota(tx: Tx, limits: dict[str, int], account_id: str) -> None:
    """SnapshotLimitExceeded when one more snapshot of the account would pass its limit: checked in the
    transaction that records the snapshot, so concurrent requests cannot both pass (quota.py)."""
    if not limits:
        return
    count = sum(
        1
        for snap in records.load_visible(tx, account_id)
        if snap.account_id == account_id and snap.state in ("pending", "completed")
    )
    refuse_past(limits, "ec2:quota-snapshotnumber", current=count, adding=1)


def handlers(volume_of: VolumeLookup, images_using: ImagesUsing = no_images) -> dict[str, Handler]:
    async def create_snapshot(call: Ec2Call, req: m.CreateSnapshotRequest) -> m.Snapshot:
        if req.outpost_arn or req.location:
            raise Ec2Error("InvalidParameterValue", "Outposts are not supported by this cloud.")
        description = req.description or ""
        if len(description) > 255:
            raise Ec2Error("InvalidParameterValue", "The description may be 255 characters at most.")
        tag_pairs = tags.tags_from_specifications(req.tag_specifications, "snapshot")
        limits = await limits_on(call, "CreateSnapshot")

        def begin(tx: Tx) -> tuple[SnapshotRecord, topology.StorageController]:
            volume = volume_of(tx, call.account_id, req.volume_id)
            if volume.state not in ("available", "in-use"):
                raise Ec2Error("IncorrectState", f"The volume '{volume.volume_id}' is '{volume.state}'.")
            sc = topology.get_storage(tx, volume.cluster)
            if sc is None:
                raise Ec2Error(
                    "Unsupported", f"The volume '{volume.volume_id}' has no storage controller now."
                )
            _check_snapshot_quota(tx, limits, call.account_id)
            new = NewSnapshot(
                call.account_id,
                volume.volume_id,
                volume.size_gib,
                volume.cluster,
                description,
                tag_pairs,
                parent=records.parent_for(tx, volume.volume_id),
            )
            return records.insert_snapshot(tx, new), sc

        store = await snapshot_store(call.ctx)
        async with sweep_lock(call.ctx.store):
            snapshot, sc = await call.ctx.store.write(begin, durable=True)
        log.info(
            "snapshot pending id=%s volume=%s parent=%s",
            snapshot.snapshot_id,
            snapshot.volume_id,
            snapshot.parent,
        )
        message = cluster.CreateSnapshot(snapshot.snapshot_id, snapshot.volume_id, store, snapshot.parent)
        try:
            status = await _ask_sc(call, sc, message)
        except ClusterFault as e:
            status = cluster.SnapshotStatus(snapshot.snapshot_id, "error", reason=f"{e.code}: {e.message}")
        if isinstance(status, cluster.SnapshotStatus):
            await _record_status(call, status)
        if call.cluster is not None:
            call.cluster.poke()
        return render(snapshot)

    async def delete_snapshot(call: Ec2Call, req: m.DeleteSnapshotRequest) -> None:
        snapshot_id = records.check_snapshot_id(req.snapshot_id)
        await call.ctx.store.write(
            lambda tx: records.begin_delete(tx, call.account_id, snapshot_id, images_using(tx, snapshot_id))
        )
        log.info("snapshot deleted id=%s", snapshot_id)
        if call.cluster is not None:
            call.cluster.poke()  # the sweep runs with the next poll

    return {
        "CreateSnapshot": create_snapshot,
        "DescribeSnapshots": describe_snapshots,
        "DeleteSnapshot": delete_snapshot,
        "DescribeSnapshotAttribute": describe_snapshot_attribute,
        "ModifySnapshotAttribute": modify_snapshot_attribute,
        "ResetSnapshotAttribute": reset_snapshot_attribute,
        "CopySnapshot": copy_snapshot,
    }


async def _accounts(call: Ec2Call, who: list[str], *, allow_all: bool) -> tuple[set[str], bool]:
    """OwnerIds / RestorableByUserIds as account ids ("self", an account id, "amazon": the system account),
    and whether "all" was named."""
    ids: set[str] = set()
    everyone = False
    for w in who:
        if w == "self":
            ids.add(call.account_id)
        elif w == "all" and allow_all:
            everyone = True
        elif w == "amazon" and not allow_all:
            admin = await call.ctx.identity.account_by_name(ADMIN_ACCOUNT)
            if admin is not None:
                ids.add(admin.account_id)
        elif ACCOUNT_ID_RE.match(w):
            ids.add(w)
        else:
            raise Ec2Error("InvalidUserID.Malformed", f"Invalid user id: '{w}'")
    return ids, everyone


async def describe_snapshots(call: Ec2Call, req: m.DescribeSnapshotsRequest) -> m.DescribeSnapshotsResult:
    ids = records.check_snapshot_ids(req.snapshot_ids)
    if ids and req.max_results is not None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter snapshotSet cannot be used with the parameter maxResults",
        )
    owners, _ = await _accounts(call, req.owner_ids, allow_all=False)
    restorable, everyone = await _accounts(call, req.restorable_by_user_ids, allow_all=True)
    if ids:
        found = await call.ctx.store.read(lambda tx: records.visible(tx, call.account_id, ids))
    else:
        found = await call.ctx.store.read(lambda tx: records.load_visible(tx, call.account_id))
    if req.owner_ids:
        found = [s for s in found if s.account_id in owners]
    if req.restorable_by_user_ids:
        found = [s for s in found if (everyone and s.public) or any(s.restorable_by(a) for a in restorable)]
    found = SNAPSHOT_FILTERS.apply(req.filters, found)
    page, token = paginate(found, lambda s: s.snapshot_id, req.max_results, req.next_token, PAGE_LIMITS)
    return m.DescribeSnapshotsResult(snapshots=[render(s) for s in page], next_token=token)


def _permissions(s: SnapshotRecord) -> list[m.CreateVolumePermission]:
    perms = [m.CreateVolumePermission(group="all")] if s.public else []
    return perms + [m.CreateVolumePermission(user_id=a) for a in s.shared_with]


async def describe_snapshot_attribute(
    call: Ec2Call, req: m.DescribeSnapshotAttributeRequest
) -> m.DescribeSnapshotAttributeResult:
    snapshot_id = records.check_snapshot_id(req.snapshot_id)
    if req.attribute not in ("createVolumePermission", "productCodes"):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({req.attribute}) for parameter attribute is invalid."
        )
    s = await call.ctx.store.read(lambda tx: records.owned(tx, call.account_id, snapshot_id))
    if req.attribute == "productCodes":
        return m.DescribeSnapshotAttributeResult(snapshot_id=snapshot_id, product_codes=[])
    return m.DescribeSnapshotAttributeResult(
        snapshot_id=snapshot_id, create_volume_permissions=_permissions(s)
    )


async def modify_snapshot_attribute(call: Ec2Call, req: m.ModifySnapshotAttributeRequest) -> None:
    snapshot_id = records.check_snapshot_id(req.snapshot_id)
    if req.attribute == "productCodes":
        raise Ec2Error("UnsupportedOperation", "Product codes are not supported by this cloud.")
    if req.attribute not in (None, "createVolumePermission"):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({req.attribute}) for parameter attribute is invalid."
        )
    add: set[str] = set()
    remove: set[str] = set()
    public: bool | None = None

    def take(perms: list[m.CreateVolumePermission], adding: bool) -> None:
        nonlocal public
        for p in perms:
            if p.group is not None:
                if p.group != "all":
                    raise Ec2Error(
                        "InvalidParameterValue", f"Value ({p.group}) for parameter group is invalid."
                    )
                public = adding
            if p.user_id is not None:
                (add if adding else remove).add(p.user_id)

    if req.create_volume_permission is not None:
        take(req.create_volume_permission.add, True)
        take(req.create_volume_permission.remove, False)
    if req.user_ids or req.group_names:
        if req.operation_type not in ("add", "remove"):
            raise Ec2Error(
                "MissingParameter", "The request must contain the parameter OperationType (add or remove)"
            )
        perms = [m.CreateVolumePermission(user_id=u) for u in req.user_ids]
        perms += [m.CreateVolumePermission(group=g) for g in req.group_names]
        take(perms, req.operation_type == "add")
    if not add and not remove and public is None:
        raise Ec2Error("MissingParameter", "The request must contain the parameter createVolumePermission")
    for account_id in add | remove:
        if not ACCOUNT_ID_RE.match(account_id) or await call.ctx.identity.account_by_id(account_id) is None:
            raise Ec2Error("InvalidUserID.Malformed", f"Invalid user id: '{account_id}'")
    await call.ctx.store.write(
        lambda tx: records.change_permissions(
            tx, call.account_id, snapshot_id, add=sorted(add), remove=sorted(remove), public=public
        )
    )


async def reset_snapshot_attribute(call: Ec2Call, req: m.ResetSnapshotAttributeRequest) -> None:
    snapshot_id = records.check_snapshot_id(req.snapshot_id)
    if req.attribute != "createVolumePermission":
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({req.attribute}) for parameter attribute is invalid."
        )
    await call.ctx.store.write(lambda tx: records.reset_permissions(tx, call.account_id, snapshot_id))


async def copy_snapshot(call: Ec2Call, req: m.CopySnapshotRequest) -> m.CopySnapshotResult:
    """A copy within the region: a new snapshot id whose manifest names the source's chunks."""
    source_id = records.check_snapshot_id(req.source_snapshot_id)
    region = call.ctx.config.region
    if req.source_region != region or (req.destination_region or region) != region:
        raise Ec2Error(
            "InvalidParameterValue", f"Snapshots are copied within this cloud's region ({region}) only."
        )
    if req.encrypted or req.kms_key_id:
        raise Ec2Error("InvalidParameterValue", "Encrypted snapshots are not supported by this cloud.")
    if req.destination_outpost_arn or req.destination_availability_zone:
        raise Ec2Error("InvalidParameterValue", "Outposts and local zones are not supported by this cloud.")
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "snapshot")
    limits = await limits_on(call, "CopySnapshot")

    def begin(tx: Tx) -> tuple[SnapshotRecord, topology.StorageController]:
        (source,) = records.visible(tx, call.account_id, [source_id])
        if source.state != "completed":
            raise Ec2Error(
                "IncorrectState", f"The snapshot '{source_id}' is '{source.state}', not 'completed'."
            )
        sc = topology.get_storage(tx, source.cluster) or next(iter(topology.list_storage(tx)), None)
        if sc is None:
            raise Ec2Error("Unsupported", "This cloud has no storage controller to copy the snapshot.")
        description = (
            req.description if req.description is not None else f"[Copied {source_id} from {region}]"
        )
        _check_snapshot_quota(tx, limits, call.account_id)
        new = NewSnapshot(
            call.account_id,
            COPY_VOLUME_ID,
            source.volume_size,
            sc.cluster,
            description,
            tag_pairs,
            copied_from=source_id,
        )
        return records.insert_snapshot(tx, new), sc

    store = await snapshot_store(call.ctx)
    async with sweep_lock(call.ctx.store):
        snapshot, sc = await call.ctx.store.write(begin, durable=True)
    log.info("snapshot copy pending id=%s from=%s", snapshot.snapshot_id, source_id)
    try:
        status = await _ask_sc(call, sc, cluster.CopySnapshot(source_id, snapshot.snapshot_id, store))
    except ClusterFault as e:
        status = cluster.SnapshotStatus(snapshot.snapshot_id, "error", reason=f"{e.code}: {e.message}")
    if isinstance(status, cluster.SnapshotStatus):
        await _record_status(call, status)
    return m.CopySnapshotResult(snapshot_id=snapshot.snapshot_id, tags=tag_list(dict(tag_pairs)))
