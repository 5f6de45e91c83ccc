"""What each cluster's network must enforce, assembled from the CLC's records: its live instances with their
security groups and public addresses, and the rules of those groups (cluster.NetworkView). The poller sends
each CC its view with every DescribeResources; the API pokes the poller when groups, rules or addresses
change, so a CC hears of a change within a poll round trip, and a restarted CC rebuilds from its first poll.

The metadata service's data rides along without weighing on every poll: each instance of a view carries
a digest of its launch facts (`metadata_version`); a CC that lacks those facts at that version (it just
restarted, or the facts changed) names the instance in its reply, and the poller sends them at once
(`instance_metadata`, a PutInstanceMetadata). A poll thus grows by a few bytes an instance, and user data
(up to 16 KiB each) crosses once per instance and CC start, not with every poll.

Above instances, security groups, addresses, images and key pairs (it reads them all); `assemble` and
`metadata_version` are pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import msgspec

from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.images import records as images
from euca.roles.clc.instances import profiles
from euca.roles.clc.instances import records as instances
from euca.roles.clc.instances.records import LaunchFacts, NetworkMember
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.security_groups import records as security_groups
from euca.roles.clc.security_groups.records import RuleRecord


def _rule(r: RuleRecord) -> cluster.SecurityRule:
    return cluster.SecurityRule(
        protocol=r.protocol,
        from_port=-1 if r.from_port is None else r.from_port,
        to_port=-1 if r.to_port is None else r.to_port,
        cidr=r.cidr,
        source_group=r.source_group_id,
    )


def metadata_version(facts: LaunchFacts, iam: tuple[str, str | None] | None = None) -> str:
    """The digest of what an instance's metadata is made of, but its user data (fixed for its life), the
    key pair's public key and the image's manifest path (read at send time). `iam`: its instance profile's
    ARN and the access key of the credentials served now (a refresh changes the digest, so the CC asks
    again); left out of the digest for an instance without a profile."""
    facts_tuple = (
        facts.instance_id,
        facts.reservation_id,
        facts.image_id,
        facts.kernel_id,
        facts.ramdisk_id,
        facts.instance_type,
        facts.launch_index,
        facts.key_name,
        facts.groups,
    )
    encoded = msgspec.json.encode(facts_tuple if iam is None else (*facts_tuple, iam))
    return hashlib.sha256(encoded).hexdigest()[:16]


def assemble(
    cluster_name: str,
    members: Sequence[NetworkMember],
    rules: Mapping[str, Sequence[RuleRecord]],
    public_ips: Mapping[str, str],
    metadata_versions: Mapping[str, str] | None = None,
) -> cluster.NetworkView:
    """One cluster's view: its members, the groups they are in, and the groups those groups' rules name
    (with their members: this cluster's by id, other clusters' by public address)."""
    own = [mb for mb in members if mb.cluster == cluster_name]
    wanted = list(dict.fromkeys(g for mb in own for g in mb.group_ids))
    for group_id in list(wanted):
        for r in rules.get(group_id, ()):
            if r.source_group_id and r.source_group_id not in wanted:
                wanted.append(r.source_group_id)
    in_group: dict[str, list[NetworkMember]] = {}
    for mb in members:
        for g in mb.group_ids:
            in_group.setdefault(g, []).append(mb)
    groups = [
        cluster.GroupRules(
            group_id=g,
            rules=[_rule(r) for r in rules.get(g, ())],
            member_ids=[mb.instance_id for mb in in_group.get(g, []) if mb.cluster == cluster_name],
            remote_addresses=sorted(
                public_ips[mb.instance_id]
                for mb in in_group.get(g, [])
                if mb.cluster != cluster_name and mb.instance_id in public_ips
            ),
        )
        for g in sorted(wanted)
    ]
    versions = metadata_versions or {}
    view = [
        cluster.InstanceNetwork(
            mb.instance_id,
            list(mb.group_ids),
            public_ips.get(mb.instance_id),
            versions.get(mb.instance_id, ""),
        )
        for mb in own
    ]
    version = hashlib.sha256(msgspec.json.encode((view, groups))).hexdigest()[:16]
    return cluster.NetworkView(version=version, instances=view, groups=groups)


def build_views(tx: Tx, cluster_names: Sequence[str]) -> dict[str, cluster.NetworkView]:
    """The view of each of these clusters, from one read of the records."""
    members = instances.network_members(tx)
    group_ids = {g for mb in members for g in mb.group_ids}
    rules = security_groups.rules_of_groups(tx, sorted(group_ids))
    sources = {r.source_group_id for rs in rules.values() for r in rs if r.source_group_id} - group_ids
    rules.update(security_groups.rules_of_groups(tx, sorted(sources)))
    public_ips = addresses.public_ips_of(tx, [mb.instance_id for mb in members])
    iam = {a.instance_id: (a.profile_arn, a.access_key_id) for a in instances.profile_associations(tx)}
    versions = {
        f.instance_id: metadata_version(f, iam.get(f.instance_id)) for f in instances.launch_facts(tx)
    }
    return {name: assemble(name, members, rules, public_ips, versions) for name in cluster_names}


def instance_metadata(tx: Tx, instance_ids: Sequence[str]) -> list[cluster.InstanceMetadata]:
    """The metadata of these live instances (unknown or ended ones are left out), for a CC that asked."""
    out: list[cluster.InstanceMetadata] = []
    keys: dict[tuple[str, str], str | None] = {}
    manifests: dict[str, str | None] = {}
    ids = list(dict.fromkeys(instance_ids))
    iam = profiles.instance_iam(tx, ids)
    for f in instances.launch_facts(tx, ids, with_user_data=True):
        public_key = None
        if f.key_name:
            if (f.account_id, f.key_name) not in keys:
                try:
                    keys[f.account_id, f.key_name] = keypairs.public_key_of(tx, f.account_id, f.key_name)
                except Ec2Error:  # deleted since the launch
                    keys[f.account_id, f.key_name] = None
            public_key = keys[f.account_id, f.key_name]
        if f.image_id not in manifests:
            image = images.load_image(tx, f.image_id)
            manifests[f.image_id] = image.location if image is not None else None
        out.append(
            cluster.InstanceMetadata(
                instance_id=f.instance_id,
                version=metadata_version(f, _iam_version(iam.get(f.instance_id))),
                reservation_id=f.reservation_id,
                image_id=f.image_id,
                instance_type=f.instance_type,
                launch_index=f.launch_index,
                kernel_id=f.kernel_id,
                ramdisk_id=f.ramdisk_id,
                key_name=f.key_name,
                public_key=public_key,
                user_data=f.user_data or b"",
                security_groups=f.groups,
                manifest_path=manifests[f.image_id],
                iam=iam.get(f.instance_id),
            )
        )
    return out


def _iam_version(iam: cluster.InstanceIam | None) -> tuple[str, str | None] | None:
    return None if iam is None else (iam.profile_arn, iam.access_key_id)
