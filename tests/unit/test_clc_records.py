"""The CLC's records modules on a real SQLite store with the CLC's schema, and the rule that each table is
read and written by its own records module only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import euca.roles.clc
from euca.core.store import Store, Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc import admin, schema
from euca.roles.clc.images import records as images
from euca.roles.clc.instances import records as instances
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.tags import records as tags
from euca.roles.clc.topology import records as topology
from helpers.clc_records import new_reservation

ACCOUNT = "123456789012"
OTHER = "210987654321"
CLC = Path(euca.roles.clc.__file__).parent


def test_each_table_is_queried_by_its_records_module_only() -> None:
    """schema.py declares every table; only the module named beside its migration touches it."""
    owners = {
        "clc_instances": "instances/records.py",
        "clc_reservations": "instances/records.py",
        "clc_images": "images/records.py",
        "clc_image_launch_permissions": "images/records.py",
        "clc_image_bundles": "images/records.py",
        "clc_keypairs": "keypairs/records.py",
        "clc_tags": "tags/records.py",
        "clc_instance_types": "instance_types/records.py",
        "clc_clusters": "topology/records.py",
        "clc_nodes": "topology/records.py",
        "clc_storage": "topology/records.py",
        "clc_volumes": "volumes/records.py",
        "clc_volume_attachments": "volumes/records.py",
        "clc_snapshots": "snapshots/records.py",
        "clc_snapshot_permissions": "snapshots/records.py",
        "clc_security_groups": "security_groups/records.py",
        "clc_addresses": "addresses/records.py",
        "clc_security_group_rules": "security_groups/records.py",
        "cluster_join_tokens": "join.py",
        "clc_usage_events": "usage/records.py",
        "clc_instance_profiles": "instances/records.py",
    }
    sql = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+(\w+)", re.IGNORECASE)
    declared: set[str] = set()
    for path in sorted(CLC.rglob("*.py")):
        name = path.relative_to(CLC).as_posix()
        for table in sql.findall(path.read_text()):
            if not table.startswith(("clc_", "cluster_")):
                continue
            if name == "schema.py":
                declared.add(table)
            else:
                assert owners.get(table) == name, f"{name} queries {table}, which {owners.get(table)} owns"
    assert declared == set(owners)


def test_schema_migrates_once_and_again(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    schema.migrate(s)
    schema.migrate(s)  # nothing left to apply: no error, no second seed
    assert s.read_sync(lambda tx: tx.scalar("SELECT COUNT(*) FROM clc_instance_types")) == len(
        schema.DEFAULT_INSTANCE_TYPES
    )
    s.close()


def _launch(
    tx: Tx, count: int = 2, *, cluster: str = "c1", token: str | None = None
) -> tuple[str, list[str]]:
    new = new_reservation(
        ACCOUNT,
        client_token=token,
        request_digest="digest",
        groups=["default"],
        group_ids=["sg-00000001"],
        cluster=cluster,
        count=count,
        tags=[("team", "infra")],
    )
    return instances.record_launch(tx, new, 100.0)


def test_launch_terminate_and_what_others_ask(clc_store: Store) -> None:
    reservation_id, ids = clc_store.write_sync(lambda tx: _launch(tx, token="tok"))
    launched = clc_store.read_sync(lambda tx: instances.load_reservation(tx, reservation_id))
    assert [(i.instance_id, i.state, i.launch_index, i.tags) for i in launched] == [
        (ids[0], "pending", 0, {"team": "infra"}),
        (ids[1], "pending", 1, {"team": "infra"}),
    ]
    assert launched[0].client_token == "tok" and launched[0].groups == ["default"]
    assert (
        clc_store.read_sync(lambda tx: instances.existing_reservation(tx, ACCOUNT, "tok", "digest"))
        == reservation_id
    )
    with pytest.raises(Ec2Error, match="IdempotentParameterMismatch"):
        clc_store.read_sync(lambda tx: instances.existing_reservation(tx, ACCOUNT, "tok", "other"))
    clc_store.write_sync(lambda tx: instances.release_client_token(tx, reservation_id))
    assert (
        clc_store.read_sync(lambda tx: instances.existing_reservation(tx, ACCOUNT, "tok", "digest")) is None
    )

    assert clc_store.read_sync(instances.in_transition) == {"c1": ids}
    assert clc_store.read_sync(lambda tx: instances.count_unterminated(tx, "c1")) == 2
    assert clc_store.read_sync(lambda tx: instances.instance_visible(tx, ids[0], ACCOUNT))
    assert not clc_store.read_sync(lambda tx: instances.instance_visible(tx, ids[0], OTHER))
    with pytest.raises(Ec2Error, match="InvalidInstanceID.NotFound"):
        clc_store.read_sync(lambda tx: instances.owned(tx, OTHER, ids[:1]))

    state = clc_store.write_sync(
        lambda tx: instances.mark_user_terminated(
            tx, instances.owned(tx, ACCOUNT, ids[:1])[0], "by me", 200.0
        )
    )
    assert state == "shutting-down"  # it reached a cluster: the CC is told next
    clc_store.write_sync(
        lambda tx: tx.execute("UPDATE clc_instances SET node='n1' WHERE instance_id=?", (ids[1],))
    )
    assert clc_store.read_sync(instances.running_by_node) == {"n1": [ids[1]]}
    clc_store.write_sync(lambda tx: instances.mark_terminated(tx, ids, "Server.InternalError", "gone", 300.0))
    assert clc_store.read_sync(lambda tx: instances.count_unterminated(tx, "c1")) == 0
    assert clc_store.read_sync(instances.running_by_node) == {}
    assert clc_store.write_sync(lambda tx: instances.forget_terminated(tx, before=301.0)) == ids
    assert clc_store.read_sync(lambda tx: tags.tags_of(tx, ACCOUNT, ids)) == {}


def test_admin_deregister_cluster_asks_the_instance_records(clc_store: Store) -> None:
    clc_store.write_sync(lambda tx: topology.register_cluster(tx, "c1", "https://10.0.0.1:8774", "z1"))
    clc_store.write_sync(lambda tx: _launch(tx, 1))
    with pytest.raises(topology.TopologyError, match="still has 1 instance"):
        clc_store.write_sync(lambda tx: admin.deregister_cluster(tx, "c1"))
    assert [c.name for c in clc_store.read_sync(topology.list_clusters)] == ["c1"]


def test_tags_delete_by_key_or_by_key_and_value(clc_store: Store) -> None:
    pairs = [("a", "1"), ("b", "2"), ("c", "")]
    clc_store.write_sync(lambda tx: tags.write_tags(tx, ACCOUNT, "emi-00000001", "image", pairs))
    clc_store.write_sync(lambda tx: tags.write_tags(tx, OTHER, "emi-00000001", "image", [("a", "x")]))
    clc_store.write_sync(
        lambda tx: tags.delete_tags(
            tx,
            ACCOUNT,
            "emi-00000001",
            [m.Tag(key="a"), m.Tag(key="b", value="not 2"), m.Tag(key="c", value="")],
        )
    )
    assert clc_store.read_sync(lambda tx: tags.tags_of(tx, ACCOUNT, ["emi-00000001"])) == {
        "emi-00000001": {"b": "2"}
    }
    assert [t.key for t in clc_store.read_sync(lambda tx: tags.account_tags(tx, OTHER))] == ["a"]
    clc_store.write_sync(lambda tx: tags.delete_tags(tx, ACCOUNT, "emi-00000001", None))
    assert clc_store.read_sync(lambda tx: tags.account_tags(tx, ACCOUNT)) == []
    clc_store.write_sync(lambda tx: tags.forget_resources(tx, ["emi-00000001"]))  # everybody's
    assert clc_store.read_sync(lambda tx: tags.account_tags(tx, OTHER)) == []
    with pytest.raises(Ec2Error, match="TagLimitExceeded"):
        many = [(f"k{n}", "v") for n in range(tags.MAX_TAGS_PER_RESOURCE + 1)]
        clc_store.write_sync(lambda tx: tags.write_tags(tx, ACCOUNT, "emi-00000002", "image", many))


def test_key_pairs(clc_store: Store) -> None:
    key_id = clc_store.write_sync(
        lambda tx: keypairs.insert_key_pair(tx, ACCOUNT, "k", "rsa", "ssh-rsa AAAA", "fp", [])
    )
    with pytest.raises(Ec2Error, match="InvalidKeyPair.Duplicate"):
        clc_store.write_sync(
            lambda tx: keypairs.insert_key_pair(tx, ACCOUNT, "k", "rsa", "ssh-rsa AAAA", "fp", [])
        )
    assert clc_store.read_sync(lambda tx: keypairs.public_key_of(tx, ACCOUNT, "k")) == "ssh-rsa AAAA"
    with pytest.raises(Ec2Error, match="InvalidKeyPair.NotFound"):
        clc_store.read_sync(lambda tx: keypairs.public_key_of(tx, OTHER, "k"))
    assert clc_store.read_sync(lambda tx: keypairs.key_pair_visible(tx, key_id, ACCOUNT))
    assert not clc_store.read_sync(lambda tx: keypairs.key_pair_visible(tx, key_id, OTHER))
    # by name: a missing one is no error (as EC2); by id it is
    assert (
        clc_store.write_sync(lambda tx: keypairs.delete_key_pair(tx, ACCOUNT, key_pair_id=None, name="nope"))
        is None
    )
    with pytest.raises(Ec2Error, match="InvalidKeyPair.NotFound"):
        clc_store.write_sync(lambda tx: keypairs.delete_key_pair(tx, OTHER, key_pair_id=key_id, name=None))
    assert (
        clc_store.write_sync(lambda tx: keypairs.delete_key_pair(tx, ACCOUNT, key_pair_id=key_id, name=None))
        == key_id
    )
    assert clc_store.read_sync(lambda tx: keypairs.load_key_pairs(tx, ACCOUNT)) == []


def test_images_visibility_permissions_and_deregister(clc_store: Store) -> None:
    new = images.NewImage(
        account_id=ACCOUNT,
        image_type="machine",
        name="my image",
        description=None,
        location="bucket/image.manifest.xml",
        architecture="x86_64",
        kernel_id=None,
        ramdisk_id=None,
        root_device_name="/dev/sda1",
        virtualization_type="hvm",
        manifest=b"<manifest/>",
        access_key_id="AKIA",
        tags=[("os", "linux")],
    )
    image_id = clc_store.write_sync(lambda tx: images.insert_image(tx, new))
    assert image_id.startswith("emi-")
    with pytest.raises(Ec2Error, match="InvalidAMIName.Duplicate"):
        clc_store.write_sync(lambda tx: images.insert_image(tx, new))
    bundle = clc_store.read_sync(lambda tx: images.load_bundle(tx, image_id))
    assert bundle == images.Bundle(ACCOUNT, "bucket/image.manifest.xml", b"<manifest/>", "AKIA")
    assert not clc_store.read_sync(lambda tx: images.image_visible(tx, image_id, OTHER))
    with pytest.raises(Ec2Error, match="InvalidAMIID.NotFound"):  # not visible to OTHER: as if not there
        clc_store.write_sync(
            lambda tx: images.modify_image(tx, image_id, OTHER, description="x", launch=None)
        )
    clc_store.write_sync(
        lambda tx: images.modify_image(
            tx, image_id, ACCOUNT, description="shared", launch=images.LaunchChange(add_accounts={OTHER})
        )
    )
    shared = clc_store.read_sync(lambda tx: images.visible_image(tx, image_id, OTHER))
    assert shared.description == "shared" and shared.launch_accounts == frozenset({OTHER})
    assert [i.image_id for i in clc_store.read_sync(lambda tx: images.load_visible_images(tx, OTHER))] == [
        image_id
    ]
    with pytest.raises(Ec2Error, match="AuthFailure"):
        clc_store.write_sync(lambda tx: images.delete_image(tx, image_id, OTHER))
    clc_store.write_sync(lambda tx: images.reset_launch_permissions(tx, image_id, ACCOUNT))
    assert not clc_store.read_sync(lambda tx: images.image_visible(tx, image_id, OTHER))
    clc_store.write_sync(lambda tx: images.delete_image(tx, image_id, ACCOUNT))
    assert clc_store.read_sync(lambda tx: images.load_bundle(tx, image_id)) is None
    assert clc_store.read_sync(lambda tx: tags.account_tags(tx, ACCOUNT)) == []
