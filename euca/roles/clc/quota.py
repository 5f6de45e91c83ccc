"""EC2 quotas (Eucalyptus's Limit policies, euca.core.quotas) on volumes (number, GiB), snapshots and elastic
IPs (number), checked by each handler inside the store write transaction that records the new volume,
snapshot or address. The store has one writer, so two concurrent requests of one account cannot both pass a
limit: the second sees the first's row. The limits themselves (identity policies, async) are read before the
transaction. Instances' quotas work the same way (instances/launch_quota.py).

    limits = await limits_on(call, "CreateVolume")          # {} when no quota applies: nothing to count
    refuse_past(limits, "ec2:quota-volumenumber", current=3, adding=1)   # in the transaction; Ec2Error
"""

from __future__ import annotations

from euca.core.quotas import QuotaExceeded, check, quota_limits
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call

# The error Eucalyptus answered for each key.
_CODES = {
    "ec2:quota-volumenumber": "VolumeLimitExceeded",
    "ec2:quota-volumetotalsize": "VolumeLimitExceeded",
    "ec2:quota-snapshotnumber": "SnapshotLimitExceeded",
    "ec2:quota-addressnumber": "AddressLimitExceeded",
}


async def limits_on(call: Ec2Call, action: str) -> dict[str, int]:
    """The caller's limits on `ec2:<action>` (its account's and, for a user, its own: the smaller of each)."""
    return await quota_limits(call.ctx.identity, call.principal, f"ec2:{action}", "*")


def refuse_past(limits: dict[str, int], key: str, *, current: int, adding: int) -> None:
    """The key's Ec2Error when `adding` more on top of `current` would pass the limit (none: no limit)."""
    try:
        check(limits, key, current=current, adding=adding)
    except QuotaExceeded as e:
        raise Ec2Error(
            _CODES[key],
            f"Your quota {e.key} of {e.limit} allows {e.left} more; this request needs {e.adding}",
        ) from None
