"""The administrator's rules that span resources (`euca admin ...`), above the resource packages they join.

Topology (clusters, nodes) sits below instances, which record the cluster each runs in; a rule that asks the
instances before changing the topology therefore lives here rather than in topology.records.

Functions take a store Tx, as the records functions do (the CLI calls them through store.write_sync).
"""

from __future__ import annotations

from euca.core.store import Tx
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.images import records as images
from euca.roles.clc.instances import records as instances
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.security_groups import records as security_groups
from euca.roles.clc.snapshots import records as snapshots
from euca.roles.clc.topology import records as topology
from euca.roles.clc.topology.records import Cluster, TopologyError
from euca.roles.clc.volumes import records as volumes


def deregister_cluster(tx: Tx, name: str) -> Cluster:
    """Remove a cluster and its nodes. Refused while instances still run in it (terminate them first)."""
    if topology.get_cluster(tx, name) is None:
        raise TopologyError(f"no cluster {name}")
    running = instances.count_unterminated(tx, name)
    if running:
        raise TopologyError(f"cluster {name} still has {running} instance(s); terminate them first")
    return topology.deregister_cluster(tx, name)


def set_cluster_subnet(tx: Tx, name: str, subnet: str | None) -> Cluster:
    """Change a cluster's private subnet (None: back to its CC's own). Refused while instances run in it:
    their addresses are of the old one. Its CC moves at its next poll."""
    if topology.get_cluster(tx, name) is None:
        raise TopologyError(f"no cluster {name}")
    running = instances.count_unterminated(tx, name)
    if running:
        raise TopologyError(
            f"cluster {name} still has {running} instance(s); its subnet changes only while it has none"
        )
    return topology.set_subnet(tx, name, subnet)


# -- DeleteAccount (issue 12): what an account still holds ------------------------------------------------


def _walrus_buckets(tx: Tx, canonical_id: str) -> list[str]:
    """The account's S3 buckets, read from Walrus's table where Walrus shares the CLC's store (one host, as
    reporting.py reads Walrus's usage rows). Where Walrus runs elsewhere with its own store the CLC cannot see
    them: nothing is known, nothing refused, and such buckets stay with an owner no one can sign as."""
    if not tx.table_exists("walrus_buckets"):
        return []
    return [
        r["name"]
        for r in tx.all("SELECT name FROM walrus_buckets WHERE owner_id=? ORDER BY name", (canonical_id,))
    ]


def account_resources(tx: Tx, account_id: str, canonical_id: str) -> dict[str, list[str]]:
    """The account's resources by kind (only kinds it has): live instances, volumes, snapshots, images, S3
    buckets (where the CLC sees them), elastic IPs, key pairs, security groups other than its default one
    (which every account has without asking)."""
    found = {
        "instances": [
            i.instance_id
            for i in instances.load_instances(tx, account_id, with_tags=False)
            if i.state != "terminated"
        ],
        "volumes": [v.volume_id for v in volumes.load_volumes(tx, account_id) if v.state not in ("deleted",)],
        "snapshots": [
            s.snapshot_id
            for s in snapshots.load_visible(tx, account_id)
            if s.account_id == account_id and s.state != "deleted"
        ],
        "images": [
            i.image_id for i in images.load_visible_images(tx, account_id) if i.account_id == account_id
        ],
        "buckets": _walrus_buckets(tx, canonical_id),
        "elastic IPs": [a.public_ip for a in addresses.load_addresses(tx, account_id)],
        "key pairs": [k.name for k in keypairs.load_key_pairs(tx, account_id)],
        "security groups": [
            g.name
            for g in security_groups.load_groups(tx, account_id, with_tags=False)
            if g.name != security_groups.DEFAULT_GROUP
        ],
    }
    return {kind: ids for kind, ids in found.items() if ids}


# What a recursive DeleteAccount refuses to remove: their bytes or guests live on the nodes, SCs and Walrus,
# and only their own delete or terminate (through the clusters) frees those; dropping the records would
# leave them running or stored with no owner. Elastic IPs, key pairs and security groups are only records:
# released, deleted.
UNSAFE_TO_DELETE = ("instances", "volumes", "snapshots", "images", "buckets")


def _groups_in_use(tx: Tx, account_id: str) -> dict[str, list[str]]:
    """What still uses the account's security groups: instances (not terminated) and other accounts' rules."""
    used = {
        "security groups in use by instances": [
            f"{g.name} ({', '.join(instances.instances_using_group(tx, g.group_id)[:5])})"
            for g in security_groups.load_groups(tx, account_id, with_tags=False)
            if instances.instances_using_group(tx, g.group_id)
        ],
        "security groups named by other accounts' groups": security_groups.named_by_other_accounts(
            tx, account_id
        ),
    }
    return {kind: ids for kind, ids in used.items() if ids}


def delete_account_resources(
    tx: Tx, account_id: str, canonical_id: str, *, recursive: bool
) -> dict[str, list[str]]:
    """What DeleteAccount removes with the account, or what prevents it (then nothing is changed; returned).
    Without `recursive` the account must hold nothing (its default security group aside, deleted with it);
    with it, its elastic IPs are released and its key pairs and security groups deleted, unless it still has
    resources only their own calls remove. Security groups go only when no instance and no other account's
    rule uses them."""
    held = account_resources(tx, account_id, canonical_id)
    blocking = (
        held if not recursive else {kind: ids for kind, ids in held.items() if kind in UNSAFE_TO_DELETE}
    )
    blocking = blocking or _groups_in_use(tx, account_id)
    if blocking:
        return blocking
    for address in addresses.load_addresses(tx, account_id):
        addresses.release(tx, address)  # associated ones belong to live instances, refused above
    for key in keypairs.load_key_pairs(tx, account_id):
        keypairs.delete_key_pair(tx, account_id, key_pair_id=key.key_pair_id, name=None)
    security_groups.forget_account_groups(tx, account_id)
    return {}
