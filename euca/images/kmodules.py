"""Linux kernel modules as an initramfs needs them: each module's dependencies (from the `.modinfo` ELF
section, no depmod), their load order, and which modules a kernel has built in."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """The bytes of the named section of a little-endian ELF64 file (a kernel module), or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, str_off, str_size = header(shstrndx)
    names = data[str_off : str_off + str_size]
    for i in range(shnum):
        name_at, offset, size = header(i)
        if names[name_at : names.index(b"\0", name_at)].decode() == wanted:
            return data[offset : offset + size]
    return None


def module_depends(ko: bytes) -> list[str]:
    """The modules a .ko needs first, from `depends=` in its .modinfo section."""
    info = elf_section(ko, ".modinfo") or b""
    for item in info.split(b"\0"):
        if item.startswith(b"depends="):
            return [d for d in item[len(b"depends=") :].decode().split(",") if d]
    return []


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def module_load_order(
    wanted: Iterable[str], available: dict[str, Path], builtin: set[str]
) -> tuple[list[str], list[str]]:
    """(modules to insmod, dependencies first; wanted modules found nowhere). Built-in ones need nothing."""
    order: list[str] = []
    missing: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in order or name in builtin:
            return
        if name not in available:
            missing.append(name)
            return
        if name in visiting:
            raise ValueError(f"module dependency cycle at {name}")
        visiting.add(name)
        for dep in module_depends(available[name].read_bytes()):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order, missing


def kernel_modules(modules_dir: Path) -> tuple[dict[str, Path], set[str]]:
    """(module name -> .ko path, built-in module names) of an unpacked /lib/modules/<version>."""
    available = {_module_name(str(p)): p for p in modules_dir.rglob("*.ko")}
    builtin_file = modules_dir / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        builtin = {_module_name(line) for line in builtin_file.read_text().split() if line}
    return available, builtin


def parse_kconfig(text: str) -> dict[str, str]:
    """CONFIG_X=value lines of a kernel config file ("y", "m", quoted strings...)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            out[key] = value
    return out
