"""The CC's filter and NAT rules rendered from a network view (pure): view -> iptables-restore text."""

from __future__ import annotations

import pytest

from euca.protocol.cluster import GroupRules, InstanceNetwork, NetworkView, SecurityRule
from euca.roles.cc.filters import MAX_CHAIN_NAME, ChainNames, our_chains, render, rule_match
from euca.roles.cc.firewall import default_route_device, labelled_addresses, uplink_label

SUBNET = "10.77.0.0/24"
NAMES = ChainNames.of("c1")
WEB = "sg-0000000a"
DB = "sg-0000000b"


def lines(text: str, chain: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


def view(instances: list[InstanceNetwork], groups: list[GroupRules], version: str = "v1") -> NetworkView:
    return NetworkView(version=version, instances=instances, groups=groups)


def test_chain_names_are_per_cluster_and_fit_iptables() -> None:
    other = ChainNames.of("c2")
    assert NAMES.cluster == "EUCA-c1"
    assert NAMES.dnat != other.dnat and NAMES.group(WEB) != other.group(WEB)
    assert NAMES.group(WEB).endswith(WEB)
    long = NAMES.group("sg-0123456789abcdef0")
    assert long.endswith("sg-0123456789abcdef0") and len(long) <= MAX_CHAIN_NAME
    odd = NAMES.group("sg-" + "x" * 40)
    assert len(odd) <= MAX_CHAIN_NAME and NAMES.is_group_chain(odd)
    assert len(NAMES.dnat) <= MAX_CHAIN_NAME


@pytest.mark.parametrize(
    "rule, match",
    [
        (SecurityRule("tcp", 22, 22), "-p tcp -m tcp --dport 22"),
        (SecurityRule("udp", 1000, 2000), "-p udp -m udp --dport 1000:2000"),
        (SecurityRule("tcp", 0, 65535), "-p tcp"),
        (SecurityRule("tcp", -1, -1), "-p tcp"),
        (SecurityRule("-1"), ""),
        (SecurityRule("icmp", -1, -1), "-p icmp"),
        (SecurityRule("icmp", 8, -1), "-p icmp -m icmp --icmp-type 8"),
        (SecurityRule("icmp", 3, 4), "-p icmp -m icmp --icmp-type 3/4"),
        (SecurityRule("47"), "-p 47"),
        (SecurityRule("tcp", 30, 20), None),
        (SecurityRule("tcp", 1, 70000), None),
        (SecurityRule("sctp-ish"), None),
    ],
)
def test_rule_matches(rule: SecurityRule, match: str | None) -> None:
    assert rule_match(rule) == match


def test_ingress_denied_unless_admitted_replies_first_egress_open() -> None:
    v = view(
        [InstanceNetwork("i-1", [WEB], "203.0.113.10"), InstanceNetwork("i-2", [WEB, DB])],
        [
            GroupRules(WEB, [SecurityRule("tcp", 22, 22, cidr="0.0.0.0/0")], member_ids=["i-1", "i-2"]),
            GroupRules(DB, [SecurityRule("tcp", 5432, 5432, source_group=WEB)], member_ids=["i-2"]),
        ],
    )
    whole = render(NAMES, SUBNET, v, {"i-1": "10.77.0.2", "i-2": "10.77.0.3"}).text
    text = whole.split("*nat")[0]
    web, db = NAMES.group(WEB), NAMES.group(DB)
    assert lines(text, "EUCA-c1") == [
        "-A EUCA-c1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A EUCA-c1 -d 10.77.0.2/32 -j {web}",
        f"-A EUCA-c1 -d 10.77.0.3/32 -j {web}",
        f"-A EUCA-c1 -d 10.77.0.3/32 -j {db}",
        "-A EUCA-c1 -d 10.77.0.0/24 -j DROP",
        "-A EUCA-c1 -s 10.77.0.0/24 -j ACCEPT",
    ]
    assert lines(text, web) == [f"-A {web} -p tcp -m tcp --dport 22 -j ACCEPT"]
    # A source-group rule: one ACCEPT per member address (the members' private addresses here).
    assert lines(text, db) == [
        f"-A {db} -s 10.77.0.2/32 -p tcp -m tcp --dport 5432 -j ACCEPT",
        f"-A {db} -s 10.77.0.3/32 -p tcp -m tcp --dport 5432 -j ACCEPT",
    ]
    # Every chain is declared (which flushes it) before it is filled: applying twice adds nothing.
    for chain in ("EUCA-c1", web, db, NAMES.dnat):
        assert f":{chain} - [0:0]" in whole


def test_public_addresses_dnat_and_snat_ahead_of_masquerade() -> None:
    v = view(
        [InstanceNetwork("i-1", [WEB], "203.0.113.10"), InstanceNetwork("i-2", [WEB], "203.0.113.11")],
        [GroupRules(WEB, member_ids=["i-1", "i-2"])],
    )
    ruleset = render(NAMES, SUBNET, v, {"i-1": "10.77.0.2", "i-2": "10.77.0.3"})
    nat = ruleset.text.split("*nat\n", 1)[1]
    assert lines(nat, NAMES.dnat) == [
        f"-A {NAMES.dnat} -d 203.0.113.10/32 -j DNAT --to-destination 10.77.0.2",
        f"-A {NAMES.dnat} -d 203.0.113.11/32 -j DNAT --to-destination 10.77.0.3",
    ]
    assert lines(nat, "EUCA-c1") == [
        "-A EUCA-c1 -s 10.77.0.2/32 -d 10.77.0.0/24 -m conntrack --ctstate DNAT -j SNAT --to-source 203.0.113.10",
        "-A EUCA-c1 -s 10.77.0.3/32 -d 10.77.0.0/24 -m conntrack --ctstate DNAT -j SNAT --to-source 203.0.113.11",
        "-A EUCA-c1 -s 10.77.0.0/24 -d 10.77.0.0/24 -m conntrack --ctstate DNAT -j MASQUERADE",
        "-A EUCA-c1 -s 10.77.0.2/32 ! -d 10.77.0.0/24 -j SNAT --to-source 203.0.113.10",
        "-A EUCA-c1 -s 10.77.0.3/32 ! -d 10.77.0.0/24 -j SNAT --to-source 203.0.113.11",
        "-A EUCA-c1 -s 10.77.0.0/24 ! -d 10.77.0.0/24 -j MASQUERADE",
    ]
    assert ruleset.public_ips == {"203.0.113.10", "203.0.113.11"}
    # A group with no rules: its members get a chain that admits nothing.
    assert lines(ruleset.text, NAMES.group(WEB)) == []


def test_an_instance_without_a_lease_gets_no_rule_and_remote_members_count_by_public_address() -> None:
    v = view(
        [InstanceNetwork("i-1", [WEB]), InstanceNetwork("i-gone", [WEB], "203.0.113.12")],
        [
            GroupRules(WEB, [SecurityRule("-1", source_group=DB)], member_ids=["i-1", "i-gone"]),
            GroupRules(DB, member_ids=["i-elsewhere-not-ours"], remote_addresses=["198.51.100.7"]),
        ],
    )
    ruleset = render(NAMES, SUBNET, v, {"i-1": "10.77.0.2"})
    assert "i-gone" not in ruleset.text and "203.0.113.12" not in ruleset.text
    assert ruleset.public_ips == frozenset()
    web = NAMES.group(WEB)
    assert lines(ruleset.text, web) == [f"-A {web} -s 198.51.100.7/32 -j ACCEPT"]
    assert ruleset.group_chains == {web}  # DB only names sources: no chain of its own


def test_stale_chains_are_flushed_and_deleted_in_the_same_transaction() -> None:
    v = view([InstanceNetwork("i-1", [WEB])], [GroupRules(WEB, member_ids=["i-1"])])
    gone = NAMES.group(DB)
    text = render(NAMES, SUBNET, v, {"i-1": "10.77.0.2"}, stale_chains=[gone, NAMES.group(WEB)]).text
    filter_part = text.split("COMMIT", 1)[0]
    assert f":{gone} - [0:0]" in filter_part and filter_part.rstrip().endswith(f"-X {gone}")
    assert f"-X {NAMES.group(WEB)}" not in text


def test_our_chains_in_iptables_save_output() -> None:
    saved = "\n".join(
        [
            "*filter",
            ":FORWARD ACCEPT [0:0]",
            f":{NAMES.group(WEB)} - [0:0]",
            f":{ChainNames.of('c2').group(WEB)} - [0:0]",
            ":EUCA-c1 - [0:0]",
            "COMMIT",
        ]
    )
    assert our_chains(NAMES, saved) == {NAMES.group(WEB)}


def test_uplink_parsing() -> None:
    assert default_route_device("default via 198.51.100.2 dev up0 \n") == "up0"
    assert default_route_device("") is None
    shown = (
        "5: up0    inet 198.51.100.1/24 scope global up0\\       valid_lft forever\n"
        "5: up0    inet 203.0.113.10/32 scope global up0:eu\\       valid_lft forever\n"
        "5: up0    inet 203.0.113.99/32 scope global up0\\       valid_lft forever\n"
    )
    assert labelled_addresses(shown, "up0:eu") == {"203.0.113.10"}
    # Per cluster, within IFNAMSIZ.
    assert (
        uplink_label("euca-up", NAMES)
        == f"euca-up:{NAMES.tag}"
        != uplink_label("euca-up", ChainNames.of("c2"))
    )
    assert uplink_label("a-very-long-if", NAMES) is None
