"""What the CC knows about its nodes and their instances, and the resource accounting built on it.

A node reports free = max - what its non-terminated instances use (NcDescribeResource). Between two such
reports the CC corrects the last one with what it learned since, so that the scheduler and the CLC see the
node as it is now rather than as it was up to a poll interval ago:

- an instance the CC placed that the report did not count (placed after it was asked for) uses its share;
- an instance the report counted as running that a node has since reported terminated (the domain is gone:
  a terminate's follow-up polls learn it within a second) frees its share at once, not at the next report.
  The freed amount is bounded by a recount from the tracked instances themselves (max less what the
  non-terminated ones use), so an instance that ended between the node's two answers of one poll (listed
  alive, not counted by the resources) is not freed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import trio

from euca.protocol.cluster import ClusterFault, InstanceStatus, NodeResources, VmType


class NodeClient(Protocol):
    """How the CC calls a node: euca.core.cluster_client.ClusterClient, or an in-process stand-in in tests.
    `expect_name`: the node's registered name, which its certificate must carry (a node answering at another
    node's address is refused). Raises ClusterFault for a fault answer; anything else raised counts as the
    node not answering."""

    async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any: ...


@dataclass(eq=False)
class Node:
    name: str
    url: str
    resources: NodeResources
    up: bool | None = None  # None: not polled yet
    # Sequence number (ClusterController.tick) of the request behind the report applied last.
    report_started: int = -1
    instances: dict[str, Tracked] = field(default_factory=dict)
    # Polled with NcDescribeNode (one call); False once it answered BadMessage (an older NC): two calls.
    one_call: bool = True


@dataclass(eq=False)
class Tracked:
    status: InstanceStatus
    vm: VmType | None  # what it uses; None when its type is unknown here
    # When the CC last learned this status (tick of a report's request, or of our own call's reply).
    updated: int
    in_flight: bool = False  # NcRunInstance sent, not answered yet
    counted: bool = False  # listed in the node's last full report (its resources are asked for after)
    charged: bool = False  # ... and listed not terminated there, so those resources count its use
    released: bool = False  # its address went back to the network
    started: trio.Event = field(default_factory=trio.Event)  # set when NcRunInstance is answered

    def uses(self) -> bool:
        """Whether it holds resources on its node now, as far as the CC knows."""
        return self.vm is not None and self.status.state != "terminated"


def unpolled(name: str) -> NodeResources:
    return NodeResources(node=name, state="down", reason="not polled yet")


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ClusterFault):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def fault_for(exc: Exception, default_code: str, context: str) -> ClusterFault:
    """A fault to answer the CLC with: a node's own fault code passes through, a silent node is
    `default_code`."""
    if isinstance(exc, ClusterFault):
        return ClusterFault(exc.code, f"{context}: {exc.message}", exc.status)
    return ClusterFault(default_code, f"{context}: {describe_error(exc)}", 503)


def _usage(instances: list[Tracked]) -> tuple[int, int, int]:
    cores = memory = disk = 0
    for tracked in instances:
        if tracked.vm is not None:
            cores += tracked.vm.cores
            memory += tracked.vm.memory_mb
            disk += tracked.vm.disk_gb
    return cores, memory, disk


def available(node: Node) -> NodeResources:
    """The node's resources as the scheduler should see them now: its last report, less what instances
    placed since use, plus what instances it counted and that ended since used (bounded by the recount)."""
    res = node.resources
    if res.state != "up":
        return res
    tracked = list(node.instances.values())
    placed = _usage([t for t in tracked if not t.counted and t.uses()])
    ended = _usage([t for t in tracked if t.counted and t.charged and t.vm and not t.uses()])
    reported = (res.cores_free, res.memory_mb_free, res.disk_gb_free)
    free = [r - p for r, p in zip(reported, placed, strict=True)]
    if any(ended):
        maxima = (res.cores_max, res.memory_mb_max, res.disk_gb_max)
        recount = [m - u for m, u in zip(maxima, _usage([t for t in tracked if t.uses()]), strict=True)]
        free = [max(f, min(f + e, r)) for f, e, r in zip(free, ended, recount, strict=True)]
    if tuple(free) == reported:
        return res
    return msgspec.structs.replace(res, cores_free=free[0], memory_mb_free=free[1], disk_gb_free=free[2])
