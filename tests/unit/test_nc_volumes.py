"""EBS volumes on the node: the <disk> each export kind becomes (pure), the choice of the guest's disk name,
volumes.json, and the attach/detach bookkeeping against libvirt's test:///default driver.

The test driver has no hot-plug (virDomainAttachDeviceFlags is "not supported"): the refusal is tested as
it is (nothing recorded), and the bookkeeping around a hot-plug with a Hypervisor whose attach/detach keep
the device beside the test driver's domain XML (everything else is the real driver)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from euca.protocol.cluster import (
    AttachedVolume,
    ClusterFault,
    ImageRef,
    InstanceSpec,
    NcAttachVolume,
    NcDetachVolume,
    VmType,
    VolumeExport,
)
from euca.roles.nc import attach as attach_module
from euca.roles.nc import volumes
from euca.roles.nc.attach import VolumeAttacher
from euca.roles.nc.domain import Disk, DomainSpec, domain_xml
from euca.roles.nc.hypervisor import Hypervisor
from euca.roles.nc.instance import Instance

VOL = "vol-0123abcd"
VOL2 = "vol-0123abce"
NBD_UNIX = VolumeExport(kind="nbd", name=VOL, path="/run/euca/sc/nbd.sock")
NBD_TCP = VolumeExport(kind="nbd", name=VOL, host="10.0.0.5", port=10809)


# -- the <disk> of each export kind ----------------------------------------------------------------------


def _disk(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_nbd_over_a_unix_socket() -> None:
    d = _disk(volumes.disk_xml(NBD_UNIX, "vdd", VOL))
    assert (d.get("type"), d.get("device")) == ("network", "disk")
    source = d.find("source")
    assert source is not None and (source.get("protocol"), source.get("name")) == ("nbd", VOL)
    host = source.find("host")
    assert host is not None and host.attrib == {"transport": "unix", "socket": "/run/euca/sc/nbd.sock"}
    assert d.find("target") is not None and d.find("target").attrib == {"dev": "vdd", "bus": "virtio"}  # type: ignore[union-attr]
    assert d.findtext("serial") == VOL
    assert d.find("driver").attrib["type"] == "raw"  # type: ignore[union-attr]


def test_nbd_over_tcp() -> None:
    d = _disk(volumes.disk_xml(NBD_TCP, "vdb", VOL))
    host = d.find("source/host")
    assert host is not None and host.attrib == {"name": "10.0.0.5", "port": "10809"}


def test_a_file_on_this_host() -> None:
    d = _disk(volumes.disk_xml(VolumeExport(kind="file", path="/srv/vol.raw"), "vdb", VOL))
    assert d.get("type") == "file" and d.find("source").attrib == {"file": "/srv/vol.raw"}  # type: ignore[union-attr]


def test_rbd_with_monitors_and_a_cephx_user() -> None:
    export = VolumeExport(kind="rbd", name="pool/vol", hosts=["10.0.0.1:6789", "10.0.0.2"], user="euca")
    d = _disk(volumes.disk_xml(export, "vdb", VOL))
    assert d.find("source").attrib == {"protocol": "rbd", "name": "pool/vol"}  # type: ignore[union-attr]
    hosts = [h.attrib for h in d.findall("source/host")]
    assert hosts == [{"name": "10.0.0.1", "port": "6789"}, {"name": "10.0.0.2", "port": "6789"}]
    assert d.find("auth").get("username") == "euca"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "export,target",
    [
        (VolumeExport(kind="nbd", path="/x.sock"), "vdb"),  # no export name
        (VolumeExport(kind="nbd", name=VOL), "vdb"),  # nowhere to connect
        (VolumeExport(kind="file"), "vdb"),
        (VolumeExport(kind="rbd", name="p/v"), "vdb"),
        (NBD_UNIX, "sda"),
        (NBD_UNIX, "vdb'/><x"),
    ],
)
def test_incomplete_exports_and_bad_targets_are_refused(export: VolumeExport, target: str) -> None:
    with pytest.raises(ValueError):
        volumes.disk_xml(export, target, VOL)


def test_targets() -> None:
    assert volumes.next_target({"vda", "vdb", "vdc"}) == "vdd"
    assert volumes.next_target({"vda", "vdc"}) == "vdb"
    with pytest.raises(ValueError):
        volumes.next_target(set(volumes.VIRTIO_TARGETS))
    xml = f"<domain><devices>{volumes.disk_xml(NBD_UNIX, 'vdc', VOL)}<disk><target dev='vda'/></disk></devices></domain>"
    assert volumes.used_targets(xml) == {"vda", "vdc"}
    assert volumes.has_volume(xml, VOL) and not volumes.has_volume(xml, VOL2)


def test_volumes_json_round_trip(tmp_path: Path) -> None:
    assert volumes.load(tmp_path) == []
    saved = [volumes.SavedAttachment(AttachedVolume(VOL, "/dev/sdf", "vdb"), NBD_UNIX)]
    volumes.save(tmp_path, saved)
    assert volumes.load(tmp_path) == saved
    (tmp_path / volumes.VOLUMES_FILE).write_text("{not json")
    assert volumes.load(tmp_path) == []


# -- attach / detach bookkeeping on test:///default --------------------------------------------------------


class HotPlugTest(Hypervisor):
    """The test driver, with the hot-plug it lacks kept beside it: attached <disk>s are spliced into the
    domain's XML as libvirt would show them; `stuck` stands for a guest that does not let go of a disk."""

    def __init__(self, conn: libvirt.virConnect):
        super().__init__("test:///default", conn=conn)
        self.plugged: dict[str, list[str]] = {}
        self.stuck = False

    async def domain_xml(self, name: str) -> str:
        xml = await super().domain_xml(name)
        return xml.replace("</devices>", "".join(self.plugged.get(name, [])) + "</devices>")

    async def attach_device(self, name: str, device_xml: str) -> None:
        await self.domain_state(name)  # the domain must exist
        self.plugged.setdefault(name, []).append(device_xml)

    async def detach_device(self, name: str, device_xml: str) -> None:
        if not self.stuck:
            self.plugged[name].remove(device_xml)


