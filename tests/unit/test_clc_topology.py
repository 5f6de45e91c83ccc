"""The CLC's topology tables: registration rules, one-box registration, the poller's record (real SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from euca.core.store import Store, Tx
from euca.protocol.cluster import NodeResources, TypeCapacity
from euca.roles.clc import admin, schema
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.topology import records as topology
from euca.roles.clc.topology.records import TopologyError


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state.db")
    schema.migrate(s)
    return s


def test_register_is_idempotent_and_refuses_conflicts(store: Store) -> None:
    url = topology.service_url("10.0.0.1", 8774)
    assert url == "https://10.0.0.1:8774"
    assert topology.service_url("fd00::1", 8774) == "https://[fd00::1]:8774"
    c = store.write_sync(lambda tx: topology.register_cluster(tx, "c1", url))
    assert (c.name, c.zone, c.state) == ("c1", "c1", "unknown")
    assert store.write_sync(lambda tx: topology.register_cluster(tx, "c1", url)).registered == c.registered
    with pytest.raises(TopologyError, match="already registered"):
        store.write_sync(lambda tx: topology.register_cluster(tx, "c1", "https://10.0.0.2:8774"))
    with pytest.raises(TopologyError, match="already served"):
        store.write_sync(lambda tx: topology.register_cluster(tx, "c2", url, "c1"))
    with pytest.raises(TopologyError, match="no cluster"):
        store.write_sync(lambda tx: topology.register_node(tx, "n1", "nope", "https://10.0.0.3:8775"))
    store.write_sync(lambda tx: topology.register_node(tx, "n1", "c1", "https://10.0.0.3:8775"))
    with pytest.raises(TopologyError, match="already registered"):
        store.write_sync(lambda tx: topology.register_node(tx, "n1", "c1", "https://10.0.0.4:8775"))
    with pytest.raises(TopologyError, match="invalid"):
        topology.service_url("a b", 8774)
    with pytest.raises(TopologyError, match="invalid node name"):
        store.write_sync(lambda tx: topology.register_node(tx, "n 2", "c1", url))
    assert [n.address.url for n in store.read_sync(topology.list_nodes)] == ["https://10.0.0.3:8775"]


def test_deregister_cluster_refused_while_instances_run(store: Store) -> None:
    def setup(tx: Tx) -> None:
        topology.register_cluster(tx, "c1", "https://10.0.0.1:8774", "z1")
        topology.register_node(tx, "n1", "c1", "https://10.0.0.3:8775")
        tx.execute(
            "INSERT INTO clc_reservations(reservation_id, account_id, requester, request_digest, created) "
            "VALUES('r-00000001', '123456789012', 'arn', 'x', 0)"
        )
        tx.execute(
            "INSERT INTO clc_instances(instance_id, reservation_id, account_id, launch_index, image_id, "
            "instance_type, zone, cluster, state, launch_time, last_seen) "
            "VALUES('i-00000001', 'r-00000001', '123456789012', 0, 'emi-00000001', 'm1.small', 'z1', 'c1', "
            "'running', 0, 0)"
        )

    store.write_sync(setup)
    with pytest.raises(TopologyError, match="still has 1 instance"):
        store.write_sync(lambda tx: admin.deregister_cluster(tx, "c1"))
    with pytest.raises(TopologyError, match="no cluster"):
        store.write_sync(lambda tx: admin.deregister_cluster(tx, "c2"))
    store.write_sync(lambda tx: tx.execute("UPDATE clc_instances SET state='terminated'"))
    store.write_sync(lambda tx: admin.deregister_cluster(tx, "c1"))
    assert store.read_sync(topology.list_nodes) == []
    with pytest.raises(TopologyError, match="no node"):
        store.write_sync(lambda tx: topology.deregister_node(tx, "n1"))


def test_one_box_registers_once_and_follows_local_ports(store: Store) -> None:
    changed = store.write_sync(
        lambda tx: topology.register_local(
            tx, "cluster01", "euca-1a", "https://127.0.0.1:1", "vm", "https://127.0.0.1:2", 1.0
        )
    )
    assert len(changed) == 2
    # next start: new ports, same registration
    store.write_sync(
        lambda tx: topology.register_local(
            tx, "cluster01", "euca-1a", "https://127.0.0.1:3", "vm", "https://127.0.0.1:4", 2.0
        )
    )
    (c,) = store.read_sync(topology.list_clusters)
    (n,) = store.read_sync(topology.list_nodes)
    assert (c.zone, c.url, n.url) == ("euca-1a", "https://127.0.0.1:3", "https://127.0.0.1:4")
    # what the admin registered is not the one-box's to change
    store.write_sync(lambda tx: topology.register_cluster(tx, "other", "https://10.0.0.9:8774"))
    assert (
        store.write_sync(
            lambda tx: topology.register_local(tx, "other", "x", "https://127.0.0.1:5", None, None, 3.0)
        )
        == []
    )


def test_poll_record_and_instance_type_edits(store: Store) -> None:
    store.write_sync(lambda tx: topology.register_cluster(tx, "c1", "https://10.0.0.1:8774"))
    nodes = [NodeResources("n1", "up", 4, 4, 4096, 4096, 100, 100)]
    capacity = [TypeCapacity("m1.small", 4, 4)]
    store.write_sync(
        lambda tx: topology.record_poll(tx, "c1", now=5.0, ok=True, nodes=nodes, capacity=capacity)
    )
    (c,) = store.read_sync(topology.list_clusters)
    assert (c.available, c.last_seen, c.nodes, c.capacity) == (True, 5.0, nodes, capacity)
    store.write_sync(
        lambda tx: topology.record_poll(tx, "c1", now=9.0, ok=False, reason="Unavailable: refused")
    )
    (c,) = store.read_sync(topology.list_clusters)
    # down: not available, but the last resources and when it was last seen are kept
    assert (c.available, c.state, c.reason, c.last_seen, c.capacity) == (
        False,
        "down",
        "Unavailable: refused",
        5.0,
        capacity,
    )

    t = store.write_sync(lambda tx: instance_types.modify_instance_type(tx, "m1.small", cpu=2, disk_gib=8))
    assert (t.cpu, t.memory_mib, t.disk_gib) == (2, 256, 8)
    vm = next(v for v in store.read_sync(instance_types.vm_types) if v.name == "m1.small")
    assert (vm.cores, vm.memory_mb, vm.disk_gb) == (2, 256, 8)
    with pytest.raises(instance_types.InstanceTypeError):
        store.write_sync(lambda tx: instance_types.modify_instance_type(tx, "m1.small", memory_mib=0))
    with pytest.raises(instance_types.InstanceTypeError):
        store.write_sync(lambda tx: instance_types.modify_instance_type(tx, "nope", cpu=1))


def test_storage_controllers_one_per_cluster(store: Store) -> None:
    with pytest.raises(TopologyError, match="no cluster"):
        store.write_sync(lambda tx: topology.register_storage(tx, "c1", "https://10.0.0.1:8776"))
    store.write_sync(lambda tx: topology.register_cluster(tx, "c1", "https://10.0.0.1:8774", "z1"))
    sc = store.write_sync(lambda tx: topology.register_storage(tx, "c1", "https://10.0.0.2:8776"))
    assert (sc.cluster, sc.url, sc.state) == ("c1", "https://10.0.0.2:8776", "unknown")
    # the same again is nothing; another SC for the cluster is refused
    store.write_sync(lambda tx: topology.register_storage(tx, "c1", "https://10.0.0.2:8776"))
    with pytest.raises(TopologyError, match="has a storage controller"):
        store.write_sync(lambda tx: topology.register_storage(tx, "c1", "https://10.0.0.3:8776"))
    store.write_sync(
        lambda tx: topology.record_storage_poll(
            tx, "c1", now=5.0, ok=True, backend="files", capacity_gb=100, allocated_gb=3
        )
    )
    found = store.read_sync(lambda tx: topology.get_storage(tx, "c1"))
    assert found is not None and (found.state, found.capacity_gb, found.allocated_gb) == ("up", 100, 3)
    c = store.read_sync(lambda tx: topology.cluster_of_zone(tx, "z1"))
    assert c is not None and c.name == "c1"
    # a one-box registers nothing over what the admin registered, and follows only its own
    assert (
        store.write_sync(lambda tx: topology.register_local_storage(tx, "c1", "https://127.0.0.1:9", 6.0))
        == []
    )
    store.write_sync(lambda tx: topology.deregister_storage(tx, "c1"))
    assert store.write_sync(lambda tx: topology.register_local_storage(tx, "c1", "https://127.0.0.1:9", 6.0))
    assert store.write_sync(lambda tx: topology.register_local_storage(tx, "c1", "https://127.0.0.1:7", 7.0))
    assert store.read_sync(topology.list_storage)[0].url == "https://127.0.0.1:7"
    assert store.write_sync(lambda tx: topology.register_local_storage(tx, "nope", "https://x:1", 8.0)) == []
    # deregistering the cluster takes its SC along
    store.write_sync(lambda tx: topology.deregister_cluster(tx, "c1"))
    assert store.read_sync(topology.list_storage) == []
