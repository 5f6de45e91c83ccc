"""What a node controller is configured with, and what it offers to instances.

Capacity, as Eucalyptus's NC had it in eucalyptus.conf (MAX_CORES, MAX_MEM, MAX_DISK): `nc.cores`,
`nc.memory_mb` and `nc.disk_gb` are what the node offers; 0 means what the host has (the cores and memory
libvirt reports, the instances file system's free space at start). A value above the host's own is
over-commit: with `nc.cores = 8` a 2-core host runs eight 1-core instances, their virtual CPUs sharing the
real ones (QEMU does not mind; the guests run slower when all are busy). Memory over-commit works the same
way but is riskier: guests that touch all of their memory make the host swap or kill one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from euca.core.config import Config
from euca.protocol.cluster import NodeResources
from euca.roles.nc.disks import GiB

TERMINATED_TTL = 600.0  # seconds an ended instance stays visible (the CC polls every 6 s)
MONITOR_INTERVAL = 5.0  # seconds between looks at libvirt when nobody asks
STOP_TIMEOUT = 60.0  # seconds a stopping guest has to power off on ACPI's request before it is destroyed


@dataclass
class NcSettings:
    name: str
    data_dir: Path
    instances_dir: Path
    cache_dir: Path
    cache_max_bytes: int
    libvirt_uri: str = "qemu:///system"
    hypervisor: str = "auto"
    cores: int = 0  # 0: what libvirt says the host has
    memory_mb: int = 0
    disk_gb: int = 0  # 0: the instances file system's free space at start
    terminated_ttl: float = TERMINATED_TTL
    monitor_interval: float = MONITOR_INTERVAL
    stop_timeout: float = STOP_TIMEOUT

    @classmethod
    def from_config(cls, config: Config) -> NcSettings:
        nc = config.nc
        return cls(
            name=nc.name or socket.gethostname(),
            data_dir=config.data_path,
            instances_dir=config.path(nc.instances_dir),
            cache_dir=config.path(nc.cache_dir),
            cache_max_bytes=int(nc.cache_max_gb * GiB),
            libvirt_uri=nc.libvirt_uri,
            hypervisor=nc.hypervisor,
            cores=nc.cores,
            memory_mb=nc.memory_mb,
            disk_gb=nc.disk_gb,
        )


def offered(configured: int, host: int) -> int:
    """What the node offers of one resource: the configured amount, or the host's when it is 0. Above the
    host's is over-commit, and allowed."""
    return configured if configured > 0 else host


def up_resources(
    name: str,
    hypervisor: str,
    maxima: tuple[int, int, int],
    used: tuple[int, int, int],
) -> NodeResources:
    """The node's report: (cores, memory MiB, disk GiB) offered and used by its non-ended instances."""
    (cores_max, memory_max, disk_max), (cores, memory, disk) = maxima, used
    return NodeResources(
        node=name,
        state="up",
        cores_max=cores_max,
        cores_free=max(0, cores_max - cores),
        memory_mb_max=memory_max,
        memory_mb_free=max(0, memory_max - memory),
        disk_gb_max=disk_max,
        disk_gb_free=max(0, disk_max - disk),
        hypervisor=hypervisor,
    )
