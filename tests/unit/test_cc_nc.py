"""The CC driving real node controllers (euca.roles.nc) on libvirt's test:///default driver.

Two NCs, each on its own test:///default connection (the test driver keeps its domains per connection), with
a real bundle behind a real download manifest for the node image key. The CC reaches them through the wire
format in process (no sockets: the mTLS path has its own test in test_cc_role.py). The test driver runs no
guests, so "running" is libvirt's word and consoles are empty.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from euca.core.pki import CloudCA
from euca.images.bundler import bundle_image
from euca.protocol import bundle as b
from euca.protocol import cluster as c
from euca.protocol.cluster import ClusterFault
from euca.roles.cc.controller import ClusterController
from euca.roles.cc.vmnet import SubnetAllocator

libvirt = pytest.importorskip("libvirt")
try:
    from euca.roles.nc.controller import NodeController
    from euca.roles.nc.hypervisor import Hypervisor
    from euca.roles.nc.image_fetch import NodeKeys
    from euca.roles.nc.settings import NcSettings
except ImportError as e:  # pragma: no cover - the NC arrives with its own helper
    pytest.skip(f"the node controller is not usable here: {e}", allow_module_level=True)

SMALL = c.VmType("m1.small", 1, 256, 1)
GUARD = 60  # seconds: a guard against a hang, never a timing assertion


@dataclass
class Cloud:
    ca: CloudCA
    keys: NodeKeys
    machine: c.ImageRef


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Cloud:
    base = tmp_path_factory.mktemp("cloud")
    ca = CloudCA.load_or_create(base / "ca")
    node_key, node_cert = ca.issue("node-image")
    user_key, user_cert = ca.issue("user-000000000042")
    src = base / "emi-00000001.src"
    src.write_bytes(os.urandom(256 * 1024) + bytes(768 * 1024))
    result = bundle_image(
        src,
        base / "bundle",
        user="000000000042",
        cloud_cert=ca.cert,
        user_cert=b.load_certificate(user_cert),
        user_key=b.load_private_key(user_key),
        image_type="machine",
    )
    manifest = b.parse_manifest(result.manifest)
    download = b.build_download_manifest(
        manifest,
        image_id="emi-00000001",
        part_urls=[str(base / "bundle" / p.filename) for p in manifest.parts],  # read like fetched URLs
        cloud_key=ca.key,
        node_cert=b.load_certificate(node_cert),
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    keys = NodeKeys(b.load_private_key(node_key), b.load_certificate(node_cert), ca.cert)
    return Cloud(ca, keys, c.ImageRef("emi-00000001", "machine", download.decode()))


def spec(cloud: Cloud, n: int) -> c.InstanceSpec:
    return c.InstanceSpec(
        instance_id=f"i-{n:08x}",
        reservation_id="r-00000001",
        account_id="000000000042",
        launch_index=n,
        vm_type=SMALL,
        machine=cloud.machine,
    )


class InProcessNodes:
    """The CC's client: messages cross the wire format to the NCs' own handler tables."""

    def __init__(self) -> None:
        self.handlers: dict[str, tuple[str, dict[type, Callable[[Any], Awaitable[Any]]]]] = {}

    async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any:
        name, table = self.handlers[base_url]
        assert expect_name in (None, name)
        path, body = c.encode_request(message)
        decoded = c.decode_request(path, body)
        try:
            reply = await table[type(decoded)](decoded)
        except ClusterFault as fault:
            c.decode_reply(type(message), fault.status, c.encode_fault(fault.code, fault.message))
            raise AssertionError("unreachable") from None
        return c.decode_reply(type(message), 200, c.encode_reply(reply))


@dataclass
class Nodes:
    ncs: dict[str, NodeController]
    client: InProcessNodes
    conns: dict[str, Any]

    def url(self, name: str) -> str:
        return f"https://{name}.test:8775"

    def topology(self) -> list[c.NodeAddress]:
        return [c.NodeAddress(name, self.url(name)) for name in self.ncs]

    async def settle(self, instance_id: str) -> None:
        for nc in self.ncs.values():
            inst = nc.instances.get(instance_id)
            if inst is not None:
                with trio.fail_after(GUARD):
                    await inst.settled.wait()
                assert inst.state == "booting", inst.reason


@pytest.fixture
async def nodes(tmp_path: Path, cloud: Cloud, nursery: trio.Nursery) -> AsyncIterator[Nodes]:
    client = InProcessNodes()
    ncs: dict[str, NodeController] = {}
    conns: dict[str, Any] = {}
    for name in ("node-1", "node-2"):
        data = tmp_path / name
        settings = NcSettings(
            name=name,
            data_dir=data,
            instances_dir=data / "nc/instances",
            cache_dir=data / "nc/cache",
            cache_max_bytes=1 << 30,
            libvirt_uri="test:///default",
            hypervisor="qemu",
            cores=2,
            memory_mb=4096,
            disk_gb=40,
            monitor_interval=3600,  # refreshed when the CC asks
        )
        conn = libvirt.open("test:///default")
        nc = NodeController(settings, Hypervisor(settings.libvirt_uri, conn=conn), keys=lambda: cloud.keys)
        await nursery.start(nc.run)
        ncs[name], conns[name] = nc, conn
    result = Nodes(ncs, client, conns)
    for name, nc in ncs.items():
        client.handlers[result.url(name)] = (name, nc.handlers())
    yield result
    for conn in conns.values():
        conn.close()


def controller(nodes: Nodes, network: SubnetAllocator | None = None) -> ClusterController:
    return ClusterController("cluster01", nodes.client, network or SubnetAllocator("10.77.0.0/24"))


async def describe(cc: ClusterController, nodes: Nodes) -> c.ResourcesReply:
    return await cc.describe_resources(c.DescribeResources("cluster01", nodes.topology(), [SMALL]))


async def test_cc_runs_polls_terminates_and_rebuilds_with_real_ncs(nodes: Nodes, cloud: Cloud) -> None:
    cc = controller(nodes)
    resources = await describe(cc, nodes)
    assert [(n.node, n.state, n.cores_max) for n in resources.nodes] == [
        ("node-1", "up", 2),
        ("node-2", "up", 2),
    ]
    assert resources.capacity == [c.TypeCapacity("m1.small", free=4, max=4)]

    reply = await cc.run_instances(c.RunInstances([spec(cloud, 1), spec(cloud, 2), spec(cloud, 3)]))
    assert [(s.node, s.state) for s in reply.instances] == [("node-1", "pending")] * 2 + [
        ("node-2", "pending")
    ]
    for s in reply.instances:
        await nodes.settle(s.instance_id)
    await cc.poll_round()
    listed = {s.instance_id: s for s in (await cc.describe_instances(c.DescribeInstances())).instances}
    assert {i: (s.state, s.node) for i, s in listed.items()} == {
        "i-00000001": ("running", "node-1"),
        "i-00000002": ("running", "node-1"),
        "i-00000003": ("running", "node-2"),
    }
    # The NC got the CC's address and MAC.
    assert listed["i-00000003"].private_ip == reply.instances[2].private_ip
    assert listed["i-00000003"].mac == "d0:0d:00:00:00:03"
    assert capacity(await describe(cc, nodes)) == (1, 4)
    console = await cc.get_console_output(c.GetConsoleOutput("i-00000003"))
    assert console.instance_id == "i-00000003"
    await cc.reboot_instances(c.RebootInstances(["i-00000001"]))

    # A CC restarted now learns all of it from the nodes on the CLC's next poll.
    network = SubnetAllocator("10.77.0.0/24")
    fresh = controller(nodes, network)
    assert capacity(await describe(fresh, nodes)) == (1, 4)
    rebuilt = {s.instance_id: s for s in (await fresh.describe_instances(c.DescribeInstances())).instances}
    assert {i: (s.state, s.node, s.private_ip) for i, s in rebuilt.items()} == {
        i: (s.state, s.node, s.private_ip) for i, s in listed.items()
    }
    assert {network.address_of(i).private_ip for i in rebuilt} == {s.private_ip for s in listed.values()}  # type: ignore[union-attr]

    ended = await fresh.terminate_instances(c.TerminateInstances(["i-00000002"]))
    assert [(s.instance_id, s.node) for s in ended.instances] == [("i-00000002", "node-1")]
    with trio.fail_after(GUARD):
        while nodes.ncs["node-1"].instances["i-00000002"].state != "terminated":
            await trio.sleep(0.05)
    await fresh.poll_round()
    after = {
        s.instance_id: s.state for s in (await fresh.describe_instances(c.DescribeInstances())).instances
    }
    assert after["i-00000002"] == "terminated"
    assert network.address_of("i-00000002") is None
    assert "i-00000002" not in [d.name() for d in nodes.conns["node-1"].listAllDomains(0)]
    assert capacity(await describe(fresh, nodes)) == (2, 4)


async def test_all_or_nothing_when_a_real_nc_refuses(nodes: Nodes, cloud: Cloud) -> None:
    cc = controller(nodes)
    await describe(cc, nodes)
    # Something the CC has not heard of yet takes node-2's room (its next poll would show it).
    await nodes.ncs["node-2"].run_instance(c.NcRunInstance(spec(cloud, 0x99)))
    await nodes.ncs["node-2"].run_instance(c.NcRunInstance(spec(cloud, 0x98)))
    with pytest.raises(ClusterFault) as fault:
        await cc.run_instances(c.RunInstances([spec(cloud, i) for i in range(1, 5)]))
    assert fault.value.code == "InsufficientInstanceCapacity"
    assert "node-2" in fault.value.message
    # node-1 started two and terminated both; nothing of the request is left running anywhere.
    for i in ("i-00000001", "i-00000002"):
        inst = nodes.ncs["node-1"].instances.get(i)
        assert inst is None or inst.state in ("teardown", "terminated"), inst.state
    assert (await cc.describe_instances(c.DescribeInstances())).instances == []
    with trio.fail_after(GUARD):
        while any(i.state != "terminated" for i in nodes.ncs["node-1"].instances.values()):
            await trio.sleep(0.05)
    await cc.poll_round()
    assert capacity(await describe(cc, nodes)) == (2, 4)
    listed = {s.instance_id for s in (await cc.describe_instances(c.DescribeInstances())).instances}
    assert {"i-00000099", "i-00000098"} <= listed


def capacity(reply: c.ResourcesReply) -> tuple[int, int]:
    [cap] = reply.capacity
    return cap.free, cap.max
