"""EC2 quotas (Eucalyptus's Limit policies, euca.core.quotas) checked before a request that would add to them
runs, so nothing is half-done: volumes (number, GiB), snapshots and elastic IPs (number). Instances (number,
cpu, memory, disk) are checked in RunInstances' own write transaction (instances/launch_quota.py). A rule
spanning several resources, so it sits above them; app.py is handed `check_quotas`. A volume made from a snapshot without a size counts
as one volume of 0 GiB here (its size is the snapshot's, known only to the volume's own checks)."""

from __future__ import annotations

from typing import Any

from euca.core.quotas import QuotaExceeded, check, quota_limits
from euca.core.store import Tx
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.app import Ec2Call
from euca.roles.clc.snapshots import records as snapshots
from euca.roles.clc.volumes import records as volumes


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
    """RunInstances' quotas are not here: they are checked in the transaction that records the launch
    (instances/launch_quota.py), so concurrent launches cannot both pass them."""
    if action in _OTHER:
        await _check_other(call, action, typed)
