"""NC instance disks with the real tools: qemu-img overlays, mkfs'd ephemeral, mkswap'd swap, console tail."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from euca.roles.nc import disks
from euca.roles.nc.disks import (
    CONSOLE_TAIL,
    DiskError,
    MiB,
    make_ephemeral,
    make_overlay,
    make_swap,
    read_tail,
    remove_tree,
)


def qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)], check=True, capture_output=True, text=True
    )
    info: dict[str, object] = json.loads(out.stdout)
    return info


def test_overlay_reads_through_to_the_base_and_does_not_copy_it(tmp_path: Path) -> None:
    base = tmp_path / "emi.img"
    data = os.urandom(MiB) + bytes(3 * MiB)
    base.write_bytes(data)
    overlay = tmp_path / "root.qcow2"
    make_overlay(base, overlay)
    info = qemu_img_info(overlay)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "raw"
    assert info["virtual-size"] == len(data)
    assert overlay.stat().st_size < 1 * MiB  # metadata only
    # Reading the overlay gives the base's bytes (qemu-img convert reads through the backing chain).
    flat = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(overlay), str(flat)], check=True)
    assert flat.read_bytes() == data


def test_overlay_on_a_missing_base_fails_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="root disk"):
        make_overlay(tmp_path / "nope.img", tmp_path / "root.qcow2")


def test_ephemeral_is_sparse_and_has_a_file_system(tmp_path: Path) -> None:
    path = tmp_path / "ephemeral0.img"
    fs = make_ephemeral(path, 600 * MiB)
    assert fs in ("ext4", "ext3", "ext2")
    assert path.stat().st_size == 600 * MiB
    assert path.stat().st_blocks * 512 < 64 * MiB  # sparse: lazy init writes little
    with open(path, "rb") as f:
        f.seek(1024 + 56)
        assert f.read(2) == b"\x53\xef"  # ext2/3/4 superblock magic
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(path)], capture_output=True, text=True)
    if label.returncode == 0:
        assert label.stdout.strip() == "ephemeral0"


def test_swap_has_the_signature(tmp_path: Path) -> None:
    path = tmp_path / "swap.img"
    assert make_swap(path, 64 * MiB)
    assert path.stat().st_size == 64 * MiB
    page = os.sysconf("SC_PAGE_SIZE")
    with open(path, "rb") as f:
        f.seek(page - 10)
        assert f.read(10) == b"SWAPSPACE2"


def test_console_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    assert read_tail(log) == b""
    log.write_bytes(b"boot\n")
    assert read_tail(log) == b"boot\n"
    big = os.urandom(CONSOLE_TAIL + 1000)
    log.write_bytes(big)
    assert read_tail(log) == big[-CONSOLE_TAIL:]


def test_remove_tree(tmp_path: Path) -> None:
    d = tmp_path / "i-00000001"
    d.mkdir()
    (d / "root.qcow2").write_bytes(b"x")
    remove_tree(d)
    assert not d.exists()
    remove_tree(d)  # gone already: fine


def test_disk_tools_run_below_the_node_priority(tmp_path: Path) -> None:
    seen = tmp_path / "niceness"
    disks._run(["sh", "-c", f"nice > {seen}"], "probe")
    assert int(seen.read_text()) == min(19, os.nice(0) + disks.DISK_TOOL_NICENESS)
    with pytest.raises(DiskError, match="probe: no-such-disk-tool is not installed"):
        disks._run(["no-such-disk-tool"], "probe")


def test_written_then_synced(tmp_path: Path) -> None:
    d = tmp_path / "i-00000001"
    d.mkdir()
    disks.write_atomically(d / "instance.json", b"{}")
    disks.write_atomically(d / "instance.json", b'{"a":1}')
    disks.sync_tree(d)
    assert files(d) == ["instance.json"] and (d / "instance.json").read_bytes() == b'{"a":1}'
    disks.write_durably(d / "instance.json", b"[]")
    assert files(d) == ["instance.json"] and (d / "instance.json").read_bytes() == b"[]"


def files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())
