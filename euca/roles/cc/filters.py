"""The cluster's packet filter and NAT, rendered from its network view (pure): security groups enforced and
public addresses mapped, as one `iptables-restore --noflush` text that touches only the CC's own chains.

Layout (Eucalyptus's MANAGED-NOVLAN, one chain per security group), inside the CC's namespace:

filter `EUCA-<cluster>` (jumped to from FORWARD; guest-to-guest traffic on the bridge passes it too, through
bridge netfilter):
    replies to admitted traffic (conntrack ESTABLISHED,RELATED) accepted first;
    per instance, per group it is in: `-d <private ip> -j <group chain>`;
    anything else to the subnet dropped (ingress denied unless a rule admits it);
    the subnet's own outbound traffic accepted (EC2-Classic had no egress rules).
filter `EU<tag>-<group id>` (one per group an instance of the cluster is in): its rules as ACCEPTs,
    `-p tcp --dport a:b -s <cidr>`; a source-group rule as one ACCEPT per member address (this cluster's
    members by private address, other clusters' by public address). Plain rules rather than ipsets: the
    whole rule set is replaced in one iptables-restore transaction anyway (so a membership change is one
    atomic swap, not a set update racing a chain update), and it needs no tool beyond iptables.
nat `EUDNAT-<tag>` (jumped to from PREROUTING and OUTPUT): `-d <public> -j DNAT --to-destination <private>`,
    and 169.254.169.254:80 to the CC's metadata listener.
nat `EUCA-<cluster>` (from POSTROUTING): `-s <private> ! -d <subnet> -j SNAT --to-source <public>` for each
    instance with a public address, then MASQUERADE for the rest of the subnet. Hairpin first: an instance
    reaching another at its public address (DNAT-ed back onto the bridge) is SNAT-ed to its own public
    address (or the gateway's, without one), so the reply comes back through the CC rather than straight
    from a private address the caller never spoke to; the filter has seen the private source before.

`<tag>` is a digest of the cluster's name, so two clusters' chains never meet in one namespace. Chains of
ours that the new view no longer needs (a group nobody uses now, or left from before a restart) are
flushed and deleted in the same transaction.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from euca.protocol.cluster import NetworkView, SecurityRule

# iptables refuses longer chain names (XT_EXTENSION_MAXNAMELEN - 1).
MAX_CHAIN_NAME = 28
METADATA_ADDRESS = "169.254.169.254"
_SAFE_GROUP = re.compile(r"^[A-Za-z0-9_.-]+$")


def chain_name(cluster: str) -> str:
    """EUCA-<cluster>, made safe and short enough for iptables (a hash keeps long names distinct)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cluster)
    name = f"EUCA-{safe}"
    if len(name) <= MAX_CHAIN_NAME and safe == cluster:
        return name
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:8]
    return f"EUCA-{safe[: MAX_CHAIN_NAME - len('EUCA--') - len(digest)]}-{digest}"


@dataclass(frozen=True)
class ChainNames:
    """The names of one cluster's chains."""

    cluster: str  # filter: the subnet's gate; nat: SNAT and MASQUERADE
    dnat: str  # nat: public -> private
    group_prefix: str  # filter: one chain per group, this prefix + a short form of the group id
    tag: str  # a short digest of the cluster's name (in the names above; labels its uplink addresses)

    @classmethod
    def of(cls, cluster: str) -> ChainNames:
        tag = hashlib.sha256(cluster.encode()).hexdigest()
        return cls(
            cluster=chain_name(cluster), dnat=f"EUDNAT-{tag[:8]}", group_prefix=f"EU{tag[:4]}-", tag=tag[:4]
        )

    def group(self, group_id: str) -> str:
        room = MAX_CHAIN_NAME - len(self.group_prefix)
        if len(group_id) <= room and _SAFE_GROUP.match(group_id):
            return self.group_prefix + group_id
        return self.group_prefix + hashlib.sha256(group_id.encode()).hexdigest()[:room]

    def is_group_chain(self, name: str) -> bool:
        return name.startswith(self.group_prefix)


# (table, built-in chain, which of our chains it jumps to)
def jumps(names: ChainNames) -> list[tuple[str, str, str]]:
    return [
        ("filter", "FORWARD", names.cluster),
        ("nat", "PREROUTING", names.dnat),
        ("nat", "OUTPUT", names.dnat),
        ("nat", "POSTROUTING", names.cluster),
    ]


def rule_match(rule: SecurityRule) -> str | None:
    """The protocol and port part of an ACCEPT for this rule; None for one iptables cannot express."""
    protocol = rule.protocol.lower()
    if protocol in ("-1", "all"):
        return ""
    if protocol in ("tcp", "udp", "6", "17"):
        name = {"6": "tcp", "17": "udp"}.get(protocol, protocol)
        low, high = rule.from_port, rule.to_port
        if low < 0 and high < 0 or (low <= 0 and high >= 65535):
            return f"-p {name}"
        if not (0 <= low <= 65535 and 0 <= high <= 65535) or low > high:
            return None
        ports = str(low) if low == high else f"{low}:{high}"
        return f"-p {name} -m {name} --dport {ports}"
    if protocol in ("icmp", "1"):
        icmp_type, code = rule.from_port, rule.to_port
        if icmp_type < 0:
            return "-p icmp"
        if icmp_type > 255 or code > 255:
            return None
        return f"-p icmp -m icmp --icmp-type {icmp_type}" + (f"/{code}" if code >= 0 else "")
    if protocol.isdigit() and 0 <= int(protocol) <= 255:
        return f"-p {int(protocol)}"
    return None


