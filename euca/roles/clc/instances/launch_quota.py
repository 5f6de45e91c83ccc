"""RunInstances' quotas (Eucalyptus's Limit policies: instance number, cpu, memory, disk), checked inside the
store write transaction that records the launch. The store has one writer, so two concurrent launches of one
account cannot both see the usage before either's instances: the second sees the first's, and a launch past
a limit launches none. The limits themselves (identity policies, async) are read before the transaction.

    limits = await launch_limits(call)                      # {} when no quota applies: no check at all
    check_launch(tx, account_id, limits, "m1.small", 3)     # in the write transaction; raises Ec2Error
"""

from __future__ import annotations

from euca.core.quotas import QuotaExceeded, check, quota_limits
from euca.core.store import Tx
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.instances import records

_GONE = ("terminated", "shutting-down")
INSTANCE_KEYS = (
    ("ec2:quota-vminstancenumber", "count"),
    ("ec2:quota-cputotalsize", "cpu"),
    ("ec2:quota-memorytotalsize", "memory"),
    ("ec2:quota-disktotalsize", "disk"),
)


async def launch_limits(call: Ec2Call) -> dict[str, int]:
    """The instance quotas on the caller (its account's and, for a user, its own), the smaller of each."""
    found = await quota_limits(call.ctx.identity, call.principal, "ec2:RunInstances", "*")
    return {key: found[key] for key, _ in INSTANCE_KEYS if key in found}


def instance_usage(
    tx: Tx, account_id: str, new_type: str, adding: int
) -> tuple[dict[str, int], dict[str, int]]:
    """(what the account's live instances use, what the launch adds): count, cpu, memory MiB, disk GiB."""
    types = {t.name: t for t in instance_types.load_instance_types(tx)}
    used = {"count": 0, "cpu": 0, "memory": 0, "disk": 0}
    for i in records.load_instances(tx, account_id, with_tags=False):
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


def check_launch(tx: Tx, account_id: str, limits: dict[str, int], type_name: str, adding: int) -> None:
    """InstanceLimitExceeded when `adding` instances of `type_name` would pass a limit (nothing read when
    there is none)."""
    if not limits:
        return
    used, adds = instance_usage(tx, account_id, type_name, adding)
    try:
        for key, what in INSTANCE_KEYS:
            check(limits, key, current=used[what], adding=adds[what])
    except QuotaExceeded as e:
        if e.key == "ec2:quota-vminstancenumber":
            message = (
                f"Your quota allows for {e.left} more running instance(s). You requested at least {adding}"
            )
        else:
            message = f"Your quota {e.key} of {e.limit} allows {e.left} more; this request needs {e.adding}"
        raise Ec2Error("InstanceLimitExceeded", message) from None
