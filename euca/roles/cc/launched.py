"""The network view a CC enforces between two of the CLC's views (pure): the CLC's last view with the
instances this CC launched since, taken from their launch specs (`InstanceSpec.security_groups` and
`.public_ip`).

After a RunInstances whose groups the cluster's view already holds, the CLC sends no new view (building and
sending the view of every live instance for each launch held the launches up at 10,000 instances; see
ARCHITECTURE.md, "The VM network's data path"): the CC puts the new instances into the view it has, so their
group jumps, NAT and membership of the groups they are in (source-group rules naming those groups admit
them) are in the rules as soon as they have their address. The CLC's next view, which lists them, replaces
this; an instance gone from the CC (terminated, rolled back) leaves it.

A group the view lacks has no rules here: its chain stays empty and the instance's traffic is dropped, as
for any instance the view does not admit; the CLC sends a view at once in that case.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from euca.protocol.cluster import InstanceNetwork, InstanceSpec, NetworkView


def launched_network(spec: InstanceSpec) -> InstanceNetwork:
    """What the view would say of a just-launched instance (its metadata version comes with the CLC's)."""
    return InstanceNetwork(spec.instance_id, list(dict.fromkeys(spec.security_groups)), spec.public_ip)


def with_launches(view: NetworkView, launched: Mapping[str, InstanceNetwork]) -> NetworkView:
    """`view` with the launched instances it does not list yet added, and made members of its groups that
    they are in. The version stays the CLC's (it names what the CLC sent, which this extends)."""
    listed = {i.instance_id for i in view.instances}
    extra = [n for instance_id, n in launched.items() if instance_id not in listed]
    if not extra:
        return view
    joining: dict[str, list[str]] = {}
    for n in extra:
        for group_id in dict.fromkeys(n.security_groups):
            joining.setdefault(group_id, []).append(n.instance_id)
    groups = []
    for g in view.groups:
        new = [i for i in joining.get(g.group_id, ()) if i not in g.member_ids]
        groups.append(msgspec.structs.replace(g, member_ids=[*g.member_ids, *new]) if new else g)
    return NetworkView(version=view.version, instances=[*view.instances, *extra], groups=groups)