INSTANCE = "i-0a0b0c0d"


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open("test:///default")
    yield c
    try:  # the test driver's default host is shared by the process's connections
        dom = c.lookupByName(INSTANCE)
        dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass
    c.close()


def _instance(conn: libvirt.virConnect, tmp_path: Path) -> Instance:
    spec = InstanceSpec(
        INSTANCE,
        "r-00000001",
        "000000000042",
        0,
        VmType("m1.small", 1, 256, 0),
        ImageRef("emi-1", "machine", ""),
    )
    xml = (
        domain_xml(
            DomainSpec(
                name=INSTANCE,
                domain_type="qemu",
                cores=1,
                memory_mb=256,
                disks=(Disk(str(tmp_path / "root.qcow2"), "vda", "qcow2"),),
                console_path=str(tmp_path / "console.log"),
                owner_dir=str(tmp_path),
            )
        )
        .replace("type='qemu'", "type='test'")
        .replace('type="qemu"', 'type="test"')
    )
    conn.defineXML(xml).create()
    inst = Instance(spec, tmp_path, "qemu", state="running")
    return inst


async def test_a_hot_plug_the_driver_refuses_leaves_no_record(
    conn: libvirt.virConnect, tmp_path: Path
) -> None:
    inst = _instance(conn, tmp_path)
    attacher = VolumeAttacher("node-1", Hypervisor("test:///default", conn=conn), {INSTANCE: inst}.get)
    with pytest.raises(ClusterFault) as e:
        await attacher.attach(NcAttachVolume(INSTANCE, VOL, "/dev/sdf", NBD_UNIX))
    assert e.value.code == "InternalError" and "not supported" in e.value.message
    assert inst.volumes == {} and volumes.load(tmp_path) == []
    assert inst.status("node-1").volumes == []


