"""Whether a launch needs a new network view at once (euca/roles/clc/poller.py launch_needs_view)."""

from __future__ import annotations

from euca.roles.clc.poller import launch_needs_view


def test_a_launch_in_groups_the_clusters_view_holds_needs_none() -> None:
    sent = {"c1": frozenset({"sg-1", "sg-2"}), "c2": frozenset({"sg-3"})}
    assert not launch_needs_view("c1", ["sg-1"], sent)
    assert not launch_needs_view("c1", ["sg-1", "sg-2"], sent)


def test_a_group_new_to_the_cluster_or_a_cluster_without_a_view_needs_one() -> None:
    sent = {"c1": frozenset({"sg-1"})}
    assert launch_needs_view("c1", ["sg-1", "sg-9"], sent)
    assert launch_needs_view("c2", ["sg-1"], sent)
    assert launch_needs_view("c1", ["sg-1"], {})


def test_a_group_another_clusters_view_names_needs_one() -> None:
    # the other cluster's rules may name it: they would want the new members' public addresses
    sent = {"c1": frozenset({"sg-1"}), "c2": frozenset({"sg-1", "sg-3"})}
    assert launch_needs_view("c1", ["sg-1"], sent)
