"""Security groups through EC2 (EC2-Classic, as Eucalyptus answered): CreateSecurityGroup,
DeleteSecurityGroup, DescribeSecurityGroups, Authorize/RevokeSecurityGroupIngress, DescribeSecurityGroupRules,
and Authorize/RevokeSecurityGroupEgress, which EC2-Classic refused ("Only Amazon VPC security groups may be
used with this operation.", InvalidParameterValue): a classic group has no egress rules, all outbound traffic
is allowed.

Whether instances still use a group is the instances' rule (they sit above this package): the composition
root hands handlers() a function that says which do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, FilterValues, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.security_groups import records
from euca.roles.clc.security_groups.records import GroupRecord, RuleRecord
from euca.roles.clc.security_groups.rules import wanted_rules
from euca.roles.clc.tags import records as tags
from euca.roles.clc.tags.render import tag_list

# (tx, group id) -> the ids of the instances not terminated yet that are in the group.
InstancesInGroup = Callable[[Tx, str], list[str]]

GROUP_PAGES = PageLimits(5, 1000)
MAX_DESCRIPTION = 255


# -- rendering -------------------------------------------------------------------------------------------


def _arn(call: Ec2Call, owner: str, resource: str) -> str:
    return f"arn:aws:ec2:{call.ctx.config.region}:{owner}:{resource}"


def ip_permissions(rules: Iterable[RuleRecord]) -> list[m.IpPermission]:
    """Rules as EC2 shows them: one IpPermission per protocol and port range, with its ranges and groups."""
    grouped: dict[tuple[str, int | None, int | None], m.IpPermission] = {}
    for r in rules:
        key = (r.protocol, r.from_port, r.to_port)
        p = grouped.get(key)
        if p is None:
            p = grouped[key] = m.IpPermission(
                ip_protocol=r.protocol, from_port=r.from_port, to_port=r.to_port
            )
        if r.cidr:
            p.ip_ranges.append(m.IpRange(cidr_ip=r.cidr, description=r.description))
        if r.source_group_id:
            p.user_id_group_pairs.append(
                m.UserIdGroupPair(
                    user_id=r.source_owner_id,
                    group_id=r.source_group_id,
                    group_name=r.source_group_name,
                    description=r.description,
                )
            )
    return list(grouped.values())


def to_security_group(call: Ec2Call, g: GroupRecord) -> m.SecurityGroup:
    return m.SecurityGroup(
        group_id=g.group_id,
        group_name=g.name,
        owner_id=g.account_id,
        description=g.description,
        ip_permissions=ip_permissions(g.rules),
        ip_permissions_egress=[],
        security_group_arn=_arn(call, g.account_id, f"security-group/{g.group_id}"),
        tags=tag_list(g.tags),
    )


def to_rule(call: Ec2Call, owner: str, r: RuleRecord) -> m.SecurityGroupRule:
    return m.SecurityGroupRule(
        security_group_rule_id=r.rule_id,
        group_id=r.group_id,
        group_owner_id=owner,
        is_egress=False,
        ip_protocol=r.protocol,
        from_port=-1 if r.from_port is None else r.from_port,
        to_port=-1 if r.to_port is None else r.to_port,
        cidr_ipv4=r.cidr,
        referenced_group_info=(
            m.ReferencedSecurityGroup(group_id=r.source_group_id, user_id=r.source_owner_id)
            if r.source_group_id
            else None
        ),
        description=r.description,
        security_group_rule_arn=_arn(call, owner, f"security-group-rule/{r.rule_id}"),
    )


# -- create, delete --------------------------------------------------------------------------------------


def _check_description(text: str) -> None:
    if len(text) > MAX_DESCRIPTION or not text.isascii() or not text.isprintable():
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value for parameter groupDescription is invalid: at most {MAX_DESCRIPTION} printable ASCII "
            "characters.",
        )


async def create_security_group(
    call: Ec2Call, req: m.CreateSecurityGroupRequest
) -> m.CreateSecurityGroupResult:
    records.check_group_name(req.group_name)
    if req.group_name.startswith("sg-"):
        raise Ec2Error("InvalidParameterValue", "Group names may not be in the format sg-*.")
    if not req.description:
        raise Ec2Error("MissingParameter", "The request must contain the parameter GroupDescription")
    _check_description(req.description)
    if req.vpc_id:
        raise Ec2Error("InvalidVpcID.NotFound", f"The vpc ID '{req.vpc_id}' does not exist (EC2-Classic)")
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "security-group")
    group_id = await call.ctx.store.write(
        lambda tx: records.create_group(tx, call.account_id, req.group_name, req.description, tag_pairs)
    )
    return m.CreateSecurityGroupResult(group_id=group_id, tags=tag_list(dict(tag_pairs)))


class SecurityGroupsApi:
    """The handlers that need to know whether instances use a group."""

    def __init__(self, instances_in_group: InstancesInGroup):
        self.instances_in_group = instances_in_group

    async def delete_security_group(
        self, call: Ec2Call, req: m.DeleteSecurityGroupRequest
    ) -> m.DeleteSecurityGroupResult:
        if not req.group_id and not req.group_name:
            raise Ec2Error("MissingParameter", "The request must contain the parameter groupName or groupId")

        def write(tx: Tx) -> str:
            group = records.find_group(tx, call.account_id, group_id=req.group_id, group_name=req.group_name)
            using = self.instances_in_group(tx, group.group_id)
            if using:
                raise Ec2Error(
                    "InvalidGroup.InUse",
                    f"There are active instances using security group '{group.name}': {', '.join(using[:10])}",
                )
            records.delete_group(tx, group)
            return group.group_id

        deleted = await call.ctx.store.write(write)
        call.network_changed()
        return m.DeleteSecurityGroupResult(group_id=deleted)


# -- describe --------------------------------------------------------------------------------------------


def _permission_values(attr: Callable[[RuleRecord], FilterValues]) -> Callable[[GroupRecord], list[str]]:
    def values(g: GroupRecord) -> list[str]:
        out: list[str] = []
        for r in g.rules:
            v = attr(r)
            if v is None:
                continue
            out.append(str(v))
        return out

    return values


GROUP_FILTERS: FilterSet[GroupRecord] = FilterSet(
    {
        "group-name": lambda g: g.name,
        "group-id": lambda g: g.group_id,
        "description": lambda g: g.description,
        "owner-id": lambda g: g.account_id,
        "ip-permission.protocol": _permission_values(lambda r: r.protocol),
        "ip-permission.from-port": _permission_values(lambda r: -1 if r.from_port is None else r.from_port),
        "ip-permission.to-port": _permission_values(lambda r: -1 if r.to_port is None else r.to_port),
        "ip-permission.cidr": _permission_values(lambda r: r.cidr),
        "ip-permission.group-id": _permission_values(lambda r: r.source_group_id),
        "ip-permission.group-name": _permission_values(lambda r: r.source_group_name),
        "ip-permission.user-id": _permission_values(lambda r: r.source_owner_id),
        "ip-permission.description": _permission_values(lambda r: r.description),
        # EC2-Classic groups have no egress rules and no VPC: these filters match nothing
        **{
            f"egress.ip-permission.{name}": lambda g: None
            for name in ("protocol", "from-port", "to-port", "cidr", "group-id", "group-name", "user-id")
        },
        "vpc-id": lambda g: None,
    },
    tags=lambda g: g.tags,
)


async def _ensure_default(call: Ec2Call) -> None:
    """The account's default group exists from its first look at its groups."""
    if not await call.ctx.store.read(lambda tx: records.has_default(tx, call.account_id)):
        await call.ctx.store.write(lambda tx: records.ensure_default(tx, call.account_id))


