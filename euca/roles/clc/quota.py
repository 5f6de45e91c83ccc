"""EC2 quotas (Eucalyptus's Limit policies, euca.core.quotas) checked before a request that would add to them
runs, so nothing is half-done: a RunInstances of 5 under a limit of 3 launches none. Instances (number, cpu,
memory, disk), volumes (number, GiB), snapshots and elastic IPs (number). A rule spanning several resources,
so it sits above them; app.py is handed `check_quotas`. A volume made from a snapshot without a size counts
as one volume of 0 GiB here (its size is the snapshot's, known only to the volume's own checks)."""

from __future__ import annotations

from typing import Any

from euca.core.quotas import QuotaExceeded, check, quota_limits
from euca.core.store import Tx
from euca.protocol.ec2 import messages
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.app import Ec2Call
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.instances import records as instances
from euca.roles.clc.instances.launch import DEFAULT_INSTANCE_TYPE
from euca.roles.clc.snapshots import records as snapshots
from euca.roles.clc.volumes import records as volumes

_GONE = ("terminated", "shutting-down")
_INSTANCE_KEYS = (
    ("ec2:quota-vminstancenumber", "count"),
    ("ec2:quota-cputotalsize", "cpu"),
    ("ec2:quota-memorytotalsize", "memory"),
    ("ec2:quota-disktotalsize", "disk"),
)


def _instance_usage(
    tx: Tx, account_id: str, new_type: str, adding: int
) -> tuple[dict[str, int], dict[str, int]]:
    """(what the account's live instances use, what the launch adds): count, cpu, memory MiB, disk GiB."""
    types = {t.name: t for t in instance_types.load_instance_types(tx)}
    used = {"count": 0, "cpu": 0, "memory": 0, "disk": 0}
    for i in instances.load_instances(tx, account_id, with_tags=False):
        if i.state in _GONE:
            continue
        t = types.get(i.instance_type)
        used["count"] += 1
        if t is not None:
            used["cpu"] += t.cpu
            used["memory"] += t.memory_mib
            used["disk"] += t.disk_gib
    t = types.get(new_type)
    adds = {
        "count": adding,
        "cpu": adding * (t.cpu if t else 0),
        "memory": adding * (t.memory_mib if t else 0),
        "disk": adding * (t.disk_gib if t else 0),
    }
    return used, adds


def _volume_usage(tx: Tx, account_id: str) -> tuple[int, int]:
    live = [v for v in volumes.load_volumes(tx, account_id) if v.state not in ("deleting", "deleted")]
    return len(live), sum(v.size_gib for v in live)


def _snapshot_count(tx: Tx, account_id: str) -> int:
    return sum(
        1
        for snap in snapshots.load_visible(tx, account_id)
        if snap.account_id == account_id and snap.state in ("pending", "completed")
    )


def _address_count(tx: Tx, account_id: str) -> int:
    return len(addresses.load_addresses(tx, account_id))


async def _check_other(call: Ec2Call, action: str, typed: Any) -> None:
    """CreateVolume (number and GiB), CreateSnapshot / CopySnapshot (number), AllocateAddress (number)."""
    ctx, principal = call.ctx, call.principal
    account = principal.account_id
    found = await quota_limits(ctx.identity, principal, f"ec2:{action}", "*")
    if not found:
        return
    try:
        if action == "CreateVolume":
            count, gib = await ctx.store.read(lambda tx: _volume_usage(tx, account))
            check(found, "ec2:quota-volumenumber", current=count, adding=1)
            check(
                found, "ec2:quota-volumetotalsize", current=gib, adding=int(getattr(typed, "size", None) or 0)
            )
        elif action in ("CreateSnapshot", "CopySnapshot"):
            count = await ctx.store.read(lambda tx: _snapshot_count(tx, account))
            check(found, "ec2:quota-snapshotnumber", current=count, adding=1)
        elif action == "AllocateAddress":
            count = await ctx.store.read(lambda tx: _address_count(tx, account))
            check(found, "ec2:quota-addressnumber", current=count, adding=1)
    except QuotaExceeded as e:
        code = {
            "ec2:quota-volumenumber": "VolumeLimitExceeded",
            "ec2:quota-volumetotalsize": "VolumeLimitExceeded",
            "ec2:quota-snapshotnumber": "SnapshotLimitExceeded",
            "ec2:quota-addressnumber": "AddressLimitExceeded",
        }[e.key]
        raise Ec2Error(
            code, f"Your quota {e.key} of {e.limit} allows {e.left} more; this request needs {e.adding}"
        ) from None


_OTHER = frozenset({"CreateVolume", "CreateSnapshot", "CopySnapshot", "AllocateAddress"})


async def check_quotas(call: Ec2Call, action: str, typed: Any) -> None:
    if action in _OTHER:
        await _check_other(call, action, typed)
        return
    if action != "RunInstances" or not isinstance(typed, messages.RunInstancesRequest):
        return
    ctx, principal = call.ctx, call.principal
    found = await quota_limits(ctx.identity, principal, "ec2:RunInstances", "*")
    if not any(key in found for key, _ in _INSTANCE_KEYS):
        return
    type_name = typed.instance_type or DEFAULT_INSTANCE_TYPE
    adding = max(typed.max_count, typed.min_count)
    used, adds = await ctx.store.read(lambda tx: _instance_usage(tx, principal.account_id, type_name, adding))
    try:
        for key, what in _INSTANCE_KEYS:
            check(found, key, current=used[what], adding=adds[what])
    except QuotaExceeded as e:
        if e.key == "ec2:quota-vminstancenumber":
            message = (
                f"Your quota allows for {e.left} more running instance(s). You requested at least {adding}"
            )
        else:
            message = f"Your quota {e.key} of {e.limit} allows {e.left} more; this request needs {e.adding}"
        raise Ec2Error("InstanceLimitExceeded", message) from None
