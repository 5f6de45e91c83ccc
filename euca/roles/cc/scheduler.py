"""Placement policies of the cluster controller, as pure functions over node resources.

GREEDY takes the first node, in the order the CLC lists them, that has the cores, memory and disk free;
ROUNDROBIN uses the same fit test but starts after the node it picked last time; POWERSAVE places like
GREEDY (Eucalyptus's POWERSAVE also powered idle nodes down; euca does not power nodes off).

`plan` places a whole request against a working copy of the nodes' free resources, so that a request
either fits entirely or not at all, and several instances of one request see each other's usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from euca.protocol.cluster import NodeResources, TypeCapacity, VmType, slots, vm_type_fits

POLICIES = ("GREEDY", "ROUNDROBIN", "POWERSAVE")


def greedy_pick(vm: VmType, nodes: Sequence[NodeResources]) -> int | None:
    """Index of the first node that fits `vm`, or None."""
    for i, node in enumerate(nodes):
        if vm_type_fits(vm, node):
            return i
    return None


def roundrobin_pick(vm: VmType, nodes: Sequence[NodeResources], after: str | None) -> int | None:
    """Index of the first node that fits `vm`, looking from the node after the one named `after` and
    wrapping around; from the first node when `after` is None or no longer listed."""
    start = 0
    if after is not None:
        for i, node in enumerate(nodes):
            if node.node == after:
                start = i + 1
                break
    n = len(nodes)
    for k in range(n):
        i = (start + k) % n
        if vm_type_fits(vm, nodes[i]):
            return i
    return None


def pick(policy: str, vm: VmType, nodes: Sequence[NodeResources], cursor: str | None) -> int | None:
    if policy == "ROUNDROBIN":
        return roundrobin_pick(vm, nodes, cursor)
    return greedy_pick(vm, nodes)  # GREEDY, and POWERSAVE places like GREEDY


def take(node: NodeResources, vm: VmType) -> NodeResources:
    """`node` with one instance of `vm` more in use."""
    return msgspec.structs.replace(
        node,
        cores_free=node.cores_free - vm.cores,
        memory_mb_free=node.memory_mb_free - vm.memory_mb,
        disk_gb_free=node.disk_gb_free - vm.disk_gb,
    )


def plan(
    policy: str, vms: Sequence[VmType], nodes: Sequence[NodeResources], cursor: str | None = None
) -> tuple[list[str], str | None] | None:
    """Places every one of `vms`, in order: (the node name for each, the cursor after the last pick), or
    None when they do not all fit. `nodes` is not changed."""
    working = list(nodes)
    chosen: list[str] = []
    for vm in vms:
        i = pick(policy, vm, working, cursor)
        if i is None:
            return None
        working[i] = take(working[i], vm)
        cursor = working[i].node
        chosen.append(cursor)
    return chosen, cursor


@dataclass
class Scheduler:
    """A policy and the one piece of state ROUNDROBIN keeps: the node it picked last."""

    policy: str = "GREEDY"
    cursor: str | None = None

    def __post_init__(self) -> None:
        self.policy = self.policy.upper()
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scheduler {self.policy!r}; choose from {', '.join(POLICIES)}")

    def plan(self, vms: Sequence[VmType], nodes: Sequence[NodeResources]) -> list[str] | None:
        """Node names for `vms` (all placed) or None; the cursor moves only when the whole plan is taken."""
        result = plan(self.policy, vms, nodes, self.cursor)
        if result is None:
            return None
        chosen, self.cursor = result
        return chosen


def capacity(vm_types: Sequence[VmType], nodes: Sequence[NodeResources]) -> list[TypeCapacity]:
    """Per type: how many more instances fit on the up nodes now (free) and on them empty (max), counted
    node by node (an instance never spans nodes)."""
    up = [n for n in nodes if n.state == "up"]
    return [
        TypeCapacity(
            vm_type=vm.name,
            free=sum(slots(vm, n.cores_free, n.memory_mb_free, n.disk_gb_free) for n in up),
            max=sum(slots(vm, n.cores_max, n.memory_mb_max, n.disk_gb_max) for n in up),
        )
        for vm in vm_types
    ]
