"""The cluster controller's handlers and poller against in-memory nodes.

Every call goes through the wire format (encode_request -> decode_request -> handler -> encode_reply ->
decode_reply), as it would over HTTP; only the sockets are left out. Poll rounds are driven by the test
(`poll_round()`), never by waiting on a clock.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from euca.protocol import cluster as c
from euca.protocol.cluster import ClusterFault
from euca.roles.cc.controller import ClusterController
from euca.roles.cc.vmnet import SubnetAllocator
from helpers.cc_nodes import LARGE, SMALL, VM_TYPES, InMemoryNodeController, spec


class InProcessClient:
    """ClusterClient's contract without sockets: the message and its reply cross the wire format."""

    def __init__(self, nodes: dict[str, InMemoryNodeController]):
        self.nodes = nodes  # url -> node

    async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any:
        path, body = c.encode_request(message)
        decoded = c.decode_request(path, body)
        node = self.nodes[base_url]
        if expect_name is not None and expect_name != node.name:
            raise ClusterFault(
                "Unauthorized", f"{base_url} is not nc/{expect_name} (its certificate: {node.name})"
            )
        try:
            reply = await node.handle(decoded)
        except ClusterFault as fault:
            c.decode_reply(type(message), fault.status, c.encode_fault(fault.code, fault.message))
            raise AssertionError("unreachable") from None
        return c.decode_reply(type(message), 200, c.encode_reply(reply))


def url(name: str) -> str:
    return f"https://{name}:8775"


class Cluster:
    """A CC with its nodes, and the CLC's view of the topology."""

    def __init__(
        self, *nodes: InMemoryNodeController, scheduler: str = "GREEDY", subnet: str = "10.77.0.0/24"
    ):
        self.nodes = {n.name: n for n in nodes}
        self.client = InProcessClient({url(n.name): n for n in nodes})
        self.network = SubnetAllocator(subnet, "euca-br0")
        self.cc = ClusterController("cluster01", self.client, self.network, scheduler=scheduler)

    def restart(self) -> None:
        """A new CC process: nothing remembered."""
        self.network = SubnetAllocator(str(self.network.network), "euca-br0")
        self.cc = ClusterController(
            "cluster01", self.client, self.network, scheduler=self.cc.scheduler.policy
        )

    async def describe_resources(self, names: list[str] | None = None) -> c.ResourcesReply:
        names = list(self.nodes) if names is None else names
        topology = [c.NodeAddress(n, url(n)) for n in names]
        return await self.cc.describe_resources(c.DescribeResources("cluster01", topology, VM_TYPES))

    async def instances(self) -> dict[str, c.InstanceStatus]:
        reply = await self.cc.describe_instances(c.DescribeInstances())
        return {s.instance_id: s for s in reply.instances}


def capacity_of(reply: c.ResourcesReply, vm: c.VmType) -> tuple[int, int]:
    [cap] = [t for t in reply.capacity if t.vm_type == vm.name]
    return cap.free, cap.max


async def test_describe_resources_learns_nodes_and_reports_capacity() -> None:
    down = InMemoryNodeController("n3")
    down.unreachable = True
    cl = Cluster(InMemoryNodeController("n1", cores=4), InMemoryNodeController("n2", cores=2), down)
    reply = await cl.describe_resources()
    assert reply.cluster == "cluster01"
    assert [(n.node, n.state) for n in reply.nodes] == [("n1", "up"), ("n2", "up"), ("n3", "down")]
    assert reply.nodes[2].cores_max == 0 and reply.nodes[2].reason
    assert capacity_of(reply, SMALL) == (6, 6)
    assert capacity_of(reply, LARGE) == (3, 3)
    # Known nodes are not polled again by DescribeResources; the poller does that.
    await cl.describe_resources()
    assert cl.nodes["n1"].count(c.NcDescribeResource) == 1


