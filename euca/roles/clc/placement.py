"""Which zone runs a RunInstances request, and how many of its instances: pure functions, as Eucalyptus placed.

The CLC knows each cluster's nodes and capacity from its last poll (DescribeResources). A request names a zone
or not; with no zone, the zone with the most free slots for the type wins, among those that can hold MinCount.
All instances of one request go to one zone, and as many as fit up to MaxCount are launched
(min(MaxCount, free) >= MinCount), else InsufficientInstanceCapacity. The CC still decides the nodes, and is the
last word: a RunInstances it cannot hold is refused whole.

Between polls the CLC accounts for what it has just placed (`reserve`) so that two requests in a row do not both
count the same free slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from euca.protocol.cluster import NodeResources, TypeCapacity, VmType, slots, vm_type_fits
from euca.protocol.errors import CodedError


@dataclass(frozen=True)
class ZoneCapacity:
    """One zone (= one cluster) as placement sees it: how many instances of the requested type still fit."""

    zone: str
    cluster: str
    free: int
    available: bool = True  # its CC answered the last poll


class PlacementError(CodedError):
    """No zone can take the request. `code` is the EC2 error code to answer."""


@dataclass(frozen=True)
class Placement:
    zone: str
    cluster: str
    count: int


def choose_zone(
    zones: Sequence[ZoneCapacity], requested_zone: str | None, min_count: int, max_count: int
) -> Placement:
    """The zone and the number of instances to launch there.

    `requested_zone` must be one of `zones` (else InvalidParameterValue). Ties between equally free zones go
    to the first by name, so placement is deterministic.
    """
    if min_count < 1 or max_count < min_count:
        raise ValueError(f"bad counts min={min_count} max={max_count}")
    if requested_zone:
        candidates = [z for z in zones if z.zone == requested_zone]
        if not candidates:
            raise PlacementError("InvalidParameterValue", f"Invalid availability zone: [{requested_zone}]")
    else:
        candidates = list(zones)
    usable = [z for z in candidates if z.available and z.free >= min_count]
    if not usable:
        where = f" in zone {requested_zone}" if requested_zone else ""
        most = max((z.free for z in candidates if z.available), default=0)
        raise PlacementError(
            "InsufficientInstanceCapacity",
            f"There is not enough capacity{where} to fulfill your request: "
            f"{min_count} requested, at most {most} available.",
        )
    best = sorted(usable, key=lambda z: (-z.free, z.zone))[0]
    return Placement(best.zone, best.cluster, min(max_count, best.free))


def free_slots(vm: VmType, node: NodeResources) -> int:
    if node.state != "up":
        return 0
    return slots(vm, node.cores_free, node.memory_mb_free, node.disk_gb_free)


def max_slots(vm: VmType, node: NodeResources) -> int:
    if node.state != "up":
        return 0
    return slots(vm, node.cores_max, node.memory_mb_max, node.disk_gb_max)


def type_capacity(vm_types: Iterable[VmType], nodes: Sequence[NodeResources]) -> list[TypeCapacity]:
    """Free and max slots per type over the cluster's up nodes (an instance never spans nodes)."""
    return [
        TypeCapacity(vm.name, sum(free_slots(vm, n) for n in nodes), sum(max_slots(vm, n) for n in nodes))
        for vm in vm_types
    ]


def reserve(nodes: Sequence[NodeResources], vm: VmType, count: int) -> list[NodeResources]:
    """The nodes after `count` instances of `vm` are placed on them first-fit (as GREEDY would).

    An estimate until the next poll brings the CC's own numbers; instances that do not fit anywhere are
    simply not subtracted (the CC refuses them).
    """
    out = list(nodes)
    for _ in range(count):
        for i, node in enumerate(out):
            if vm_type_fits(vm, node):
                out[i] = NodeResources(
                    node=node.node,
                    state=node.state,
                    cores_max=node.cores_max,
                    cores_free=node.cores_free - vm.cores,
                    memory_mb_max=node.memory_mb_max,
                    memory_mb_free=node.memory_mb_free - vm.memory_mb,
                    disk_gb_max=node.disk_gb_max,
                    disk_gb_free=node.disk_gb_free - vm.disk_gb,
                    hypervisor=node.hypervisor,
                    reason=node.reason,
                )
                break
    return out


def capacity_after(
    capacity: Sequence[TypeCapacity],
    nodes: Sequence[NodeResources],
    vm_types: Sequence[VmType],
    vm: VmType,
    count: int,
) -> tuple[list[NodeResources], list[TypeCapacity]]:
    """A cluster's nodes and per-type capacity once `count` more instances of `vm` run there.

    With node details the capacity is recounted from the nodes; without (a CC that reports only totals) the
    type's free count drops by `count` and the other types are left alone.
    """
    if nodes:
        after = reserve(nodes, vm, count)
        return after, type_capacity(vm_types, after)
    return list(nodes), [
        TypeCapacity(c.vm_type, max(0, c.free - count), c.max) if c.vm_type == vm.name else c
        for c in capacity
    ]
