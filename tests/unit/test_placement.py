"""Placement across zones, as Eucalyptus did it (pure functions)."""

from __future__ import annotations

import pytest

from euca.protocol.cluster import NodeResources, TypeCapacity, VmType
from euca.roles.clc.placement import (
    PlacementError,
    ZoneCapacity,
    capacity_after,
    choose_zone,
    reserve,
    type_capacity,
)

SMALL = VmType("m1.small", 1, 256, 5)
LARGE = VmType("m1.large", 2, 512, 10)


def node(name: str, cores: int, mem: int, disk: int, state: str = "up") -> NodeResources:
    return NodeResources(name, state, cores, cores, mem, mem, disk, disk)  # type: ignore[arg-type]


def test_no_zone_picks_most_free_that_holds_min_count() -> None:
    zones = [ZoneCapacity("a", "ca", 3), ZoneCapacity("b", "cb", 8), ZoneCapacity("c", "cc", 5)]
    assert choose_zone(zones, None, 1, 4) == choose_zone(zones, "", 1, 4)
    placed = choose_zone(zones, None, 2, 4)
    assert (placed.zone, placed.cluster, placed.count) == ("b", "cb", 4)
    # as many as fit, up to MaxCount
    assert choose_zone(zones, None, 2, 20).count == 8


def test_ties_go_to_the_first_zone_by_name() -> None:
    zones = [ZoneCapacity("z", "cz", 4), ZoneCapacity("m", "cm", 4)]
    assert choose_zone(zones, None, 1, 1).zone == "m"


def test_named_zone_is_used_even_when_another_has_more() -> None:
    zones = [ZoneCapacity("a", "ca", 2), ZoneCapacity("b", "cb", 8)]
    placed = choose_zone(zones, "a", 1, 5)
    assert (placed.zone, placed.count) == ("a", 2)


def test_min_count_that_fits_nowhere_is_insufficient_capacity() -> None:
    zones = [ZoneCapacity("a", "ca", 2), ZoneCapacity("b", "cb", 3)]
    with pytest.raises(PlacementError) as e:
        choose_zone(zones, None, 4, 4)
    assert e.value.code == "InsufficientInstanceCapacity"
    # never split one request across zones, even though 2 + 3 >= 4
    with pytest.raises(PlacementError) as e:
        choose_zone(zones, "a", 3, 3)
    assert e.value.code == "InsufficientInstanceCapacity"


def test_unavailable_zones_and_unknown_zone() -> None:
    zones = [ZoneCapacity("a", "ca", 10, available=False), ZoneCapacity("b", "cb", 1)]
    assert choose_zone(zones, None, 1, 5).zone == "b"
    with pytest.raises(PlacementError) as e:
        choose_zone(zones, "a", 1, 1)
    assert e.value.code == "InsufficientInstanceCapacity"
    with pytest.raises(PlacementError) as e:
        choose_zone(zones, "nowhere", 1, 1)
    assert e.value.code == "InvalidParameterValue"
    with pytest.raises(PlacementError) as e:
        choose_zone([], None, 1, 1)
    assert e.value.code == "InsufficientInstanceCapacity"


def test_type_capacity_counts_per_node_and_skips_down_nodes() -> None:
    nodes = [node("n1", 3, 1024, 100), node("n2", 1, 4096, 100), node("n3", 16, 16384, 500, state="down")]
    small, large = type_capacity([SMALL, LARGE], nodes)
    # n1: min(3 cores, 4 mem, 20 disk) = 3; n2: 1 -> 4 small. Large: n1 min(1, 2, 10) = 1, n2: 0.
    assert small == TypeCapacity("m1.small", 4, 4)
    assert large == TypeCapacity("m1.large", 1, 1)


def test_reserve_is_first_fit_and_capacity_after_recounts() -> None:
    nodes = [node("n1", 2, 1024, 100), node("n2", 4, 4096, 100)]
    after = reserve(nodes, LARGE, 2)
    assert [(n.node, n.cores_free, n.memory_mb_free, n.disk_gb_free) for n in after] == [
        ("n1", 0, 512, 90),
        ("n2", 2, 3584, 90),
    ]
    # more than fits: the rest is not subtracted
    assert reserve(nodes, LARGE, 10)[1].cores_free == 0
    capacity = type_capacity([SMALL, LARGE], nodes)
    new_nodes, new_capacity = capacity_after(capacity, nodes, [SMALL, LARGE], LARGE, 2)
    assert new_nodes == after
    assert new_capacity == [TypeCapacity("m1.small", 2, 6), TypeCapacity("m1.large", 1, 3)]


def test_capacity_after_without_node_details() -> None:
    capacity = [TypeCapacity("m1.small", 5, 8), TypeCapacity("m1.large", 2, 4)]
    _, after = capacity_after(capacity, [], [SMALL, LARGE], SMALL, 3)
    assert after == [TypeCapacity("m1.small", 2, 8), TypeCapacity("m1.large", 2, 4)]