async def describe_security_groups(
    call: Ec2Call, req: m.DescribeSecurityGroupsRequest
) -> m.DescribeSecurityGroupsResult:
    names = list(req.group_names)
    # euca-describe-groups verbose: the cloud admin sees every account's groups.
    everyone = call.principal.is_cloud_admin and "verbose" in names
    if everyone:
        names = [n for n in names if n != "verbose"]
    ids = records.check_group_ids(req.group_ids)
    await _ensure_default(call)
    owner = None if everyone else call.account_id
    groups = await call.ctx.store.read(lambda tx: records.load_groups(tx, owner))
    if names or ids:
        by_name = {g.name for g in groups if g.account_id == call.account_id or everyone}
        by_id = {g.group_id for g in groups}
        for name in names:
            if name not in by_name:
                raise records.not_found(name)
        for group_id in ids:
            if group_id not in by_id:
                raise records.not_found(group_id)
        groups = [g for g in groups if g.name in names or g.group_id in ids]
    groups = GROUP_FILTERS.apply(req.filters, groups)
    page, token = paginate(groups, lambda g: g.group_id, req.max_results, req.next_token, GROUP_PAGES)
    return m.DescribeSecurityGroupsResult(
        security_groups=[to_security_group(call, g) for g in page], next_token=token
    )


RULE_FILTERS: FilterSet[tuple[str, RuleRecord]] = FilterSet(
    {
        "group-id": lambda x: x[1].group_id,
        "security-group-rule-id": lambda x: x[1].rule_id,
        "is-egress": lambda x: False,
    },
)


