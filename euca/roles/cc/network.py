"""The cluster's VM network, owned by the CC: Eucalyptus's MANAGED-NOVLAN mode reduced to what one cluster
needs now.

- One bridge (`cc.bridge`, made by the setup; inside network namespace `cc.netns` when that is set) that
  every node attaches its instances' NICs to.
- A private subnet (`cc.subnet`); its first address is the bridge's own (the guests' gateway), the rest are
  handed to instances, lowest free first. The MAC is Eucalyptus's (`mac_for_instance`), so an instance keeps
  MAC and address for its life and a restarted CC finds them again: from its last hosts file at start
  (provisionally: a node's report overrides such a lease, and one no node confirms expires), then from what
  the nodes report (`adopt`).
- DHCP from a dnsmasq the CC runs and supervises on the bridge, static leases only: it answers exactly the
  MACs in a dhcp-hostsfile that is rewritten atomically and reloaded with SIGHUP when allocations change
  (restarted instead when an address changes hands: dnsmasq would keep the old owner's lease).
- iptables: a chain of our own, EUCA-<cluster>, in the filter table (accept the subnet's traffic, jumped to
  from FORWARD) and in the nat table (MASQUERADE from the subnet to anywhere else, from POSTROUTING); each is
  declared and refilled with one `iptables-restore --noflush`, so a restart replaces rules instead of adding.
  Security groups (a chain per group, as MANAGED mode had) are not here yet.

Everything that touches the network runs inside `cc.netns` (`ip netns exec NS ...`) when it is set, on the
host otherwise. Without the bridge the CC still allocates addresses but runs no DHCP and hands out
NetConfig.bridge = None, so nodes give instances no NIC.

The CC's interface is `VmNetwork` (euca/roles/cc/vmnet.py), built by `create_network(ctx)`:
`allocate(instance_id) -> NetConfig` (raises `NetworkFull`), `release(instance_id)`,
`adopt(instance_id, mac, ip)`, and `run()`, a trio service (`await nursery.start(network.run)`). Beyond it:
`retain(ids)` (release what no node knows any more) and `sync()` (wait until dnsmasq serves every change).
Allocation is in memory and immediate; the service writes the file and signals dnsmasq behind it.
"""

from __future__ import annotations

import grp
import hashlib
import ipaddress
import logging
import os
import pwd
import re
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from euca.core.config import CcConfig
from euca.core.supervisor import RoleContext
from euca.protocol.cluster import NetConfig, mac_for_instance
from euca.roles.cc.vmnet import NetworkFull

log = logging.getLogger("euca.cc.network")

HOSTS_FILE = "dhcp-hosts"
# iptables refuses longer chain names (XT_EXTENSION_MAXNAMELEN - 1).
MAX_CHAIN_NAME = 28
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOSTNAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


# ---------------------------------------------------------------------------------------------------------
# Addresses (pure)


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
        return sorted(self._by_instance.values(), key=lambda lease: ipaddress.IPv4Address(lease.ip))

    def allocate(self, instance_id: str, mac: str | None = None) -> tuple[Lease, bool]:
        """The instance's lease, a new one at the lowest free address if it has none. (lease, is_new)."""
        current = self._by_instance.get(instance_id)
        if current is not None:
            return current, False
        mac = (mac or mac_for_instance(instance_id)).lower()
        owner = self._by_mac.get(mac)
        if owner is not None:
            raise ValueError(f"MAC {mac} of {instance_id} is already {owner}'s")
        for ip in self._addresses:  # 253 at most for a /24; a linear scan is cheaper than keeping a heap
            if ip not in self._by_ip:
                return self._take(instance_id, mac, ip), True
        raise NetworkFull(f"no free address in {self.network} for {instance_id} ({self.capacity} in use)")

    def release(self, instance_id: str) -> Lease | None:
        lease = self._by_instance.pop(instance_id, None)
        if lease is not None:
            del self._by_ip[ipaddress.IPv4Address(lease.ip)]
            del self._by_mac[lease.mac]
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


# ---------------------------------------------------------------------------------------------------------
# Files and command lines (pure)


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


