"""The SVR4 "newc" cpio format the kernel unpacks as an initramfs: a writer, and a reader for checking."""

from __future__ import annotations

import io
from dataclasses import dataclass

CPIO_MAGIC = b"070701"
CPIO_TRAILER = "TRAILER!!!"
S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


class CpioWriter:
    """The SVR4 "newc" format the kernel unpacks: a 110-byte ASCII-hex header, the NUL-terminated name,
    padding to 4 bytes, the data, padding to 4 bytes; a TRAILER!!! entry ends the archive. Owners root,
    mtimes 0, so the same inputs give the same bytes."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 0
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", major: int = 0, minor: int = 0) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        nlink = 2 if mode & 0o170000 == S_IFDIR else 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, major, minor, len(encoded), 0)
        self._out.write(CPIO_MAGIC + b"".join(b"%08X" % f for f in fields))
        self._out.write(encoded + bytes(-(110 + len(encoded)) % 4))
        self._out.write(data + bytes(-len(data) % 4))

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.add_dir("/".join(parts[:i]))

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        name = name.strip("/")
        if name and name not in self._dirs:
            self._parents(name)
            self._dirs.add(name)
            self._entry(name, S_IFDIR | perm)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        name = name.strip("/")
        self._parents(name)
        self._entry(name, S_IFREG | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self._parents(name)
        self._entry(name, S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        name = name.strip("/")
        self._parents(name)
        self._entry(name, S_IFCHR | perm, b"", major, minor)

    def finish(self) -> bytes:
        self._entry(CPIO_TRAILER, 0)
        data = self._out.getvalue()
        return data + bytes(-len(data) % 512)


def read_cpio(data: bytes) -> list[CpioEntry]:
    """The entries of a newc archive (up to the trailer); ValueError when it is not one."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        header = data[pos : pos + 110]
        if len(header) < 110 or header[:6] != CPIO_MAGIC:
            raise ValueError(f"no newc header at offset {pos}")
        f = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, major, minor, namesize = f[1], f[6], f[9], f[10], f[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[data_start : data_start + filesize]
        pos = data_start + filesize + (-filesize % 4)
        if name == CPIO_TRAILER:
            return entries
        entries.append(CpioEntry(name, mode, body, major, minor))
