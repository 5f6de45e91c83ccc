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
- Security groups and public addresses: the CLC's network view (`apply_view`, from every DescribeResources)
  rendered by filters.py (a chain per group, DNAT/SNAT per public address) and applied by firewall.py with
  one `iptables-restore --noflush` of our chains only, again whenever the view or a lease changes; a restart
  keeps the last run's rules until its first view replaces them whole.

Everything that touches the network runs inside `cc.netns` (`ip netns exec NS ...`) when it is set, on the
host otherwise. Without the bridge the CC still allocates addresses but runs no DHCP and hands out
NetConfig.bridge = None, so nodes give instances no NIC.

The CC's interface is `VmNetwork` (euca/roles/cc/vmnet.py), built by `create_network(ctx)`:
`allocate(instance_id) -> NetConfig` (raises `NetworkFull`), `release(instance_id)`,
`adopt(instance_id, mac, ip)`, and `run()`, a trio service (`await nursery.start(network.run)`). Beyond it:
`retain(ids)` (release what no node knows any more), `sync()` (wait until dnsmasq serves every change),
`apply_view(view)` and `rules_sync()` (wait until the rules reflect it).
Allocation is in memory and immediate; the service writes the file and signals dnsmasq behind it.

addresses.py holds the address pool and the hosts file's format, dnsmasq.py the DHCP server process.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import pwd
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import trio

from euca.core.config import CcConfig
from euca.core.roles import RoleContext
from euca.protocol.cluster import InstanceNetwork, InstanceSpec, NetConfig, NetworkView
from euca.roles.cc.addresses import AddressPool, Lease, parse_hosts, render_hosts
from euca.roles.cc.dnsmasq import Dnsmasq, dnsmasq_argv
from euca.roles.cc.filters import MAX_CHAIN_NAME, chain_name
from euca.roles.cc.firewall import Firewall, in_netns, run_command
from euca.roles.cc.imds import METADATA_PORT, MetadataServer, listen_in_netns
from euca.roles.cc.launched import launched_network, with_launches
from euca.roles.cc.metadata import Catalog, MetadataRecord

__all__ = ["JUMPS", "MAX_CHAIN_NAME", "ClusterNetwork", "chain_name", "create_network", "in_netns"]

# (table, built-in chain) that jump to EUCA-<cluster> of that table (firewall.jumps has all of ours).
JUMPS = (("filter", "FORWARD"), ("nat", "POSTROUTING"))

log = logging.getLogger("euca.cc.network")

