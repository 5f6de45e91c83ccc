"""The clc_instance_types table: the only module that reads or writes instance types.

The table (seeded with Eucalyptus 4.x's defaults by schema.py) is what RunInstances sizes instances by and
what the poller sends each CC, so an edit by the admin (`euca admin modify-instance-type`) reaches placement
and the CCs' capacity counts at the next poll. Instances already running keep the size they were started with.
"""

from __future__ import annotations

from dataclasses import dataclass

from euca.core.store import Tx
from euca.protocol.cluster import VmType


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
