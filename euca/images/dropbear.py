"""The ssh server of the default guest: Debian's dropbear (package dropbear-bin) as installed on the
building machine, copied into the initramfs with the shared libraries `ldd` says it needs, at the paths
ldd names (the guest's dynamic loader finds them where the host's did: same Debian, same multiarch dirs).

Missing dropbear is not fatal: the image is built without an ssh server (its console says so), and the
recipe stamp records which it is, so installing dropbear-bin later rebuilds it with one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

DROPBEAR = Path("/usr/sbin/dropbear")
DROPBEARKEY = Path("/usr/bin/dropbearkey")
BINARIES = (DROPBEAR, DROPBEARKEY)

_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def parse_ldd(text: str) -> list[str]:
    """The absolute paths of the libraries in `ldd` output (the loader included; vdso and "not found"
    lines have no path and are skipped)."""
    found: list[str] = []
    for line in text.splitlines():
        m = _LDD_LINE.match(line)
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return found


class MissingLibrary(Exception):
    """ldd names a library it cannot find."""


def available() -> bool:
    return all(p.is_file() for p in BINARIES) and shutil.which("ldd") is not None


def files() -> list[tuple[str, bytes, int]]:
    """(path in the image without the leading slash, content, mode) for dropbear, dropbearkey and every
    library they load. Raises MissingLibrary when ldd cannot resolve one."""
    out: dict[str, tuple[bytes, int]] = {}
    for binary in BINARIES:
        out[str(binary).lstrip("/")] = (binary.read_bytes(), 0o755)
        done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        if "not found" in done.stdout:
            raise MissingLibrary(f"ldd {binary}: {done.stdout.strip()}")
        for lib in parse_ldd(done.stdout):
            # The content of the file the path resolves to, under the name the loader asks for.
            out[lib.lstrip("/")] = (Path(lib).resolve().read_bytes(), 0o755)
    return [(path, data, mode) for path, (data, mode) in out.items()]