async def test_run_instances_places_greedy_with_addresses_and_counts_before_the_next_poll() -> None:
    cl = Cluster(InMemoryNodeController("n1", cores=2), InMemoryNodeController("n2", cores=2))
    await cl.describe_resources()
    reply = await cl.cc.run_instances(c.RunInstances([spec(1), spec(2), spec(3)]))
    assert [(s.instance_id, s.node, s.state) for s in reply.instances] == [
        ("i-00000001", "n1", "pending"),
        ("i-00000002", "n1", "pending"),
        ("i-00000003", "n2", "pending"),
    ]
    assert [s.private_ip for s in reply.instances] == ["10.77.0.2", "10.77.0.3", "10.77.0.4"]
    assert reply.instances[0].mac == "d0:0d:00:00:00:01"
    # The node got the network config with the spec.
    sent = {
        m.instance.instance_id: m.instance for m in cl.nodes["n1"].calls if isinstance(m, c.NcRunInstance)
    }
    assert sent["i-00000001"].net == c.NetConfig("d0:0d:00:00:00:01", "10.77.0.2", "euca-br0")
    # No poll since: the capacity already counts the three.
    resources = await cl.describe_resources()
    assert capacity_of(resources, SMALL) == (1, 4)
    with pytest.raises(ClusterFault) as e:
        await cl.cc.run_instances(c.RunInstances([spec(4), spec(5)]))
    assert e.value.code == "InsufficientInstanceCapacity"
    # After a poll the nodes' own numbers say the same.
    await cl.cc.poll_round()
    resources = await cl.describe_resources()
    assert capacity_of(resources, SMALL) == (1, 4)


async def test_run_instances_calls_each_node_once_with_its_instances() -> None:
    cl = Cluster(InMemoryNodeController("n1", cores=4), InMemoryNodeController("n2", cores=4))
    await cl.describe_resources()
    reply = await cl.cc.run_instances(c.RunInstances([spec(n) for n in range(1, 8)]))
    assert [s.node for s in reply.instances] == ["n1"] * 4 + ["n2"] * 3
    assert cl.nodes["n1"].run_calls == [["i-00000001", "i-00000002", "i-00000003", "i-00000004"]]
    assert cl.nodes["n2"].run_calls == [["i-00000005", "i-00000006", "i-00000007"]]
    await cl.cc.terminate_instances(c.TerminateInstances(["i-00000001"]))
    await cl.cc.poll_round()
    # A node that refuses its part: none of the request runs anywhere (n1's part is rolled back).
    cl.nodes["n2"].fail_runs = True
    with pytest.raises(ClusterFault) as e:
        await cl.cc.run_instances(c.RunInstances([spec(8, reservation="r-2"), spec(9, reservation="r-2")]))
    assert "none of the request was started" in e.value.message
    assert cl.nodes["n1"].run_calls[-1] == ["i-00000008"] and cl.nodes["n1"].instances["i-00000008"][1] == (
        "terminated"
    )
    assert set(await cl.instances()) == {f"i-{n:08x}" for n in range(1, 8)}


async def test_insufficient_capacity_sends_nothing_to_the_nodes() -> None:
    cl = Cluster(InMemoryNodeController("n1", cores=2), InMemoryNodeController("n2", cores=2))
    await cl.describe_resources()
    with pytest.raises(ClusterFault) as e:
        await cl.cc.run_instances(c.RunInstances([spec(i, LARGE) for i in range(3)]))
    assert e.value.code == "InsufficientInstanceCapacity"
    assert all(n.count(c.NcRunInstance) == 0 for n in cl.nodes.values())
    assert await cl.instances() == {}


async def test_run_is_all_or_nothing_when_a_node_fails(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "euca.cc")
    n1, n2 = InMemoryNodeController("n1", cores=1), InMemoryNodeController("n2", cores=4)
    cl = Cluster(n1, n2)
    await cl.describe_resources()
    n2.fail_runs = True
    with pytest.raises(ClusterFault) as e:
        await cl.cc.run_instances(c.RunInstances([spec(1), spec(2), spec(3)]))
    assert e.value.code == "InsufficientInstanceCapacity"
    assert "n2" in e.value.message
    # n1 started i-1 and was told to terminate it; n2 is told too (a timed-out call may have started one).
    assert n1.count(c.NcRunInstance) == 1 and n1.instances["i-00000001"][1] == "terminated"
    assert n2.count(c.NcTerminateInstance) == 2
    assert await cl.instances() == {}
    assert cl.network.address_of("i-00000001") is None
    assert sum("run failed" in r.getMessage() for r in caplog.records) == 1
    # Nothing is held: the whole cluster is free again and a later request gets the first address.
    n2.fail_runs = False
    await cl.cc.poll_round()
    resources = await cl.describe_resources()
    assert capacity_of(resources, SMALL) == (5, 5)
    reply = await cl.cc.run_instances(c.RunInstances([spec(7)]))
    assert reply.instances[0].private_ip == "10.77.0.2"


