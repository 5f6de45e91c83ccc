"""The public address table (clc_addresses) and the address rules: the only module that reads or writes it.

Every public address the cloud may hand out is one row: the operator's pool (`euca admin
add-public-addresses`, seeded from `clc.public_addresses` when empty). A row is
- free: no holder;
- allocated to an account (AllocateAddress, an elastic IP): `account_id` and an allocation id, and
  perhaps associated with one of its instances (an association id);
- assigned by the system to an instance at launch (`auto`, as Eucalyptus did with every instance): its
  holder is the instance's owner, and it goes back to the pool when the instance ends or gets an
  elastic IP in its place.
An instance has at most one public address. EC2-Classic named elastic IPs by public address; today's tools
name them by allocation id (eipalloc-...): both identify here (see api.py).
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from euca.core.store import Tx
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.ids import unused_id
from euca.roles.clc.tags import records as tags
from euca.roles.clc.usage import records as usage

# A pool range bigger than this is a typo, not a cloud.
MAX_RANGE = 65536
CHUNK = 500


@dataclass(frozen=True)
class AddressRecord:
    public_ip: str
    account_id: str | None
    allocation_id: str | None
    domain: str
    instance_id: str | None
    association_id: str | None
    auto: bool
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def elastic(self) -> bool:
        """Allocated by an account (not free, not assigned by the system)."""
        return self.account_id is not None and not self.auto


def parse_ranges(specs: Iterable[str]) -> list[str]:
    """Addresses from `a.b.c.d`, `a.b.c.d-a.b.c.e` (inclusive) or a CIDR (its host addresses); ValueError
    names a bad one."""
    out: dict[str, None] = {}
    for spec in specs:
        for part in spec.replace(",", " ").split():
            try:
                if "-" in part:
                    first_text, last_text = part.split("-", 1)
                    first = ipaddress.IPv4Address(first_text)
                    last = ipaddress.IPv4Address(last_text)
                    if last < first or int(last) - int(first) >= MAX_RANGE:
                        raise ValueError(part)
                    for n in range(int(first), int(last) + 1):
                        out[str(ipaddress.IPv4Address(n))] = None
                elif "/" in part:
                    net = ipaddress.IPv4Network(part, strict=False)
                    if net.num_addresses > MAX_RANGE:
                        raise ValueError(part)
                    hosts = list(net.hosts()) or [net.network_address]
                    for a in hosts:
                        out[str(a)] = None
                else:
                    out[str(ipaddress.IPv4Address(part))] = None
            except ValueError:
                raise ValueError(f"not an IPv4 address, range a.b.c.d-a.b.c.e or CIDR: {part!r}") from None
    return list(out)


def check_public_ip(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise Ec2Error("InvalidParameterValue", f"Invalid value '{text}' for PublicIp.") from None


def _record(row: sqlite3.Row, tagged: dict[str, str] | None = None) -> AddressRecord:
    return AddressRecord(
        public_ip=row["public_ip"],
        account_id=row["account_id"],
        allocation_id=row["allocation_id"],
        domain=row["domain"],
        instance_id=row["instance_id"],
        association_id=row["association_id"],
        auto=bool(row["auto"]),
        tags=tagged or {},
    )


def _ip_key(public_ip: str) -> int:
    return int(ipaddress.IPv4Address(public_ip))


# -- the operator's pool ---------------------------------------------------------------------------------


def add_to_pool(tx: Tx, addresses: Sequence[str]) -> list[str]:
    """Add these addresses to the pool (those already there are left as they are): the ones added."""
    present = {str(r["public_ip"]) for r in tx.all("SELECT public_ip FROM clc_addresses")}
    added = [ip for ip in dict.fromkeys(addresses) if ip not in present]
    tx.executemany(
        "INSERT INTO clc_addresses(public_ip, ip_order, domain, auto) VALUES(?,?,'standard',0)",
        [(ip, _ip_key(ip)) for ip in added],
    )
    return added


def remove_from_pool(tx: Tx, addresses: Sequence[str]) -> list[str]:
    """Take free addresses out of the pool; one that is allocated or assigned is refused (ValueError)."""
    removed: list[str] = []
    for ip in addresses:
        row = tx.one("SELECT * FROM clc_addresses WHERE public_ip=?", (ip,))
        if row is None:
            continue
        if row["account_id"] is not None:
            raise ValueError(f"{ip} is in use (account {row['account_id']}); release it first")
        tx.execute("DELETE FROM clc_addresses WHERE public_ip=?", (ip,))
        removed.append(ip)
    return removed


def pool_is_empty(tx: Tx) -> bool:
    return not tx.one("SELECT 1 FROM clc_addresses LIMIT 1")


def load_pool(tx: Tx) -> list[AddressRecord]:
    """Every address of the pool, in address order."""
    return [_record(r) for r in tx.all("SELECT * FROM clc_addresses ORDER BY ip_order")]


def free_count(tx: Tx) -> int:
    return int(tx.scalar("SELECT COUNT(*) FROM clc_addresses WHERE account_id IS NULL"))


def _take_free(tx: Tx, wanted: str | None = None) -> str:
    if wanted is not None:
        row = tx.one("SELECT public_ip, account_id FROM clc_addresses WHERE public_ip=?", (wanted,))
        if row is None:
            raise Ec2Error(
                "InvalidAddress.NotFound", f"Address '{wanted}' is not in this cloud's public pool."
            )
        if row["account_id"] is not None:
            raise Ec2Error("InvalidAddress.InUse", f"Address '{wanted}' is in use.")
        return wanted
    row = tx.one("SELECT public_ip FROM clc_addresses WHERE account_id IS NULL ORDER BY ip_order LIMIT 1")
    if row is None:
        raise Ec2Error(
            "InsufficientAddressCapacity", "There are no free public addresses left in this cloud."
        )
    return str(row["public_ip"])


# -- elastic IPs -----------------------------------------------------------------------------------------


def _holds(tx: Tx, column: str, value: str) -> bool:
    return tx.one(f"SELECT 1 FROM clc_addresses WHERE {column}=?", (value,)) is not None


def allocate(
    tx: Tx, account_id: str, domain: str, wanted: str | None, tag_pairs: list[tuple[str, str]]
) -> AddressRecord:
    """A free address (or the one asked for) allocated to the account."""
    ip = _take_free(tx, wanted)
    allocation_id = unused_id("eipalloc", lambda new: _holds(tx, "allocation_id", new))
    tx.execute(
        "UPDATE clc_addresses SET account_id=?, allocation_id=?, domain=?, auto=0, allocated=? WHERE public_ip=?",
        (account_id, allocation_id, domain, time.time(), ip),
    )
    tags.write_tags(tx, account_id, allocation_id, "elastic-ip", tag_pairs)
    usage.address_event(tx, "allocated", ip, account_id)
    return find_owned(tx, account_id, public_ip=ip, allocation_id=None)


def find_owned(tx: Tx, account_id: str, *, public_ip: str | None, allocation_id: str | None) -> AddressRecord:
    """The caller's elastic IP, by allocation id (another's or unknown: InvalidAllocationID.NotFound) or by
    public address (another account's: AuthFailure, as EC2-Classic answered; unknown: InvalidAddress.NotFound)."""
    if allocation_id:
        row = tx.one(
            "SELECT * FROM clc_addresses WHERE allocation_id=? AND account_id=? AND auto=0",
            (allocation_id, account_id),
        )
        if row is None:
            raise Ec2Error(
                "InvalidAllocationID.NotFound", f"The allocation ID '{allocation_id}' does not exist"
            )
        return _record(row)
    if not public_ip:
        raise Ec2Error("MissingParameter", "The request must contain the parameter PublicIp or AllocationId")
    ip = check_public_ip(public_ip)
    row = tx.one("SELECT * FROM clc_addresses WHERE public_ip=?", (ip,))
    if row is None or row["account_id"] is None:
        raise Ec2Error("InvalidAddress.NotFound", f"Address '{public_ip}' not found.")
    if row["account_id"] != account_id or row["auto"]:
        raise Ec2Error("AuthFailure", f"The address '{public_ip}' does not belong to you.")
    return _record(row)


def find_association(tx: Tx, account_id: str, association_id: str) -> AddressRecord:
    row = tx.one(
        "SELECT * FROM clc_addresses WHERE association_id=? AND account_id=? AND auto=0",
        (association_id, account_id),
    )
    if row is None:
        raise Ec2Error(
            "InvalidAssociationID.NotFound", f"The association ID '{association_id}' does not exist"
        )
    return _record(row)


def address_of_instance(tx: Tx, instance_id: str) -> AddressRecord | None:
    row = tx.one("SELECT * FROM clc_addresses WHERE instance_id=?", (instance_id,))
    return _record(row) if row is not None else None


def associate(tx: Tx, address: AddressRecord, instance_id: str, allow_reassociation: bool) -> str:
    """Associate the elastic IP with the instance: its association id. An address associated elsewhere
    moves only with AllowReassociation; the instance's previous public address is given up (a system one
    goes back to the pool, an elastic one stays the account's)."""
    if address.instance_id == instance_id and address.association_id:
        return address.association_id
    if address.instance_id is not None and not allow_reassociation:
        raise Ec2Error(
            "Resource.AlreadyAssociated",
            f"Address {address.public_ip} is already associated with {address.instance_id}; "
            "give AllowReassociation to move it.",
        )
    _let_go(tx, instance_id)
    association_id = unused_id("eipassoc", lambda new: _holds(tx, "association_id", new))
    tx.execute(
        "UPDATE clc_addresses SET instance_id=?, association_id=? WHERE public_ip=?",
        (instance_id, association_id, address.public_ip),
    )
    usage.address_event(tx, "associated", address.public_ip, address.account_id, instance_id)
    return association_id


def _let_go(tx: Tx, instance_id: str) -> None:
    """The instance gives up its public address: a system one goes back to the pool; an elastic one is
    disassociated (the account keeps it)."""
    usage.addresses_let_go(tx, instance_id)
    tx.execute(
        "UPDATE clc_addresses SET account_id=NULL, instance_id=NULL, association_id=NULL, auto=0, "
        "allocated=NULL WHERE instance_id=? AND auto=1",
        (instance_id,),
    )
    tx.execute(
        "UPDATE clc_addresses SET instance_id=NULL, association_id=NULL WHERE instance_id=? AND auto=0",
        (instance_id,),
    )


def disassociate(tx: Tx, address: AddressRecord) -> str | None:
    """Disassociate the elastic IP: the instance it was on, if any."""
    tx.execute(
        "UPDATE clc_addresses SET instance_id=NULL, association_id=NULL WHERE public_ip=?",
        (address.public_ip,),
    )
    usage.address_event(tx, "disassociated", address.public_ip, address.account_id)
    return address.instance_id


def release(tx: Tx, address: AddressRecord) -> None:
    """Back to the pool; refused while associated (InvalidIPAddress.InUse)."""
    if address.instance_id is not None:
        raise Ec2Error(
            "InvalidIPAddress.InUse",
            f"Address {address.public_ip} is associated with {address.instance_id}: disassociate it first.",
        )
    tx.execute(
        "UPDATE clc_addresses SET account_id=NULL, allocation_id=NULL, domain='standard', allocated=NULL "
        "WHERE public_ip=?",
        (address.public_ip,),
    )
    usage.address_event(tx, "released", address.public_ip, address.account_id)
    if address.allocation_id:
        tags.forget_resource(tx, address.allocation_id)


def load_addresses(tx: Tx, account_id: str | None) -> list[AddressRecord]:
    """The account's elastic IPs (every address of the pool for None: the admin's verbose view)."""
    if account_id is None:
        rows = tx.all("SELECT * FROM clc_addresses ORDER BY ip_order")
    else:
        rows = tx.all(
            "SELECT * FROM clc_addresses WHERE account_id=? AND auto=0 ORDER BY ip_order", (account_id,)
        )
    tagged: dict[str, dict[str, str]] = {}
    for owner in {r["account_id"] for r in rows if r["account_id"] and r["allocation_id"]}:
        tagged.update(
            tags.tags_of(
                tx,
                owner,
                (r["allocation_id"] for r in rows if r["account_id"] == owner and r["allocation_id"]),
            )
        )
    return [_record(r, tagged.get(r["allocation_id"] or "")) for r in rows]


def allocation_visible(tx: Tx, allocation_id: str, account_id: str) -> bool:
    return bool(
        tx.one(
            "SELECT 1 FROM clc_addresses WHERE allocation_id=? AND account_id=? AND auto=0",
            (allocation_id, account_id),
        )
    )


TAG_KIND = tags.ResourceKind(("eipalloc",), "elastic-ip", "InvalidAllocationID.NotFound", allocation_visible)


# -- instances' public addresses -------------------------------------------------------------------------


def assign_system(tx: Tx, account_id: str, instance_ids: Sequence[str]) -> dict[str, str]:
    """A public address from the pool for each instance (as many as are free): instance id -> address."""
    free = tx.all(
        "SELECT public_ip FROM clc_addresses WHERE account_id IS NULL ORDER BY ip_order LIMIT ?",
        (len(instance_ids),),
    )
    assigned = {
        instance_id: str(row["public_ip"]) for instance_id, row in zip(instance_ids, free, strict=False)
    }
    now = time.time()
    tx.executemany(
        "UPDATE clc_addresses SET account_id=?, instance_id=?, auto=1, allocated=? WHERE public_ip=?",
        [(account_id, instance_id, now, ip) for instance_id, ip in assigned.items()],
    )
    return assigned


def public_ips_of(tx: Tx, instance_ids: Sequence[str]) -> dict[str, str]:
    """instance id -> its public address, for those that have one."""
    found: dict[str, str] = {}
    for start in range(0, len(instance_ids), CHUNK):
        chunk = list(instance_ids[start : start + CHUNK])
        marks = ",".join("?" * len(chunk))
        for r in tx.all(
            f"SELECT instance_id, public_ip FROM clc_addresses WHERE instance_id IN ({marks})", chunk
        ):
            found[r["instance_id"]] = r["public_ip"]
    return found


def release_instances(tx: Tx, instance_ids: Sequence[str]) -> None:
    """These instances ended: system addresses go back to the pool, elastic IPs are disassociated."""
    for instance_id in instance_ids:
        _let_go(tx, instance_id)


def instances_with_addresses(tx: Tx) -> list[str]:
    return [
        r["instance_id"]
        for r in tx.all("SELECT instance_id FROM clc_addresses WHERE instance_id IS NOT NULL")
    ]
