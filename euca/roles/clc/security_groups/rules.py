"""Security group rules as the Authorize/Revoke calls ask for them, checked and normalised (pure).

A request names permissions two ways: the classic flat parameters (IpProtocol, FromPort, ToPort, CidrIp,
SourceSecurityGroupName, SourceSecurityGroupOwnerId) or IpPermission.N structures, each of which may carry
several CIDR ranges and source groups. Either way they become `Wanted` rules, one per source: a protocol,
a port range (ICMP: type and code), and one source, a CIDR or a group (named by id, or by name and owner,
resolved by records.py).

The answers are EC2's:
- protocols tcp, udp, icmp and all (-1; "all" and the numbers 6, 17, 1 are accepted for them); anything
  else is InvalidPermission.Malformed, as EC2-Classic answered ("Unsupported IP protocol");
- tcp/udp need both ports, 0..65535, from <= to; ICMP type and code are -1 (all) or 0..255, and a code
  other than -1 needs a type; -1 takes no ports (they are ignored, as EC2 does): InvalidParameterValue;
- a CIDR must be IPv4 a.b.c.d/n (a bare address is refused, as EC2 does): InvalidParameterValue;
- IPv6 ranges and prefix lists are VPC features: InvalidParameterValue;
- a source group given alone in the flat form grants ICMP, TCP and UDP in full (EC2-Classic's meaning).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error

PROTOCOLS = {"tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp", "icmp": "icmp", "1": "icmp", "-1": "-1"}
PROTOCOLS["all"] = "-1"
MAX_DESCRIPTION = 255


@dataclass(frozen=True)
class SourceGroup:
    """A source group as the request names it: by id, or by name (and owner account, default the caller)."""

    group_id: str | None = None
    group_name: str | None = None
    owner_id: str | None = None


@dataclass(frozen=True)
class Wanted:
    """One rule a request asks for, its source not resolved yet."""

    protocol: str  # tcp, udp, icmp, -1
    from_port: int | None  # None for -1
    to_port: int | None
    cidr: str | None = None
    group: SourceGroup | None = None
    description: str | None = None


def protocol_of(raw: str | None) -> str:
    if raw is None or raw == "":
        raise Ec2Error("MissingParameter", "The request must contain the parameter ipProtocol")
    found = PROTOCOLS.get(raw.strip().lower())
    if found is None:
        raise Ec2Error(
            "InvalidPermission.Malformed",
            f'Unsupported IP protocol "{raw}"  - supported: [tcp, udp, icmp, -1]',
        )
    return found


def ports_of(protocol: str, from_port: int | None, to_port: int | None) -> tuple[int | None, int | None]:
    """The port range (ICMP: type, code) a rule keeps; bad ranges are InvalidParameterValue."""
    if protocol == "-1":
        return None, None
    if protocol == "icmp":
        icmp_type = -1 if from_port is None else from_port
        icmp_code = -1 if to_port is None else to_port
        for what, value in (("type", icmp_type), ("code", icmp_code)):
            if not -1 <= value <= 255:
                raise Ec2Error(
                    "InvalidParameterValue",
                    f"Invalid value '{value}' for ICMP {what}: it must be -1 (all) or 0..255.",
                )
        if icmp_type == -1 and icmp_code != -1:
            raise Ec2Error("InvalidParameterValue", "An ICMP code needs an ICMP type (the type is -1).")
        return icmp_type, icmp_code
    if from_port is None or to_port is None:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Invalid value 'Must specify both from and to ports with {protocol.upper()}.' for portRange.",
        )
    for value in (from_port, to_port):
        if not 0 <= value <= 65535:
            raise Ec2Error("InvalidParameterValue", f"Invalid value '{value}' for port: it must be 0..65535.")
    if from_port > to_port:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Invalid port range {from_port}-{to_port}: the from port is greater than the to port.",
        )
    return from_port, to_port


def cidr_of(raw: str) -> str:
    """An IPv4 CIDR as given (stripped), refused unless it is a.b.c.d/n."""
    text = raw.strip()
    address, slash, bits = text.partition("/")
    try:
        if not slash or not bits.isdigit():
            raise ValueError(text)
        ipaddress.IPv4Network(f"{ipaddress.IPv4Address(address)}/{int(bits)}", strict=False)
    except ValueError:
        raise Ec2Error("InvalidParameterValue", f"CIDR block {raw} is malformed") from None
    return text


def _description(raw: str | None) -> str | None:
    if raw is None:
        return None
    if len(raw) > MAX_DESCRIPTION or not raw.isprintable():
        raise Ec2Error(
            "InvalidParameterValue",
            f"Invalid rule description: at most {MAX_DESCRIPTION} printable characters.",
        )
    return raw


def _from_permission(p: m.IpPermission) -> list[Wanted]:
    if p.ipv6_ranges:
        raise Ec2Error(
            "InvalidParameterValue", "IPv6 ranges are not supported in EC2-Classic security groups."
        )
    if p.prefix_list_ids:
        raise Ec2Error(
            "InvalidParameterValue", "Prefix lists are not supported in EC2-Classic security groups."
        )
    protocol = protocol_of(p.ip_protocol)
    low, high = ports_of(protocol, p.from_port, p.to_port)
    out: list[Wanted] = []
    for r in p.ip_ranges:
        if not r.cidr_ip:
            raise Ec2Error("MissingParameter", "The request must contain the parameter cidrIp")
        out.append(
            Wanted(protocol, low, high, cidr=cidr_of(r.cidr_ip), description=_description(r.description))
        )
    for g in p.user_id_group_pairs:
        if g.vpc_id:
            raise Ec2Error("InvalidParameterValue", "VPC security groups are not supported in EC2-Classic.")
        if not g.group_id and not g.group_name:
            raise Ec2Error("MissingParameter", "The request must contain the parameter groupId or groupName")
        source = SourceGroup(g.group_id or None, None if g.group_id else g.group_name, g.user_id or None)
        out.append(Wanted(protocol, low, high, group=source, description=_description(g.description)))
    if not out:
        raise Ec2Error(
            "MissingParameter", "The permission must name a source: a CIDR range (cidrIp) or a source group."
        )
    return out


def full_access(group: SourceGroup) -> list[Wanted]:
    """What a source group named alone grants in EC2-Classic: all of ICMP, TCP and UDP."""
    return [
        Wanted("icmp", -1, -1, group=group),
        Wanted("tcp", 0, 65535, group=group),
        Wanted("udp", 0, 65535, group=group),
    ]


def wanted_rules(req: m.SecurityGroupPermissionsRequest) -> list[Wanted]:
    """Every rule the request asks for, flat parameters and IpPermissions together, without repeats."""
    out: list[Wanted] = []
    flat = (
        req.ip_protocol is not None
        or req.from_port is not None
        or req.to_port is not None
        or req.cidr_ip is not None
        or req.source_security_group_name is not None
        or req.source_security_group_owner_id is not None
    )
    if flat:
        if req.cidr_ip is not None and req.source_security_group_name is not None:
            raise Ec2Error(
                "InvalidParameterCombination",
                "A CIDR range and a source security group cannot be given in one set of permissions.",
            )
        if req.source_security_group_owner_id is not None and req.source_security_group_name is None:
            raise Ec2Error(
                "MissingParameter", "The request must contain the parameter sourceSecurityGroupName"
            )
        if req.source_security_group_name is not None:
            group = SourceGroup(None, req.source_security_group_name, req.source_security_group_owner_id)
            if req.ip_protocol is None and req.from_port is None and req.to_port is None:
                out.extend(full_access(group))
            else:
                protocol = protocol_of(req.ip_protocol)
                low, high = ports_of(protocol, req.from_port, req.to_port)
                out.append(Wanted(protocol, low, high, group=group))
        else:
            protocol = protocol_of(req.ip_protocol)
            low, high = ports_of(protocol, req.from_port, req.to_port)
            if req.cidr_ip is None:
                raise Ec2Error(
                    "MissingParameter",
                    "The request must contain the parameter cidrIp or sourceSecurityGroupName",
                )
            out.append(Wanted(protocol, low, high, cidr=cidr_of(req.cidr_ip)))
    for p in req.ip_permissions:
        out.extend(_from_permission(p))
    return list(dict.fromkeys(out))