async def test_run_is_idempotent_per_instance_id() -> None:
    cl = Cluster(InMemoryNodeController("n1"))
    await cl.describe_resources()
    message = c.RunInstances([spec(1), spec(2)])
    first = await cl.cc.run_instances(message)
    again = await cl.cc.run_instances(message)
    assert first == again
    assert cl.nodes["n1"].count(c.NcRunInstance) == 2
    # A resend that adds one places only the new one; a duplicate inside one message counts once.
    more = await cl.cc.run_instances(c.RunInstances([spec(1), spec(2), spec(3), spec(3)]))
    assert [s.instance_id for s in more.instances] == ["i-00000001", "i-00000002", "i-00000003"]
    assert cl.nodes["n1"].count(c.NcRunInstance) == 3
    # Also after the node reported them running, and after they ended.
    await cl.cc.poll_round()
    cl.nodes["n1"].set_state("i-00000001", "running")
    await cl.cc.poll_round()
    assert (await cl.cc.run_instances(c.RunInstances([spec(1)]))).instances[0].state == "running"
    await cl.cc.terminate_instances(c.TerminateInstances(["i-00000001"]))
    assert (await cl.cc.run_instances(c.RunInstances([spec(1)]))).instances[0].state == "terminated"
    assert cl.nodes["n1"].count(c.NcRunInstance) == 3


async def test_resend_while_the_first_run_is_on_the_wire() -> None:
    node = InMemoryNodeController("n1")
    cl = Cluster(node)
    await cl.describe_resources()
    node.run_gate = trio.Event()
    replies: list[c.InstancesReply] = []

    async def run() -> None:
        replies.append(await cl.cc.run_instances(c.RunInstances([spec(1)])))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        # The resend answers at once with the pending instance and sends nothing more.
        resent = await cl.cc.run_instances(c.RunInstances([spec(1)]))
        assert resent.instances[0].state == "pending"
        # A poll now does not see it on the node, yet it stays (its run is still on the wire).
        await cl.cc.poll_round()
        assert (await cl.instances())["i-00000001"].state == "pending"
        node.run_gate.set()
    assert node.count(c.NcRunInstance) == 1
    assert replies[0].instances[0].instance_id == "i-00000001"


async def test_placed_but_unreported_stays_pending_until_a_later_report_lacks_it() -> None:
    node = InMemoryNodeController("n1")
    cl = Cluster(node)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1)]))
    await cl.cc.poll_round()
    node.set_state("i-00000001", "running")
    await cl.cc.poll_round()
    assert (await cl.instances())["i-00000001"].state == "running"
    # The node loses it (it was never meant to): a report asked for after we knew it forgets it.
    del node.instances["i-00000001"]
    await cl.cc.poll_round()
    assert await cl.instances() == {}
    assert cl.network.address_of("i-00000001") is None


async def test_addresses_are_not_retained_away_while_a_node_is_down() -> None:
    n1, n2 = InMemoryNodeController("n1"), InMemoryNodeController("n2")
    n2.unreachable = True
    cl = Cluster(n1, n2)
    await cl.network.adopt("i-000000ee", "d0:0d:00:00:00:ee", "10.77.0.9")  # perhaps alive on n2
    await cl.describe_resources()
    await cl.cc.poll_round()
    assert cl.network.address_of("i-000000ee") is not None
    n2.unreachable = False
    await cl.cc.poll_round()
    assert cl.network.address_of("i-000000ee") is None


async def test_node_down_and_back_up_logs_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "euca.cc")
    n1, n2 = InMemoryNodeController("n1"), InMemoryNodeController("n2")
    cl = Cluster(n1, n2)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1)]))
    await cl.cc.poll_round()
    n1.unreachable = True
    for _ in range(3):
        await cl.cc.poll_round()
    reply = await cl.describe_resources()
    assert [(n.node, n.state, n.cores_free, n.cores_max) for n in reply.nodes] == [
        ("n1", "down", 0, 0),
        ("n2", "up", 4, 4),
    ]
    assert "refused" in (reply.nodes[0].reason or "")
    assert capacity_of(reply, SMALL) == (4, 4)
    # Its instances stay as last reported (the CLC decides when a lost node's instances are gone).
    assert (await cl.instances())["i-00000001"].node == "n1"
    # Nothing is placed on a down node.
    placed = await cl.cc.run_instances(c.RunInstances([spec(2)]))
    assert placed.instances[0].node == "n2"
    n1.unreachable = False
    for _ in range(2):
        await cl.cc.poll_round()
    reply = await cl.describe_resources()
    assert reply.nodes[0].state == "up" and reply.nodes[0].cores_free == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("node down name=n1") for m in messages) == 1
    assert sum(m.startswith("node up name=n1") for m in messages) == 2  # first contact, and back
    assert sum(m.startswith("node up name=n2") for m in messages) == 1


