"""What each cluster's network must enforce, assembled from the CLC's records: its live instances with their
security groups and public addresses, and the rules of those groups (cluster.NetworkView). The poller sends
each CC its view with every DescribeResources; the API pokes the poller when groups, rules or addresses
change, so a CC hears of a change within a poll round trip, and a restarted CC rebuilds from its first poll.

Above instances, security groups and addresses (it reads all three); `assemble` is pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import msgspec

from euca.core.store import Tx
from euca.protocol import cluster
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.instances import records as instances
from euca.roles.clc.instances.records import NetworkMember
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


def assemble(
    cluster_name: str,
    members: Sequence[NetworkMember],
    rules: Mapping[str, Sequence[RuleRecord]],
    public_ips: Mapping[str, str],
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
    view = [
        cluster.InstanceNetwork(mb.instance_id, list(mb.group_ids), public_ips.get(mb.instance_id))
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
    return {name: assemble(name, members, rules, public_ips) for name in cluster_names}
