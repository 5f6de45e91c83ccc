"""EBS volumes on a node: the libvirt <disk> of a volume's export, the guest disk it becomes, and the record of
an instance's attachments in its directory (volumes.json).

AttachVolume hot-plugs a virtio disk into the running domain (`virDomainAttachDeviceFlags` LIVE|CONFIG: the
running guest sees it at once, through ACPI PCI hot-plug, since domains are defined with <acpi/>; the
persistent definition keeps it). The record is written before the disk is plugged and dropped after it is
gone, so a node restarted in between finds it (its report names the volume; the CLC's poll sees it).

The export (cluster.VolumeExport) says how QEMU reaches the bytes; only this module knows how each kind
becomes a <disk>:
    nbd   <disk type='network'><source protocol='nbd' name=EXPORT><host name= port=/> (TCP) or
          <host transport='unix' socket=PATH/>: QEMU's own NBD client, no kernel module on the node
    file  <disk type='file'><source file=PATH/>: the SC's file on this very host (a one-box)
    rbd   <disk type='network'><source protocol='rbd' name=POOL/IMAGE> with the monitors as <host>s and
          the cephx user in <auth> (its secret defined in libvirt under the user's name)
"""

from __future__ import annotations

import os
import string
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec

from euca.protocol.cluster import AttachedVolume, VolumeExport

VOLUMES_FILE = "volumes.json"

# The guest's virtio disks: vda (root), vdb/vdc (ephemeral, swap) are the instance's own.
VIRTIO_TARGETS = tuple(f"vd{c}" for c in string.ascii_lowercase)


class SavedAttachment(msgspec.Struct, frozen=True):
    """One attachment as the node keeps it: what it reports and the export it was plugged from."""

    volume: AttachedVolume
    export: VolumeExport


_saved = msgspec.json.Decoder(list[SavedAttachment])


def next_target(used: set[str]) -> str:
    """The first virtio disk name the domain does not use yet."""
    for target in VIRTIO_TARGETS:
        if target not in used:
            return target
    raise ValueError("the instance has no free virtio disk name left")


def used_targets(domain_xml: str) -> set[str]:
    """The target names of a domain's disks (from its XML as libvirt answers it)."""
    root = ET.fromstring(domain_xml)
    return {t.get("dev", "") for t in root.findall("./devices/disk/target")}


def has_volume(domain_xml: str, volume_id: str) -> bool:
    """Whether the domain still has the volume's disk (its <serial> is the volume id)."""
    root = ET.fromstring(domain_xml)
    return any((s.text or "") == volume_id for s in root.findall("./devices/disk/serial"))


def disk_xml(export: VolumeExport, target: str, volume_id: str) -> str:
    """The <disk> libvirt hot-plugs for `export` as the guest's `target` (vdX)."""
    if target not in VIRTIO_TARGETS:
        raise ValueError(f"bad disk target {target!r}")
    if export.kind == "file":
        if not export.path:
            raise ValueError("a file export needs a path")
        disk = ET.Element("disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="raw", cache="none", io="native")
        ET.SubElement(disk, "source", file=export.path)
    elif export.kind == "nbd":
        if not export.name:
            raise ValueError("an NBD export needs its name")
        disk = ET.Element("disk", type="network", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="raw", cache="none")
        source = ET.SubElement(disk, "source", protocol="nbd", name=export.name)
        if export.path:
            ET.SubElement(source, "host", transport="unix", socket=export.path)
        elif export.host and export.port:
            ET.SubElement(source, "host", name=export.host, port=str(export.port))
        else:
            raise ValueError("an NBD export needs a socket path or a host and port")
    elif export.kind == "rbd":
        if not export.name or not export.hosts:
            raise ValueError("an RBD export needs pool/image and its monitors")
        disk = ET.Element("disk", type="network", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="raw", cache="none")
        if export.user:
            auth = ET.SubElement(disk, "auth", username=export.user)
            ET.SubElement(auth, "secret", type="ceph", usage=export.user)
        source = ET.SubElement(disk, "source", protocol="rbd", name=export.name)
        for monitor in export.hosts:
            host, _, port = monitor.rpartition(":")
            ET.SubElement(source, "host", name=host or monitor, port=port if host else "6789")
    else:
        raise ValueError(f"unknown export kind {export.kind!r}")
    ET.SubElement(disk, "target", dev=target, bus="virtio")
    # The volume id as the disk's serial: the guest sees it in /dev/disk/by-id, and the NC finds the disk.
    serial = ET.SubElement(disk, "serial")
    serial.text = volume_id
    return ET.tostring(disk, encoding="unicode")


def load(directory: Path) -> list[SavedAttachment]:
    """An instance's attachments (none when it has no volumes.json or an unreadable one)."""
    try:
        return _saved.decode((directory / VOLUMES_FILE).read_bytes())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return []


def save(directory: Path, attachments: list[SavedAttachment]) -> None:
    """Replace volumes.json (written aside, fsynced and renamed: never half a file)."""
    path = directory / VOLUMES_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.json.encode(attachments))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