async def test_a_node_reporting_itself_down_is_down_and_its_list_not_taken() -> None:
    n1 = InMemoryNodeController("n1")
    cl = Cluster(n1)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1)]))
    await cl.cc.poll_round()
    real = n1.handle

    async def starting(message: Any) -> Any:
        if isinstance(message, c.NcDescribeResource):
            return c.NodeResources(node="n1", state="down", reason="libvirt: connection lost")
        if isinstance(message, c.NcDescribeInstances):
            return c.InstancesReply([])  # what a node that has not found its instances yet would say
        return await real(message)

    n1.handle = starting  # type: ignore[method-assign]
    await cl.cc.poll_round()
    reply = await cl.describe_resources()
    assert (reply.nodes[0].state, reply.nodes[0].reason) == ("down", "libvirt: connection lost")
    assert set(await cl.instances()) == {"i-00000001"}
    assert cl.network.address_of("i-00000001") is not None


async def test_restarted_cc_rebuilds_from_node_reports() -> None:
    n1, n2 = InMemoryNodeController("n1", cores=2), InMemoryNodeController("n2", cores=2)
    cl = Cluster(n1, n2, scheduler="ROUNDROBIN")
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
    await cl.cc.poll_round()
    n1.set_state("i-00000001", "running")
    before = await cl.instances()

    cl.restart()
    assert await cl.instances() == {}
    # The network kept addresses across the restart (network.py restores its hosts file), one of them
    # for an instance that ended meanwhile.
    await cl.network.adopt("i-000000ee", "d0:0d:00:00:00:ee", "10.77.0.9")
    await cl.network.adopt(
        "i-00000002", before["i-00000002"].mac or "", before["i-00000002"].private_ip or ""
    )
    # The CLC's next poll brings the topology; the new nodes are polled before the reply.
    reply = await cl.describe_resources()
    assert capacity_of(reply, SMALL) == (2, 4)
    after = await cl.instances()
    assert set(after) == set(before)
    assert after["i-00000001"].state == "running"
    assert after["i-00000002"].private_ip == before["i-00000002"].private_ip
    # Every node answered: the address of the instance no node knows is free again, the others kept.
    assert cl.network.address_of("i-000000ee") is None
    assert cl.network.address_of("i-00000001") is not None
    # Addresses in use were adopted: a new instance does not get one of them.
    new = await cl.cc.run_instances(c.RunInstances([spec(3)]))
    assert new.instances[0].private_ip not in {s.private_ip for s in before.values()}
    # Terminate/console still reach the right node after the restart.
    console = await cl.cc.get_console_output(c.GetConsoleOutput("i-00000002"))
    assert console.output == b"booted i-00000002\n"


async def test_terminate_reboot_console_go_to_the_instance_node() -> None:
    n1, n2 = InMemoryNodeController("n1", cores=1), InMemoryNodeController("n2", cores=1)
    cl = Cluster(n1, n2)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
    await cl.cc.reboot_instances(c.RebootInstances(["i-00000002"]))
    assert n2.count(c.NcRebootInstance) == 1 and n1.count(c.NcRebootInstance) == 0
    with pytest.raises(ClusterFault) as e:
        await cl.cc.reboot_instances(c.RebootInstances(["i-00000002", "i-0000dead"]))
    assert e.value.code == "InvalidInstanceID.NotFound"
    assert n2.count(c.NcRebootInstance) == 1  # nothing done when one id is unknown
    with pytest.raises(ClusterFault) as e:
        await cl.cc.get_console_output(c.GetConsoleOutput("i-0000dead"))
    assert e.value.code == "InvalidInstanceID.NotFound"

    reply = await cl.cc.terminate_instances(c.TerminateInstances(["i-00000001", "i-0000dead"]))
    assert [(s.instance_id, s.state, s.node) for s in reply.instances] == [("i-00000001", "terminated", "n1")]
    assert n1.count(c.NcTerminateInstance) == 1 and n2.count(c.NcTerminateInstance) == 0
    assert cl.network.address_of("i-00000001") is None
    # The node's freed resources count again once it reports.
    await cl.cc.poll_round()
    assert capacity_of(await cl.describe_resources(), SMALL) == (1, 2)
    # A terminated instance the node no longer lists is forgotten.
    del n1.instances["i-00000001"]
    await cl.cc.poll_round()
    assert set(await cl.instances()) == {"i-00000002"}