async def describe_security_group_rules(
    call: Ec2Call, req: m.DescribeSecurityGroupRulesRequest
) -> m.DescribeSecurityGroupRulesResult:
    await _ensure_default(call)
    rules = [
        (call.account_id, r)
        for r in await call.ctx.store.read(lambda tx: records.load_rules(tx, call.account_id))
    ]
    if req.security_group_rule_ids:
        known = {r.rule_id for _, r in rules}
        for rule_id in req.security_group_rule_ids:
            if rule_id not in known:
                raise Ec2Error(
                    "InvalidSecurityGroupRuleId.NotFound",
                    f"The security group rule ID '{rule_id}' does not exist",
                )
        wanted = set(req.security_group_rule_ids)
        rules = [x for x in rules if x[1].rule_id in wanted]
    rules = RULE_FILTERS.apply(req.filters, rules)
    page, token = paginate(rules, lambda x: x[1].rule_id, req.max_results, req.next_token, GROUP_PAGES)
    return m.DescribeSecurityGroupRulesResult(
        security_group_rules=[to_rule(call, owner, r) for owner, r in page], next_token=token
    )


# -- authorize, revoke -----------------------------------------------------------------------------------


async def authorize_ingress(
    call: Ec2Call, req: m.AuthorizeSecurityGroupIngressRequest
) -> m.AuthorizeSecurityGroupIngressResult:
    wanted = wanted_rules(req)
    if not wanted:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ipPermissions")

    def write(tx: Tx) -> list[RuleRecord]:
        group = records.find_group(tx, call.account_id, group_id=req.group_id, group_name=req.group_name)
        return records.add_rules(tx, group, records.resolve(tx, call.account_id, wanted))

    added = await call.ctx.store.write(write)
    call.network_changed()
    return m.AuthorizeSecurityGroupIngressResult(
        security_group_rules=[to_rule(call, call.account_id, r) for r in added]
    )


async def revoke_ingress(
    call: Ec2Call, req: m.RevokeSecurityGroupIngressRequest
) -> m.RevokeSecurityGroupIngressResult:
    wanted = wanted_rules(req)
    if not wanted and not req.security_group_rule_ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ipPermissions")

    def write(tx: Tx) -> list[RuleRecord]:
        group = records.find_group(tx, call.account_id, group_id=req.group_id, group_name=req.group_name)
        gone = records.remove_rules(tx, group, records.resolve(tx, call.account_id, wanted))
        gone.extend(records.remove_rules_by_id(tx, group, req.security_group_rule_ids))
        return gone

    gone = await call.ctx.store.write(write)
    call.network_changed()
    return m.RevokeSecurityGroupIngressResult(
        revoked_security_group_rules=[
            m.RevokedSecurityGroupRule(
                security_group_rule_id=r.rule_id,
                group_id=r.group_id,
                is_egress=False,
                ip_protocol=r.protocol,
                from_port=-1 if r.from_port is None else r.from_port,
                to_port=-1 if r.to_port is None else r.to_port,
                cidr_ipv4=r.cidr,
                referenced_group_id=r.source_group_id,
                description=r.description,
            )
            for r in gone
        ]
    )


async def _egress(call: Ec2Call, req: m.SecurityGroupEgressRequest) -> None:
    """EC2-Classic groups have no egress rules: the group is looked up (unknown: NotFound), then refused."""
    await call.ctx.store.write(
        lambda tx: records.find_group(tx, call.account_id, group_id=req.group_id, group_name=None)
    )
    raise Ec2Error(
        "InvalidParameterValue", "Only Amazon VPC security groups may be used with this operation."
    )


async def authorize_egress(call: Ec2Call, req: m.AuthorizeSecurityGroupEgressRequest) -> None:
    await _egress(call, req)


async def revoke_egress(call: Ec2Call, req: m.RevokeSecurityGroupEgressRequest) -> None:
    await _egress(call, req)


def handlers(instances_in_group: InstancesInGroup) -> dict[str, Handler]:
    """The security group actions; DeleteSecurityGroup asks `instances_in_group` whether instances use one."""
    api = SecurityGroupsApi(instances_in_group)
    return {
        "CreateSecurityGroup": create_security_group,
        "DeleteSecurityGroup": api.delete_security_group,
        "DescribeSecurityGroups": describe_security_groups,
        "AuthorizeSecurityGroupIngress": authorize_ingress,
        "RevokeSecurityGroupIngress": revoke_ingress,
        "AuthorizeSecurityGroupEgress": authorize_egress,
        "RevokeSecurityGroupEgress": revoke_egress,
        "DescribeSecurityGroupRules": describe_security_group_rules,
    }