def chain_name(cluster: str) -> str:
    """EUCA-<cluster>, made safe and short enough for iptables (a hash keeps long names distinct)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cluster)
    name = f"EUCA-{safe}"
    if len(name) <= MAX_CHAIN_NAME and safe == cluster:
        return name
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:8]
    return f"EUCA-{safe[: MAX_CHAIN_NAME - len('EUCA--') - len(digest)]}-{digest}"


def render_rules(chain: str, subnet: str) -> str:
    """iptables-restore --noflush input: declaring a chain that exists flushes it, so this is idempotent."""
    return (
        "*filter\n"
        f":{chain} - [0:0]\n"
        f"-A {chain} -s {subnet} -j ACCEPT\n"
        f"-A {chain} -d {subnet} -j ACCEPT\n"
        "COMMIT\n"
        "*nat\n"
        f":{chain} - [0:0]\n"
        f"-A {chain} -s {subnet} ! -d {subnet} -j MASQUERADE\n"
        "COMMIT\n"
    )


# (table, built-in chain) that jump to our chain of the same name in that table.
JUMPS = (("filter", "FORWARD"), ("nat", "POSTROUTING"))


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def dnsmasq_argv(bridge: str, pool: AddressPool, hosts_path: Path, user: str, group: str) -> list[str]:
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",  # nothing from /etc/dnsmasq.conf
        "--port=0",  # DHCP only, no DNS
        "--log-facility=-",  # to stderr, which we read: readiness and reloads show there
        f"--interface={bridge}",
        "--bind-interfaces",  # other dnsmasqs (libvirt's) may serve other interfaces of this namespace
        f"--dhcp-range={pool.network.network_address},static,{pool.network.netmask},infinite",
        f"--dhcp-option=option:router,{pool.gateway}",
        f"--dhcp-hostsfile={hosts_path}",
        "--dhcp-authoritative",
        "--leasefile-ro",  # leases are static; the hosts file is the state
        "--no-hosts",
        "--no-resolv",
        "--pid-file=",
        # dnsmasq rereads the hosts file on SIGHUP after dropping privileges; it lives in the CC's data dir,
        # which only the CC's user may read, so it runs as that user rather than as "dnsmasq".
        f"--user={user}",
        f"--group={group}",
    ]


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def run_command(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result: subprocess.CompletedProcess[bytes] = await trio.run_process(
        argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    return result


def _err(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stderr or result.stdout or b"").decode(errors="replace").strip().replace("\n", "; ")


# ---------------------------------------------------------------------------------------------------------
# The service


def create_network(ctx: RoleContext) -> ClusterNetwork:
    """The CC's VM network from its config ([cc] subnet, bridge, netns); state under <data_dir>/cc/<cluster>/."""
    return ClusterNetwork.from_config(ctx.config.cc, ctx.config.data_path)