async def test_console_of_an_instance_on_a_down_node_is_a_fault() -> None:
    n1 = InMemoryNodeController("n1")
    cl = Cluster(n1)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1)]))
    n1.unreachable = True
    with pytest.raises(ClusterFault) as e:
        await cl.cc.get_console_output(c.GetConsoleOutput("i-00000001"))
    assert e.value.code == "Unavailable"


async def test_states_follow_the_node_reports(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "euca.cc")
    n1 = InMemoryNodeController("n1")
    cl = Cluster(n1)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1)]))
    for nc_state, ec2 in [
        ("staging", "pending"),
        ("booting", "running"),
        ("running", "running"),
        ("teardown", "shutting-down"),
        ("terminated", "terminated"),
    ]:
        n1.set_state("i-00000001", nc_state)
        await cl.cc.poll_round()
        status = (await cl.instances())["i-00000001"]
        assert (status.state, status.nc_state) == (ec2, nc_state)
    assert cl.network.address_of("i-00000001") is None
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("instance state")]
    assert len(changes) == 4  # staging -> booting -> running -> teardown -> terminated


async def test_nodes_removed_from_the_topology_are_forgotten() -> None:
    cl = Cluster(InMemoryNodeController("n1", cores=1), InMemoryNodeController("n2", cores=1))
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
    reply = await cl.describe_resources(["n2"])
    assert [n.node for n in reply.nodes] == ["n2"]
    assert set(await cl.instances()) == {"i-00000002"}
    await cl.cc.poll_round()
    assert cl.nodes["n1"].count(c.NcDescribeInstances) == 1  # polled when added, never since
    assert cl.nodes["n2"].count(c.NcDescribeInstances) == 2


async def test_subnet_exhaustion_is_a_fault_and_holds_nothing() -> None:
    cl = Cluster(
        InMemoryNodeController("n1", cores=16, memory_mb=16384), subnet="10.77.0.0/29"
    )  # .2-.6 for instances
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(i) for i in range(4)]))
    with pytest.raises(ClusterFault) as e:
        await cl.cc.run_instances(c.RunInstances([spec(i) for i in range(4, 6)]))
    assert e.value.code == "InsufficientFreeAddressesInSubnet"
    assert len(await cl.instances()) == 4
    assert cl.nodes["n1"].count(c.NcRunInstance) == 4
    reply = await cl.cc.run_instances(c.RunInstances([spec(9)]))
    assert reply.instances[0].private_ip == "10.77.0.6"


async def test_poll_fanout_is_bounded() -> None:
    nodes = [InMemoryNodeController(f"n{i}") for i in range(10)]
    gate = trio.Event()
    active = 0
    most = 0

    class Slow(InProcessClient):
        async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any:
            nonlocal active, most
            active += 1
            most = max(most, active)
            try:
                await gate.wait()
                return await super().call(base_url, message, expect_name=expect_name)
            finally:
                active -= 1

    client = Slow({url(n.name): n for n in nodes})
    cc = ClusterController("cluster01", client, SubnetAllocator("10.77.0.0/24"), poll_fanout=3)
    await cc._set_nodes([c.NodeAddress(n.name, url(n.name)) for n in nodes])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cc.poll_round)
        await trio.testing.wait_all_tasks_blocked()
        assert active == 3
        gate.set()
    assert most == 3
    assert all(n.up for n in cc.nodes.values())


async def test_a_poll_is_one_call_per_node_and_two_for_an_older_nc() -> None:
    new, old = InMemoryNodeController("n1"), InMemoryNodeController("n2")
    old.one_call = False
    seen: list[tuple[str, str]] = []

    class Recording(InProcessClient):
        async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any:
            seen.append((str(expect_name), type(message).__name__))
            return await super().call(base_url, message, expect_name=expect_name)

    cc = ClusterController(
        "cluster01", Recording({url(n.name): n for n in (new, old)}), SubnetAllocator("10.77.0.0/24")
    )
    await cc._set_nodes([c.NodeAddress(n.name, url(n.name)) for n in (new, old)])
    await cc.poll_round()
    await cc.poll_round()
    assert all(n.up for n in cc.nodes.values())
    assert [m for name, m in seen if name == "n1"] == ["NcDescribeNode", "NcDescribeNode"]
    # The older NC is asked once, then polled the old way from then on.
    assert [m for name, m in seen if name == "n2"] == [
        "NcDescribeNode",
        "NcDescribeInstances",
        "NcDescribeResource",
        "NcDescribeInstances",
        "NcDescribeResource",
    ]