async def test_attach_records_reports_and_detach_forgets(
    conn: libvirt.virConnect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inst = _instance(conn, tmp_path)
    hv = HotPlugTest(conn)
    attacher = VolumeAttacher("node-1", hv, {INSTANCE: inst}.get)

    status = await attacher.attach(NcAttachVolume(INSTANCE, VOL, "/dev/sdf", NBD_UNIX))
    assert status.volumes == [AttachedVolume(VOL, "/dev/sdf", "vdb")]  # vda is the root
    again = await attacher.attach(NcAttachVolume(INSTANCE, VOL, "/dev/sdf", NBD_UNIX))  # a resend
    assert again.volumes == status.volumes and len(hv.plugged[INSTANCE]) == 1
    second = VolumeExport(kind="nbd", name=VOL2, path=NBD_UNIX.path)
    status = await attacher.attach(NcAttachVolume(INSTANCE, VOL2, "/dev/sdg", second))
    assert [(v.volume_id, v.target) for v in status.volumes] == [(VOL, "vdb"), (VOL2, "vdc")]
    # What a restarted NC finds in the instance's directory:
    assert [a.volume.volume_id for a in volumes.load(tmp_path)] == [VOL, VOL2]

    status = await attacher.detach(NcDetachVolume(INSTANCE, VOL))
    assert [v.volume_id for v in status.volumes] == [VOL2]
    assert [a.volume.volume_id for a in volumes.load(tmp_path)] == [VOL2]
    assert (await attacher.detach(NcDetachVolume(INSTANCE, VOL))).volumes == status.volumes  # again

    # A guest that does not let go: detaching, until forced.
    monkeypatch.setattr(attach_module, "DETACH_WAIT", 0.2)
    hv.stuck = True
    status = await attacher.detach(NcDetachVolume(INSTANCE, VOL2))
    assert status.volumes == [AttachedVolume(VOL2, "/dev/sdg", "vdc", "detaching")]
    status = await attacher.detach(NcDetachVolume(INSTANCE, VOL2, force=True))
    assert status.volumes == [] and volumes.load(tmp_path) == []


async def test_unknown_or_ended_instances(conn: libvirt.virConnect, tmp_path: Path) -> None:
    inst = _instance(conn, tmp_path)
    attacher = VolumeAttacher("node-1", HotPlugTest(conn), {INSTANCE: inst}.get)
    with pytest.raises(ClusterFault) as e:
        await attacher.attach(NcAttachVolume("i-ffffffff", VOL, "/dev/sdf", NBD_UNIX))
    assert e.value.code == "InvalidInstanceID.NotFound"
    inst.state = "terminated"
    with pytest.raises(ClusterFault) as e:
        await attacher.attach(NcAttachVolume(INSTANCE, VOL, "/dev/sdf", NBD_UNIX))
    assert e.value.code == "IncorrectInstanceState"


# -- how the CLC follows the nodes' reports (pure) ---------------------------------------------------------


def test_the_clc_reconciles_attachments_with_the_reports() -> None:
    from euca.protocol.cluster import InstanceStatus
    from euca.roles.clc.volumes.reconcile import ATTACH_TIMEOUT, reconcile_attachments
    from euca.roles.clc.volumes.records import Attachment

    def status(instance_id: str, *vols: AttachedVolume) -> InstanceStatus:
        return InstanceStatus(
            instance_id,
            "r-1",
            "000000000042",
            "running",
            "running",
            "n1",
            "m1.small",
            "emi-1",
            volumes=list(vols),
        )

    now = 1000.0
    a = [
        Attachment("vol-00000001", "i-00000001", "/dev/sdf", "attaching", now, False),  # reported: attached
        Attachment("vol-00000002", "i-00000001", "/dev/sdg", "attaching", now, False),  # not yet: wait
        Attachment("vol-00000003", "i-00000001", "/dev/sdh", "attaching", now - ATTACH_TIMEOUT - 1, False),
        Attachment("vol-00000004", "i-00000001", "/dev/sdi", "detaching", now, False),  # gone: finish
        Attachment("vol-00000005", "i-00000001", "/dev/sdj", "detaching", now, True),  # still there: again
        Attachment("vol-00000006", "i-00000002", "/dev/sdf", "terminating", now, True),  # instance ended
        Attachment("vol-00000007", "i-00000003", "/dev/sdf", "detaching", now, False),  # not reported at all
    ]
    reported = {
        "i-00000001": status(
            "i-00000001",
            AttachedVolume("vol-00000001", "/dev/sdf", "vdb"),
            AttachedVolume("vol-00000005", "/dev/sdj", "vdc", "detaching"),
        )
    }
    out = reconcile_attachments(a, reported, {"i-00000002"}, now)
    assert out.attached == ["vol-00000001"]
    assert [x.volume_id for x in out.finish] == ["vol-00000003", "vol-00000004", "vol-00000006"]
    assert [x.volume_id for x in out.detach_again] == ["vol-00000005"]
