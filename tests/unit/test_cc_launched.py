"""The view a CC enforces between two of the CLC's: the instances it launched since, from their specs
(euca/roles/cc/launched.py), and ClusterNetwork's use of it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import trio

from euca.protocol.cluster import GroupRules, InstanceNetwork, NetworkView, SecurityRule
from euca.roles.cc.filters import ChainNames, render
from euca.roles.cc.launched import launched_network, with_launches
from euca.roles.cc.network import ClusterNetwork
from helpers.cc_nodes import spec

VIEW = NetworkView(
    version="v1",
    instances=[InstanceNetwork("i-00000001", ["sg-web"], "10.99.0.10", "m1")],
    groups=[
        GroupRules("sg-web", [SecurityRule("tcp", 22, 22, cidr="0.0.0.0/0")], member_ids=["i-00000001"]),
        GroupRules("sg-db", [SecurityRule("tcp", 5432, 5432, source_group="sg-web")]),
    ],
)


def launched(n: int, groups: list[str], public_ip: str | None = None) -> InstanceNetwork:
    return launched_network(msgspec.structs.replace(spec(n), security_groups=groups, public_ip=public_ip))


def test_a_launched_instance_joins_the_view_and_its_groups() -> None:
    new = launched(2, ["sg-web", "sg-web"], "10.99.0.11")
    assert new == InstanceNetwork("i-00000002", ["sg-web"], "10.99.0.11")
    view = with_launches(VIEW, {"i-00000002": new})
    assert view.version == "v1"  # still names what the CLC sent
    assert [i.instance_id for i in view.instances] == ["i-00000001", "i-00000002"]
    groups = {g.group_id: g for g in view.groups}
    assert groups["sg-web"].member_ids == ["i-00000001", "i-00000002"]
    assert groups["sg-db"] == VIEW.groups[1]
    # the rules: its jump, its NAT, and the source-group rule naming sg-web admits it
    ruleset = render(
        ChainNames.of("c1"), "10.77.0.0/24", view, {"i-00000001": "10.77.0.2", "i-00000002": "10.77.0.3"}
    )
    assert "-d 10.77.0.3/32 -j EU" in ruleset.text
    assert "-d 10.99.0.11/32 -j DNAT --to-destination 10.77.0.3" in ruleset.text
    assert "10.99.0.11" in ruleset.public_ips


def test_what_the_view_lists_already_is_left_as_the_view_says() -> None:
    assert with_launches(VIEW, {}) is VIEW
    again = launched(1, ["sg-db"])  # the CLC's view wins for an instance it lists
    assert with_launches(VIEW, {"i-00000001": again}) is VIEW


def test_a_group_the_view_lacks_gets_no_rules() -> None:
    view = with_launches(VIEW, {"i-00000003": launched(3, ["sg-new"])})
    assert [g.group_id for g in view.groups] == ["sg-web", "sg-db"]
    ruleset = render(ChainNames.of("c1"), "10.77.0.0/24", view, {"i-00000003": "10.77.0.4"})
    chain = ChainNames.of("c1").group("sg-new")
    assert f"-d 10.77.0.4/32 -j {chain}" in ruleset.text
    assert not [line for line in ruleset.text.splitlines() if line.startswith(f"-A {chain} ")]


async def test_the_network_enforces_launches_until_a_view_lists_them(tmp_path: Path) -> None:
    net = ClusterNetwork("c1", "10.77.0.0/24", None, None, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        assert net.enforced_view() is None
        net.apply_view(VIEW)
        await net.allocate("i-00000002")
        net.note_launch(msgspec.structs.replace(spec(2), security_groups=["sg-web"], public_ip="10.99.0.11"))
        enforced = net.enforced_view()
        assert enforced is not None and [i.instance_id for i in enforced.instances] == [
            "i-00000001",
            "i-00000002",
        ]
        record = net.metadata_record("10.77.0.2")
        assert record is not None and record.public_ipv4 == "10.99.0.11"
        # a view that lists it replaces the launch's entry
        listed = msgspec.structs.replace(
            VIEW, version="v2", instances=[*VIEW.instances, InstanceNetwork("i-00000002", ["sg-web"])]
        )
        net.apply_view(listed)
        assert net.enforced_view() == listed
        # one launched and released before any view lists it is gone from the rules
        await net.allocate("i-00000004")
        net.note_launch(msgspec.structs.replace(spec(4), security_groups=["sg-web"]))
        await net.release("i-00000004")
        assert net.enforced_view() == listed
        nursery.cancel_scope.cancel()
