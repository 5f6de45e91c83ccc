"""The node controller with real guests: QEMU under libvirt's qemu:///system (TCG on this kind of machine).

The default boot image (kernel, busybox initramfs, root disk from ~/.cache/euca/bootimage) is bundled with a
test cloud CA, and the NC gets download manifests for it as the CLC would make them. Two instances boot
(the guest prints its boot marker with its instance id on the serial console), one reboots (the marker
appears again, the disks stay), a new NC on a new libvirt connection adopts the instances still running,
and terminating leaves no domain, overlay, disk or console file behind.

Needs root, libvirtd (scripts/setup-host starts it when it is not running) and the boot image (built by
`euca build-boot-image`, or on first use when apt can fetch the kernel package); skips with the reason
otherwise.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from euca.core.pki import CloudCA
from euca.images import bootimage as bi
from euca.images.bundler import bundle_image
from euca.protocol import bundle as b
from euca.protocol.cluster import (
    ImageRef,
    InstanceSpec,
    NcDescribeInstances,
    NcDescribeResource,
    NcGetConsoleOutput,
    NcRebootInstance,
    NcRunInstance,
    NcTerminateInstance,
    NetConfig,
    VmType,
    mac_for_instance,
)
from euca.roles.nc.controller import NodeController
from euca.roles.nc.disks import GiB
from euca.roles.nc.hypervisor import Hypervisor
from euca.roles.nc.image_fetch import NodeKeys
from euca.roles.nc.instance import Instance
from euca.roles.nc.settings import NcSettings
from helpers.qemu_host import LIBVIRT_URI, connect, unusable_reason

REPO = Path(__file__).resolve().parents[2]
URI = LIBVIRT_URI
NETNS = "euca"
BRIDGE = "euca-br0"
# Bounds each wait on a guest, so a guest that never comes up fails the test instead of hanging it.
HANG_GUARD = 300
VM = VmType("m1.small", 1, 256, 1)

_REASON = unusable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def _libvirt_bridge() -> str | None:
    """The VM bridge when libvirtd runs in the namespace that has it (scripts/setup-host), else None."""
    try:
        pid = subprocess.run(["pidof", "libvirtd"], capture_output=True, text=True).stdout.split()[0]
        if os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(f"/run/netns/{NETNS}").st_ino:
            return None
    except (IndexError, OSError):
        return None
    found = subprocess.run(["ip", "-n", NETNS, "link", "show", BRIDGE], capture_output=True)
    return BRIDGE if found.returncode == 0 else None


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Outside pytest's 0700 tmp tree: whatever user libvirt's QEMU runs as must reach the disks and kernels.
    d = Path(tempfile.mkdtemp(prefix="euca-nc-e2e-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Images:
    keys: NodeKeys
    refs: dict[str, ImageRef]


@pytest.fixture(scope="module")
def images(boot_image: bi.BootImage, workdir: Path) -> Images:
    """The boot image bundled and offered to the node as the CLC would: download manifests signed by the
    cloud, the bundle key wrapped for the node image certificate (parts read from local paths)."""
    ca = CloudCA.load_or_create(workdir / "ca")
    node_key, node_cert = ca.issue("node-image")
    user_key, user_cert = ca.issue("user-000000000042")
    refs = {}
    for kind, image_id, path in (
        ("machine", "emi-0e2e0001", boot_image.root),
        ("kernel", "eki-0e2e0001", boot_image.vmlinuz),
        ("ramdisk", "eri-0e2e0001", boot_image.initrd),
    ):
        out = workdir / "bundles" / image_id
        result = bundle_image(
            path,
            out,
            user="000000000042",
            cloud_cert=ca.cert,
            user_cert=b.load_certificate(user_cert),
            user_key=b.load_private_key(user_key),
            image_type=kind,
        )
        manifest = b.parse_manifest(result.manifest)
        data = b.build_download_manifest(
            manifest,
            image_id=image_id,
            part_urls=[str(out / p.filename) for p in manifest.parts],
            cloud_key=ca.key,
            node_cert=b.load_certificate(node_cert),
            expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
        )
        refs[kind] = ImageRef(image_id, kind, data.decode())  # type: ignore[arg-type]
    keys = NodeKeys(b.load_private_key(node_key), b.load_certificate(node_cert), ca.cert)
    return Images(keys, refs)


def spec(images: Images, instance_id: str, bridge: str | None) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        reservation_id="r-0e2e0001",
        account_id="000000000042",
        launch_index=0,
        vm_type=VM,
        machine=images.refs["machine"],
        kernel=images.refs["kernel"],
        ramdisk=images.refs["ramdisk"],
        net=NetConfig(mac=mac_for_instance(instance_id), private_ip="10.77.0.200", bridge=bridge),
    )


@dataclass
class Node:
    nc: NodeController
    scope: trio.CancelScope


async def start_node(nursery: trio.Nursery, settings: NcSettings, images: Images) -> Node:
    nc = NodeController(settings, Hypervisor(URI), keys=lambda: images.keys)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            try:
                await nc.run(task_status=task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await nc.hv.close()

    await nursery.start(run)
    return Node(nc, scope)


@pytest.fixture
async def settings(workdir: Path) -> AsyncIterator[NcSettings]:
    data = workdir / "data"
    s = NcSettings(
        name="e2e-node",
        data_dir=data,
        instances_dir=data / "nc/instances",
        cache_dir=data / "nc/cache",
        cache_max_bytes=2 * GiB,
        libvirt_uri=URI,
        hypervisor="auto",
        memory_mb=2048,
        monitor_interval=3600,  # the test drives refresh through describe_instances
    )
    yield s
    # Whatever happens, leave no guest of ours running (only ours: other test runs may share this libvirtd).
    hv = Hypervisor(URI)
    try:
        owner = str(s.instances_dir.resolve())
        for domain in await hv.list_domains():
            if domain.owner_dir == owner:
                await hv.destroy(domain.name, owner=owner)
    finally:
        await hv.close()


async def console(nc: NodeController, instance_id: str) -> str:
    out = await nc.get_console_output(NcGetConsoleOutput(instance_id))
    return out.output.decode(errors="replace")


async def wait_for_marker(nc: NodeController, instance_id: str, count: int = 1) -> str:
    """The console once the guest's boot marker for `instance_id` is on it `count` times."""
    marker = f"{bi.BOOT_MARKER} {instance_id}"
    with trio.move_on_after(HANG_GUARD):
        while True:
            text = await console(nc, instance_id)
            if text.count(marker) >= count:
                return text
            await nc.refresh()  # as the CC's polls do: a guest that died ends the wait with its reason
            inst = nc.instances[instance_id]
            assert inst.state not in ("teardown", "terminated", "canceled"), (inst.state, inst.reason)
            await trio.sleep(0.5)
    raise AssertionError(f"{instance_id}: no '{marker}' x{count} on the console:\n{text[-3000:]}")


