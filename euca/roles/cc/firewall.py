"""The cluster's filter and NAT applied for real, in the CC's namespace (`cc.netns`, or the host): the
rules rendered by filters.py written with one `iptables-restore --noflush` (our chains only, never anyone
else's), the built-in chains' jumps to ours added once, and the public addresses put on the uplink.

Public addresses on the uplink: each as a /32 on the interface of the namespace's default route, labelled
`<dev>:<cluster tag>`, as Eucalyptus put them on its public interface. The CC then answers ARP for them on the public
segment by itself, and a client routed to the pool through the CC (the one-box's `euca-client` namespace)
works the same; proxy-ARP would answer for whatever the routing table sends to the bridge, an address at a
time is exact. DNAT happens in PREROUTING, before routing, so a local /32 never captures the instance's
traffic; OUTPUT's DNAT covers the CC's own connections to a public address. The label tells ours from the
operator's after a restart; stale ones (an address released while the CC was down) are removed.

Bridged traffic (guest to guest on the bridge) passes FORWARD only with bridge netfilter, a per-namespace
sysctl (`net.bridge.bridge-nf-call-iptables`) set at start with IP forwarding; where it is missing the
filter covers only what the CC routes (traffic from outside the cluster), and a warning says so.
"""

from __future__ import annotations

import logging
import re
import subprocess

import trio

from euca.protocol.cluster import NetworkView
from euca.roles.cc.filters import ChainNames, jumps, our_chains, render

log = logging.getLogger("euca.cc.network")

MAX_LABEL = 15  # IFNAMSIZ - 1
SYSCTLS = ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1")


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