def _address(text: str) -> str | None:
    """A source CIDR or address in iptables' form, None if it is not one."""
    try:
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return None
    return str(network)


@dataclass(frozen=True)
class Ruleset:
    """What one apply writes: the restore text, and what it is made of (for the uplink's addresses and the
    deletion of chains no longer needed)."""

    text: str
    group_chains: frozenset[str]
    public_ips: frozenset[str]


def render(
    names: ChainNames,
    subnet: str,
    view: NetworkView | None,
    private_ips: Mapping[str, str],
    stale_chains: Iterable[str] = (),
    metadata: str | None = None,
) -> Ruleset:
    """iptables-restore --noflush input for the view. `private_ips`: instance id -> private address, for the
    instances that hold a lease; an instance without one gets no rule (it has no address to filter).
    Without a view (none received yet) the subnet is open, as before security groups were enforced.
    `metadata`: "address:port" of the CC's metadata listener, to which 169.254.169.254:80 is DNAT-ed.
    Declaring a chain flushes it, so applying the same text twice gives the same rules."""
    network = str(ipaddress.IPv4Network(subnet, strict=False))
    filter_rules: list[str] = []
    nat_dnat: list[str] = []
    if metadata:
        nat_dnat.append(
            f"-A {names.dnat} -s {network} -d {METADATA_ADDRESS}/32 -p tcp -m tcp --dport 80"
            f" -j DNAT --to-destination {metadata}"
        )
    nat_post: list[str] = []
    hairpin: list[str] = []
    group_chains: dict[str, list[str]] = {}
    public_ips: set[str] = set()
    c = names.cluster
    if view is None:
        filter_rules += [f"-A {c} -s {network} -j ACCEPT", f"-A {c} -d {network} -j ACCEPT"]
    else:
        groups = {g.group_id: g for g in view.groups}
        filter_rules.append(f"-A {c} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        used: list[str] = []
        for inst in view.instances:
            private = private_ips.get(inst.instance_id)
            if private is None:
                continue
            for group_id in dict.fromkeys(inst.security_groups):
                filter_rules.append(f"-A {c} -d {private}/32 -j {names.group(group_id)}")
                if group_id not in used:
                    used.append(group_id)
            public = inst.public_ip
            if public and _address(public) is not None and public not in public_ips:
                public_ips.add(public)
                nat_dnat.append(f"-A {names.dnat} -d {public}/32 -j DNAT --to-destination {private}")
                nat_post.append(f"-A {c} -s {private}/32 ! -d {network} -j SNAT --to-source {public}")
                hairpin.append(
                    f"-A {c} -s {private}/32 -d {network} -m conntrack --ctstate DNAT -j SNAT --to-source {public}"
                )
        filter_rules.append(f"-A {c} -d {network} -j DROP")
        filter_rules.append(f"-A {c} -s {network} -j ACCEPT")
        for group_id in used:
            chain = names.group(group_id)
            body: list[str] = []
            group = groups.get(group_id)
            for rule in group.rules if group is not None else []:
                match = rule_match(rule)
                if match is None:
                    continue
                if rule.source_group is not None:
                    source = groups.get(rule.source_group)
                    sources = [] if source is None else _members(source.member_ids, private_ips)
                    sources += [] if source is None else list(source.remote_addresses)
                else:
                    sources = [rule.cidr or "0.0.0.0/0"]
                for src in dict.fromkeys(sources):
                    cidr = _address(src)
                    if cidr is None:
                        continue
                    source_match = "" if cidr == "0.0.0.0/0" else f"-s {cidr} "
                    body.append(f"-A {chain} {source_match}{match} -j ACCEPT".replace("  ", " "))
            group_chains[chain] = list(dict.fromkeys(body))
    if view is not None:
        hairpin.append(f"-A {c} -s {network} -d {network} -m conntrack --ctstate DNAT -j MASQUERADE")
    nat_post = hairpin + nat_post
    nat_post.append(f"-A {c} -s {network} ! -d {network} -j MASQUERADE")
    stale = sorted(set(stale_chains) - set(group_chains))
    lines = ["*filter", f":{c} - [0:0]"]
    lines += [f":{chain} - [0:0]" for chain in [*group_chains, *stale]]
    lines += filter_rules
    for body in group_chains.values():
        lines += body
    lines += [f"-X {chain}" for chain in stale]
    lines += ["COMMIT", "*nat", f":{c} - [0:0]", f":{names.dnat} - [0:0]"]
    lines += nat_dnat + nat_post + ["COMMIT"]
    return Ruleset(
        text="".join(line + "\n" for line in lines),
        group_chains=frozenset(group_chains),
        public_ips=frozenset(public_ips),
    )


def _members(member_ids: Iterable[str], private_ips: Mapping[str, str]) -> list[str]:
    return [private_ips[i] for i in member_ids if i in private_ips]


def our_chains(names: ChainNames, saved: str) -> set[str]:
    """Our group chains in `iptables-save -t filter` output (to delete those a new view does not need)."""
    found = set()
    for line in saved.splitlines():
        if line.startswith(":"):
            name = line[1:].split(" ", 1)[0]
            if names.is_group_chain(name):
                found.add(name)
    return found
