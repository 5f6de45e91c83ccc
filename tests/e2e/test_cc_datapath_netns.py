"""The CC enforcing its network view for real (issue 9's data path), in namespaces these tests make: the
cluster namespace with the bridge and the network service, veth "guests" with a TCP listener on port 22,
and a "client" namespace outside the cloud routed to the public pool through the cluster namespace. No
QEMU. Connects that must fail time out after a short while; nothing is timed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from euca.protocol.cluster import (
    DescribeResources,
    GroupRules,
    InstanceNetwork,
    NetworkView,
    NodeAddress,
    RunInstances,
    SecurityRule,
    TerminateInstances,
)
from euca.roles.cc.controller import ClusterController
from euca.roles.cc.network import ClusterNetwork
from helpers.cc_nodes import VM_TYPES, InMemoryNodeController, spec
from helpers.netns_lab import (
    BRIDGE,
    UPLINK,
    UPLINK_CLIENT,
    Lab,
    addresses,
    connect,
    http,
    iptables_save,
    unusable_reason,
)

SUBNET = "10.97.0.0/24"
GATEWAY = "10.97.0.1"
P1 = "203.0.113.10"
P2 = "203.0.113.11"
WEB = "sg-0000000a"
DB = "sg-0000000b"
SSH = SecurityRule("tcp", 22, 22, cidr="0.0.0.0/0")
HANG_GUARD = 60

_REASON = unusable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

_versions = iter(range(1, 1_000_000))


def view(instances: list[InstanceNetwork], groups: list[GroupRules]) -> NetworkView:
    return NetworkView(version=f"v{next(_versions)}", instances=instances, groups=groups)


class Cluster:
    """The cluster and client namespaces, and a network service on them (restartable)."""

    def __init__(self, lab: Lab, tmp_path: Path):
        self.lab = lab
        self.cc, self.client = lab.cluster(f"{GATEWAY}/24")
        self.name = f"t{uuid.uuid4().hex[:6]}"
        self.state = tmp_path / "state"

    def network(self) -> ClusterNetwork:
        return ClusterNetwork(self.name, SUBNET, BRIDGE, self.cc, self.state)

    async def guest(self, net: ClusterNetwork, instance_id: str, tag: str) -> tuple[str, str]:
        config = await net.allocate(instance_id)
        ns = self.lab.guest(self.cc, tag, config.mac, f"{config.private_ip}/24", GATEWAY)
        self.lab.listen(ns, tag)
        return ns, config.private_ip


async def enforce(net: ClusterNetwork, v: NetworkView) -> None:
    net.apply_view(v)
    with trio.fail_after(HANG_GUARD):
        await net.rules_sync()


async def test_public_address_revoke_move_and_terminate(lab: Lab, tmp_path: Path) -> None:
    cl = Cluster(lab, tmp_path)
    net = cl.network()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(net.run)
        assert net.firewall.ready
        ga, a_ip = await cl.guest(net, "i-0000000a", "ga")
        gb, b_ip = await cl.guest(net, "i-0000000b", "gb")
        lab.listen(cl.client, "client")

        # Port 22 admitted from anywhere: the client reaches guest a at its public address; the guest sees
        # the client's own address (DNAT only), and a's outbound traffic leaves from its public address.
        admitted = view(
            [InstanceNetwork("i-0000000a", [WEB], P1), InstanceNetwork("i-0000000b", [DB])],
            [GroupRules(WEB, [SSH], ["i-0000000a"]), GroupRules(DB, [], ["i-0000000b"])],
        )
        await enforce(net, admitted)
        assert await connect(cl.client, P1) == f"ga {UPLINK_CLIENT}"
        assert await connect(ga, UPLINK_CLIENT) == f"client {P1}"
        # b has no public address: its outbound traffic is masqueraded behind the CC's uplink address.
        assert (await connect(gb, UPLINK_CLIENT)).startswith("client ")
        # b reaches a at a's public address too (hairpin through the CC, masqueraded behind the gateway).
        assert await connect(gb, P1) == f"ga {GATEWAY}"
        assert f"{P1}/32" in addresses(cl.cc, UPLINK)

        # Revoked: a new connection times out.
        revoked = view(
            [InstanceNetwork("i-0000000a", [WEB], P1), InstanceNetwork("i-0000000b", [DB])],
            [GroupRules(WEB, [], ["i-0000000a"]), GroupRules(DB, [], ["i-0000000b"])],
        )
        await enforce(net, revoked)
        assert await connect(cl.client, P1) == "TIMEOUT"

        # The address moves to b (admitted again): the client's next connection lands on b, and a's
        # traffic no longer leaves from it.
        moved = view(
            [InstanceNetwork("i-0000000a", [WEB]), InstanceNetwork("i-0000000b", [WEB], P1)],
            [GroupRules(WEB, [SSH], ["i-0000000a", "i-0000000b"])],
        )
        await enforce(net, moved)
        assert await connect(cl.client, P1) == f"gb {UPLINK_CLIENT}"
        assert await connect(gb, UPLINK_CLIENT) == f"client {P1}"
        assert await connect(ga, P1) == f"gb {GATEWAY}"
        assert await connect(ga, UPLINK_CLIENT) != f"client {P1}"
        rules = iptables_save(cl.cc)
        assert rules.count(f"-d {P1}/32 -j DNAT") == 1 and f"--to-destination {b_ip}" in rules
        assert f"--to-destination {a_ip}" not in rules
        assert net.firewall.names.group(DB) not in rules  # nobody is in DB any more: its chain is gone

        # Both terminated: their leases go and the next view leaves them out. Nothing of theirs remains.
        await net.release("i-0000000a")
        await net.release("i-0000000b")
        await enforce(net, view([], []))
        rules = iptables_save(cl.cc)
        for gone in (a_ip, b_ip, P1, net.firewall.names.group(WEB)):
            assert gone not in rules
        assert not [a for a in addresses(cl.cc, UPLINK) if a.endswith("/32")]
        assert await connect(cl.client, P1) == "TIMEOUT"
        nursery.cancel_scope.cancel()


async def test_groups_between_guests_on_the_bridge(lab: Lab, tmp_path: Path) -> None:
    cl = Cluster(lab, tmp_path)
    net = cl.network()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(net.run)
        ga, a_ip = await cl.guest(net, "i-0000000a", "ga")
        gb, b_ip = await cl.guest(net, "i-0000000b", "gb")
        instances = [InstanceNetwork("i-0000000a", [WEB], P1), InstanceNetwork("i-0000000b", [DB], P2)]
        await enforce(
            net, view(instances, [GroupRules(WEB, [], ["i-0000000a"]), GroupRules(DB, [], ["i-0000000b"])])
        )
        if (await connect(ga, b_ip)) != "TIMEOUT":
            pytest.skip("bridge netfilter does not filter this bridge here: only routed traffic is filtered")
        assert await connect(gb, a_ip) == "TIMEOUT"

        # DB admits port 22 from WEB's members: a reaches b (by its private address), not the reverse.
        db_from_web = SecurityRule("tcp", 22, 22, source_group=WEB)
        groups = [GroupRules(WEB, [], ["i-0000000a"]), GroupRules(DB, [db_from_web], ["i-0000000b"])]
        await enforce(net, view(instances, groups))
        assert await connect(ga, b_ip) == f"gb {a_ip}"
        assert await connect(gb, a_ip) == "TIMEOUT"
        # The outside is not WEB: the client still cannot reach b.
        assert await connect(cl.client, P2) == "TIMEOUT"

        # A rule from 0.0.0.0/0 admits the other guests too (rules between instances as from outside).
        groups = [GroupRules(WEB, [SSH], ["i-0000000a"]), GroupRules(DB, [db_from_web], ["i-0000000b"])]
        await enforce(net, view(instances, groups))
        assert await connect(gb, a_ip) == f"ga {b_ip}"
        nursery.cancel_scope.cancel()


async def test_restart_rebuilds_without_duplicates_and_drops_what_is_stale(lab: Lab, tmp_path: Path) -> None:
    cl = Cluster(lab, tmp_path)
    first = cl.network()
    instances = [InstanceNetwork("i-0000000a", [WEB, DB], P1)]
    before = view(instances, [GroupRules(WEB, [SSH], ["i-0000000a"]), GroupRules(DB, [], ["i-0000000a"])])
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(first.run)
        ga, a_ip = await cl.guest(first, "i-0000000a", "ga")
        await enforce(first, before)
        assert await connect(cl.client, P1) == f"ga {UPLINK_CLIENT}"
        dump = iptables_save(cl.cc)
        nursery.cancel_scope.cancel()

    # A new service on the same namespace (the CC restarted): until its first view the last rules stay.
    second = cl.network()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(second.run)
        assert second.net_config("i-0000000a") is not None  # its lease is back from the hosts file
        assert iptables_save(cl.cc) == dump
        assert await connect(cl.client, P1) == f"ga {UPLINK_CLIENT}"

        # The same view again: the same rules, nothing added twice.
        await enforce(
            second, NetworkView(version="restarted", instances=before.instances, groups=before.groups)
        )
        again = iptables_save(cl.cc)
        assert again == dump
        names = second.firewall.names
        for jump in (
            f"-A FORWARD -j {names.cluster}",
            f"-A PREROUTING -j {names.dnat}",
            f"-A OUTPUT -j {names.dnat}",
            f"-A POSTROUTING -j {names.cluster}",
        ):
            assert again.count(jump) == 1
        assert again.count(f"-d {P1}/32 -j DNAT") == 1
        assert addresses(cl.cc, UPLINK).count(f"{P1}/32") == 1
        assert await connect(cl.client, P1) == f"ga {UPLINK_CLIENT}"

        # DB dropped from the view: its chain (made by the last run) goes.
        after = view([InstanceNetwork("i-0000000a", [WEB], P1)], [GroupRules(WEB, [SSH], ["i-0000000a"])])
        await enforce(second, after)
        assert names.group(DB) not in iptables_save(cl.cc)
        assert await connect(cl.client, P1) == f"ga {UPLINK_CLIENT}"
        nursery.cancel_scope.cancel()


async def test_metadata_service_answers_each_guest_its_own(lab: Lab, tmp_path: Path) -> None:
    cl = Cluster(lab, tmp_path)
    net = cl.network()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(net.run)
        assert net.metadata is not None
        ga, a_ip = await cl.guest(net, "i-0000000a", "ga")
        gb, b_ip = await cl.guest(net, "i-0000000b", "gb")
        a_spec = msgspec.structs.replace(
            spec(10), public_key="ssh-ed25519 AAAAC3 k", key_name="k", user_data=b"#!/bin/sh\necho hi\n"
        )
        net.note_launch(a_spec)
        await enforce(
            net,
            view(
                [InstanceNetwork("i-0000000a", [WEB], P1), InstanceNetwork("i-0000000b", [WEB])],
                [GroupRules(WEB, [], ["i-0000000a", "i-0000000b"])],
            ),
        )
        base = "http://169.254.169.254/latest"
        assert await http(ga, "GET", f"{base}/meta-data/instance-id") == ("200", "i-0000000a")
        assert await http(ga, "GET", f"{base}/meta-data/public-ipv4") == ("200", P1)
        assert await http(ga, "GET", f"{base}/meta-data/local-ipv4") == ("200", a_ip)
        assert await http(ga, "GET", f"{base}/meta-data/public-keys/0/openssh-key") == (
            "200",
            "ssh-ed25519 AAAAC3 k\n",
        )
        assert await http(ga, "GET", f"{base}/user-data") == ("200", "#!/bin/sh\necho hi\n")
        assert (await http(ga, "GET", f"{base}/meta-data/nope"))[0] == "404"
        # IMDSv2: a token, then GETs with it.
        status, token = await http(ga, "PUT", f"{base}/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 60")
        assert status == "200" and token
        assert await http(
            ga, "GET", f"{base}/meta-data/instance-id", f"X-aws-ec2-metadata-token: {token}"
        ) == ("200", "i-0000000a")
        # b gets its own answers, never a's; a's token is no good to b.
        assert await http(gb, "GET", f"{base}/meta-data/instance-id") == ("200", "i-0000000b")
        assert (await http(gb, "GET", f"{base}/user-data"))[0] == "404"
        assert (await http(gb, "GET", f"{base}/meta-data/instance-id", f"X-aws-ec2-metadata-token: {token}"))[
            0
        ] == "401"
        # The client outside the cloud has no route to it, and its address is no instance's.
        assert b_ip not in (await http(cl.client, "GET", f"{base}/meta-data/local-ipv4"))[1]
        nursery.cancel_scope.cancel()


class InProcessNodes:
    """The CC's node client, calling in-memory node controllers directly."""

    def __init__(self, *nodes: InMemoryNodeController):
        self.nodes = {f"https://{n.name}:8775": n for n in nodes}

    async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any:
        return await self.nodes[base_url].handle(message)


