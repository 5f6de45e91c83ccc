"""Instance types through EC2: DescribeInstanceTypes over the cloud's table."""

from __future__ import annotations

from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.instance_types.records import InstanceType, load_instance_types

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
    call: Ec2Call, req: m.DescribeInstanceTypesRequest
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


HANDLERS: dict[str, Handler] = {"DescribeInstanceTypes": describe_instance_types}
