"""Each cluster's private subnet (issue 9): set by the admin at register-cluster or later while the cluster
has no instances (two clusters may share one), recorded at the CLC, sent in every DescribeResources, and
taken by the CC while no instance holds an address of its current one."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from euca.core.store import Store, Tx
from euca.protocol import cluster as c
from euca.roles.cc.controller import ClusterController
from euca.roles.cc.network import ClusterNetwork
from euca.roles.cc.vmnet import SubnetAllocator
from euca.roles.clc import admin, schema
from euca.roles.clc.topology import records as topology
from euca.roles.clc.topology.records import TopologyError
from helpers.cc_nodes import VM_TYPES, InMemoryNodeController, WireCheckedNodeClient, spec


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state.db")
    schema.migrate(s)
    return s


@pytest.mark.parametrize(
    "text, normal",
    [
        ("10.77.0.0/24", "10.77.0.0/24"),
        (" 172.16.0.0/12", "172.16.0.0/12"),
        ("192.168.5.0/29", "192.168.5.0/29"),
    ],
)
def test_subnets_in_their_normal_form(text: str, normal: str) -> None:
    assert topology.check_subnet(text) == normal


@pytest.mark.parametrize(
    "text", ["10.77.0.1/24", "10.77.0.0/30", "10.0.0.0/7", "10.77.0.0", "fd00::/64", "127.0.0.0/8", "x"]
)
def test_bad_subnets_are_refused(text: str) -> None:
    with pytest.raises(TopologyError, match="invalid subnet"):
        topology.check_subnet(text)


def launch_one(tx: Tx) -> None:
    tx.execute(
        "INSERT INTO clc_reservations(reservation_id, account_id, requester, request_digest, created) "
        "VALUES('r-00000001', '123456789012', 'arn', 'x', 0)"
    )
    tx.execute(
        "INSERT INTO clc_instances(instance_id, reservation_id, account_id, launch_index, image_id, "
        "instance_type, zone, cluster, state, launch_time, last_seen) "
        "VALUES('i-00000001', 'r-00000001', '123456789012', 0, 'emi-00000001', 'm1.small', 'c1', 'c1', "
        "'running', 0, 0)"
    )


def test_register_with_a_subnet_share_it_and_change_it_only_without_instances(store: Store) -> None:
    c1 = store.write_sync(
        lambda tx: topology.register_cluster(tx, "c1", "https://10.0.0.1:8774", subnet="10.77.0.0/24")
    )
    assert c1.subnet == "10.77.0.0/24"
    # Two clusters may share one subnet (their traffic meets on public addresses).
    c2 = store.write_sync(
        lambda tx: topology.register_cluster(tx, "c2", "https://10.0.0.2:8774", subnet="10.77.0.0/24")
    )
    assert c2.subnet == c1.subnet
    # Registering again the same is no change; another subnet is modify-cluster's.
    again = store.write_sync(lambda tx: topology.register_cluster(tx, "c1", "https://10.0.0.1:8774"))
    assert again.subnet == "10.77.0.0/24"
    with pytest.raises(TopologyError, match="already registered"):
        store.write_sync(
            lambda tx: topology.register_cluster(tx, "c1", "https://10.0.0.1:8774", subnet="10.78.0.0/24")
        )
    with pytest.raises(TopologyError, match="invalid subnet"):
        store.write_sync(
            lambda tx: topology.register_cluster(tx, "c3", "https://10.0.0.3:8774", subnet="10.78.0.1/24")
        )
    assert (
        store.write_sync(lambda tx: admin.set_cluster_subnet(tx, "c1", "10.78.0.0/16")).subnet
        == "10.78.0.0/16"
    )
    store.write_sync(launch_one)
    with pytest.raises(TopologyError, match="still has 1 instance"):
        store.write_sync(lambda tx: admin.set_cluster_subnet(tx, "c1", "10.79.0.0/24"))
    with pytest.raises(TopologyError, match="no cluster"):
        store.write_sync(lambda tx: admin.set_cluster_subnet(tx, "nope", "10.79.0.0/24"))
    store.write_sync(lambda tx: tx.execute("UPDATE clc_instances SET state='terminated'"))
    assert store.write_sync(lambda tx: admin.set_cluster_subnet(tx, "c1", None)).subnet is None
    assert {x.name: x.subnet for x in store.read_sync(topology.list_clusters)} == {
        "c1": None,
        "c2": "10.77.0.0/24",
    }


NODE_URL = "https://n1:8775"
TOPOLOGY = [c.NodeAddress("n1", NODE_URL)]


async def test_the_cc_takes_the_clcs_subnet_while_it_holds_no_address() -> None:
    network = SubnetAllocator("10.77.0.0/24")
    cc = ClusterController("c1", WireCheckedNodeClient({NODE_URL: InMemoryNodeController("n1")}), network)
    reply = await cc.describe_resources(c.DescribeResources("c1", TOPOLOGY, VM_TYPES, subnet="10.88.0.0/24"))
    assert reply.subnet == "10.88.0.0/24" == network.subnet
    placed = await cc.run_instances(c.RunInstances([spec(1)]))
    assert placed.instances[0].private_ip == "10.88.0.2"
    # An instance holds an address: the CC stays where it is and says so.
    reply = await cc.describe_resources(c.DescribeResources("c1", TOPOLOGY, VM_TYPES, subnet="10.99.0.0/24"))
    assert reply.subnet == "10.88.0.0/24"
    # No subnet from the CLC: the CC keeps what it serves.
    reply = await cc.describe_resources(c.DescribeResources("c1", TOPOLOGY, VM_TYPES))
    assert reply.subnet == "10.88.0.0/24"


async def test_the_network_service_starts_again_on_the_new_subnet(tmp_path: Path) -> None:
    net = ClusterNetwork("c1", "10.77.0.0/24", None, None, tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        first = await net.allocate("i-00000001")
        assert first.private_ip == "10.77.0.2"
        assert not net.set_subnet("10.66.0.0/24")  # an instance holds an address
        await net.release("i-00000001")
        assert net.set_subnet("10.66.0.0/24") and net.subnet == "10.66.0.0/24"
        assert net.firewall.subnet == "10.66.0.0/24"
        await trio.testing.wait_all_tasks_blocked()
        second = await net.allocate("i-00000002")
        assert second.private_ip == "10.66.0.2"
        await net.sync()  # the restarted service writes the hosts file of the new subnet
        assert "10.66.0.2" in (tmp_path / "dhcp-hosts").read_text()
        assert net.set_subnet("10.66.0.0/24")  # the same again: nothing to do
        nursery.cancel_scope.cancel()
