"""The node controller against libvirt's test:///default driver, with real bundles, real download manifests,
the real image pipeline and cache, and real qemu-img/mkfs disks.

The test driver keeps its domains per connection, so a "restarted NC" is a new NodeController on the same
connection. It runs no guests: console files stay empty unless a test writes one.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import msgspec
import pytest
import trio

from euca.core.pki import CloudCA
from euca.images.bundler import bundle_image
from euca.protocol import bundle as b
from euca.protocol.cluster import (
    Ack,
    ClusterFault,
    ImageRef,
    InstanceSpec,
    NcDescribeInstances,
    NcDescribeNode,
    NcDescribeResource,
    NcGetConsoleOutput,
    NcRebootInstance,
    NcRunInstance,
    NcRunInstances,
    NcTerminateInstance,
    NetConfig,
    VmType,
    decode_request,
    encode_request,
    mac_for_instance,
)
from euca.roles.nc.controller import DISK_OPS_AT_ONCE, NodeController
from euca.roles.nc.disks import GiB, MiB
from euca.roles.nc.domain import METADATA_NS
from euca.roles.nc.hypervisor import Hypervisor
from euca.roles.nc.image_fetch import NodeKeys
from euca.roles.nc.instance import Instance
from euca.roles.nc.settings import NcSettings

SMALL = VmType("m1.small", 1, 256, 1)
BIG = VmType("c1.xlarge", 4, 2048, 20)
ROOMY = VmType("m1.roomy", 1, 256, 0)  # no disk: root only, no ephemeral or swap


# -- keys and images ---------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: CloudCA
    node_key_pem: bytes
    node_cert_pem: bytes
    user_key: object
    user_cert: object

    @property
    def keys(self) -> NodeKeys:
        return NodeKeys(
            b.load_private_key(self.node_key_pem),
            b.load_certificate(self.node_cert_pem),
            self.ca.cert,
        )


@dataclass
class Bundle:
    image_id: str
    kind: str
    manifest: b.BundleManifest
    directory: Path
    size: int


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = CloudCA.load_or_create(tmp_path_factory.mktemp("ca"))
    node_key, node_cert = ca.issue("node-image")
    user_key, user_cert = ca.issue("user-000000000042")
    return Pki(ca, node_key, node_cert, b.load_private_key(user_key), b.load_certificate(user_cert))


def _bundle(pki: Pki, root: Path, image_id: str, kind: str, data: bytes) -> Bundle:
    src = root / f"{image_id}.src"
    src.write_bytes(data)
    out = root / image_id
    result = bundle_image(
        src,
        out,
        user="000000000042",
        cloud_cert=pki.ca.cert,
        user_cert=pki.user_cert,  # type: ignore[arg-type]
        user_key=pki.user_key,  # type: ignore[arg-type]
        image_type=kind,
    )
    return Bundle(image_id, kind, b.parse_manifest(result.manifest), out, len(data))


@pytest.fixture(scope="module")
def bundles(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Bundle]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        "machine": _bundle(pki, root, "emi-00000001", "machine", os.urandom(MiB) + bytes(2 * MiB)),
        "kernel": _bundle(pki, root, "eki-00000001", "kernel", os.urandom(100_000)),
        "ramdisk": _bundle(pki, root, "eri-00000001", "ramdisk", os.urandom(50_000)),
    }


def image_ref(
    pki: Pki,
    bundle: Bundle,
    *,
    node_cert: bytes | None = None,
    expires_in: float = 3600,
    part_dir: Path | None = None,
) -> ImageRef:
    """What the CLC puts in the spec: a download manifest signed by the cloud, key wrapped for the node.
    The part "URLs" are local paths, which the pipeline reads like it fetches URLs."""
    directory = part_dir or bundle.directory
    data = b.build_download_manifest(
        bundle.manifest,
        image_id=bundle.image_id,
        part_urls=[str(directory / p.filename) for p in bundle.manifest.parts],
        cloud_key=pki.ca.key,
        node_cert=b.load_certificate(node_cert or pki.node_cert_pem),
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in),
    )
    return ImageRef(bundle.image_id, bundle.kind, data.decode())  # type: ignore[arg-type]


def make_spec(
    pki: Pki,
    bundles: dict[str, Bundle],
    instance_id: str = "i-00000001",
    vm: VmType = SMALL,
    *,
    kernel: bool = True,
    machine: ImageRef | None = None,
    net: NetConfig | None = None,
) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        reservation_id="r-00000001",
        account_id="000000000042",
        launch_index=0,
        vm_type=vm,
        machine=machine or image_ref(pki, bundles["machine"]),
        kernel=image_ref(pki, bundles["kernel"]) if kernel else None,
        ramdisk=image_ref(pki, bundles["ramdisk"]) if kernel else None,
        net=net,
        launch_time=1700000000.0,
    )


# -- a node ------------------------------------------------------------------------------------------------


@dataclass
class Node:
    data_dir: Path
    conn: libvirt.virConnect
    pki: Pki
    nc: NodeController
    nursery: trio.Nursery
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def instances_dir(self) -> Path:
        return self.nc.settings.instances_dir

    def settings(self, **kw: object) -> NcSettings:
        values: dict[str, object] = dict(
            name="node-1",
            data_dir=self.data_dir,
            instances_dir=self.data_dir / "nc/instances",
            cache_dir=self.data_dir / "nc/cache",
            cache_max_bytes=1 * GiB,
            libvirt_uri="test:///default",
            hypervisor="qemu",
            cores=4,
            memory_mb=4096,
            disk_gb=40,
            monitor_interval=3600,  # tests drive refresh() themselves
        )
        values.update(kw)
        return NcSettings(**values)  # type: ignore[arg-type]

    async def restart(self, **kw: object) -> NodeController:
        """Stop this controller's tasks and start a new one on the same libvirt connection and data dir."""
        self.scope.cancel()
        self.scope = trio.CancelScope()
        self.nc = await start_controller(self, self.settings(**kw))
        return self.nc

    async def run(self, spec: InstanceSpec) -> Instance:
        status = await self.nc.run_instance(NcRunInstance(spec))
        assert status.nc_state == "staging" and status.state == "pending"
        inst = self.nc.instances[spec.instance_id]
        with trio.fail_after(60):  # a guard against a hang, not a timing assertion
            await inst.settled.wait()
        return inst

    def domains(self) -> dict[str, int]:
        return {d.name(): d.state()[0] for d in self.conn.listAllDomains(0)}