async def test_the_poll_loop_runs_rounds_until_cancelled() -> None:
    node = InMemoryNodeController("n1")
    cl = Cluster(node)
    cl.cc.poll_interval = 3600  # rounds come from kick(), not the clock
    await cl.describe_resources()
    async with trio.open_nursery() as nursery:
        await nursery.start(cl.cc.run)
        await trio.testing.wait_all_tasks_blocked()
        first = node.count(c.NcDescribeResource)
        cl.cc.kick()
        await trio.testing.wait_all_tasks_blocked()
        assert node.count(c.NcDescribeResource) == first + 1
        nursery.cancel_scope.cancel()


async def test_runs_and_terminates_are_watched_until_their_instances_arrive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After RunInstances (TerminateInstances) the CC polls the nodes concerned soon and then at doubling
    intervals while their instances are pending (shutting down), not only every poll interval."""
    node = InMemoryNodeController("n1")
    cl = Cluster(node)
    cl.cc.poll_interval = 3600  # only the watch polls within this test
    await cl.describe_resources()
    async with trio.open_nursery() as nursery:
        await nursery.start(cl.cc.run)
        await trio.testing.wait_all_tasks_blocked()
        before = node.count(c.NcDescribeInstances)
        await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
        await trio.sleep(0.35)  # watch polls at 0.1 and 0.3 s: the node still stages them
        assert node.count(c.NcDescribeInstances) == before + 2
        assert {s.state for s in (await cl.instances()).values()} == {"pending"}
        node.set_state("i-00000001", "running")
        node.set_state("i-00000002", "running")
        await trio.sleep(0.4)  # the next, at 0.7 s
        assert {s.state for s in (await cl.instances()).values()} == {"running"}
        polls = node.count(c.NcDescribeInstances)
        await trio.sleep(1000)  # nothing on the way: the watch has ended
        assert node.count(c.NcDescribeInstances) == polls
        node.terminate_to = "teardown"
        await cl.cc.terminate_instances(c.TerminateInstances(["i-00000001"]))
        await trio.sleep(0.15)
        assert (await cl.instances())["i-00000001"].state == "shutting-down"
        node.set_state("i-00000001", "terminated")
        await trio.sleep(0.2)
        assert (await cl.instances())["i-00000001"].state == "terminated"
        nursery.cancel_scope.cancel()


async def test_one_watch_per_node_polling_every_second_while_instances_stay_pending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    node = InMemoryNodeController("n1")
    cl = Cluster(node)
    cl.cc.poll_interval = 3600
    await cl.describe_resources()
    async with trio.open_nursery() as nursery:
        await nursery.start(cl.cc.run)
        await trio.testing.wait_all_tasks_blocked()
        before = node.count(c.NcDescribeInstances)
        await cl.cc.run_instances(c.RunInstances([spec(1)]))
        await cl.cc.run_instances(c.RunInstances([spec(2), spec(3)]))  # the same node: the same watch
        await trio.sleep(6.55)  # polls at 0.1, 0.3, 0.7, 1.5 s, then every second: 2.5 ... 6.5
        assert node.count(c.NcDescribeInstances) == before + 4 + 5
        for n in (1, 2, 3):
            node.set_state(f"i-0000000{n}", "running")
        await trio.sleep(1)
        polls = node.count(c.NcDescribeInstances)
        await trio.sleep(100)
        assert node.count(c.NcDescribeInstances) == polls
        nursery.cancel_scope.cancel()


async def test_asked_about_instances_on_their_way_the_cc_asks_their_nodes_first() -> None:
    node = InMemoryNodeController("n1")
    cl = Cluster(node)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
    node.set_state("i-00000001", "running")
    polls = node.count(c.NcDescribeInstances)
    reply = await cl.cc.describe_instances(c.DescribeInstances(["i-00000001"]))
    assert [(s.instance_id, s.state) for s in reply.instances] == [("i-00000001", "running")]
    assert node.count(c.NcDescribeInstances) == polls + 1
    # Nothing on its way among those asked: the CC's own view, no call to the node.
    reply = await cl.cc.describe_instances(c.DescribeInstances(["i-00000001"]))
    assert node.count(c.NcDescribeInstances) == polls + 1
    # Everything (the CLC's regular poll): the CC's view as it is.
    node.set_state("i-00000002", "running")
    reply = await cl.cc.describe_instances(c.DescribeInstances())
    assert {s.instance_id: s.state for s in reply.instances}["i-00000002"] == "pending"


def test_wire_round_trip_of_a_spec_with_network() -> None:
    s = msgspec.structs.replace(spec(1), net=c.NetConfig("d0:0d:00:00:00:01", "10.77.0.2", "euca-br0"))
    path, body = c.encode_request(c.NcRunInstance(s))
    assert c.decode_request(path, body) == c.NcRunInstance(s)


async def test_a_node_answering_under_another_name_is_down() -> None:
    cl = Cluster(InMemoryNodeController("n1"))
    topology = [c.NodeAddress("n9", url("n1"))]  # registered as n9, but n1 answers there
    reply = await cl.cc.describe_resources(c.DescribeResources("cluster01", topology, VM_TYPES))
    assert reply.nodes[0].state == "down"
    assert (reply.nodes[0].reason or "").startswith("Unauthorized")


async def test_a_cancelled_run_holds_nothing_after_the_next_report() -> None:
    node = InMemoryNodeController("n1")
    cl = Cluster(node)
    await cl.describe_resources()
    node.run_gate = trio.Event()  # never set: the call hangs until cancelled
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cl.cc.run_instances, c.RunInstances([spec(1)]))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert (await cl.instances())["i-00000001"].state == "pending"
    await cl.cc.poll_round()  # the node never got it
    assert await cl.instances() == {}
    assert capacity_of(await cl.describe_resources(), SMALL) == (4, 4)


async def test_a_slot_is_free_as_soon_as_its_node_reports_the_instance_terminated() -> None:
    """A relaunch right after a terminate fits: the slot counts as free once the node has reported the
    domain gone (the terminate's follow-up poll), not only at the next full poll of the node."""
    node = InMemoryNodeController("n1", cores=2)
    node.terminate_to = "teardown"  # as a real node: terminated a moment after the call
    cl = Cluster(node)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
    node.set_state("i-00000001", "running")
    node.set_state("i-00000002", "running")
    await cl.cc.poll_round()
    assert capacity_of(await cl.describe_resources(), SMALL) == (0, 2)
    await cl.cc.terminate_instances(c.TerminateInstances(["i-00000001"]))
    assert capacity_of(await cl.describe_resources(), SMALL) == (0, 2)  # shutting down: still used
    node.set_state("i-00000001", "terminated")
    reply = await cl.cc.describe_instances(c.DescribeInstances(["i-00000001"]))  # a follow-up poll
    assert reply.instances[0].state == "terminated"
    assert capacity_of(await cl.describe_resources(), SMALL) == (1, 2)
    await cl.cc.run_instances(c.RunInstances([spec(3, reservation="r-2")]))
    assert capacity_of(await cl.describe_resources(), SMALL) == (0, 2)
    # The next full poll agrees, and nothing is freed twice.
    await cl.cc.poll_round()
    assert capacity_of(await cl.describe_resources(), SMALL) == (0, 2)
    with pytest.raises(ClusterFault) as e:
        await cl.cc.run_instances(c.RunInstances([spec(4, reservation="r-3")]))
    assert e.value.code == "InsufficientInstanceCapacity"


async def test_a_terminate_answered_terminated_frees_the_slot_at_once() -> None:
    node = InMemoryNodeController("n1", cores=1)
    cl = Cluster(node)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1)]))
    await cl.cc.poll_round()
    await cl.cc.terminate_instances(c.TerminateInstances(["i-00000001"]))
    assert capacity_of(await cl.describe_resources(), SMALL) == (1, 1)


