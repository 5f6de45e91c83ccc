"""The network view each cluster is sent (clc/network_view.py): which instances, groups, rules and members."""

from __future__ import annotations

from euca.core.store import Store, Tx
from euca.roles.clc.instances import records as instances
from euca.roles.clc.instances.records import NetworkMember
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.network_view import assemble, build_views, instance_metadata
from euca.roles.clc.security_groups.records import RuleRecord
from helpers.clc_records import new_reservation


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


def test_the_view_names_each_instances_metadata_version_and_the_cc_gets_the_metadata(
    clc_store: Store,
) -> None:
    account = "123456789012"

    def launch(tx: Tx) -> list[str]:
        keypairs.insert_key_pair(tx, account, "k", "ed25519", "ssh-ed25519 AAAA k", "fp", [])
        new = new_reservation(
            account,
            groups=["web"],
            group_ids=["sg-00000001"],
            key_name="k",
            user_data=b"#!/bin/sh\necho hi\n",
            zone="c1",
        )
        return instances.record_launch(tx, new, 100.0)[1]

    ids = clc_store.write_sync(launch)
    view = clc_store.read_sync(lambda tx: build_views(tx, ["c1"]))["c1"]
    versions = {i.instance_id: i.metadata_version for i in view.instances}
    assert set(versions) == set(ids) and all(versions.values())
    assert versions[ids[0]] != versions[ids[1]]  # launch index and id differ
    # What a CC asks for: the full metadata at those versions; unknown ids are left out.
    sent = clc_store.read_sync(lambda tx: instance_metadata(tx, [ids[1], "i-0000dead"]))
    assert [(m.instance_id, m.version) for m in sent] == [(ids[1], versions[ids[1]])]
    [m] = sent
    assert (m.key_name, m.public_key, m.user_data, m.security_groups, m.launch_index) == (
        "k",
        "ssh-ed25519 AAAA k",
        b"#!/bin/sh\necho hi\n",
        ["web"],
        1,
    )
    # The key pair deleted since the launch: the instance keeps its name, no key is served.
    clc_store.write_sync(lambda tx: keypairs.delete_key_pair(tx, account, key_pair_id=None, name="k"))
    [m] = clc_store.read_sync(lambda tx: instance_metadata(tx, [ids[0]]))
    assert m.public_key is None and m.key_name == "k"
    # The version stays the same across polls: a CC that has it asks for nothing.
    again = clc_store.read_sync(lambda tx: build_views(tx, ["c1"]))["c1"]
    assert {i.instance_id: i.metadata_version for i in again.instances} == versions


def test_metadata_version_follows_the_instance_credentials_only_when_it_has_a_profile() -> None:
    from euca.roles.clc.network_view import metadata_version

    facts = instances.LaunchFacts(
        "i-1", "r-1", "123456789012", "emi-1", None, None, "m1.small", 0, None, [], None
    )
    plain = metadata_version(facts)
    arn = "arn:aws:iam::123456789012:instance-profile/web"
    first = metadata_version(facts, (arn, "ASIAFIRST"))
    assert plain == metadata_version(facts, None)  # an instance without a profile: the digest as before
    assert first not in (plain, metadata_version(facts, (arn, "ASIASECOND")))
    assert first == metadata_version(facts, (arn, "ASIAFIRST"))
    assert metadata_version(facts, (arn, None)) not in (plain, first)
