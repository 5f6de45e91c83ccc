"""NC pure parts: the domain XML, the kvm/qemu choice, libvirt state mapping, the Eucalyptus disk layout."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from euca.protocol.cluster import ec2_state
from euca.roles.nc.disks import SWAP_BYTES, DiskLayout, GiB, ImageTooLarge, MiB, disk_layout
from euca.roles.nc.domain import (
    METADATA_NS,
    Disk,
    DomainSpec,
    choose_domain_type,
    domain_xml,
    kvm_usable,
    owner_dir_of,
)
from euca.roles.nc.hypervisor import nc_state_of

D = "/var/lib/euca/nc/instances/i-0123abcd"


def spec(**kw: object) -> DomainSpec:
    values: dict[str, object] = dict(
        name="i-0123abcd",
        domain_type="qemu",
        cores=2,
        memory_mb=512,
        disks=(
            Disk(f"{D}/root.qcow2", "vda", "qcow2"),
            Disk(f"{D}/ephemeral0.img", "vdb", "raw"),
            Disk(f"{D}/swap.img", "vdc", "raw"),
        ),
        console_path=f"{D}/console.log",
        owner_dir="/var/lib/euca/nc/instances",
        kernel="/cache/eki-1.img",
        ramdisk="/cache/eri-1.img",
        bridge="euca-br0",
        mac="d0:0d:01:23:ab:cd",
    )
    values.update(kw)
    return DomainSpec(**values)  # type: ignore[arg-type]


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_kernel_boot_domain() -> None:
    dom = parse(domain_xml(spec()))
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "i-0123abcd"
    assert dom.find("memory").get("unit") == "MiB" and dom.findtext("memory") == "512"  # type: ignore[union-attr]
    assert dom.findtext("vcpu") == "2"
    assert dom.findtext("os/type") == "hvm"
    assert dom.findtext("os/kernel") == "/cache/eki-1.img"
    assert dom.findtext("os/initrd") == "/cache/eri-1.img"
    assert dom.findtext("os/cmdline") == "root=/dev/vda console=ttyS0"
    assert dom.find("os/boot") is None
    assert dom.find("features/acpi") is not None and dom.find("features/apic") is not None
    assert dom.findtext("on_poweroff") == "destroy"
    assert dom.findtext("on_crash") == "destroy"
    assert dom.findtext("on_reboot") == "restart"


def test_disks_are_virtio_in_eucalyptus_order() -> None:
    dom = parse(domain_xml(spec()))
    disks = dom.findall("devices/disk")
    got = [
        (
            d.find("target").get("dev"),
            d.find("target").get("bus"),
            d.find("driver").get("type"),  # type: ignore[union-attr]
            d.find("source").get("file"),
        )  # type: ignore[union-attr]
        for d in disks
    ]
    assert got == [
        ("vda", "virtio", "qcow2", f"{D}/root.qcow2"),
        ("vdb", "virtio", "raw", f"{D}/ephemeral0.img"),
        ("vdc", "virtio", "raw", f"{D}/swap.img"),
    ]


def test_serial_console_goes_to_the_instance_file() -> None:
    dom = parse(domain_xml(spec()))
    serial = dom.find("devices/serial")
    console = dom.find("devices/console")
    assert serial is not None and console is not None
    assert serial.get("type") == "file" and console.get("type") == "file"
    assert serial.find("source").get("path") == f"{D}/console.log"  # type: ignore[union-attr]
    assert console.find("source").get("path") == f"{D}/console.log"  # type: ignore[union-attr]
    assert console.find("target").get("type") == "serial"  # type: ignore[union-attr]


def test_nic_on_the_bridge_with_the_mac() -> None:
    dom = parse(domain_xml(spec()))
    nics = dom.findall("devices/interface")
    assert len(nics) == 1
    nic = nics[0]
    assert nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "euca-br0"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == "d0:0d:01:23:ab:cd"  # type: ignore[union-attr]
    assert nic.find("model").get("type") == "virtio"  # type: ignore[union-attr]


def test_no_bridge_no_nic_and_mac_optional() -> None:
    assert parse(domain_xml(spec(bridge=None))).find("devices/interface") is None
    nic = parse(domain_xml(spec(mac=None))).find("devices/interface")
    assert nic is not None and nic.find("mac") is None


def test_disk_boot_without_kernel() -> None:
    dom = parse(domain_xml(spec(kernel=None, ramdisk=None)))
    assert dom.find("os/kernel") is None and dom.find("os/cmdline") is None
    assert dom.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]


def test_kvm_type_and_custom_cmdline() -> None:
    dom = parse(
        domain_xml(spec(domain_type="kvm", cmdline="root=/dev/vda console=ttyS0 euca.instance_id=i-0123abcd"))
    )
    assert dom.get("type") == "kvm"
    assert dom.findtext("os/cmdline").endswith("euca.instance_id=i-0123abcd")  # type: ignore[union-attr]


def test_metadata_marks_the_owner() -> None:
    xml = domain_xml(spec())
    el = parse(xml).find(f"metadata/{{{METADATA_NS}}}instance")
    assert el is not None and el.get("dir") == "/var/lib/euca/nc/instances"
    # What libvirt's virDomainGetMetadata returns: the element alone.
    assert owner_dir_of('<instance dir="/x/y"/>') == "/x/y"
    assert owner_dir_of("<not xml") is None


def test_values_are_escaped() -> None:
    xml = domain_xml(spec(console_path="/tmp/a&b<c>/console.log"))
    assert parse(xml).find("devices/serial/source").get("path") == "/tmp/a&b<c>/console.log"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [dict(name="i-../../etc"), dict(name="test"), dict(cores=0), dict(memory_mb=0), dict(disks=())],
)
def test_refuses_bad_specs(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        domain_xml(spec(**bad))


def test_long_instance_ids_are_fine() -> None:
    assert parse(domain_xml(spec(name="i-0123456789abcdef0"))).findtext("name") == "i-0123456789abcdef0"


def test_the_test_driver_accepts_the_xml() -> None:
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(domain_xml(spec()))
        dom.create()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert owner_dir_of(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)) == (
            "/var/lib/euca/nc/instances"
        )
    finally:
        conn.close()


# -- kvm or qemu ---------------------------------------------------------------------------------------------


def test_choose_domain_type() -> None:
    assert choose_domain_type("auto", True) == "kvm"
    assert choose_domain_type("auto", False) == "qemu"
    assert choose_domain_type("qemu", True) == "qemu"
    assert choose_domain_type("KVM", False) == "kvm"
    with pytest.raises(ValueError):
        choose_domain_type("xen", True)


def test_kvm_usable_needs_the_device_and_the_cpu_flags(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.write_bytes(b"")
    vmx = tmp_path / "cpuinfo-vmx"
    vmx.write_text("processor\t: 0\nflags\t\t: fpu vme vmx sse\n")
    none = tmp_path / "cpuinfo-none"
    none.write_text("processor\t: 0\nflags\t\t: fpu vme hypervisor sse\n")
    assert kvm_usable(str(dev), str(vmx))
    assert not kvm_usable(str(dev), str(none))
    assert not kvm_usable(str(tmp_path / "missing"), str(vmx))


# -- states --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "libvirt_state, nc, ec2",
    [
        (libvirt.VIR_DOMAIN_NOSTATE, "booting", "running"),
        (libvirt.VIR_DOMAIN_RUNNING, "running", "running"),
        (libvirt.VIR_DOMAIN_BLOCKED, "blocked", "running"),
        (libvirt.VIR_DOMAIN_PAUSED, "paused", "running"),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, "paused", "running"),
        (libvirt.VIR_DOMAIN_SHUTDOWN, "teardown", "shutting-down"),
        (libvirt.VIR_DOMAIN_SHUTOFF, "teardown", "shutting-down"),
        (libvirt.VIR_DOMAIN_CRASHED, "teardown", "shutting-down"),
    ],
)
def test_state_mapping(libvirt_state: int, nc: str, ec2: str) -> None:
    assert nc_state_of(libvirt_state) == nc
    assert ec2_state(nc_state_of(libvirt_state)) == ec2


# -- disk layout ---------------------------------------------------------------------------------------------


def test_layout_root_swap_and_ephemeral_fill_the_type_disk() -> None:
    image = 300 * MiB
    layout = disk_layout(5, image)
    assert layout.swap_bytes == SWAP_BYTES
    assert image + layout.swap_bytes + layout.ephemeral_bytes == 5 * GiB


def test_layout_small_disks() -> None:
    # Room for ephemeral but not for swap too.
    assert disk_layout(1, GiB - 100 * MiB) == DiskLayout(100 * MiB, 0)
    # Room for nothing but the root.
    assert disk_layout(1, GiB - MiB) == DiskLayout(0, 0)
    assert disk_layout(1, GiB) == DiskLayout(0, 0)
    # A type without disk: the root alone, whatever its size.
    assert disk_layout(0, 10 * GiB) == DiskLayout(0, 0)


def test_layout_image_larger_than_the_type() -> None:
    with pytest.raises(ImageTooLarge):
        disk_layout(1, GiB + 1)