async def test_an_instance_the_watch_saw_start_still_counts_until_a_full_report() -> None:
    """The short polls of instances on their way change states only: resources the node last reported
    did not count an instance placed after them, whatever state it is in now."""
    node = InMemoryNodeController("n1", cores=2)
    cl = Cluster(node)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1)]))
    node.set_state("i-00000001", "running")
    await cl.cc.describe_instances(c.DescribeInstances(["i-00000001"]))
    assert (await cl.instances())["i-00000001"].state == "running"
    assert capacity_of(await cl.describe_resources(), SMALL) == (1, 2)
    await cl.cc.poll_round()
    assert capacity_of(await cl.describe_resources(), SMALL) == (1, 2)


class EndsBetweenAnswers(InMemoryNodeController):
    """A node whose instance ends between its answer listing the instances and its resources answer."""

    ending: str | None = None

    async def handle(self, message: Any) -> Any:
        if isinstance(message, c.NcDescribeResource) and self.ending is not None:
            self.set_state(self.ending, "terminated")
            self.ending = None
        return await super().handle(message)


async def test_an_instance_ending_between_a_polls_two_answers_is_not_freed_twice() -> None:
    node = EndsBetweenAnswers("n1", cores=2)
    node.terminate_to = "teardown"
    cl = Cluster(node)
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
    node.set_state("i-00000001", "running")
    node.set_state("i-00000002", "running")
    await cl.cc.poll_round()
    await cl.cc.terminate_instances(c.TerminateInstances(["i-00000001"]))
    node.ending = "i-00000001"  # listed shutting down, then not counted by the resources
    await cl.cc.poll_round()
    assert capacity_of(await cl.describe_resources(), SMALL) == (1, 2)
    await cl.cc.describe_instances(c.DescribeInstances(["i-00000001"]))
    assert (await cl.instances())["i-00000001"].state == "terminated"
    assert capacity_of(await cl.describe_resources(), SMALL) == (1, 2)


