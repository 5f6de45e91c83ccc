"""The network view each cluster is sent (clc/network_view.py): which instances, groups, rules and members."""

from __future__ import annotations

from euca.roles.clc.instances.records import NetworkMember
from euca.roles.clc.network_view import assemble
from euca.roles.clc.security_groups.records import RuleRecord


def rule(group: str, *, cidr: str | None = None, source: str | None = None) -> RuleRecord:
    return RuleRecord(f"sgr-{group}", group, "tcp", 22, 22, cidr, source, None, None, None)


def test_a_cluster_sees_its_instances_their_groups_and_the_groups_their_rules_name() -> None:
    members = [
        NetworkMember("i-00000001", "c1", ["sg-web"]),
        NetworkMember("i-00000002", "c1", ["sg-web", "sg-db"]),
        NetworkMember("i-00000003", "c2", ["sg-app"]),
        NetworkMember("i-00000004", "c2", ["sg-other"]),
    ]
    rules = {"sg-web": [rule("sg-web", cidr="0.0.0.0/0"), rule("sg-web", source="sg-app")], "sg-db": []}
    public = {"i-00000001": "10.99.0.10", "i-00000003": "10.99.0.12"}
    view = assemble("c1", members, rules, public)
    assert [(i.instance_id, i.security_groups, i.public_ip) for i in view.instances] == [
        ("i-00000001", ["sg-web"], "10.99.0.10"),
        ("i-00000002", ["sg-web", "sg-db"], None),
    ]
    groups = {g.group_id: g for g in view.groups}
    assert set(groups) == {"sg-web", "sg-db", "sg-app"}  # not sg-other: nothing of c1 names it
    assert groups["sg-web"].member_ids == ["i-00000001", "i-00000002"]
    assert [(r.cidr, r.source_group) for r in groups["sg-web"].rules] == [
        ("0.0.0.0/0", None),
        (None, "sg-app"),
    ]
    # a source group's members in another cluster are reached at their public addresses
    assert groups["sg-app"].member_ids == [] and groups["sg-app"].remote_addresses == ["10.99.0.12"]
    # the version changes with the content only
    assert assemble("c1", members, rules, public).version == view.version
    assert assemble("c1", members, rules, {}).version != view.version
