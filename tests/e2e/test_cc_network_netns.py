"""The CC's VM network for real, inside network namespaces these tests create (and delete): a bridge in a
"cc" namespace, the network service started there, guests as veth ends in namespaces of their own that ask
for an address with busybox udhcpc. The host's own interfaces and iptables are only read, never changed."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import trio

from euca.protocol.cluster import NetConfig
from euca.roles.cc.network import ClusterNetwork
from helpers.netns_lab import BRIDGE, Lab, addresses, iptables_save, unusable_reason

SUBNET = "10.98.0.0/24"
GATEWAY = "10.98.0.1"

# Bounds the waits on the network service, so a broken one fails a test instead of hanging it.
HANG_GUARD = 60


_REASON = unusable_reason("busybox")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


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
    return [cidr.split("/")[0] for cidr in addresses(ns, "eth0")]


def network(ns: str, tmp_path: Path, cluster: str = "") -> ClusterNetwork:
    return ClusterNetwork(cluster or f"t{uuid.uuid4().hex[:6]}", SUBNET, BRIDGE, ns, tmp_path / "state")


async def test_guests_get_their_addresses_from_dnsmasq_in_the_namespace(lab: Lab, tmp_path: Path) -> None:
    cc = lab.bridged(f"{GATEWAY}/24")
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
        assert lab.pids(cc) == [pid]

        g1 = lab.guest(cc, "g1", first.mac)
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
        g2 = lab.guest(cc, "g2", second.mac)
        assert await dhcp(g2, tmp_path) == {"ip": "10.98.0.3", "mask": "24", "router": GATEWAY}

        # A MAC that is no instance's gets nothing (static leases only).
        stranger = lab.guest(cc, "g3", "d0:0d:de:ad:be:ef")
        assert await dhcp(stranger, tmp_path, tries=2) is None

        # A released address is reused by the next instance, whose MAC then gets it.
        await net.release("i-0000aaaa")
        third = await net.allocate("i-0000cccc")
        assert third.private_ip == "10.98.0.2"
        with trio.fail_after(HANG_GUARD):
            await net.sync()
        g4 = lab.guest(cc, "g4", third.mac)
        assert await dhcp(g4, tmp_path) == {"ip": "10.98.0.2", "mask": "24", "router": GATEWAY}
        nursery.cancel_scope.cancel()

    # Stopping the service stops dnsmasq: nothing runs in the namespace any more.
    assert net.dhcp is None
    assert lab.pids(cc) == []


async def test_iptables_chain_lives_in_the_namespace_and_restarts_do_not_duplicate(
    lab: Lab, tmp_path: Path
) -> None:
    cc = lab.bridged(f"{GATEWAY}/24")
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
        assert lab.pids(cc) == []
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


async def test_dnsmasq_is_restarted_when_it_dies(lab: Lab, tmp_path: Path) -> None:
    cc = lab.bridged(f"{GATEWAY}/24")
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
        guest = lab.guest(cc, "g1", config.mac)
        assert await dhcp(guest, tmp_path) == {"ip": config.private_ip, "mask": "24", "router": GATEWAY}
        nursery.cancel_scope.cancel()
    assert lab.pids(cc) == []


async def test_without_the_bridge_in_the_namespace_no_dhcp_runs(lab: Lab, tmp_path: Path) -> None:
    cc = lab.add("bare")
    net = network(cc, tmp_path)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(net.run)
        assert not net.bridge_ready and net.dhcp is None
        assert (await net.allocate("i-0000eeee")).bridge is None
        assert lab.pids(cc) == []
        nursery.cancel_scope.cancel()
    assert f"EUCA-{net.cluster}" not in iptables_save(cc)
