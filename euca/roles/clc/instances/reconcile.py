"""How the instance table follows what a CC reports (pure): `reconcile` one cluster's DescribeInstances answer.

- a reported instance takes the reported state, node, address (states only move forward);
- an instance the CLC is terminating that the CC still runs is terminated again; one the CC no longer
  reports is gone (terminated);
- an instance its cluster has not reported for the node-lost timeout goes terminated (its node vanished),
  as Eucalyptus did (the poller only reconciles clusters whose CC answered: a silent CC leaves its instances
  as they were).

- EBS-backed instances (issue 10): a `stopping` one goes `stopped` once its node reports it ended (or no
  longer reports it), without node or private address; a `stopped` one is never lost and no late report
  of its ended run moves it; a `pending` one started again ignores the ended run's report (STOPPED_REASON);
  a running one whose guest powered off goes `stopped` when its shutdown behavior is `stop`.

records.apply_reconciliation writes the outcome; poller.py logs it and resends terminations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from euca.protocol.cluster import GUEST_POWERED_OFF, STARTABLE_AFTER, InstanceStatus

# Why an instance that powered itself off stopped (its instanceInitiatedShutdownBehavior is `stop`).
INSTANCE_SHUTDOWN = "Client.InstanceInitiatedShutdown"

# EC2 states only move forward (a late report never brings a terminated instance back).
RANK = {"pending": 0, "running": 1, "stopping": 1, "stopped": 1, "shutting-down": 2, "terminated": 3}


@dataclass(frozen=True)
class Known:
    """What the CLC's table says about one instance of the cluster being reconciled."""

    instance_id: str
    state: str
    node: str | None = None
    private_ip: str | None = None
    mac: str | None = None
    last_seen: float = 0.0
    stop_on_shutdown: bool = False  # EBS-backed with instanceInitiatedShutdownBehavior `stop` (issue 10)


@dataclass(frozen=True)
class Update:
    instance_id: str
    state: str
    node: str | None
    private_ip: str | None
    mac: str | None
    reason: str | None = None  # why it ended, when the CC says it ended on its own
    previous: str = ""


@dataclass
class Reconciliation:
    updates: list[Update] = field(default_factory=list)  # changed state, node or address
    seen: list[str] = field(default_factory=list)  # reported now
    gone: list[str] = field(default_factory=list)  # were terminating, no longer reported: terminated
    lost: list[str] = field(default_factory=list)  # not reported for longer than the timeout: terminated
    terminate_again: list[str] = field(default_factory=list)  # terminating here, still alive there
    stop_again: list[str] = field(default_factory=list)  # stopping here, still alive there (issue 10)
    unknown: list[str] = field(default_factory=list)  # reported but not in the table


def reconcile(
    known: Sequence[Known], reported: Sequence[InstanceStatus], now: float, node_lost_timeout: float
) -> Reconciliation:
    """How the table changes for one cluster's DescribeInstances answer."""
    out = Reconciliation()
    table = {k.instance_id: k for k in known}
    reported_ids = set()
    for r in reported:
        reported_ids.add(r.instance_id)
        k = table.get(r.instance_id)
        if k is None:
            if r.state != "terminated":
                out.unknown.append(r.instance_id)
            continue
        out.seen.append(r.instance_id)
        if k.state == "stopped" or (
            k.state == "pending" and r.state == "terminated" and r.reason in STARTABLE_AFTER
        ):
            continue  # the report of a run that was stopped: nothing of it counts any more
        if k.state == "stopping":
            if r.state == "terminated":
                out.updates.append(Update(k.instance_id, "stopped", None, None, k.mac, previous=k.state))
            elif r.state in ("pending", "running"):
                out.stop_again.append(r.instance_id)
            continue
        if (
            k.stop_on_shutdown
            and k.state == "running"
            and r.state == "terminated"
            and r.reason == GUEST_POWERED_OFF
        ):
            out.updates.append(
                Update(k.instance_id, "stopped", None, None, k.mac, INSTANCE_SHUTDOWN, previous=k.state)
            )
            continue
        if k.state in ("shutting-down", "terminated") and r.state in ("pending", "running"):
            out.terminate_again.append(r.instance_id)
        state = r.state if RANK.get(r.state, 0) >= RANK.get(k.state, 0) else k.state
        node = r.node or k.node
        ip = r.private_ip or k.private_ip
        mac = r.mac or k.mac
        if (state, node, ip, mac) != (k.state, k.node, k.private_ip, k.mac):
            reason = r.reason if state == "terminated" and k.state != "shutting-down" else None
            out.updates.append(Update(k.instance_id, state, node, ip, mac, reason, previous=k.state))
    for k in known:
        if k.instance_id in reported_ids or k.state in ("terminated", "stopped"):
            continue
        if k.state == "stopping":
            out.updates.append(Update(k.instance_id, "stopped", None, None, k.mac, previous=k.state))
        elif k.state == "shutting-down":
            out.gone.append(k.instance_id)
        elif now - k.last_seen > node_lost_timeout:
            out.lost.append(k.instance_id)
    return out