HOSTS_FILE = "dhcp-hosts"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        self.subnet_from_clc = False  # True once the CLC's subnet replaced the configured one
        self.bridge = bridge or None
        self.netns = netns or None
        self.state_dir = Path(state_dir)
        self.hosts_path = self.state_dir / HOSTS_FILE
        self.chain = chain_name(cluster)
        self.firewall = Firewall(cluster, subnet, self.netns)
        # The CLC's network view (security groups, public addresses), applied by _rules_writer whenever it
        # or the leases change; None until the first poll brings one.
        self.view: NetworkView | None = None
        # Instances launched here since the view that do not appear in it yet (launched.py): enforced
        # from their launch specs until a view of the CLC's lists them.
        self._launched: dict[str, InstanceNetwork] = {}
        self.catalog = Catalog()  # launch facts for the metadata service
        self.metadata: MetadataServer | None = None  # serving while run() runs, on the gateway address
        self._rules_wanted = 0  # bumped on every change of the view or the leases
        self._rules_done = -1  # the last change the rules reflect (or failed to)
        self._rules_failed = False  # the last apply failed: the same view again is tried again
        # Set by run(): the bridge is there, so instances get NICs on it.
        self.bridge_ready = False
        self._service: trio.CancelScope | None = None  # run()'s current service, cancelled by set_subnet
        self._gateway_added: str | None = None  # "address/prefix" this CC put on the bridge itself
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

    def note_launch(self, spec: InstanceSpec) -> None:
        """What the metadata service tells this instance until the CLC's InstanceMetadata arrives, and its
        groups and public address for the rules until the CLC's view lists it."""
        self.catalog.note_launch(spec)
        self._launched[spec.instance_id] = launched_network(spec)
        self._rules_wanted += 1
        self._kick()

    def metadata_record(self, source_ip: str) -> MetadataRecord | None:
        """The instance at this private address, for the metadata service; None if it is none's."""
        lease = next((x for x in self.pool.leases() if x.ip == source_ip), None)
        if lease is None:
            return None
        public = None
        if self.view is not None:
            public = next(
                (i.public_ip for i in self.view.instances if i.instance_id == lease.instance_id), None
            )
            launched = self._launched.get(lease.instance_id)
            if public is None and launched is not None:
                public = launched.public_ip
        else:
            spec = self.catalog.spec(lease.instance_id)
            public = spec.public_ip if spec is not None else None
        base = MetadataRecord(
            instance_id=lease.instance_id,
            local_ipv4=lease.ip,
            mac=lease.mac,
            zone=self.cluster,
            public_ipv4=public,
        )
        return self.catalog.record(base)

    def _release(self, instance_id: str) -> None:
        self._provisional.discard(instance_id)
        self.catalog.forget(instance_id)
        self._launched.pop(instance_id, None)
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

    def apply_view(self, view: NetworkView) -> None:
        """Enforce this view (from a DescribeResources poll); one with the version applied already is
        ignored. Applied behind the call, by the service."""
        if self.view is not None and self.view.version == view.version and not self._rules_failed:
            return
        self.view = view
        if self._launched:
            for listed in view.instances:
                self._launched.pop(listed.instance_id, None)
        self._rules_wanted += 1
        self._kick()

    def enforced_view(self) -> NetworkView | None:
        """The view the rules follow: the CLC's last, with the instances launched here since that it does
        not list yet (launched.py); None before the first."""
        return None if self.view is None else with_launches(self.view, self._launched)

    async def rules_sync(self) -> None:
        """Wait until the rules reflect the view and leases as they are now (or failed to apply)."""
        target = self._rules_wanted
        while self._rules_done < target:
            await self._changed.wait()

    async def sync(self) -> None:
        """Wait until the hosts file holds every change so far and dnsmasq (if it runs) has reloaded it."""
        target = self._generation
        while not (self._written >= target and (self.dhcp is None or self.dhcp.caught_up(target))):
            await self._changed.wait()

    # --- the service -----------------------------------------------------------------------------------

    @property
    def subnet(self) -> str:
        return str(self.pool.network)

    def set_subnet(self, subnet: str) -> bool:
        """Serve `subnet` from now on (the CLC's, set by the admin); False while an instance holds an address
        here (the CLC refuses the change then; a CC restarted meanwhile keeps the old one until they end).
        The service restarts on it: hosts file, the gateway address on the bridge, dnsmasq, the metadata
        listener, and the rules at the next apply."""
        wanted = ipaddress.ip_network(subnet, strict=False)
        if wanted == self.pool.network:
            return True
        if len(self.pool):
            return False
        self.pool = AddressPool(str(wanted))
        self.firewall.set_subnet(str(wanted))
        self.subnet_from_clc = True
        self._provisional.clear()
        log.info("subnet changed cluster=%s subnet=%s", self.cluster, wanted)
        self._bump()
        if self._service is not None:
            self._service.cancel()  # run() starts it again on the new subnet
        return True

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The service (`_serve`), started again after a change of subnet."""
        status: Any = task_status
        while True:
            with trio.CancelScope() as self._service:
                await self._serve(status)
            status = trio.TASK_STATUS_IGNORED
            if not self._service.cancelled_caught:
                return

    async def _serve(self, task_status: Any) -> None:
        """Bridge check, iptables, hosts file, dnsmasq; started() once DHCP serves (or is known not to)."""
        await trio.to_thread.run_sync(lambda: self.state_dir.mkdir(parents=True, exist_ok=True))
        await self._write_hosts()
        where = f"netns={self.netns}" if self.netns else "netns=(host)"
        metadata_socket: socket.socket | None = None
        if self.bridge is None:
            log.info("VM network off (no bridge configured); instances get no NIC")
        elif not await self._bridge_present():
            log.info(
                "VM network off: bridge %s not found %s; instances get no NIC, no DHCP", self.bridge, where
            )
        else:
            self.bridge_ready = True
            await self._check_gateway_address()
            metadata_socket = await self._metadata_listener()
        try:
            if self.bridge_ready:
                await self.firewall.prepare()  # after the metadata listener: its DNAT is in the rules
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._hosts_writer)
                nursery.start_soon(self._expire_restored)
                nursery.start_soon(self._rules_writer)
                if metadata_socket is not None:
                    self.metadata = MetadataServer(self.metadata_record, metadata_socket)
                    metadata_socket = None  # the server closes it
                    await nursery.start(self.metadata.serve)
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
            if metadata_socket is not None:
                metadata_socket.close()
            self.dhcp = None
            self.metadata = None
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
        self._rules_wanted += 1  # a lease came or went: its instance's rules follow
        self._kick()

    async def _rules_writer(self) -> None:
        """Apply the view after changes (one apply for a burst of them); nothing before the first view."""
        while True:
            while self._rules_done >= self._rules_wanted:
                await self._changed.wait()
            target = self._rules_wanted
            if self.view is not None and self.firewall.ready:
                private_ips = {lease.instance_id: lease.ip for lease in self.pool.leases()}
                try:
                    view = self.enforced_view()
                    assert view is not None
                    self._rules_failed = not await self.firewall.apply(view, private_ips)
                except Exception:
                    # The rules stay as they were; the next poll tries again. DHCP must not die of it.
                    log.exception("view not applied version=%s", self.view.version)
                    self._rules_failed = True
            self._rules_done = target
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

    async def _metadata_listener(self) -> socket.socket | None:
        """The metadata service's socket on the gateway address in our namespace (its DNAT then set)."""
        gateway = str(self.pool.gateway)
        try:
            sock: socket.socket = await trio.to_thread.run_sync(
                listen_in_netns, self.netns, gateway, METADATA_PORT
            )
        except OSError as e:
            log.warning("metadata service off: cannot listen on %s:%d: %s", gateway, METADATA_PORT, e)
            return None
        self.firewall.metadata = f"{gateway}:{METADATA_PORT}"
        log.info("metadata service on %s:%d (169.254.169.254:80 DNAT-ed to it)", gateway, METADATA_PORT)
        return sock

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
        wanted = f"{self.pool.gateway}/{self.pool.network.prefixlen}"
        if self._gateway_added and self._gateway_added != wanted and self._gateway_added in addresses:
            # The subnet this CC moved away from: the gateway address it had put there goes.
            await run_command(
                in_netns(self.netns, ["ip", "addr", "del", self._gateway_added, "dev", self.bridge])
            )
            self._gateway_added = None
        if self._gateway_added is None and self.subnet_from_clc and wanted not in addresses:
            # A subnet the admin set (not the setup's): this CC is its gateway, as Eucalyptus's CC was.
            added = await run_command(in_netns(self.netns, ["ip", "addr", "add", wanted, "dev", self.bridge]))
            if added.returncode == 0:
                self._gateway_added = wanted
                addresses.append(wanted)
                log.info("gateway address added bridge=%s address=%s", self.bridge, wanted)
        if not any(ipaddress.IPv4Interface(a).ip == self.pool.gateway for a in addresses):
            log.warning(
                "bridge %s lacks the gateway address %s/%d (has %s); DHCP may not answer",
                self.bridge,
                self.pool.gateway,
                self.pool.network.prefixlen,
                ",".join(addresses) or "none",
            )