async def test_the_polls_network_view_goes_to_the_network() -> None:
    cl = Cluster(InMemoryNodeController("n1"))
    await cl.describe_resources()
    assert cl.network.view is None  # a poll without a view leaves the network as it is
    view = c.NetworkView(
        version="v1",
        instances=[c.InstanceNetwork("i-00000001", ["sg-0000000a"], "203.0.113.10")],
        groups=[c.GroupRules("sg-0000000a", [c.SecurityRule("tcp", 22, 22, cidr="0.0.0.0/0")])],
    )
    topology = [c.NodeAddress("n1", url("n1"))]
    await cl.cc.describe_resources(c.DescribeResources("cluster01", topology, VM_TYPES, network=view))
    assert cl.network.view == view


async def test_attach_and_detach_volume_go_to_the_instances_node() -> None:
    cl = Cluster(InMemoryNodeController("n1", cores=1), InMemoryNodeController("n2", cores=1))
    await cl.describe_resources()
    await cl.cc.run_instances(c.RunInstances([spec(1), spec(2)]))
    export = c.VolumeExport(kind="nbd", name="vol-0123abcd", path="/run/sc/nbd.sock")
    status = await cl.cc.attach_volume(c.AttachVolume("i-00000002", "vol-0123abcd", "/dev/sdf", export))
    assert status.node == "n2" and status.volumes == [c.AttachedVolume("vol-0123abcd", "/dev/sdf", "vdb")]
    [sent] = [m for m in cl.nodes["n2"].calls if isinstance(m, c.NcAttachVolume)]
    assert sent == c.NcAttachVolume("i-00000002", "vol-0123abcd", "/dev/sdf", export)
    assert cl.nodes["n1"].count(c.NcAttachVolume) == 0
    # The CC's own view (what DescribeInstances answers the CLC) has it too.
    reply = await cl.cc.describe_instances(c.DescribeInstances(["i-00000002"]))
    assert [v.volume_id for v in reply.instances[0].volumes] == ["vol-0123abcd"]
    status = await cl.cc.detach_volume(c.DetachVolume("i-00000002", "vol-0123abcd", force=True))
    assert status.volumes == []
    [detach] = [m for m in cl.nodes["n2"].calls if isinstance(m, c.NcDetachVolume)]
    assert detach.force is True
    with pytest.raises(ClusterFault) as e:
        await cl.cc.attach_volume(c.AttachVolume("i-0000000f", "vol-0123abcd", "/dev/sdf", export))
    assert e.value.code == "InvalidInstanceID.NotFound"
    cl.nodes["n2"].unreachable = True
    with pytest.raises(ClusterFault) as e:
        await cl.cc.detach_volume(c.DetachVolume("i-00000002", "vol-0123abcd"))
    assert e.value.code == "Unavailable"