async def test_guests_boot_reboot_survive_an_nc_restart_and_leave_nothing(
    nursery: trio.Nursery, settings: NcSettings, images: Images
) -> None:
    bridge = _libvirt_bridge()
    node = await start_node(nursery, settings, images)
    nc = node.nc
    resources = await nc.describe_resource(NcDescribeResource())
    assert resources.state == "up" and resources.cores_free >= 2, resources

    # Fresh ids: another test run on this host may share the libvirtd, and domain names are global there.
    ids = [f"i-{secrets.token_hex(4)}" for _ in range(2)]
    for instance_id in ids:
        status = await nc.run_instance(NcRunInstance(spec(images, instance_id, bridge)))
        assert status.state == "pending"
    for instance_id in ids:
        inst: Instance = nc.instances[instance_id]
        with trio.fail_after(HANG_GUARD):
            await inst.settled.wait()
        assert inst.state == "booting", inst.reason
    reply = await nc.describe_instances(NcDescribeInstances())
    assert {s.instance_id: s.state for s in reply.instances} == {i: "running" for i in ids}
    for instance_id in ids:
        text = await wait_for_marker(nc, instance_id)
        assert "Linux version" in text

    # Reboot keeps the disks; the console shows a second boot.
    first = nc.instances[ids[0]]
    files = sorted(p.name for p in first.dir.iterdir())
    await nc.reboot_instance(NcRebootInstance(ids[0]))
    await wait_for_marker(nc, ids[0], count=2)
    assert sorted(p.name for p in first.dir.iterdir()) == files

    # The NC stops and a new one (new libvirt connection) finds the guests again.
    node.scope.cancel()
    node = await start_node(nursery, settings, images)
    nc = node.nc
    reply = await nc.describe_instances(NcDescribeInstances())
    assert {s.instance_id: (s.state, s.node) for s in reply.instances} == {
        i: ("running", "e2e-node") for i in ids
    }
    assert bi.BOOT_MARKER in await console(nc, ids[1])

    # Terminate both: no domain, overlay, disk or console file stays.
    for instance_id in ids:
        status = await nc.terminate_instance(NcTerminateInstance(instance_id))
        assert status.state == "shutting-down"
    for instance_id in ids:
        with trio.fail_after(HANG_GUARD):
            await nc.instances[instance_id].ended.wait()
        assert nc.instances[instance_id].state == "terminated"
    conn = connect()
    try:
        names = {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()
    assert not set(ids) & names
    assert list(settings.instances_dir.iterdir()) == []
    # The console as it was stays readable for the CC's next poll.
    assert f"{bi.BOOT_MARKER} {ids[1]}" in await console(nc, ids[1])
    node.scope.cancel()