async def run_command(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result: subprocess.CompletedProcess[bytes] = await trio.run_process(
        argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    return result


def command_error(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stderr or result.stdout or b"").decode(errors="replace").strip().replace("\n", "; ")


def default_route_device(route_output: str) -> str | None:
    """The device of `ip -4 route show default`'s first route."""
    m = re.search(r"\bdev (\S+)", route_output)
    return m.group(1) if m else None


def uplink_label(dev: str, names: ChainNames) -> str | None:
    """`<dev>:<cluster tag>`: tells this cluster's public addresses from the operator's and from another
    cluster's sharing the namespace; None when the device's name leaves no room (IFNAMSIZ)."""
    label = f"{dev}:{names.tag}"
    return label if len(label) <= MAX_LABEL else None


def labelled_addresses(addr_output: str, label: str) -> set[str]:
    """/32 addresses carrying `label` in `ip -o -4 addr show dev X` output."""
    found = set()
    for line in addr_output.splitlines():
        m = re.search(r"inet (\S+)/32 .*\b" + re.escape(label) + r"(\s|\\|$)", line)
        if m:
            found.add(m.group(1))
    return found


class Firewall:
    """One cluster's rules in one namespace. `prepare()` once when the bridge is there, then `apply()` for
    each view (or lease change); an apply whose text equals the last one's is skipped."""

    def __init__(self, cluster: str, subnet: str, netns: str | None, metadata: str | None = None):
        self.names = ChainNames.of(cluster)
        self.metadata = metadata  # "address:port" of the metadata listener, once it listens
        self.subnet = subnet
        self.netns = netns
        self.ready = False
        self._applied: str | None = None  # the last text applied (without the deletions of stale chains)
        self._groups: set[str] | None = None  # our group chains in the kernel; None: read them first
        self._unlabelled: set[str] = (
            set()
        )  # addresses we put on an uplink whose name leaves no room for a label

    async def _run(self, argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return await run_command(in_netns(self.netns, argv), stdin)

    async def prepare(self) -> None:
        """Forwarding and bridge netfilter on (in our namespace), our chains there (a restarted CC keeps the
        last run's rules until the first view replaces them: no window where everything is open), and the
        jumps to them."""
        try:
            if self.netns:
                for setting in SYSCTLS:
                    result = await self._run(["sysctl", "-q", "-w", setting])
                    if result.returncode != 0:
                        log.warning(
                            "sysctl %s failed in netns %s: %s%s",
                            setting,
                            self.netns,
                            command_error(result),
                            " (guest-to-guest traffic on the bridge is not filtered)"
                            if "bridge" in setting
                            else "",
                        )
            else:
                forwarding = await trio.Path("/proc/sys/net/ipv4/ip_forward").read_text()
                if forwarding.strip() != "1":
                    # The host's settings are the operator's: said, not changed.
                    log.warning(
                        "IP forwarding is off on this host: guests and public addresses are unreachable"
                    )
            kept = (await self._run(["iptables", "-w", "-S", self.names.cluster])).returncode == 0
            if not kept:
                base = render(self.names, self.subnet, None, {}, metadata=self.metadata)
                result = await self._run(["iptables-restore", "-w", "--noflush"], base.text.encode())
                if result.returncode != 0:
                    log.warning(
                        "iptables rules not applied chain=%s error=%r",
                        self.names.cluster,
                        command_error(result),
                    )
                    return
            for table, builtin, chain in jumps(self.names):
                jump = ["iptables", "-t", table, "-w"]
                if (await self._run([*jump, "-C", builtin, "-j", chain])).returncode == 0:
                    continue
                add = await self._run([*jump, "-I", builtin, "1", "-j", chain])
                if add.returncode != 0:
                    log.warning("iptables jump not added %s/%s error=%r", table, builtin, command_error(add))
        except OSError as e:
            log.warning("iptables not usable: %s", e)
            return
        self.ready = True
        log.info(
            "iptables chains ready chain=%s subnet=%s rules=%s",
            self.names.cluster,
            self.subnet,
            "kept from the last run until the first view" if kept else "open until the first view",
        )

    def set_subnet(self, subnet: str) -> None:
        """The cluster moved to another subnet (it had no instances): the next apply renders for it."""
        self.subnet = subnet
        self._applied = None

    async def apply(self, view: NetworkView, private_ips: dict[str, str]) -> bool:
        """The view's rules and public addresses in place; False if iptables refused them."""
        if not self.ready:
            return False
        wanted = render(self.names, self.subnet, view, private_ips, metadata=self.metadata)
        if wanted.text != self._applied:
            if self._groups is None:
                saved = await self._run(["iptables-save", "-t", "filter"])
                self._groups = our_chains(self.names, saved.stdout.decode(errors="replace"))
            ruleset = render(
                self.names, self.subnet, view, private_ips, stale_chains=self._groups, metadata=self.metadata
            )
            result = await self._run(["iptables-restore", "-w", "--noflush"], ruleset.text.encode())
            if result.returncode != 0:
                log.warning("view not applied version=%s error=%r", view.version, command_error(result))
                self._applied, self._groups = None, None
                return False
            self._applied, self._groups = wanted.text, set(wanted.group_chains)
            log.info(
                "view applied version=%s instances=%d groups=%d public=%d",
                view.version,
                len(view.instances),
                len(wanted.group_chains),
                len(wanted.public_ips),
            )
        await self._sync_uplink(set(wanted.public_ips))
        return True

    async def _sync_uplink(self, public_ips: set[str]) -> None:
        route = await self._run(["ip", "-4", "route", "show", "default"])
        dev = default_route_device(route.stdout.decode(errors="replace"))
        if dev is None:
            if public_ips:
                log.debug("no default route in the CC's namespace: public addresses are not put on an uplink")
            return
        label = uplink_label(dev, self.names)
        shown = await self._run(["ip", "-o", "-4", "addr", "show", "dev", dev])
        text = shown.stdout.decode(errors="replace")
        present = labelled_addresses(text, label) if label else set(self._unlabelled)
        on_dev = set(re.findall(r"inet (\S+)/32", text))
        for ip in sorted(public_ips - present):
            if ip in on_dev and ip not in present:
                continue  # the operator's own address: leave it
            argv = ["ip", "addr", "add", f"{ip}/32", "dev", dev] + (["label", label] if label else [])
            result = await self._run(argv)
            if result.returncode != 0:
                log.warning("public address not added ip=%s dev=%s error=%r", ip, dev, command_error(result))
            elif label is None:
                self._unlabelled.add(ip)
        for ip in sorted(present - public_ips):
            result = await self._run(["ip", "addr", "del", f"{ip}/32", "dev", dev])
            if result.returncode != 0 and ip in on_dev:
                log.warning(
                    "public address not removed ip=%s dev=%s error=%r", ip, dev, command_error(result)
                )
            self._unlabelled.discard(ip)
