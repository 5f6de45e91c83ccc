"""The CC's VM network without touching a network: address pool, hosts file, iptables rules, command lines,
and the service run with no bridge (which must only allocate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from euca.core.config import CcConfig
from euca.protocol.cluster import NetConfig, mac_for_instance
from euca.roles.cc.addresses import AddressPool, Lease, parse_hosts, render_hosts
from euca.roles.cc.dnsmasq import ServedLeases, dnsmasq_argv
from euca.roles.cc.filters import ChainNames, render
from euca.roles.cc.network import MAX_CHAIN_NAME, ClusterNetwork, chain_name, in_netns
from euca.roles.cc.vmnet import NetworkFull, VmNetwork


def iid(n: int) -> str:
    return f"i-{n:08x}"


# --- AddressPool -------------------------------------------------------------------------------------------


def test_lowest_free_after_the_gateway() -> None:
    pool = AddressPool("10.77.0.0/24")
    assert str(pool.gateway) == "10.77.0.1"
    assert pool.capacity == 253  # .2 .. .254
    ips = [pool.allocate(iid(n))[0].ip for n in range(3)]
    assert ips == ["10.77.0.2", "10.77.0.3", "10.77.0.4"]


def test_allocation_carries_the_eucalyptus_mac_and_is_idempotent() -> None:
    pool = AddressPool("10.77.0.0/24")
    lease, new = pool.allocate("i-12345678")
    assert new and lease == Lease("i-12345678", "d0:0d:12:34:56:78", "10.77.0.2")
    assert lease.mac == mac_for_instance("i-12345678")
    again, new = pool.allocate("i-12345678")
    assert again == lease and not new
    assert len(pool) == 1


def test_release_frees_the_address_for_the_next_lowest() -> None:
    pool = AddressPool("10.77.0.0/24")
    for n in range(4):
        pool.allocate(iid(n))
    released = pool.release(iid(1))
    assert released is not None and released.ip == "10.77.0.3"
    assert pool.release(iid(1)) is None  # unknown: nothing to do
    assert pool.allocate(iid(9))[0].ip == "10.77.0.3"
    assert pool.allocate(iid(10))[0].ip == "10.77.0.6"


def test_lowest_free_first_in_a_large_pool_after_moves_and_releases() -> None:
    pool = AddressPool("10.64.0.0/16")
    for n in range(600):
        pool.allocate(iid(n))
    assert pool.allocate(iid(600))[0].ip == "10.64.2.90"  # .2 + 600, across octets
    # A node reports an instance at a higher address: its old one (.0.5) is the lowest free now.
    assert pool.adopt(iid(3), "d0:0d:00:00:00:03", "10.64.9.9")[1] == "moved"
    assert pool.allocate(iid(601))[0].ip == "10.64.0.5"
    pool.release(iid(100))
    pool.release(iid(50))
    assert [pool.allocate(iid(n))[0].ip for n in (602, 603, 604)] == [
        "10.64.0.52",
        "10.64.0.102",
        "10.64.2.91",
    ]


def test_exhaustion_is_network_full_with_a_clear_message() -> None:
    pool = AddressPool("10.77.0.0/29")  # .1 gateway, .2-.6 for instances, .7 broadcast
    assert pool.capacity == 5
    for n in range(5):
        pool.allocate(iid(n))
    with pytest.raises(NetworkFull, match=r"no free address in 10\.77\.0\.0/29 for i-00000005"):
        pool.allocate(iid(5))
    assert len(pool) == 5
    pool.release(iid(2))
    assert pool.allocate(iid(5))[0].ip == "10.77.0.4"


def test_a_subnet_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="no address for instances"):
        AddressPool("10.77.0.0/31")
    with pytest.raises(ValueError):
        AddressPool("10.77.0.5/24")  # host bits set: a typo, not a subnet


def test_adopt_reserves_what_a_node_reports() -> None:
    pool = AddressPool("10.77.0.0/24")
    lease, outcome = pool.adopt("i-0000000a", "D0:0D:00:00:00:0A", "10.77.0.7")
    assert outcome == "adopted" and lease == Lease("i-0000000a", "d0:0d:00:00:00:0a", "10.77.0.7")
    assert pool.adopt("i-0000000a", "d0:0d:00:00:00:0a", "10.77.0.7")[1] == "same"
    # New allocations go around it: lowest free is still .2, and .7 is skipped later.
    ips = [pool.allocate(iid(n))[0].ip for n in range(6)]
    assert ips == ["10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5", "10.77.0.6", "10.77.0.8"]


def test_adopt_moves_an_instance_to_what_its_node_says() -> None:
    pool = AddressPool("10.77.0.0/24")
    pool.allocate("i-00000001")  # .2
    lease, outcome = pool.adopt("i-00000001", "d0:0d:00:00:00:01", "10.77.0.9")
    assert outcome == "moved" and lease is not None and lease.ip == "10.77.0.9"
    assert pool.allocate("i-00000002")[0].ip == "10.77.0.2"  # the old address is free again


@pytest.mark.parametrize(
    ("mac", "ip", "why"),
    [
        ("d0:0d:00:00:00:05", "10.77.0.2", "10.77.0.2 is i-00000001's"),
        ("d0:0d:00:00:00:01", "10.77.0.9", "MAC d0:0d:00:00:00:01 is i-00000001's"),
        ("d0:0d:00:00:00:05", "10.78.0.9", "not an instance address"),
        ("d0:0d:00:00:00:05", "10.77.0.1", "not an instance address"),  # the gateway
        ("d0:0d:00:00:00:05", "10.77.0.255", "not an instance address"),  # broadcast
        ("d0:0d:00:00:00:05", "nonsense", "bad address"),
        ("zz", "10.77.0.9", "bad MAC"),
    ],
)
def test_adopt_refuses_conflicts_and_foreign_addresses(mac: str, ip: str, why: str) -> None:
    pool = AddressPool("10.77.0.0/24")
    pool.allocate("i-00000001")
    lease, outcome = pool.adopt("i-00000005", mac, ip)
    assert lease is None and why in outcome
    assert pool.get("i-00000005") is None
    assert pool.get("i-00000001") == Lease("i-00000001", "d0:0d:00:00:00:01", "10.77.0.2")


def test_leases_in_address_order() -> None:
    pool = AddressPool("10.77.0.0/24")
    pool.adopt("i-000000aa", "d0:0d:00:00:00:aa", "10.77.0.100")
    pool.adopt("i-000000bb", "d0:0d:00:00:00:bb", "10.77.0.20")
    pool.allocate("i-000000cc")
    assert [x.ip for x in pool.leases()] == ["10.77.0.2", "10.77.0.20", "10.77.0.100"]


# --- hosts file, rules, command lines ----------------------------------------------------------------------


def test_hosts_file_rendering_and_round_trip() -> None:
    leases = [
        Lease("i-12345678", "d0:0d:12:34:56:78", "10.77.0.2"),
        Lease("i-9abcdef0", "d0:0d:9a:bc:de:f0", "10.77.0.3"),
    ]
    text = render_hosts(leases)
    assert text == "d0:0d:12:34:56:78,10.77.0.2,i-12345678\nd0:0d:9a:bc:de:f0,10.77.0.3,i-9abcdef0\n"
    assert parse_hosts(text) == leases
    assert render_hosts([]) == ""
    # An id that is no hostname is left out of the line (dnsmasq would reject it); such lines are not ours.
    assert (
        render_hosts([Lease("I_weird", "d0:0d:00:00:00:01", "10.77.0.4")]) == "d0:0d:00:00:00:01,10.77.0.4\n"
    )
    assert parse_hosts("garbage\n\nd0:0d:00:00:00:01,10.77.0.4\n") == []


def test_chain_names_fit_iptables() -> None:
    assert chain_name("cluster01") == "EUCA-cluster01"
    long = chain_name("a-very-long-cluster-name-indeed-x")
    assert len(long) <= MAX_CHAIN_NAME and long.startswith("EUCA-a-very")
    assert long != chain_name("a-very-long-cluster-name-indeed-y")
    odd = chain_name("two words")
    assert " " not in odd and odd != chain_name("two_words")


def test_rules_declare_our_chains_only() -> None:
    # Before the first network view: the subnet open, as before security groups were enforced.
    names = ChainNames.of("c1")
    rules = render(names, "10.77.0.0/24", None, {}).text.replace(names.dnat, "EUDNAT")
    assert rules.splitlines() == [
        "*filter",
        ":EUCA-c1 - [0:0]",
        "-A EUCA-c1 -s 10.77.0.0/24 -j ACCEPT",
        "-A EUCA-c1 -d 10.77.0.0/24 -j ACCEPT",
        "COMMIT",
        "*nat",
        ":EUCA-c1 - [0:0]",
        ":EUDNAT - [0:0]",
        "-A EUCA-c1 -s 10.77.0.0/24 ! -d 10.77.0.0/24 -j MASQUERADE",
        "COMMIT",
    ]


def test_dnsmasq_command_line(tmp_path: Path) -> None:
    pool = AddressPool("10.77.0.0/24")
    argv = dnsmasq_argv("euca-br0", pool, tmp_path / "hosts", "root", "root")
    assert argv[0] == "dnsmasq"
    for option in (
        "--keep-in-foreground",
        "--port=0",
        "--interface=euca-br0",
        "--bind-interfaces",
        "--dhcp-range=10.77.0.0,static,255.255.255.0,infinite",
        "--dhcp-option=option:router,10.77.0.1",
        f"--dhcp-hostsfile={tmp_path / 'hosts'}",
        "--conf-file=/dev/null",
    ):
        assert option in argv
    assert in_netns("euca", argv) == ["ip", "netns", "exec", "euca", *argv]
    assert in_netns(None, argv) == argv


def test_served_leases_tell_a_reload_from_a_restart() -> None:
    a = Lease("i-0000000a", "d0:0d:00:00:00:0a", "10.77.0.2")
    b = Lease("i-0000000b", "d0:0d:00:00:00:0b", "10.77.0.3")
    served = ServedLeases([a])
    assert served.conflict([a, b]) is None  # an addition: SIGHUP is enough
    served.add([a, b])
    assert served.conflict([b]) is None  # a release: dnsmasq keeps a lease nobody asks for, harmless
    # .2 handed to another MAC: dnsmasq would refuse it while it holds a's lease.
    c = Lease("i-0000000c", "d0:0d:00:00:00:0c", "10.77.0.2")
    assert served.conflict([b, c]) == "10.77.0.2 moves from d0:0d:00:00:00:0a to d0:0d:00:00:00:0c"
    moved = Lease("i-0000000b", "d0:0d:00:00:00:0b", "10.77.0.9")
    assert served.conflict([moved]) == "d0:0d:00:00:00:0b moves from 10.77.0.3 to 10.77.0.9"


# --- the service with no bridge: allocation only ------------------------------------------------------------


def test_from_config_uses_the_cc_section(tmp_path: Path) -> None:
    net = ClusterNetwork.from_config(
        CcConfig(cluster="c7", subnet="10.9.8.0/24", bridge="br-x", netns="ns-x"), tmp_path
    )
    assert (net.cluster, str(net.pool.network), net.bridge, net.netns) == (
        "c7",
        "10.9.8.0/24",
        "br-x",
        "ns-x",
    )
    assert net.hosts_path == tmp_path / "cc" / "c7" / "dhcp-hosts"
    assert net.chain == "EUCA-c7"
    checked: VmNetwork = net  # the CC's protocol
    assert checked is net


async def test_without_a_bridge_it_allocates_and_writes_the_file(tmp_path: Path) -> None:
    net = ClusterNetwork("c1", "10.77.0.0/24", None, None, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        assert net.dhcp is None and not net.bridge_ready
        a = await net.allocate("i-0000000a")
        b = await net.allocate("i-0000000b")
        assert a == NetConfig(mac="d0:0d:00:00:00:0a", private_ip="10.77.0.2", bridge=None)
        assert b.private_ip == "10.77.0.3"
        await net.sync()
        assert (tmp_path / "dhcp-hosts").read_text() == render_hosts(net.pool.leases())
        await net.release("i-0000000a")
        await net.adopt("i-0000000c", "d0:0d:00:00:00:0c", "10.77.0.50")
        await net.sync()
        assert parse_hosts((tmp_path / "dhcp-hosts").read_text()) == [
            Lease("i-0000000b", "d0:0d:00:00:00:0b", "10.77.0.3"),
            Lease("i-0000000c", "d0:0d:00:00:00:0c", "10.77.0.50"),
        ]
        nursery.cancel_scope.cancel()
    assert not list(tmp_path.glob(".*.tmp"))


async def test_a_missing_bridge_means_no_nic_and_no_dhcp(tmp_path: Path) -> None:
    # A bridge name no host has (IFNAMSIZ allows 15 characters): the check fails, nothing is configured.
    net = ClusterNetwork("c1", "10.77.0.0/24", "euca-nobr-x7q", None, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        assert not net.bridge_ready and net.dhcp is None
        assert (await net.allocate("i-00000001")).bridge is None
        nursery.cancel_scope.cancel()


async def test_restart_restores_leases_from_the_hosts_file(tmp_path: Path) -> None:
    first = ClusterNetwork("c1", "10.77.0.0/24", None, None, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        for n in range(3):
            await first.allocate(iid(n))
        await first.release(iid(1))
        await first.sync()
        nursery.cancel_scope.cancel()
    second = ClusterNetwork("c1", "10.77.0.0/24", None, None, tmp_path)
    assert second.pool.leases() == first.pool.leases()
    # Known instances keep their addresses; a new one takes the hole.
    assert (await second.allocate(iid(2))).private_ip == "10.77.0.4"
    assert (await second.allocate(iid(7))).private_ip == "10.77.0.3"
    # Instances no node reports any more are let go.
    await second.retain([iid(2)])
    assert [x.instance_id for x in second.pool.leases()] == [iid(2)]


async def test_restored_leases_yield_to_node_reports_and_expire_unconfirmed(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    (tmp_path / "dhcp-hosts").write_text(
        render_hosts(
            [
                Lease("i-00000001", "d0:0d:00:00:00:01", "10.77.0.2"),
                Lease("i-00000002", "d0:0d:00:00:00:02", "10.77.0.3"),
                Lease("i-00000003", "d0:0d:00:00:00:03", "10.77.0.4"),
            ]
        )
    )
    net = ClusterNetwork("c1", "10.77.0.0/24", None, None, tmp_path, restore_grace=60)
    assert len(net.pool) == 3
    # A node reports another instance on .3 (the file was stale): the report wins over the restored lease.
    assert net.take_report("i-00000009", "d0:0d:00:00:00:09", "10.77.0.3")
    assert net.pool.get("i-00000002") is None
    # .2's instance is confirmed by its node; .4's never shows up.
    assert net.take_report("i-00000001", "d0:0d:00:00:00:01", "10.77.0.2")
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        await trio.sleep(59)
        assert net.pool.get("i-00000003") is not None
        await trio.sleep(2)
        await net.sync()
        assert [x.instance_id for x in net.pool.leases()] == ["i-00000001", "i-00000009"]
        assert parse_hosts((tmp_path / "dhcp-hosts").read_text()) == net.pool.leases()
        nursery.cancel_scope.cancel()
