"""Instance types: DescribeInstanceTypes over the cloud's table (Eucalyptus 4.x defaults, editable by admins).

The table (clc_instance_types, seeded from REFERENCE.md's defaults by the "clc" schema) is what RunInstances
sizes instances by and what the poller sends each CC, so an edit by the admin
(`euca admin modify-instance-type`) reaches placement and the CCs' capacity counts at the next poll.
Instances already running keep the size they were started with.
"""

from __future__ import annotations

from dataclasses import dataclass

from euca.core.store import Tx
from euca.protocol.cluster import VmType
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Call


@dataclass(frozen=True)
class InstanceType:
    name: str
    cpu: int
    memory_mib: int
    disk_gib: int
    position: int

    @property
    def vm_type(self) -> VmType:
        return VmType(self.name, self.cpu, self.memory_mib, self.disk_gib)


class InstanceTypeError(Exception):
    """An admin edit that cannot be made; the message says why."""


def load_instance_types(tx: Tx) -> list[InstanceType]:
    return [
        InstanceType(r["name"], r["cpu"], r["memory_mib"], r["disk_gib"], r["position"])
        for r in tx.all(
            "SELECT name, cpu, memory_mib, disk_gib, position FROM clc_instance_types ORDER BY position"
        )
    ]


def load_instance_type(tx: Tx, name: str) -> InstanceType | None:
    r = tx.one(
        "SELECT name, cpu, memory_mib, disk_gib, position FROM clc_instance_types WHERE name=?", (name,)
    )
    return InstanceType(r["name"], r["cpu"], r["memory_mib"], r["disk_gib"], r["position"]) if r else None


def vm_types(tx: Tx) -> list[VmType]:
    return [t.vm_type for t in load_instance_types(tx)]


def modify_instance_type(
    tx: Tx, name: str, *, cpu: int | None = None, memory_mib: int | None = None, disk_gib: int | None = None
) -> InstanceType:
    """Change a type's cores, memory (MiB) and/or disk (GiB); what is not given stays."""
    current = load_instance_type(tx, name)
    if current is None:
        raise InstanceTypeError(f"no instance type {name}")
    for what, value in (("cpu", cpu), ("memory", memory_mib), ("disk", disk_gib)):
        if value is not None and value < 1:
            raise InstanceTypeError(f"{what} of {name} must be at least 1, not {value}")
    tx.execute(
        "UPDATE clc_instance_types SET cpu=?, memory_mib=?, disk_gib=? WHERE name=?",
        (
            current.cpu if cpu is None else cpu,
            current.memory_mib if memory_mib is None else memory_mib,
            current.disk_gib if disk_gib is None else disk_gib,
            name,
        ),
    )
    updated = load_instance_type(tx, name)
    assert updated is not None
    return updated


INSTANCE_TYPE_FILTERS: FilterSet[InstanceType] = FilterSet(
    {
        "instance-type": lambda t: t.name,
        "vcpu-info.default-vcpus": lambda t: t.cpu,
        "memory-info.size-in-mib": lambda t: t.memory_mib,
        "instance-storage-info.total-size-in-gb": lambda t: t.disk_gib,
        "instance-storage-supported": lambda t: True,
        "current-generation": lambda t: True,
        "supported-root-device-type": lambda t: ["instance-store", "ebs"],
        "supported-virtualization-type": lambda t: ["hvm", "paravirtual"],
        "processor-info.supported-architecture": lambda t: ["i386", "x86_64"],
    }
)


def _info(t: InstanceType) -> m.InstanceTypeInfo:
    return m.InstanceTypeInfo(
        instance_type=t.name,
        v_cpu_info=m.VCpuInfo(default_v_cpus=t.cpu, default_cores=t.cpu, default_threads_per_core=1),
        memory_info=m.MemoryInfo(size_in_mib=t.memory_mib),
        instance_storage_info=m.InstanceStorageInfo(
            total_size_in_gb=t.disk_gib, disks=[m.DiskInfo(size_in_gb=t.disk_gib, count=1, type="hdd")]
        ),
        processor_info=m.ProcessorInfo(supported_architectures=["i386", "x86_64"]),
        supported_root_device_types=["instance-store", "ebs"],
        supported_virtualization_types=["hvm", "paravirtual"],
        supported_usage_classes=["on-demand"],
    )


async def describe_instance_types(
    call: Call, req: m.DescribeInstanceTypesRequest
) -> m.DescribeInstanceTypesResult:
    types = await call.ctx.store.read(load_instance_types)
    if req.instance_types:
        known = {t.name for t in types}
        unknown = [n for n in req.instance_types if n not in known]
        if unknown:
            raise Ec2Error(
                "InvalidInstanceType",
                f"The following supplied instance types do not exist: [{', '.join(unknown)}]",
            )
        types = [t for t in types if t.name in req.instance_types]
    types = INSTANCE_TYPE_FILTERS.apply(req.filters, types)
    # Pages follow the table's order (smallest first, as Eucalyptus listed them).
    page, token = paginate(
        types, lambda t: f"{t.position:08d}", req.max_results, req.next_token, PageLimits(5, 100)
    )
    return m.DescribeInstanceTypesResult(instance_types=[_info(t) for t in page], next_token=token)
