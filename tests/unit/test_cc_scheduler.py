"""CC placement policies and capacity counting (pure functions, no I/O)."""

from __future__ import annotations

import pytest

from euca.protocol.cluster import NodeResources, TypeCapacity, VmType
from euca.roles.cc.scheduler import Scheduler, capacity, greedy_pick, plan, roundrobin_pick, take

SMALL = VmType("m1.small", 1, 256, 5)
LARGE = VmType("c1.xlarge", 2, 2048, 10)


def node(
    name: str,
    cores: int = 4,
    memory_mb: int = 4096,
    disk_gb: int = 100,
    *,
    free: bool = True,
    state: str = "up",
) -> NodeResources:
    return NodeResources(
        node=name,
        state=state,  # type: ignore[arg-type]
        cores_max=cores,
        cores_free=cores if free else 0,
        memory_mb_max=memory_mb,
        memory_mb_free=memory_mb if free else 0,
        disk_gb_max=disk_gb,
        disk_gb_free=disk_gb if free else 0,
    )


def test_greedy_takes_first_node_in_order_that_fits_every_resource() -> None:
    nodes = [
        node("a", cores=1, memory_mb=1024),  # cores too few for LARGE
        node("b", cores=4, memory_mb=1024),  # memory too little
        node("c", cores=4, memory_mb=4096, disk_gb=5),  # disk too little
        node("d"),
        node("e"),
    ]
    assert greedy_pick(LARGE, nodes) == 3
    assert greedy_pick(SMALL, nodes) == 0


def test_greedy_skips_down_nodes() -> None:
    assert greedy_pick(SMALL, [node("a", state="down"), node("b")]) == 1


def test_nothing_fits() -> None:
    nodes = [node("a", cores=1), node("b", free=False), node("c", state="down")]
    assert greedy_pick(LARGE, nodes) is None
    assert roundrobin_pick(LARGE, nodes, "a") is None
    assert greedy_pick(SMALL, []) is None
    assert roundrobin_pick(SMALL, [], None) is None
    assert plan("GREEDY", [LARGE], nodes) is None


def test_roundrobin_starts_after_last_pick_and_wraps() -> None:
    nodes = [node("a"), node("b"), node("c")]
    assert roundrobin_pick(SMALL, nodes, None) == 0
    assert roundrobin_pick(SMALL, nodes, "a") == 1
    assert roundrobin_pick(SMALL, nodes, "c") == 0  # wraps
    assert roundrobin_pick(SMALL, nodes, "gone") == 0  # a cursor no longer listed starts over
    # Same fit test: from after "a", "b" is full, so "c"; from after "c", wrap to "a".
    nodes[1] = node("b", free=False)
    assert roundrobin_pick(SMALL, nodes, "a") == 2
    # Only the node picked last has room: it is picked again.
    only = [node("a", free=False), node("b"), node("c", free=False)]
    assert roundrobin_pick(SMALL, only, "b") == 1


def test_roundrobin_scheduler_cursor_moves_across_requests() -> None:
    nodes = [node("a"), node("b"), node("c")]
    sched = Scheduler("roundrobin")
    picks = [sched.plan([SMALL], nodes) for _ in range(4)]
    assert picks == [["a"], ["b"], ["c"], ["a"]]
    # Within one request too.
    assert sched.plan([SMALL, SMALL, SMALL], nodes) == ["b", "c", "a"]
    assert sched.cursor == "a"


def test_failed_plan_leaves_cursor_alone() -> None:
    nodes = [node("a", cores=1), node("b", cores=1)]
    sched = Scheduler("ROUNDROBIN", cursor="a")
    assert sched.plan([SMALL, SMALL, SMALL], nodes) is None
    assert sched.cursor == "a"
    assert sched.plan([SMALL], nodes) == ["b"]


def test_plan_uses_a_working_copy_all_or_nothing() -> None:
    nodes = [node("a", cores=2, memory_mb=4096), node("b", cores=1, memory_mb=4096)]
    result = plan("GREEDY", [SMALL, SMALL, SMALL], nodes)
    assert result == (["a", "a", "b"], "b")
    assert plan("GREEDY", [SMALL] * 4, nodes) is None
    assert nodes[0].cores_free == 2  # the caller's view is not changed


def test_powersave_places_like_greedy() -> None:
    nodes = [node("a"), node("b")]
    sched = Scheduler("POWERSAVE")
    assert [sched.plan([SMALL], nodes) for _ in range(3)] == [["a"], ["a"], ["a"]]


def test_unknown_policy() -> None:
    with pytest.raises(ValueError):
        Scheduler("RANDOM")


def test_take_subtracts_one_instance() -> None:
    after = take(node("a"), LARGE)
    assert (after.cores_free, after.memory_mb_free, after.disk_gb_free) == (2, 2048, 90)
    assert after.cores_max == 4


def test_capacity_counts_slots_per_node_not_pooled() -> None:
    # Two nodes with one core free each: two small instances fit, no 2-core one, though 2 cores are free.
    a = take(node("a", cores=2, memory_mb=4096), SMALL)
    b = take(node("b", cores=2, memory_mb=4096), SMALL)
    caps = capacity([SMALL, LARGE], [a, b])
    assert caps == [TypeCapacity("m1.small", free=2, max=4), TypeCapacity("c1.xlarge", free=0, max=2)]


def test_capacity_limited_by_the_scarcest_resource_and_ignores_down_nodes() -> None:
    nodes = [
        node("a", cores=8, memory_mb=1024, disk_gb=100),  # memory: 4 small, 0 large
        node("b", cores=8, memory_mb=8192, disk_gb=12),  # disk: 2 small, 1 large
        node("c", state="down"),
    ]
    assert capacity([SMALL, LARGE], nodes) == [
        TypeCapacity("m1.small", free=6, max=6),
        TypeCapacity("c1.xlarge", free=1, max=1),
    ]
    assert capacity([SMALL], []) == [TypeCapacity("m1.small", free=0, max=0)]


def test_capacity_of_an_overcommitted_node_is_zero_not_negative() -> None:
    a = take(take(node("a", cores=1), SMALL), SMALL)
    assert capacity([SMALL], [a]) == [TypeCapacity("m1.small", free=0, max=1)]
