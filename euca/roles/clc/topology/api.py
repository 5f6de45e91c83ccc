"""Regions, availability zones and account attributes through EC2: what the cloud looks like from outside.

One availability zone per registered cluster, `available` while its CC answers the CLC's polls. An admin
asking for the zone `verbose` (euca-describe-availability-zones verbose) gets Eucalyptus's capacity rows as
extra zone entries: `|- vm types` / `free / max   cpu   ram  disk`, then one `|- <type>` row per instance
type with how many more fit and how many would fit on the zone's empty nodes.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.topology import records as topology

REGION_FILTERS: FilterSet[m.Region] = FilterSet(
    {
        "region-name": lambda r: r.region_name,
        "endpoint": lambda r: r.endpoint,
        "opt-in-status": lambda r: r.opt_in_status,
    }
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


def _endpoint(call: Ec2Call) -> str:
    base = call.ctx.endpoints.get("clc") or call.ctx.config.endpoint_url("clc")
    return f"{base}/services/compute"


def _regions(call: Ec2Call) -> list[m.Region]:
    return [m.Region(region_name=call.ctx.config.region, endpoint=_endpoint(call))]


def _zone(call: Ec2Call, name: str, state: str) -> m.AvailabilityZone:
    region = call.ctx.config.region
    return m.AvailabilityZone(
        zone_name=name,
        zone_id=name,
        state=state,
        region_name=region,
        group_name=region,
        network_border_group=region,
    )


def _zones(call: Ec2Call, clusters: list[topology.Cluster]) -> list[m.AvailabilityZone]:
    # One zone per cluster. A CLC with no cluster registered yet (a CLC-only host before
    # `euca admin register-cluster`) shows the configured zone, as it did before clusters existed.
    if not clusters:
        return [_zone(call, call.ctx.config.zone, "available")]
    return [_zone(call, c.zone, "available" if c.available else "unavailable") for c in clusters]


def _verbose_rows(
    call: Ec2Call,
    c: topology.Cluster,
    types: list[instance_types.InstanceType],
    sc: topology.StorageController | None = None,
) -> list[m.AvailabilityZone]:
    """Eucalyptus's admin view of one zone: where its CC is, then free / max per instance type, then its
    storage controller's volume space (GiB promised to volumes / GiB it holds), if it has one."""
    host = urlsplit(c.url).hostname or c.url
    rows = [
        _zone(call, c.zone, f"{host} arn:euca:eucalyptus:{c.zone}:cluster:{c.name}/"),
        _zone(call, "|- vm types", "free / max   cpu   ram  disk"),
    ]
    capacity = {t.vm_type: t for t in c.capacity}
    for t in types:
        have = capacity.get(t.name)
        free, most = (have.free, have.max) if have and c.available else (0, 0)
        rows.append(
            _zone(
                call, f"|- {t.name}", f"{free:04d} / {most:04d} {t.cpu:4d} {t.memory_mib:6d} {t.disk_gib:5d}"
            )
        )
    if sc is not None:
        space = f"{sc.allocated_gb} / {sc.capacity_gb} GiB {sc.backend}".rstrip()
        rows.append(_zone(call, "|- storage", f"{space} {sc.state}" if sc.available else sc.state))
    return rows


async def describe_regions(call: Ec2Call, req: m.DescribeRegionsRequest) -> m.DescribeRegionsResult:
    regions = _regions(call)
    known = {r.region_name for r in regions}
    unknown = [n for n in req.region_names if n not in known]
    if unknown:
        raise Ec2Error("InvalidParameterValue", f"Invalid region: {', '.join(unknown)}")
    if req.region_names:
        regions = [r for r in regions if r.region_name in req.region_names]
    return m.DescribeRegionsResult(regions=REGION_FILTERS.apply(req.filters, regions))


async def describe_availability_zones(
    call: Ec2Call, req: m.DescribeAvailabilityZonesRequest
) -> m.DescribeAvailabilityZonesResult:
    clusters, types, storage = await call.ctx.store.read(
        lambda tx: (
            topology.list_clusters(tx),
            instance_types.load_instance_types(tx),
            {sc.cluster: sc for sc in topology.list_storage(tx)},
        )
    )
    zones = _zones(call, clusters)
    wanted = [*req.zone_names, *req.zone_ids]
    # `verbose` (euca-describe-availability-zones verbose) asks for capacity; only admins get it.
    verbose = "verbose" in wanted
    wanted = [w for w in wanted if w != "verbose"]
    known = {z.zone_name for z in zones} | {z.zone_id for z in zones if z.zone_id}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise Ec2Error("InvalidParameterValue", f"Invalid availability zone: [{', '.join(unknown)}]")
    if wanted:
        zones = [z for z in zones if z.zone_name in wanted or z.zone_id in wanted]
    zones = ZONE_FILTERS.apply(req.filters, zones)
    if verbose and call.principal.is_cloud_admin and clusters:
        shown = {z.zone_name for z in zones}
        zones = [
            row
            for c in clusters
            if c.zone in shown
            for row in _verbose_rows(call, c, types, storage.get(c.name))
        ]
    return m.DescribeAvailabilityZonesResult(availability_zones=zones)


async def describe_account_attributes(
    call: Ec2Call, req: m.DescribeAccountAttributesRequest
) -> m.DescribeAccountAttributesResult:
    names = req.attribute_names or list(ACCOUNT_ATTRIBUTES)
    unknown = [n for n in names if n not in ACCOUNT_ATTRIBUTES]
    if unknown:
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({unknown[0]}) for parameter attributeName is invalid."
        )
    return m.DescribeAccountAttributesResult(
        account_attributes=[
            m.AccountAttribute(
                attribute_name=name,
                attribute_values=[
                    m.AccountAttributeValue(attribute_value=v) for v in ACCOUNT_ATTRIBUTES[name]
                ],
            )
            for name in names
        ]
    )


HANDLERS: dict[str, Handler] = {
    "DescribeRegions": describe_regions,
    "DescribeAvailabilityZones": describe_availability_zones,
    "DescribeAccountAttributes": describe_account_attributes,
}
