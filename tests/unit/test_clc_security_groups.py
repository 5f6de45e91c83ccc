"""Security groups: the pure rule checks (rules.py) and the records on a real store (records.py), including the
migration of reservations that named their groups before groups were a resource."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from euca.core.store import Store, Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc import schema
from euca.roles.clc.instances import records as instances
from euca.roles.clc.security_groups import records
from euca.roles.clc.security_groups.rules import (
    SourceGroup,
    Wanted,
    cidr_of,
    ports_of,
    protocol_of,
    wanted_rules,
)

ACCOUNT = "123456789012"
OTHER = "210987654321"


def test_protocols_ports_and_cidrs() -> None:
    assert [protocol_of(p) for p in ("tcp", "6", "UDP", "17", "icmp", "1", "-1", "all")] == [
        "tcp",
        "tcp",
        "udp",
        "udp",
        "icmp",
        "icmp",
        "-1",
        "-1",
    ]
    with pytest.raises(Ec2Error, match="InvalidPermission.Malformed"):
        protocol_of("gre")
    assert ports_of("tcp", 0, 65535) == (0, 65535)
    assert ports_of("icmp", None, None) == (-1, -1) and ports_of("icmp", 8, 0) == (8, 0)
    assert ports_of("-1", 1, 2) == (None, None)
    for bad in (
        ("tcp", 1, 65536),
        ("udp", -1, 5),
        ("tcp", 5, 4),
        ("tcp", None, 4),
        ("icmp", -1, 3),
        ("icmp", 256, 0),
    ):
        with pytest.raises(Ec2Error, match="InvalidParameterValue"):
            ports_of(*bad)
    assert cidr_of(" 10.0.0.0/8 ") == "10.0.0.0/8"
    for bad_cidr in ("10.0.0.0/33", "10.0.0.0", "10.0.0/8", "::/0", "10.0.0.0/x", ""):
        with pytest.raises(Ec2Error, match="InvalidParameterValue"):
            cidr_of(bad_cidr)


def test_wanted_rules_from_flat_parameters_and_permissions() -> None:
    flat = m.AuthorizeSecurityGroupIngressRequest(
        group_name="web", ip_protocol="tcp", from_port=22, to_port=22, cidr_ip="0.0.0.0/0"
    )
    assert wanted_rules(flat) == [Wanted("tcp", 22, 22, cidr="0.0.0.0/0")]
    source_only = m.AuthorizeSecurityGroupIngressRequest(
        group_name="web", source_security_group_name="app", source_security_group_owner_id=OTHER
    )
    assert [(w.protocol, w.from_port, w.to_port) for w in wanted_rules(source_only)] == [
        ("icmp", -1, -1),
        ("tcp", 0, 65535),
        ("udp", 0, 65535),
    ]
    assert {w.group for w in wanted_rules(source_only)} == {SourceGroup(None, "app", OTHER)}
    structured = m.AuthorizeSecurityGroupIngressRequest(
        group_id="sg-12345678",
        ip_permissions=[
            m.IpPermission(
                ip_protocol="udp",
                from_port=53,
                to_port=53,
                ip_ranges=[m.IpRange(cidr_ip="10.0.0.0/8"), m.IpRange(cidr_ip="10.0.0.0/8")],
                user_id_group_pairs=[m.UserIdGroupPair(group_id="sg-87654321", group_name="ignored")],
            )
        ],
    )
    assert wanted_rules(structured) == [
        Wanted("udp", 53, 53, cidr="10.0.0.0/8"),
        Wanted("udp", 53, 53, group=SourceGroup("sg-87654321", None, None)),
    ]
    with pytest.raises(Ec2Error, match="InvalidParameterCombination"):
        wanted_rules(
            m.AuthorizeSecurityGroupIngressRequest(
                group_name="x",
                ip_protocol="tcp",
                from_port=1,
                to_port=1,
                cidr_ip="0.0.0.0/0",
                source_security_group_name="y",
            )
        )
    with pytest.raises(Ec2Error, match="MissingParameter"):
        wanted_rules(
            m.AuthorizeSecurityGroupIngressRequest(group_name="x", ip_protocol="tcp", from_port=1, to_port=1)
        )


def test_groups_rules_and_what_uses_them(clc_store: Store) -> None:
    web = clc_store.write_sync(lambda tx: records.create_group(tx, ACCOUNT, "web", "web", [("k", "v")]))
    groups = clc_store.read_sync(lambda tx: records.load_groups(tx, ACCOUNT))
    assert [g.name for g in groups] == ["default", "web"]  # the default made on first use
    default = groups[0]
    assert {r.source_group_id for r in default.rules} == {default.group_id} and len(default.rules) == 3
    assert groups[1].tags == {"k": "v"}
    with pytest.raises(Ec2Error, match="InvalidGroup.Duplicate"):
        clc_store.write_sync(lambda tx: records.create_group(tx, ACCOUNT, "web", "again", []))

    def authorize(tx: Tx) -> list[records.RuleRecord]:
        group = records.find_group(tx, ACCOUNT, group_id=web, group_name=None)
        wanted = [
            Wanted("tcp", 80, 80, cidr="0.0.0.0/0"),
            Wanted("tcp", 80, 80, group=SourceGroup(group_name="default")),
        ]
        return records.add_rules(tx, group, records.resolve(tx, ACCOUNT, wanted))

    added = clc_store.write_sync(authorize)
    assert [(r.cidr, r.source_group_name) for r in added] == [("0.0.0.0/0", None), (None, "default")]
    with pytest.raises(Ec2Error, match="InvalidPermission.Duplicate"):
        clc_store.write_sync(authorize)
    # the default group stays (and web's rule names it)
    with pytest.raises(Ec2Error, match="InvalidGroup.Reserved"):
        clc_store.write_sync(lambda tx: records.delete_group(tx, default))
    # another account cannot see web by id
    with pytest.raises(Ec2Error, match="InvalidGroup.NotFound"):
        clc_store.read_sync(lambda tx: records.find_group(tx, OTHER, group_id=web, group_name=None))
    assert clc_store.read_sync(lambda tx: records.group_visible(tx, web, ACCOUNT))
    assert not clc_store.read_sync(lambda tx: records.group_visible(tx, web, OTHER))
    assert clc_store.read_sync(lambda tx: instances.instances_using_group(tx, web)) == []


def test_old_reservations_get_group_ids(tmp_path: Path) -> None:
    """A store whose reservations named groups (before security groups were kept) migrates to ids."""
    s = Store(tmp_path / "state.db")
    for migration in schema.MIGRATIONS:
        if migration.namespace == "clc.instances":
            s.migrate(migration.namespace, migration.steps[:1])  # as the store was
        else:
            schema.apply(s, migration)
    s.write_sync(
        lambda tx: tx.execute(
            "INSERT INTO clc_reservations(reservation_id, account_id, requester, request_digest, groups, created) "
            "VALUES('r-00000001', ?, 'arn', 'd', ?, 0)",
            (ACCOUNT, msgspec.json.encode(["default", "web"]).decode()),
        )
    )
    schema.migrate(s)
    groups = {g.name: g.group_id for g in s.read_sync(lambda tx: records.load_groups(tx, ACCOUNT))}
    assert set(groups) == {"default", "web"}
    ids = s.read_sync(lambda tx: tx.scalar("SELECT group_ids FROM clc_reservations"))
    assert msgspec.json.decode(ids) == [groups["default"], groups["web"]]
    s.close()
