"""EC2 quotas (Eucalyptus's Limit policies, euca.core.quotas) checked before a request that would add to them
runs, so nothing is half-done: a RunInstances of 5 under a limit of 3 launches none. A rule spanning several
resources (instances and their types), so it sits above them; app.py is handed `check_quotas`."""

from __future__ import annotations

from typing import Any

from euca.core.quotas import QuotaExceeded, check, quota_limits
from euca.core.store import Tx
from euca.protocol.ec2 import messages
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.instances import records as instances
from euca.roles.clc.instances.launch import DEFAULT_INSTANCE_TYPE

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


async def check_quotas(call: Ec2Call, action: str, typed: Any) -> None:
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
