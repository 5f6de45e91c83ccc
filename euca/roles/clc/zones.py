"""Regions, availability zones and account attributes: what the cloud looks like from outside."""

from __future__ import annotations

from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Call

REGION_FILTERS: FilterSet[m.Region] = FilterSet(
    {"region-name": lambda r: r.region_name, "endpoint": lambda r: r.endpoint, "opt-in-status": lambda r: r.opt_in_status}
)

ZONE_FILTERS: FilterSet[m.AvailabilityZone] = FilterSet(
    {
        "zone-name": lambda z: z.zone_name,
        "zone-id": lambda z: z.zone_id,
        "state": lambda z: z.state,
        "region-name": lambda z: z.region_name,
        "zone-type": lambda z: z.zone_type,
        "group-name": lambda z: z.group_name,
        "opt-in-status": lambda z: z.opt_in_status,
        "message": lambda z: [msg.message for msg in z.messages],
    }
)

# Eucalyptus was EC2-Classic: no default VPC, instances launch into the classic platform.
ACCOUNT_ATTRIBUTES: dict[str, list[str]] = {
    "supported-platforms": ["EC2"],
    "default-vpc": ["none"],
}


def _endpoint(call: Call) -> str:
    base = call.ctx.endpoints.get("clc") or call.ctx.config.endpoint_url("clc")
    return f"{base}/services/compute"


def _regions(call: Call) -> list[m.Region]:
    return [m.Region(region_name=call.ctx.config.region, endpoint=_endpoint(call))]


def _zones(call: Call) -> list[m.AvailabilityZone]:
    # One zone per cluster; until clusters register with the CLC there is the configured one.
    cfg = call.ctx.config
    return [
        m.AvailabilityZone(
            zone_name=cfg.zone,
            zone_id=cfg.zone,
            state="available",
            region_name=cfg.region,
            group_name=cfg.region,
            network_border_group=cfg.region,
        )
    ]


async def describe_regions(call: Call, req: m.DescribeRegionsRequest) -> m.DescribeRegionsResult:
    regions = _regions(call)
    known = {r.region_name for r in regions}
    unknown = [n for n in req.region_names if n not in known]
    if unknown:
        raise Ec2Error("InvalidParameterValue", f"Invalid region: {', '.join(unknown)}")
    if req.region_names:
        regions = [r for r in regions if r.region_name in req.region_names]
    return m.DescribeRegionsResult(regions=REGION_FILTERS.apply(req.filters, regions))


async def describe_availability_zones(
    call: Call, req: m.DescribeAvailabilityZonesRequest
) -> m.DescribeAvailabilityZonesResult:
    zones = _zones(call)
    wanted = [*req.zone_names, *req.zone_ids]
    # `verbose` (euca-describe-availability-zones verbose) asks admins for capacity; it arrives with clusters.
    wanted = [w for w in wanted if w != "verbose"]
    known = {z.zone_name for z in zones} | {z.zone_id for z in zones if z.zone_id}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise Ec2Error("InvalidParameterValue", f"Invalid availability zone: [{', '.join(unknown)}]")
    if wanted:
        zones = [z for z in zones if z.zone_name in wanted or z.zone_id in wanted]
    return m.DescribeAvailabilityZonesResult(availability_zones=ZONE_FILTERS.apply(req.filters, zones))


async def describe_account_attributes(
    call: Call, req: m.DescribeAccountAttributesRequest
) -> m.DescribeAccountAttributesResult:
    names = req.attribute_names or list(ACCOUNT_ATTRIBUTES)
    unknown = [n for n in names if n not in ACCOUNT_ATTRIBUTES]
    if unknown:
        raise Ec2Error("InvalidParameterValue", f"Value ({unknown[0]}) for parameter attributeName is invalid.")
    return m.DescribeAccountAttributesResult(
        account_attributes=[
            m.AccountAttribute(
                attribute_name=name,
                attribute_values=[m.AccountAttributeValue(attribute_value=v) for v in ACCOUNT_ATTRIBUTES[name]],
            )
            for name in names
        ]
    )
