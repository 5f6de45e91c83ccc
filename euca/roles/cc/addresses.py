"""Addresses of the cluster's subnet for instances (pure): the pool, and the dnsmasq hosts file that
lists its leases. The CC's network (network.py) allocates from the pool; the file is how dnsmasq learns them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from euca.protocol.cluster import mac_for_instance
from euca.roles.cc.vmnet import NetworkFull

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOSTNAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Lease:
    """One instance's place on the subnet: what the dhcp-hostsfile says about it."""

    instance_id: str
    mac: str
    ip: str


class AddressPool:
    """Addresses of one subnet for instances: lowest free first; the first host address is the gateway."""

    def __init__(self, subnet: str):
        self.network = ipaddress.IPv4Network(subnet, strict=True)
        hosts = self.network.hosts()
        self.gateway = next(hosts, None)
        self._addresses = list(hosts)  # allocatable, in order
        # A /31's two "hosts" include the network and broadcast addresses a DHCP subnet cannot use.
        if self.gateway is None or not self._addresses or self.network.prefixlen > 30:
            raise ValueError(f"subnet {subnet} has no address for instances besides the gateway")
        self._index = {ip: i for i, ip in enumerate(self._addresses)}
        # Every address below this index is taken: allocation looks from here, so 10,000 leases in a /16
        # cost one step each instead of a scan over all of them (lowest free first all the same).
        self._free_from = 0
        self._by_instance: dict[str, Lease] = {}
        self._by_ip: dict[ipaddress.IPv4Address, str] = {}
        self._by_mac: dict[str, str] = {}

    @property
    def capacity(self) -> int:
        return len(self._addresses)

    def __len__(self) -> int:
        return len(self._by_instance)

    def get(self, instance_id: str) -> Lease | None:
        return self._by_instance.get(instance_id)

    def holders(self, mac: str, ip: str) -> set[str]:
        """Instances that hold this MAC or this address."""
        found = {self._by_mac.get(mac.lower())}
        try:
            found.add(self._by_ip.get(ipaddress.IPv4Address(ip)))
        except ValueError:
            pass
        return {x for x in found if x is not None}

    def leases(self) -> list[Lease]:
        """All leases in address order."""
        # inet_aton's 4 bytes sort as the addresses do, ~10x cheaper than IPv4Address (10,000 leases are
        # sorted on every change of the hosts file).
        return sorted(self._by_instance.values(), key=lambda lease: socket.inet_aton(lease.ip))

    def allocate(self, instance_id: str, mac: str | None = None) -> tuple[Lease, bool]:
        """The instance's lease, a new one at the lowest free address if it has none. (lease, is_new)."""
        current = self._by_instance.get(instance_id)
        if current is not None:
            return current, False
        mac = (mac or mac_for_instance(instance_id)).lower()
        owner = self._by_mac.get(mac)
        if owner is not None:
            raise ValueError(f"MAC {mac} of {instance_id} is already {owner}'s")
        for i in range(self._free_from, len(self._addresses)):
            ip = self._addresses[i]
            if ip not in self._by_ip:
                self._free_from = i + 1
                return self._take(instance_id, mac, ip), True
        self._free_from = len(self._addresses)
        raise NetworkFull(f"no free address in {self.network} for {instance_id} ({self.capacity} in use)")

    def release(self, instance_id: str) -> Lease | None:
        lease = self._by_instance.pop(instance_id, None)
        if lease is not None:
            addr = ipaddress.IPv4Address(lease.ip)
            del self._by_ip[addr]
            del self._by_mac[lease.mac]
            self._free_from = min(self._free_from, self._index[addr])
        return lease

    def adopt(self, instance_id: str, mac: str, ip: str) -> tuple[Lease | None, str]:
        """Record what a node reports. (lease, outcome); outcome is "same", "adopted", "moved", or why not."""
        mac = mac.lower()
        if not _MAC.match(mac):
            return None, f"bad MAC {mac!r}"
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return None, f"bad address {ip!r}"
        if addr not in self._index:
            return None, f"{ip} is not an instance address of {self.network}"
        current = self._by_instance.get(instance_id)
        if current is not None and current.ip == ip and current.mac == mac:
            return current, "same"
        ip_owner = self._by_ip.get(addr)
        if ip_owner is not None and ip_owner != instance_id:
            return None, f"{ip} is {ip_owner}'s"
        mac_owner = self._by_mac.get(mac)
        if mac_owner is not None and mac_owner != instance_id:
            return None, f"MAC {mac} is {mac_owner}'s"
        # The node is the truth for an instance that runs: its report replaces what we had for it.
        self.release(instance_id)
        return self._take(instance_id, mac, addr), "adopted" if current is None else "moved"

    def _take(self, instance_id: str, mac: str, ip: ipaddress.IPv4Address) -> Lease:
        lease = Lease(instance_id, mac, str(ip))
        self._by_instance[instance_id] = lease
        self._by_ip[ip] = instance_id
        self._by_mac[mac] = instance_id
        return lease


def render_hosts(leases: Iterable[Lease]) -> str:
    """dnsmasq --dhcp-hostsfile lines: `mac,ip,hostname` (the instance id names the guest)."""
    lines = []
    for lease in leases:
        fields = [lease.mac, lease.ip]
        if _HOSTNAME.match(lease.instance_id):
            fields.append(lease.instance_id)
        lines.append(",".join(fields))
    return "".join(line + "\n" for line in lines)


def parse_hosts(text: str) -> list[Lease]:
    """Leases from a hosts file we wrote (lines with a hostname); anything else is skipped."""
    leases = []
    for line in text.splitlines():
        fields = line.strip().split(",")
        if len(fields) == 3 and _MAC.match(fields[0].lower()):
            leases.append(Lease(instance_id=fields[2], mac=fields[0].lower(), ip=fields[1]))
    return leases