class ClusterNetwork:
    def __init__(
        self,
        cluster: str,
        subnet: str,
        bridge: str | None,
        netns: str | None,
        state_dir: Path | str,
        restore_grace: float = 600.0,
    ):
        self.cluster = cluster
        self.pool = AddressPool(subnet)
        self.bridge = bridge or None
        self.netns = netns or None
        self.state_dir = Path(state_dir)
        self.hosts_path = self.state_dir / HOSTS_FILE
        self.chain = chain_name(cluster)
        # Set by run(): the bridge is there, so instances get NICs on it.
        self.bridge_ready = False
        self.dhcp: Dnsmasq | None = None
        self._generation = 0  # bumped on every change of the leases
        self._written = -1  # generation in the hosts file
        self._written_leases: list[Lease] = []
        self._changed = trio.Event()
        # Leases read back from the last run's hosts file that nothing has confirmed yet: a node's report
        # replaces them, and they expire `restore_grace` seconds after start (their instance ended meanwhile).
        self.restore_grace = restore_grace
        self._provisional: set[str] = set()
        self._restore()

    @classmethod
    def from_config(cls, cc: CcConfig, data_dir: Path | str) -> ClusterNetwork:
        """From the [cc] config section; state under <data_dir>/cc/<cluster>/."""
        return cls(cc.cluster, cc.subnet, cc.bridge, cc.netns, Path(data_dir) / "cc" / cc.cluster)

    # --- what the CC calls (plain calls; the service catches up behind them) ---------------------------

    async def allocate(self, instance_id: str) -> NetConfig:
        """The instance's MAC and address (the same ones again if it has them already)."""
        self._provisional.discard(instance_id)
        lease, new = self.pool.allocate(instance_id)
        if new:
            log.info("address allocated instance=%s ip=%s mac=%s", instance_id, lease.ip, lease.mac)
            self._bump()
        return self._net_config(lease)

    def net_config(self, instance_id: str) -> NetConfig | None:
        lease = self.pool.get(instance_id)
        return None if lease is None else self._net_config(lease)

    async def release(self, instance_id: str) -> None:
        self._release(instance_id)

    def _release(self, instance_id: str) -> None:
        self._provisional.discard(instance_id)
        lease = self.pool.release(instance_id)
        if lease is not None:
            log.info("address released instance=%s ip=%s", instance_id, lease.ip)
            self._bump()

    async def adopt(self, instance_id: str, mac: str, ip: str) -> None:
        self.take_report(instance_id, mac, ip)

    def take_report(self, instance_id: str, mac: str | None, ip: str | None) -> bool:
        """Take what a node reports for a running instance; False (and a log line) when it conflicts."""
        if not mac or not ip:
            return False
        self._provisional.discard(instance_id)
        for holder in self.pool.holders(mac, ip) & self._provisional:
            log.info("restored address superseded instance=%s by=%s", holder, instance_id)
            self._release(holder)
        lease, outcome = self.pool.adopt(instance_id, mac, ip)
        if lease is None:
            log.warning("address not adopted instance=%s ip=%s mac=%s why=%r", instance_id, ip, mac, outcome)
            return False
        if outcome != "same":
            log.info("address %s instance=%s ip=%s mac=%s", outcome, instance_id, ip, mac)
            self._bump()
        return True

    async def retain(self, instance_ids: Iterable[str]) -> None:
        """Release every lease whose instance is not among these (all instances the nodes still know of)."""
        keep = set(instance_ids)
        for lease in self.pool.leases():
            if lease.instance_id not in keep:
                self._release(lease.instance_id)

    async def sync(self) -> None:
        """Wait until the hosts file holds every change so far and dnsmasq (if it runs) has reloaded it."""
        target = self._generation
        while not (self._written >= target and (self.dhcp is None or self.dhcp.caught_up(target))):
            await self._changed.wait()

    # --- the service -----------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bridge check, iptables, hosts file, dnsmasq; started() once DHCP serves (or is known not to)."""
        await trio.to_thread.run_sync(lambda: self.state_dir.mkdir(parents=True, exist_ok=True))
        await self._write_hosts()
        where = f"netns={self.netns}" if self.netns else "netns=(host)"
        if self.bridge is None:
            log.info("VM network off (no bridge configured); instances get no NIC")
        elif not await self._bridge_present():
            log.info(
                "VM network off: bridge %s not found %s; instances get no NIC, no DHCP", self.bridge, where
            )
        else:
            self.bridge_ready = True
            await self._check_gateway_address()
            await self._apply_iptables()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._hosts_writer)
                nursery.start_soon(self._expire_restored)
                if self.bridge_ready:
                    assert self.bridge is not None
                    user = pwd.getpwuid(os.geteuid()).pw_name
                    group = grp.getgrgid(os.getegid()).gr_name
                    argv = in_netns(
                        self.netns, dnsmasq_argv(self.bridge, self.pool, self.hosts_path, user, group)
                    )
                    self.dhcp = Dnsmasq(
                        argv, self.hosts_path, lambda: (self._written, self._written_leases), self._kick
                    )
                    await nursery.start(self.dhcp.run)
                log.info(
                    "VM network up cluster=%s subnet=%s bridge=%s %s dhcp=%s leases=%d",
                    self.cluster,
                    self.pool.network,
                    self.bridge if self.bridge_ready else None,
                    where,
                    "on" if self.dhcp is not None else "off",
                    len(self.pool),
                )
                task_status.started()
        finally:
            self.dhcp = None
            self.bridge_ready = False

    # --- internals -------------------------------------------------------------------------------------

    def _net_config(self, lease: Lease) -> NetConfig:
        return NetConfig(
            mac=lease.mac, private_ip=lease.ip, bridge=self.bridge if self.bridge_ready else None
        )

    def _restore(self) -> None:
        """Leases from the last run's hosts file, so addresses stay put before the nodes are polled."""
        try:
            text = self.hosts_path.read_text()
        except FileNotFoundError:
            return
        for lease in parse_hosts(text):
            if self.pool.adopt(lease.instance_id, lease.mac, lease.ip)[0] is not None:
                self._provisional.add(lease.instance_id)
        if self._provisional:
            log.info("addresses restored from %s count=%d", self.hosts_path, len(self._provisional))

    async def _expire_restored(self) -> None:
        await trio.sleep(self.restore_grace)
        for instance_id in sorted(self._provisional):
            log.info("restored address expired instance=%s (no node reported it)", instance_id)
            self._release(instance_id)

    def _kick(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _bump(self) -> None:
        self._generation += 1
        self._kick()

    async def _write_hosts(self) -> None:
        generation, leases = self._generation, self.pool.leases()
        await trio.to_thread.run_sync(write_atomically, self.hosts_path, render_hosts(leases))
        if generation > self._written:
            self._written, self._written_leases = generation, leases
            if self.dhcp is not None:
                self.dhcp.note_written(leases)
        self._kick()

    async def _hosts_writer(self) -> None:
        """Rewrite the hosts file after changes (one write for a burst of them) and have dnsmasq reread it."""
        while True:
            while self._written >= self._generation and not (self.dhcp and self.dhcp.behind()):
                await self._changed.wait()
            if self._written < self._generation:
                await self._write_hosts()
            if self.dhcp is not None:
                await self.dhcp.reload()

    async def _bridge_present(self) -> bool:
        assert self.bridge is not None
        try:
            result = await run_command(in_netns(self.netns, ["ip", "link", "show", "dev", self.bridge]))
        except OSError as e:
            log.info("cannot look for the bridge: %s", e)
            return False
        return result.returncode == 0

    async def _check_gateway_address(self) -> None:
        assert self.bridge is not None
        result = await run_command(
            in_netns(self.netns, ["ip", "-o", "-4", "addr", "show", "dev", self.bridge])
        )
        addresses = re.findall(r"inet (\S+)", result.stdout.decode(errors="replace"))
        if not any(ipaddress.IPv4Interface(a).ip == self.pool.gateway for a in addresses):
            log.warning(
                "bridge %s lacks the gateway address %s/%d (has %s); DHCP may not answer",
                self.bridge,
                self.pool.gateway,
                self.pool.network.prefixlen,
                ",".join(addresses) or "none",
            )

    async def _apply_iptables(self) -> None:
        """Our chain (re)filled in one go, and one jump to it from each built-in chain, added if missing."""
        try:
            result = await run_command(
                in_netns(self.netns, ["iptables-restore", "-w", "--noflush"]),
                stdin=render_rules(self.chain, str(self.pool.network)).encode(),
            )
            if result.returncode != 0:
                log.warning("iptables rules not applied chain=%s error=%r", self.chain, _err(result))
                return
            for table, builtin in JUMPS:
                jump = ["-t", table, "-w"]
                check = await run_command(
                    in_netns(self.netns, ["iptables", *jump, "-C", builtin, "-j", self.chain])
                )
                if check.returncode == 0:
                    continue
                add = await run_command(
                    in_netns(self.netns, ["iptables", *jump, "-I", builtin, "1", "-j", self.chain])
                )
                if add.returncode != 0:
                    log.warning("iptables jump not added %s/%s error=%r", table, builtin, _err(add))
        except OSError as e:
            log.warning("iptables not usable: %s", e)
            return
        log.info("iptables chain ready chain=%s subnet=%s", self.chain, self.pool.network)


class ServedLeases:
    """Every (MAC, address) pair one dnsmasq process has read from a hosts file, hence may hold a lease for.

    dnsmasq keeps the leases it gave in memory (leasefile-ro; "infinite") and does not give a leased address
    to another MAC, even when the hosts file now says so. Additions need only a SIGHUP; an address or MAC
    that changes hands needs a fresh process, which starts with no leases (static ones: clients that come
    back get the same answer as before).
    """

    def __init__(self, leases: Iterable[Lease] = ()):
        self._mac_of: dict[str, str] = {}
        self._ip_of: dict[str, str] = {}
        self.add(leases)

    def add(self, leases: Iterable[Lease]) -> None:
        for lease in leases:
            self._mac_of[lease.ip] = lease.mac
            self._ip_of[lease.mac] = lease.ip

    def conflict(self, leases: Iterable[Lease]) -> str | None:
        """Why these leases cannot be loaded by a SIGHUP, or None."""
        for lease in leases:
            mac = self._mac_of.get(lease.ip, lease.mac)
            if mac != lease.mac:
                return f"{lease.ip} moves from {mac} to {lease.mac}"
            ip = self._ip_of.get(lease.mac, lease.ip)
            if ip != lease.ip:
                return f"{lease.mac} moves from {ip} to {lease.ip}"
        return None


class Dnsmasq:
    """One dnsmasq, kept running: restarted when it exits (with backoff), stopped with its nursery.

    dnsmasq logs "read <hostsfile>" to stderr once its sockets are bound and it has read the file, at start
    and after each SIGHUP: that line is how we know it serves, and which version of the file it serves.
    """

    def __init__(
        self,
        argv: list[str],
        hosts_path: Path,
        written: Callable[[], tuple[int, list[Lease]]],
        on_change: Callable[[], None],
    ):
        self.argv = argv
        self.read_marker = f"read {hosts_path}"
        self._written = written  # (generation, leases) of the hosts file on disk
        self._on_change = on_change
        self.process: trio.Process | None = None
        self.ready = False  # the current process has read the file at least once
        self.loaded = -1  # generation of the hosts file it last confirmed reading
        self.starts = 0  # processes that became ready
        self.disabled = False  # cannot be started at all: DHCP stays off
        self._served = ServedLeases()
        self._restart_why: str | None = None
        self._reads = 0  # "read" lines of the current process
        self._started = trio.Event()
        self._read_seen = trio.Event()
        self._tail: deque[str] = deque(maxlen=5)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.ready else None

    def caught_up(self, generation: int) -> bool:
        return self.disabled or self.loaded >= generation

    def behind(self) -> bool:
        return self.ready and self._restart_why is None and self.loaded < self._written()[0]

    def note_written(self, leases: list[Lease]) -> None:
        """A new hosts file: a process that has not read its file yet may read this one."""
        if self.process is not None and not self.ready:
            self._served.add(leases)

    def _poke_readers(self) -> None:
        self._read_seen.set()
        self._read_seen = trio.Event()

    async def wait_started(self, count: int) -> None:
        """Until `count` processes have become ready (tests: after killing one)."""
        while self.starts < count:
            await self._started.wait()

    async def reload(self) -> None:
        """SIGHUP and wait for the reread (bounded: an old dnsmasq may log differently); or a restart."""
        process = self.process
        if process is None or not self.behind():
            return
        (generation, leases), reads, pid = self._written(), self._reads, process.pid
        why = self._served.conflict(leases)
        if why is not None:
            log.info("dnsmasq restarting to drop old leases pid=%d why=%r", pid, why)
            self._restart_why = why
            process.terminate()
            return
        self._served.add(leases)
        process.send_signal(signal.SIGHUP)
        with trio.move_on_after(10) as scope:
            while self._reads == reads and self.process is process:
                await self._read_seen.wait()
        if scope.cancelled_caught:
            log.warning("dnsmasq did not confirm rereading the hosts file pid=%d", pid)
        if self.process is process:
            self.loaded = max(self.loaded, generation)
            self._on_change()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        backoff = 0.5
        while True:
            began = trio.current_time()
            try:
                await self._run_once(task_status)
            except OSError as e:
                log.warning("dnsmasq cannot start: %s; DHCP off", e)
                self.process, self.disabled = None, True
                self._on_change()
                task_status.started()
                await trio.sleep_forever()
            task_status = trio.TASK_STATUS_IGNORED
            if self._restart_why is not None:
                self._restart_why = None
                continue  # we stopped it on purpose
            # Restart at once after a long run, slower and slower while it keeps dying young.
            backoff = 0.5 if trio.current_time() - began > 60 else min(backoff * 2, 30.0)
            await trio.sleep(backoff)

    async def _run_once(self, task_status: Any) -> None:
        generation, leases = self._written()
        process = await trio.lowlevel.open_process(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.process, self.ready, self._reads = process, False, 0
        self._served = ServedLeases(leases)
        self._tail.clear()
        try:
            async with trio.open_nursery() as nursery:
                reader_done = trio.Event()
                nursery.start_soon(self._read_log, process, generation, task_status, reader_done)
                code = await process.wait()
                with trio.move_on_after(2):  # the last words (why it exited) are still in the pipe
                    await reader_done.wait()
                nursery.cancel_scope.cancel()
            if self._restart_why is None:
                log.warning(
                    "dnsmasq exited pid=%d code=%s last=%r; restarting",
                    process.pid,
                    code,
                    " | ".join(self._tail),
                )
            if not self.ready:
                task_status.started()  # the CC runs on; DHCP comes when a restart succeeds
        finally:
            self.process, self.ready = None, False
            self._poke_readers()
            self._on_change()
            with trio.CancelScope(shield=True):
                await _stop(process)

    async def _read_log(
        self, process: trio.Process, generation: int, task_status: Any, done: trio.Event
    ) -> None:
        assert process.stderr is not None
        buffer = b""
        try:
            async for chunk in process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    self._tail.append(line)
                    if line.endswith(self.read_marker):
                        self._reads += 1
                        self._poke_readers()
                        if not self.ready:
                            self.ready, self.loaded = True, max(self.loaded, generation)
                            self.starts += 1
                            self._started.set()
                            self._started = trio.Event()
                            log.info("dnsmasq serving pid=%d hosts=%s", process.pid, self.read_marker[5:])
                            self._on_change()
                            task_status.started()
                    elif "DHCPACK" in line or "no address" in line or "failed" in line:
                        log.info("dnsmasq: %s", line.split(": ", 1)[-1])
                    else:
                        log.debug("dnsmasq: %s", line)
        finally:
            done.set()


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