async def test_the_controller_applies_the_polls_view_and_terminate_clears_at_once(
    lab: Lab, tmp_path: Path
) -> None:
    """Through the CC's own handlers: a poll carrying the view is enforced, a run's key and user data reach
    the metadata service, and a terminate takes the instance's rules away before the CLC's next view."""
    cl = Cluster(lab, tmp_path)
    net = cl.network()
    node = InMemoryNodeController("n1")
    cc = ClusterController(cl.name, InProcessNodes(node), net, poll_interval=3600)
    topology = [NodeAddress("n1", "https://n1:8775")]
    async with trio.open_nursery() as nursery:
        with trio.fail_after(HANG_GUARD):
            await nursery.start(cc.run)
        await cc.describe_resources(DescribeResources(cl.name, topology, VM_TYPES))
        launch = msgspec.structs.replace(
            spec(10), user_data=b"#!/bin/sh\n", security_groups=[WEB], public_ip=P1
        )
        [status] = (await cc.run_instances(RunInstances([launch]))).instances
        assert status.private_ip is not None and status.mac is not None
        ga = lab.guest(cl.cc, "ga", status.mac, f"{status.private_ip}/24", GATEWAY)
        lab.listen(ga, "ga")

        v = view([InstanceNetwork("i-0000000a", [WEB], P1)], [GroupRules(WEB, [SSH], ["i-0000000a"])])
        await cc.describe_resources(DescribeResources(cl.name, topology, VM_TYPES, network=v))
        with trio.fail_after(HANG_GUARD):
            await net.rules_sync()
        assert await connect(cl.client, P1) == f"ga {UPLINK_CLIENT}"
        assert await http(ga, "GET", "http://169.254.169.254/latest/user-data") == ("200", "#!/bin/sh\n")

        await cc.terminate_instances(TerminateInstances(["i-0000000a"]))
        with trio.fail_after(HANG_GUARD):
            await net.rules_sync()
        rules = iptables_save(cl.cc)
        assert status.private_ip not in rules and P1 not in rules
        assert not [a for a in addresses(cl.cc, UPLINK) if a.endswith("/32")]
        assert await connect(cl.client, P1) == "TIMEOUT"
        assert (await http(ga, "GET", "http://169.254.169.254/latest/meta-data/instance-id"))[0] == "404"
        nursery.cancel_scope.cancel()
