"""Which instances of a cluster's report count as seen (poller.vouched_for): those on a node the CC has
marked down do not, so the CLC ends them as lost after clc.node_lost_timeout (and a node back in time keeps
them)."""

from __future__ import annotations

from euca.protocol import cluster as c
from euca.roles.clc.instances.reconcile import Known, reconcile
from euca.roles.clc.poller import vouched_for


def status(instance_id: str, node: str) -> c.InstanceStatus:
    return c.InstanceStatus(
        instance_id, "r-1", "000000000001", "running", "running", node, "t1.micro", "emi-1"
    )


def test_instances_on_a_down_node_are_not_vouched_for() -> None:
    reported = [status("i-1", "n1"), status("i-2", "n2"), status("i-3", "n1")]
    nodes = [
        c.NodeResources(node="n1", state="down", reason="refused"),
        c.NodeResources(node="n2", state="up"),
    ]
    assert [i.instance_id for i in vouched_for(reported, nodes)] == ["i-2"]
    up = [c.NodeResources(node="n1", state="up"), c.NodeResources(node="n2", state="up")]
    assert vouched_for(reported, up) == reported


def test_an_instance_of_a_down_node_is_lost_only_after_the_timeout() -> None:
    known = [Known("i-1", "running", node="n1", last_seen=100.0)]
    reported = vouched_for([status("i-1", "n1")], [c.NodeResources(node="n1", state="down")])
    assert reconcile(known, reported, 110.0, 30.0).lost == []
    assert reconcile(known, reported, 131.0, 30.0).lost == ["i-1"]
    # Back up before the timeout: seen again, nothing lost.
    again = vouched_for([status("i-1", "n1")], [c.NodeResources(node="n1", state="up")])
    back = reconcile(known, again, 131.0, 30.0)
    assert (back.seen, back.lost) == (["i-1"], [])