async def start_controller(node: Node, settings: NcSettings) -> NodeController:
    nc = NodeController(
        settings, Hypervisor(settings.libvirt_uri, conn=node.conn), keys=lambda: node.pki.keys
    )
    scope = node.scope

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await nc.run(task_status=task_status)

    await node.nursery.start(run)
    return nc


@pytest.fixture
async def node(tmp_path: Path, pki: Pki, nursery: trio.Nursery) -> AsyncIterator[Node]:
    conn = libvirt.open("test:///default")
    n = Node(tmp_path / "data", conn, pki, None, nursery)  # type: ignore[arg-type]
    n.nc = await start_controller(n, n.settings())
    yield n
    n.scope.cancel()
    conn.close()


def files_of(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# -- running -----------------------------------------------------------------------------------------------


async def test_run_stages_then_boots(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    net = NetConfig(mac=mac_for_instance("i-00000001"), private_ip="10.77.0.5", bridge="euca-br0")
    inst = await node.run(make_spec(pki, bundles, net=net))
    assert inst.state == "booting", inst.reason
    assert node.domains()["i-00000001"] == libvirt.VIR_DOMAIN_RUNNING
    d = node.instances_dir / "i-00000001"
    assert files_of(d) == ["ephemeral0.img", "instance.json", "root.qcow2", "swap.img"]
    # The overlay's backing file is the cached image: one copy on the node, whatever the instances.
    cache = node.data_dir / "nc/cache"
    assert (cache / "emi-00000001.img").read_bytes() == (
        bundles["machine"].directory.parent / "emi-00000001.src"
    ).read_bytes()
    assert sorted(inst.pinned) == ["eki-00000001", "emi-00000001", "eri-00000001"]
    xml = node.conn.lookupByName("i-00000001").XMLDesc()
    assert str(cache / "eki-00000001.img") in xml and str(cache / "eri-00000001.img") in xml
    assert "euca.instance_id=i-00000001" in xml
    assert "d0:0d:00:00:00:01" in xml and "euca-br0" in xml
    # The next look at libvirt: running.
    reply = await node.nc.describe_instances(NcDescribeInstances())
    [status] = reply.instances
    assert (status.nc_state, status.state) == ("running", "running")
    assert status.node == "node-1" and status.private_ip == "10.77.0.5" and status.mac == "d0:0d:00:00:00:01"
    assert status.image_id == "emi-00000001" and status.vm_type == "m1.small"


async def test_describe_node_lists_the_instances_its_resources_count(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    empty = await node.nc.describe_node(NcDescribeNode())
    assert empty.instances == [] and empty.resources.state == "up"
    await node.run(make_spec(pki, bundles))
    report = await node.nc.describe_node(NcDescribeNode())
    assert [s.instance_id for s in report.instances] == ["i-00000001"]
    assert report.resources == node.nc.resources()
    assert report.resources.cores_free == empty.resources.cores_free - 1


async def test_run_is_idempotent(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    spec = make_spec(pki, bundles)
    await node.run(spec)
    again = await node.nc.run_instance(NcRunInstance(spec))
    assert again.nc_state == "booting"
    assert list(node.nc.instances) == ["i-00000001"]


async def test_disk_boot_and_no_ephemeral_for_a_diskless_type(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    inst = await node.run(make_spec(pki, bundles, vm=ROOMY, kernel=False))
    assert inst.state == "booting", inst.reason
    assert files_of(inst.dir) == ["instance.json", "root.qcow2"]
    xml = node.conn.lookupByName(inst.id).XMLDesc()
    assert "<kernel>" not in xml and "<boot dev='hd'/>" in xml


async def test_two_instances_share_the_cached_image(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    async with trio.open_nursery() as n:
        n.start_soon(node.run, make_spec(pki, bundles, "i-00000001"))
        n.start_soon(node.run, make_spec(pki, bundles, "i-00000002"))
    images = node.nc.images
    assert images is not None
    assert images.cache.pins("emi-00000001") == 2
    assert files_of(node.data_dir / "nc/cache") == [
        ".tmp",
        "eki-00000001.img",
        "eki-00000001.json",
        "emi-00000001.img",
        "emi-00000001.json",
        "eri-00000001.img",
        "eri-00000001.json",
    ]


# -- resources ---------------------------------------------------------------------------------------------


async def test_resources_from_overrides_minus_what_instances_use(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    r = await node.nc.describe_resource(NcDescribeResource())
    assert (r.node, r.state, r.hypervisor) == ("node-1", "up", "qemu")
    assert (r.cores_max, r.cores_free, r.memory_mb_max, r.memory_mb_free, r.disk_gb_max, r.disk_gb_free) == (
        4, 4, 4096, 4096, 40, 40,
    )  # fmt: skip
    await node.run(make_spec(pki, bundles, "i-00000001"))
    await node.run(make_spec(pki, bundles, "i-00000002"))
    r = await node.nc.describe_resource(NcDescribeResource())
    assert (r.cores_free, r.memory_mb_free, r.disk_gb_free) == (2, 4096 - 512, 38)
    await node.nc.terminate_instance(NcTerminateInstance("i-00000002"))
    with trio.fail_after(60):
        await node.nc.instances["i-00000002"].ended.wait()
    r = await node.nc.describe_resource(NcDescribeResource())
    assert (r.cores_free, r.memory_mb_free, r.disk_gb_free) == (3, 4096 - 256, 39)


async def test_resources_from_the_host(node: Node) -> None:
    nc = await node.restart(cores=0, memory_mb=0, disk_gb=0)
    r = await nc.describe_resource(NcDescribeResource())
    info = node.conn.getInfo()
    assert (r.cores_max, r.memory_mb_max) == (info[2], info[1])
    st = os.statvfs(node.instances_dir)
    assert r.disk_gb_max == st.f_bavail * st.f_frsize // GiB
    assert r.cores_free == r.cores_max


async def test_cores_above_the_hosts_are_offered_as_over_commit(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    """nc.cores above the host's count (Eucalyptus's MAX_CORES) is what the node reports and admits: more
    instance cores than the host has run."""
    host_cores = node.conn.getInfo()[2]
    nc = await node.restart(cores=2 * host_cores, memory_mb=64 * 2048, disk_gb=64 * 20)
    r = await nc.describe_resource(NcDescribeResource())
    assert (r.cores_max, r.cores_free) == (2 * host_cores, 2 * host_cores)
    count = host_cores // BIG.cores + 1
    for n in range(1, count + 1):
        inst = await node.run(make_spec(pki, bundles, f"i-{n:08x}", BIG, kernel=False))
        assert inst.state == "booting"  # its domain started
    r = await nc.describe_resource(NcDescribeResource())
    assert count * BIG.cores > host_cores
    assert r.cores_free == 2 * host_cores - count * BIG.cores


async def test_no_room_is_insufficient_capacity(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    await node.run(make_spec(pki, bundles, "i-00000001", BIG))  # 4 of the 4 cores
    with pytest.raises(ClusterFault) as e:
        await node.nc.run_instance(NcRunInstance(make_spec(pki, bundles, "i-00000002")))
    assert e.value.code == "InsufficientInstanceCapacity"
    assert "i-00000002" not in node.nc.instances
    assert files_of(node.instances_dir) == ["i-00000001"]


async def test_run_instances_admits_all_or_none(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    """The CC's one call for a request's instances on this node: each as NcRunInstance, in the order asked,
    one already here answered as it is; if they do not all fit, none is started and nothing is written."""
    nc = node.nc
    first = await node.run(make_spec(pki, bundles, "i-00000001", kernel=False))  # 1 of the 4 cores
    specs = [make_spec(pki, bundles, f"i-0000000{n}", kernel=False) for n in (2, 1, 3, 4)]
    reply = await nc.run_instances(NcRunInstances(specs))
    assert [(s.instance_id, s.nc_state) for s in reply.instances] == [
        ("i-00000002", "staging"),
        ("i-00000001", first.state),
        ("i-00000003", "staging"),
        ("i-00000004", "staging"),
    ]
    assert all((node.instances_dir / s.instance_id / "instance.json").exists() for s in specs)
    with trio.fail_after(60):  # a guard against a hang
        for s in specs:
            await nc.instances[s.instance_id].settled.wait()
    await nc.terminate_instance(NcTerminateInstance("i-00000004"))
    with trio.fail_after(60):
        await nc.instances["i-00000004"].ended.wait()
    # One core free: two more do not fit, so neither starts.
    with pytest.raises(ClusterFault) as e:
        await nc.run_instances(
            NcRunInstances([make_spec(pki, bundles, f"i-0000000{n}", kernel=False) for n in (5, 6)])
        )
    assert e.value.code == "InsufficientInstanceCapacity"
    assert "i-00000005" not in nc.instances and "i-00000006" not in nc.instances
    assert files_of(node.instances_dir) == ["i-00000001", "i-00000002", "i-00000003"]


async def test_bad_instance_id_is_refused(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    spec = make_spec(pki, bundles, "i-00000001")
    bad = msgspec.structs.replace(spec, instance_id="../../etc")
    with pytest.raises(ClusterFault) as e:
        await node.nc.run_instance(NcRunInstance(bad))
    assert e.value.code == "InvalidParameterValue"
    assert files_of(node.instances_dir) == []


# -- ending ------------------------------------------------------------------------------------------------


async def test_terminate_leaves_nothing_behind(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    inst = await node.run(make_spec(pki, bundles))
    (inst.dir / "console.log").write_bytes(b"euca-guest: booted i-00000001\n")
    status = await node.nc.terminate_instance(NcTerminateInstance("i-00000001"))
    assert (status.nc_state, status.state) == ("teardown", "shutting-down")
    with trio.fail_after(60):
        await inst.ended.wait()
    assert "i-00000001" not in node.domains()
    assert files_of(node.instances_dir) == []
    images = node.nc.images
    assert images is not None and images.cache.pins("emi-00000001") == 0
    # The CC still sees how it ended, and the console as it was.
    [status] = (await node.nc.describe_instances(NcDescribeInstances(["i-00000001"]))).instances
    assert (status.nc_state, status.state, status.reason) == ("terminated", "terminated", None)
    out = await node.nc.get_console_output(NcGetConsoleOutput("i-00000001"))
    assert out.output == b"euca-guest: booted i-00000001\n"
    # Terminating again answers the same; the test driver's own domain was never touched.
    again = await node.nc.terminate_instance(NcTerminateInstance("i-00000001"))
    assert again.nc_state == "terminated"
    assert "test" in node.domains()


async def test_terminated_records_expire(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    now = [1000.0]
    node.nc.clock = lambda: now[0]
    inst = await node.run(make_spec(pki, bundles))
    await node.nc.terminate_instance(NcTerminateInstance(inst.id))
    with trio.fail_after(60):
        await inst.ended.wait()
    now[0] += node.nc.settings.terminated_ttl - 1
    assert [i.instance_id for i in (await node.nc.describe_instances(NcDescribeInstances())).instances] == [
        inst.id
    ]
    now[0] += 2
    assert (await node.nc.describe_instances(NcDescribeInstances())).instances == []


async def test_terminate_while_staging(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    # Answered before the staging task has even started: it must stop and clean up.
    status = await node.nc.run_instance(NcRunInstance(make_spec(pki, bundles)))
    assert status.nc_state == "staging"
    status = await node.nc.terminate_instance(NcTerminateInstance("i-00000001"))
    assert status.nc_state == "teardown"
    inst = node.nc.instances["i-00000001"]
    with trio.fail_after(60):
        await inst.ended.wait()
    assert inst.state == "terminated"
    assert "i-00000001" not in node.domains()
    assert files_of(node.instances_dir) == []


async def test_guest_power_off_ends_the_instance(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    inst = await node.run(make_spec(pki, bundles))
    node.conn.lookupByName(inst.id).shutdown()  # the test driver's guest powers off at once
    await node.nc.refresh()
    with trio.fail_after(60):
        await inst.ended.wait()
    assert (inst.state, inst.reason) == ("terminated", "the guest powered off")
    assert "i-00000001" not in node.domains()
    assert files_of(node.instances_dir) == []


async def test_vanished_domain_ends_the_instance(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    inst = await node.run(make_spec(pki, bundles))
    dom = node.conn.lookupByName(inst.id)
    dom.destroy()
    dom.undefine()
    await node.nc.refresh()
    with trio.fail_after(60):
        await inst.ended.wait()
    assert inst.reason == "the instance's domain disappeared"
    assert files_of(node.instances_dir) == []


# -- failed staging ----------------------------------------------------------------------------------------


async def failed(node: Node, spec: InstanceSpec) -> Instance:
    inst = await node.run(spec)
    assert inst.state == "canceled"
    assert inst.reason
    assert spec.instance_id not in node.domains()
    assert files_of(node.instances_dir) == []
    images = node.nc.images
    assert images is not None
    assert all(images.cache.pins(k) == 0 for k in images.cache.entries)
    [status] = (await node.nc.describe_instances(NcDescribeInstances([spec.instance_id]))).instances
    assert (status.state, status.nc_state, status.reason) == ("terminated", "canceled", inst.reason)
    return inst


async def test_manifest_for_another_node_is_canceled(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    _, other_cert = pki.ca.issue("node-image-other")
    spec = make_spec(pki, bundles, machine=image_ref(pki, bundles["machine"], node_cert=other_cert))
    inst = await failed(node, spec)
    assert "another node" in (inst.reason or "")


async def test_forged_manifest_is_canceled(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    ref = image_ref(pki, bundles["machine"])
    forged = ImageRef(ref.image_id, "machine", ref.download_manifest.replace("<size>", "<size>1", 1))
    inst = await failed(node, make_spec(pki, bundles, machine=forged))
    assert "emi-00000001" in (inst.reason or "")


async def test_expired_manifest_is_canceled(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    spec = make_spec(pki, bundles, machine=image_ref(pki, bundles["machine"], expires_in=-10))
    inst = await failed(node, spec)
    assert "expired" in (inst.reason or "")


async def test_missing_part_is_canceled_and_nothing_cached(
    node: Node, pki: Pki, bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    gone = image_ref(pki, bundles["machine"], part_dir=tmp_path)
    inst = await failed(node, make_spec(pki, bundles, machine=gone))
    assert "part 0" in (inst.reason or "")
    assert "emi-00000001" not in (node.nc.images.cache if node.nc.images else {})


async def test_libvirt_refusing_the_domain_is_canceled(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    # A domain of that name exists already (not ours): defining ours fails, and theirs is left alone.
    node.conn.defineXML(
        "<domain type='test'><name>i-00000001</name><uuid>11111111-2222-3333-4444-555555555555</uuid>"
        "<memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    node.conn.lookupByName("i-00000001").create()
    spec = make_spec(pki, bundles)
    inst = await node.run(spec)
    assert inst.state == "canceled" and inst.reason
    assert files_of(node.instances_dir) == []
    assert node.domains()["i-00000001"] == libvirt.VIR_DOMAIN_RUNNING


# -- reboot and console ------------------------------------------------------------------------------------


async def test_reboot_keeps_the_disks(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    inst = await node.run(make_spec(pki, bundles))
    before = files_of(inst.dir)
    assert await node.nc.reboot_instance(NcRebootInstance(inst.id)) == Ack()
    assert inst.reboots == 1
    assert node.domains()[inst.id] == libvirt.VIR_DOMAIN_RUNNING
    assert files_of(inst.dir) == before
    [status] = (await node.nc.describe_instances(NcDescribeInstances())).instances
    assert status.state == "running"


async def test_reboot_and_console_of_unknown_or_ended_instances(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    for call in (
        node.nc.reboot_instance(NcRebootInstance("i-0000dead")),
        node.nc.get_console_output(NcGetConsoleOutput("i-0000dead")),
        node.nc.terminate_instance(NcTerminateInstance("i-0000dead")),
    ):
        with pytest.raises(ClusterFault) as e:
            await call
        assert e.value.code == "InvalidInstanceID.NotFound"
    inst = await node.run(make_spec(pki, bundles))
    await node.nc.terminate_instance(NcTerminateInstance(inst.id))
    with trio.fail_after(60):
        await inst.ended.wait()
    with pytest.raises(ClusterFault) as e:
        await node.nc.reboot_instance(NcRebootInstance(inst.id))
    assert e.value.code == "IncorrectInstanceState"


async def test_console_output_is_the_tail(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    inst = await node.run(make_spec(pki, bundles))
    assert (await node.nc.get_console_output(NcGetConsoleOutput(inst.id))).output == b""
    text = b"x" * 70000 + b"\neuca-guest: booted i-00000001\n"
    (inst.dir / "console.log").write_bytes(text)
    out = await node.nc.get_console_output(NcGetConsoleOutput(inst.id))
    assert out.output == text[-65536:] and out.instance_id == inst.id


# -- restart -----------------------------------------------------------------------------------------------


async def test_restart_adopts_running_instances(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    await node.run(make_spec(pki, bundles, "i-00000001"))
    await node.run(make_spec(pki, bundles, "i-00000002"))
    nc = await node.restart()
    assert sorted(nc.instances) == ["i-00000001", "i-00000002"]
    reply = await nc.describe_instances(NcDescribeInstances())
    assert {(s.instance_id, s.nc_state, s.reservation_id) for s in reply.instances} == {
        ("i-00000001", "running", "r-00000001"),
        ("i-00000002", "running", "r-00000001"),
    }
    r = await nc.describe_resource(NcDescribeResource())
    assert r.cores_free == 2
    # The cached images are pinned again: eviction cannot take them from under the overlays.
    assert nc.images is not None and nc.images.cache.pins("emi-00000001") == 2
    # And the adopted instances end like any other.
    await nc.terminate_instance(NcTerminateInstance("i-00000001"))
    with trio.fail_after(60):
        await nc.instances["i-00000001"].ended.wait()
    assert files_of(node.instances_dir) == ["i-00000002"]
    assert nc.images.cache.pins("emi-00000001") == 1


async def test_restart_finds_the_attached_volumes(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    """What NcAttachVolume recorded in the instance's directory (volumes.json: the test driver has no hot-plug,
    so it is written as an attach writes it) is reported again by a restarted NC, and detaches from there."""
    from euca.protocol.cluster import AttachedVolume, NcDetachVolume, VolumeExport
    from euca.roles.nc import volumes

    inst = await node.run(make_spec(pki, bundles, "i-00000001"))
    attached = AttachedVolume("vol-0123abcd", "/dev/sdf", "vdd")
    export = VolumeExport(kind="nbd", name="vol-0123abcd", path="/run/sc/nbd.sock")
    volumes.save(inst.dir, [volumes.SavedAttachment(attached, export)])
    nc = await node.restart()
    [status] = (await nc.describe_instances(NcDescribeInstances())).instances
    assert status.volumes == [attached]
    # The domain no longer has the disk (the test driver never had it): the detach is over at once.
    status = await nc.handlers()[NcDetachVolume](NcDetachVolume("i-00000001", "vol-0123abcd"))
    assert status.volumes == [] and volumes.load(inst.dir) == []


async def test_restart_cleans_leftovers(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    await node.run(make_spec(pki, bundles, "i-00000001"))  # keeps running: adopted
    await node.run(make_spec(pki, bundles, "i-00000002"))  # its guest stops while the NC is down
    await node.run(make_spec(pki, bundles, "i-00000003"))  # its directory goes away: a domain without a dir
    node.scope.cancel()
    node.conn.lookupByName("i-00000002").shutdown()
    shutil.rmtree(node.instances_dir / "i-00000003")
    # A directory that was staging when the NC stopped (spec written, no domain yet) ...
    staging = node.instances_dir / "i-00000004"
    staging.mkdir()
    record = msgspec.json.decode((node.instances_dir / "i-00000001" / "instance.json").read_bytes())
    record["spec"]["instance_id"] = "i-00000004"
    (staging / "instance.json").write_bytes(msgspec.json.encode(record))
    # A spec whose id is not its directory's (copied by hand?) is no instance of ours: removed.
    confused = node.instances_dir / "i-00000007"
    confused.mkdir()
    (confused / "instance.json").write_bytes(
        (node.instances_dir / "i-00000001" / "instance.json").read_bytes()
    )
    # ... one without a spec, and a domain with our name pattern that belongs to another NC.
    (node.instances_dir / "i-00000005").mkdir()
    other = (
        "<domain type='test'><name>i-00000006</name><memory>1024</memory><os><type>hvm</type></os>"
        f"<metadata><euca:instance xmlns:euca='{METADATA_NS}' dir='/elsewhere'/></metadata></domain>"
    )
    node.conn.defineXML(other).create()

    nc = await node.restart()
    assert files_of(node.instances_dir) == ["i-00000001"]
    domains = node.domains()
    assert "i-00000001" in domains and "i-00000006" in domains and "test" in domains
    assert not {"i-00000002", "i-00000003", "i-00000004", "i-00000005", "i-00000007"} & set(domains)
    states = {
        s.instance_id: (s.nc_state, s.reason)
        for s in (await nc.describe_instances(NcDescribeInstances())).instances
    }
    assert states["i-00000001"] == ("running", None)
    assert states["i-00000002"] == ("terminated", "the domain was shutoff when the node started")
    assert states["i-00000004"][0] == "canceled"
    assert "i-00000003" not in states and "i-00000005" not in states and "i-00000007" not in states


# -- the wire ----------------------------------------------------------------------------------------------


async def test_handlers_answer_decoded_messages(node: Node, pki: Pki, bundles: dict[str, Bundle]) -> None:
    """What the cluster app does: decode a request, call the handler for its type."""
    handlers = node.nc.handlers()
    path, body = encode_request(NcRunInstance(make_spec(pki, bundles)))
    message = decode_request(path, body)
    status = await handlers[type(message)](message)
    assert status.instance_id == "i-00000001"
    with trio.fail_after(60):
        await node.nc.instances["i-00000001"].settled.wait()
    path, body = encode_request(NcDescribeResource())
    resources = await handlers[NcDescribeResource](decode_request(path, body))
    assert resources.cores_free == 3


# -- many at once ------------------------------------------------------------------------------------------


async def test_staging_makes_disks_a_few_at_a_time_and_never_holds_up_answers(
    node: Node, pki: Pki, bundles: dict[str, Bundle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RunInstances of many: every NcRunInstance is answered while the disk work is held, and at most
    DISK_OPS_AT_ONCE instances make their disks at the same time."""
    make_disks = NodeController._make_disks
    release = threading.Event()
    lock = threading.Lock()
    busy = [0, 0]  # now, most at once

    def held(directory: Path, base: Path, layout: object) -> object:
        with lock:
            busy[0] += 1
            busy[1] = max(busy[1], busy[0])
        try:
            release.wait(120)
            return make_disks(directory, base, layout)  # type: ignore[arg-type]
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(NodeController, "_make_disks", staticmethod(held))
    nc = await node.restart(cores=64, memory_mb=64 * 256, disk_gb=64)
    count = DISK_OPS_AT_ONCE * 3
    ids = [f"i-{n:08x}" for n in range(1, count + 1)]
    try:
        for instance_id in ids:
            status = await nc.run_instance(NcRunInstance(make_spec(pki, bundles, instance_id, kernel=False)))
            assert status.nc_state == "staging"
        # The spec of each is on disk before the answer, synced later by staging.
        assert all((node.instances_dir / i / "instance.json").exists() for i in ids)
        with trio.fail_after(60):  # a guard against a hang
            while busy[0] < DISK_OPS_AT_ONCE:
                await trio.sleep(0.01)
        reply = await nc.describe_instances(NcDescribeInstances())
        assert len(reply.instances) == count
    finally:
        release.set()
    with trio.fail_after(120):
        for instance_id in ids:
            await nc.instances[instance_id].settled.wait()
    assert busy[1] == DISK_OPS_AT_ONCE
    assert {nc.instances[i].state for i in ids} == {"booting"}


async def test_a_look_at_libvirt_taken_before_the_domain_started_does_not_end_it(
    node: Node, pki: Pki, bundles: dict[str, Bundle]
) -> None:
    """refresh() asks libvirt for every domain's state in a worker thread; an instance whose staging
    finishes meanwhile (domain defined and started after the answer was taken) is not 'disappeared'."""
    nc = node.nc
    real_states = nc.hv.domain_states
    spec = make_spec(pki, bundles, kernel=False)

    async def stale_states() -> dict[str, int]:
        states = await real_states()  # taken before the domain exists...
        with trio.fail_after(60):  # a guard against a hang
            await nc.instances[spec.instance_id].settled.wait()  # ...answered after it started
        return states

    await nc.run_instance(NcRunInstance(spec))
    nc.hv.domain_states = stale_states  # type: ignore[method-assign]
    try:
        await nc.refresh()
    finally:
        nc.hv.domain_states = real_states  # type: ignore[method-assign]
    inst = nc.instances[spec.instance_id]
    assert inst.state == "booting", inst.reason
    await nc.refresh()
    assert inst.state == "running"
