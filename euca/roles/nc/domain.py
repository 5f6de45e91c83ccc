"""The libvirt domain of an instance, as pure values: what it needs in, the domain XML out.

Nothing here touches libvirt or the file system (except `kvm_usable`, which looks at the host), so the XML
can be checked in unit tests line by line.

Layout, as Eucalyptus had it for instance-store instances: the root file system on the first virtio disk
(here vda, a qcow2 overlay on the cached image), ephemeral0 on vdb and swap on vdc; a kernel and ramdisk boot
the root with `root=/dev/vda console=ttyS0`, or the disk boots itself when there is no kernel. An EBS-backed
instance has no file disk: its root volume's export is vda (booted the same two ways) and its other volumes
follow (`volume_disks`). The serial
console goes to a file in the instance directory, which is what GetConsoleOutput reads.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

# The XML namespace of the <metadata> element that marks a domain as ours. It names the instances
# directory of the NC that made it, so two NCs sharing one libvirtd (two clusters on one host) never take
# each other's domains for leftovers.
METADATA_NS = "urn:euca:nc:1"
METADATA_PREFIX = "euca"

# Instance ids are domain names and directory names: nothing else may get that far.
INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")

DEFAULT_CMDLINE = "root=/dev/vda console=ttyS0"

DomainType = Literal["kvm", "qemu"]


@dataclass(frozen=True)
class Disk:
    path: str
    target: str  # vda, vdb, ...
    format: Literal["qcow2", "raw"]


@dataclass(frozen=True)
class DomainSpec:
    name: str  # the instance id
    domain_type: DomainType
    cores: int
    memory_mb: int
    disks: tuple[Disk, ...]
    console_path: str
    owner_dir: str  # the NC's instances directory (see METADATA_NS)
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str = DEFAULT_CMDLINE
    bridge: str | None = None
    mac: str | None = None
    arch: str = "x86_64"
    # EBS volumes' <disk> elements (nc/volumes.disk_xml), after the file disks: an EBS-backed instance's
    # root volume is the first of them, vda, and the domain has no file disk (issue 10).
    volume_disks: tuple[str, ...] = ()


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(spec: DomainSpec) -> str:
    """The domain XML libvirt defines for `spec`."""
    if not INSTANCE_ID.fullmatch(spec.name):
        raise ValueError(f"bad instance id {spec.name!r}")
    if spec.cores < 1 or spec.memory_mb < 1:
        raise ValueError("an instance needs at least one core and some memory")
    if not spec.disks and not spec.volume_disks:
        raise ValueError("an instance needs a root disk")
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    dom = ET.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    meta = _sub(dom, "metadata")
    ET.SubElement(meta, f"{{{METADATA_NS}}}instance", dir=spec.owner_dir)
    _sub(dom, "memory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.cores))

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.ramdisk:
            _sub(os_el, "initrd", spec.ramdisk)
        _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    # The guest powering itself off, or crashing, ends the instance (the NC then cleans up), as in
    # Eucalyptus; a reboot from inside the guest stays a reboot.
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    for disk in spec.disks:
        d = _sub(devices, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type=disk.format)
        _sub(d, "source", file=disk.path)
        _sub(d, "target", dev=disk.target, bus="virtio")
    for volume_disk in spec.volume_disks:
        devices.append(ET.fromstring(volume_disk))
    if spec.bridge:
        nic = _sub(devices, "interface", type="bridge")
        if spec.mac:
            _sub(nic, "mac", address=spec.mac)
        _sub(nic, "source", bridge=spec.bridge)
        _sub(nic, "model", type="virtio")
    # append: a reboot keeps what the guest printed before it (the file starts empty with the instance).
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=spec.console_path, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=spec.console_path, append="on")
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def owner_dir_of(metadata_xml: str) -> str | None:
    """The instances directory named in a domain's euca metadata element (as libvirt returns it)."""
    try:
        el = ET.fromstring(metadata_xml)
    except ET.ParseError:
        return None
    return el.get("dir")


# ---------------------------------------------------------------------------------------------------------
# kvm or qemu (TCG)


def kvm_usable(dev: str = "/dev/kvm", cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when /dev/kvm can be opened read-write and the CPU shows hardware virtualisation.

    The device alone is not enough: some nested or micro-VM hosts expose /dev/kvm without the vmx/svm
    extensions, and a guest started there never runs.
    """
    if not os.access(dev, os.R_OK | os.W_OK):
        return False
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"vmx", "svm"})
    except OSError:
        return False
    return False


def choose_domain_type(setting: str, kvm_ok: bool) -> DomainType:
    """nc.hypervisor: "kvm" and "qemu" are taken as said; "auto" is kvm where it works, else qemu (TCG)."""
    setting = setting.lower()
    if setting == "kvm":
        return "kvm"
    if setting == "qemu":
        return "qemu"
    if setting != "auto":
        raise ValueError(f"nc.hypervisor must be auto, kvm or qemu, not {setting!r}")
    return "kvm" if kvm_ok else "qemu"
