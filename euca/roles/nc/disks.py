"""An instance's disks and files on the node. Blocking functions: callers run them in worker threads.

    <instances_dir>/<instance id>/
        instance.json   the spec the CC sent (written first: an instance dir without it is a leftover)
        root.qcow2      qcow2 overlay on the cached machine image (the image itself is never copied)
        ephemeral0.img  sparse raw disk, ext4 (ext3/ext2 when that is what the host can make)
        swap.img        sparse raw disk, mkswap'd
        console.log     the serial console

Sizes as Eucalyptus laid out an instance-store instance: the type's disk holds the root (the image's
size), a 512 MiB swap and ephemeral0 in the rest; a type too small for swap gets only ephemeral0, one too
small for that gets the root alone, and an image larger than the type's disk does not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from euca.core.files import fsync_directory
from euca.roles.nc.domain import Disk

MiB = 1024 * 1024
GiB = 1024 * MiB
SWAP_BYTES = 512 * MiB
MIN_EPHEMERAL_BYTES = 16 * MiB
CONSOLE_TAIL = 64 * 1024  # what EC2's GetConsoleOutput returns at most

SPEC_FILE = "instance.json"
ROOT_FILE = "root.qcow2"
EPHEMERAL_FILE = "ephemeral0.img"
SWAP_FILE = "swap.img"
CONSOLE_FILE = "console.log"


class DiskError(Exception):
    """A disk could not be made (the message says which and why)."""


class ImageTooLarge(DiskError):
    """The machine image does not fit the instance type's disk."""


@dataclass(frozen=True)
class DiskLayout:
    ephemeral_bytes: int  # 0: none
    swap_bytes: int  # 0: none


def disk_layout(disk_gb: int, image_bytes: int) -> DiskLayout:
    """Ephemeral and swap sizes for an instance type's disk around a root of `image_bytes`.

    A type with no disk (disk_gb 0) gets the root alone, whatever the image's size.
    """
    if disk_gb <= 0:
        return DiskLayout(0, 0)
    total = disk_gb * GiB
    if image_bytes > total:
        raise ImageTooLarge(
            f"the image ({image_bytes} bytes) is larger than the instance type's disk ({disk_gb} GiB)"
        )
    rest = total - image_bytes
    if rest >= SWAP_BYTES + MIN_EPHEMERAL_BYTES:
        return DiskLayout(rest - SWAP_BYTES, SWAP_BYTES)
    if rest >= MIN_EPHEMERAL_BYTES:
        return DiskLayout(rest, 0)
    return DiskLayout(0, 0)


# The disk tools run below the node's own priority: on a busy node, answering the CC and running guests come
# before preparing the next instance's disks (a RunInstances of 100 makes 300 of these runs).
DISK_TOOL_NICENESS = 10
_NICE = shutil.which("nice")


def _run(argv: list[str], what: str) -> None:
    exe = shutil.which(argv[0])
    if exe is None:
        raise DiskError(f"{what}: {argv[0]} is not installed")
    command = [exe, *argv[1:]]
    if _NICE:
        command = [_NICE, "-n", str(DISK_TOOL_NICENESS), *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError as e:
        raise DiskError(f"{what}: {argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise DiskError(f"{what}: {argv[0]} took too long") from e
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise DiskError(f"{what}: {argv[0]} failed: {detail[-1] if detail else done.returncode}")


def make_overlay(base: Path, path: Path) -> None:
    """A qcow2 file at `path` whose reads fall through to the raw image `base` and whose writes stay in it."""
    _run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(path)],
        "root disk",
    )


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


# Newest first: ext4 with lazy init writes a few MiB whatever the size; ext3 writes its whole journal.
_MKFS = (
    ("mkfs.ext4", ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]),
    ("mkfs.ext3", ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,nodiscard"]),
    ("mkfs.ext2", ["-q", "-F", "-m", "0"]),
)


def make_ephemeral(path: Path, size: int, label: str = "ephemeral0") -> str | None:
    """A sparse disk of `size` bytes with a file system on it; returns the file system made (None: the host
    has no mkfs, and the guest gets a blank disk)."""
    _sparse(path, size)
    for tool, args in _MKFS:
        exe = shutil.which(tool)
        if exe:
            _run([exe, *args, "-L", label, str(path)], "ephemeral disk")
            return tool.split(".", 1)[1]
    return None


def make_swap(path: Path, size: int) -> bool:
    """A sparse disk of `size` bytes with a swap signature (blank if the host has no mkswap)."""
    _sparse(path, size)
    exe = shutil.which("mkswap")
    if not exe:
        return False
    _run([exe, "-L", "swap", str(path)], "swap disk")
    return True


def read_tail(path: Path, limit: int = CONSOLE_TAIL) -> bytes:
    """The last `limit` bytes of a file; b"" when it does not exist (yet, or any more)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read(limit)
    except FileNotFoundError:
        return b""


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # something in it resisted: say so rather than leave it silently
        shutil.rmtree(path)


def write_durably(path: Path, data: bytes) -> None:
    write_atomically(path, data, sync=True)
    fsync_directory(path.parent)


def write_atomically(path: Path, data: bytes, *, sync: bool = False) -> None:
    """`path` holds the old bytes or the new ones, never a part (fsync'd first with `sync`)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def sync_tree(directory: Path) -> None:
    """Make a directory written with write_atomically durable: its files, itself, and its entry in its parent."""
    for entry in directory.iterdir():
        if entry.is_file():
            fd = os.open(entry, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_directory(directory)
    fsync_directory(directory.parent)


def make_instance_disks(directory: Path, base: Path, layout: DiskLayout) -> tuple[Disk, ...]:
    """The instance's root overlay on the cached image, and its ephemeral and swap disks as the layout says."""
    root = directory / ROOT_FILE
    make_overlay(base, root)
    devices = [Disk(str(root), "vda", "qcow2")]
    if layout.ephemeral_bytes:
        path = directory / EPHEMERAL_FILE
        make_ephemeral(path, layout.ephemeral_bytes)
        devices.append(Disk(str(path), "vdb", "raw"))
    if layout.swap_bytes:
        path = directory / SWAP_FILE
        make_swap(path, layout.swap_bytes)
        devices.append(Disk(str(path), "vdc", "raw"))
    return tuple(devices)


def write_specs(specs: list[tuple[Path, bytes]]) -> None:
    """Each instance's instance.json in its new directory. Written, not yet synced: a kill -9 keeps them
    (the page cache), and staging syncs each before any disk or domain exists, so the node's answer to
    its CC does not wait for fsyncs."""
    for directory, data in specs:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(directory / SPEC_FILE, data)


def remove_dirs(directories: list[Path]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
