"""The CC's VM network for real, inside network namespaces these tests create (and delete): a bridge in a
"cc" namespace, the network service started there, guests as veth ends in namespaces of their own that ask
for an address with busybox udhcpc. The host's own interfaces and iptables are only read, never changed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from euca.protocol.cluster import NetConfig
from euca.roles.cc.network import ClusterNetwork

SUBNET = "10.98.0.0/24"
GATEWAY = "10.98.0.1"
BRIDGE = "euca-br0"  # the setup's name; inside our namespace it clashes with nothing

# Bounds the waits on the network service, so a broken one fails a test instead of hanging it.
HANG_GUARD = 60


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _netns_unusable() -> str | None:
    """Why this machine cannot run these tests, or None."""
    for tool in ("ip", "dnsmasq", "busybox", "iptables", "iptables-restore"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"euca-probe-{uuid.uuid4().hex[:8]}"
    result = sh("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"ip netns add fails here: {result.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


_REASON = _netns_unusable()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


class Namespaces:
    """Namespaces made for one test; removed afterwards with whatever still runs in them."""

    def __init__(self) -> None:
        self.prefix = f"euca-t{uuid.uuid4().hex[:6]}"
        self.names: list[str] = []

    def add(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def cluster(self, tag: str = "cc") -> str:
        """A namespace with the bridge the setup makes: BRIDGE, GATEWAY/24, up."""
        ns = self.add(tag)
        sh("ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", ns, "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        sh("ip", "-n", ns, "link", "set", BRIDGE, "up")
        return ns

    def guest(self, cluster_ns: str, tag: str, mac: str) -> str:
        """A namespace whose eth0 (with this MAC) is cabled to the cluster's bridge."""
        ns = self.add(tag)
        port = f"v{tag}"[:15]
        sh(
            "ip",
            "link",
            "add",
            port,
            "netns",
            cluster_ns,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        sh("ip", "-n", cluster_ns, "link", "set", port, "master", BRIDGE, "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return ns

    def pids(self, ns: str) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]

    def cleanup(self) -> None:
        for ns in reversed(self.names):
            for pid in self.pids(ns):  # only processes in namespaces this test made
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.cleanup()


def netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def pid_netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


async def dhcp(ns: str, script_dir: Path, tries: int = 10) -> dict[str, str] | None:
    """busybox udhcpc on the guest's eth0: the lease it got (and applied), or None if nobody answered."""
    env_file = script_dir / f"{ns}.lease"
    script = script_dir / "udhcpc.sh"
    if not script.exists():
        script.write_text(
            "#!/bin/sh\n"
            '[ "$1" = bound ] || exit 0\n'
            'ip addr add "$ip/$mask" dev "$interface"\n'
            'printf "ip=%s\\nmask=%s\\nrouter=%s\\n" "$ip" "$mask" "$router" > "$LEASE_FILE"\n'
        )
        script.chmod(0o755)
    result = await trio.run_process(
        ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n"]
        + ["-t", str(tries), "-T", "1", "-s", str(script)],
        env={**os.environ, "LEASE_FILE": str(env_file)},
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines())


def guest_addresses(ns: str) -> list[str]:
    out = sh("ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "eth0").stdout
    return [field.split("/")[0] for line in out.splitlines() for field in line.split()[3:4]]


def iptables_save(ns: str | None) -> str:
    argv = ["iptables-save"]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    # Without comments and counters, so two dumps of the same rules compare equal.
    lines = sh(*argv).stdout.splitlines()
    return "\n".join(line.split(" [")[0] for line in lines if not line.startswith("#"))


def network(ns: str, tmp_path: Path, cluster: str = "") -> ClusterNetwork:
    return ClusterNetwork(cluster or f"t{uuid.uuid4().hex[:6]}", SUBNET, BRIDGE, ns, tmp_path / "state")


async def test_guests_get_their_addresses_from_dnsmasq_in_the_namespace(
    netns: Namespaces, tmp_path: Path
) -> None:
    cc = netns.cluster()
    net = network(cc, tmp_path)
    # One allocation before the service starts (dnsmasq reads it at start), one after (SIGHUP).
    first = await net.allocate("i-0000aaaa")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(net.run)
        assert net.bridge_ready and net.dhcp is not None and net.dhcp.pid is not None
        first = await net.allocate("i-0000aaaa")  # now with the bridge
        assert first == NetConfig(mac="d0:0d:00:00:aa:aa", private_ip="10.98.0.2", bridge=BRIDGE)

        # dnsmasq runs in the cluster's namespace, not on the host.
        pid = net.dhcp.pid
        assert pid_netns_inode(pid) == netns_inode(cc)
        assert pid_netns_inode(pid) != pid_netns_inode(os.getpid())
        assert netns.pids(cc) == [pid]

        g1 = netns.guest(cc, "g1", first.mac)
        lease = await dhcp(g1, tmp_path)
        assert lease == {"ip": "10.98.0.2", "mask": "24", "router": GATEWAY}
        assert guest_addresses(g1) == ["10.98.0.2"]
        ping = await trio.run_process(
            ["ip", "netns", "exec", g1, "busybox", "ping", "-c", "1", "-W", "5", GATEWAY], check=False
        )
        assert ping.returncode == 0

        # A new instance after start: the hosts file is rewritten and reread by the same dnsmasq.
        second = await net.allocate("i-0000bbbb")
        assert second.private_ip == "10.98.0.3"
        with trio.fail_after(HANG_GUARD):
            await net.sync()
        assert net.dhcp.pid == pid
        g2 = netns.guest(cc, "g2", second.mac)
        assert await dhcp(g2, tmp_path) == {"ip": "10.98.0.3", "mask": "24", "router": GATEWAY}

        # A MAC that is no instance's gets nothing (static leases only).
        stranger = netns.guest(cc, "g3", "d0:0d:de:ad:be:ef")
        assert await dhcp(stranger, tmp_path, tries=2) is None

        # A released address is reused by the next instance, whose MAC then gets it.
        await net.release("i-0000aaaa")
        third = await net.allocate("i-0000cccc")
        assert third.private_ip == "10.98.0.2"
        with trio.fail_after(HANG_GUARD):
            await net.sync()
        g4 = netns.guest(cc, "g4", third.mac)
        assert await dhcp(g4, tmp_path) == {"ip": "10.98.0.2", "mask": "24", "router": GATEWAY}
        nursery.cancel_scope.cancel()

    # Stopping the service stops dnsmasq: nothing runs in the namespace any more.
    assert net.dhcp is None
    assert netns.pids(cc) == []


async def test_iptables_chain_lives_in_the_namespace_and_restarts_do_not_duplicate(
    netns: Namespaces, tmp_path: Path
) -> None:
    cc = netns.cluster()
    cluster = f"t{uuid.uuid4().hex[:6]}"
    chain = f"EUCA-{cluster}"
    host_before = iptables_save(None)
    dumps = []
    for _ in range(2):
        net = network(cc, tmp_path, cluster)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(HANG_GUARD):
                await nursery.start(net.run)
            assert net.chain == chain
            dumps.append(iptables_save(cc))
            nursery.cancel_scope.cancel()
        assert netns.pids(cc) == []
    first, second = dumps
    assert first == second  # the same rules after a restart, none added twice
    assert f"-A {chain} -s {SUBNET} -j ACCEPT" in first
    assert f"-A {chain} -d {SUBNET} -j ACCEPT" in first
    assert f"-A {chain} -s {SUBNET} ! -d {SUBNET} -j MASQUERADE" in first
    assert first.count(f"-A FORWARD -j {chain}") == 1
    assert first.count(f"-A POSTROUTING -j {chain}") == 1
    # The host's tables are untouched.
    host_after = iptables_save(None)
    assert chain not in host_after
    assert host_after == host_before


async def test_dnsmasq_is_restarted_when_it_dies(netns: Namespaces, tmp_path: Path) -> None:
    cc = netns.cluster()
    net = network(cc, tmp_path)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(net.run)
        assert net.dhcp is not None
        old = net.dhcp.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        # Allocated while no dnsmasq runs: the next one must serve it.
        config = await net.allocate("i-0000dddd")
        with trio.fail_after(HANG_GUARD):
            await net.dhcp.wait_started(2)
        new = net.dhcp.pid
        assert new is not None and new != old
        assert pid_netns_inode(new) == netns_inode(cc)
        with trio.fail_after(HANG_GUARD):
            await net.sync()
        guest = netns.guest(cc, "g1", config.mac)
        assert await dhcp(guest, tmp_path) == {"ip": config.private_ip, "mask": "24", "router": GATEWAY}
        nursery.cancel_scope.cancel()
    assert netns.pids(cc) == []


async def test_without_the_bridge_in_the_namespace_no_dhcp_runs(netns: Namespaces, tmp_path: Path) -> None:
    cc = netns.add("bare")
    net = network(cc, tmp_path)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(net.run)
        assert not net.bridge_ready and net.dhcp is None
        assert (await net.allocate("i-0000eeee")).bridge is None
        assert netns.pids(cc) == []
        nursery.cancel_scope.cancel()
    assert f"EUCA-{net.cluster}" not in iptables_save(cc)
