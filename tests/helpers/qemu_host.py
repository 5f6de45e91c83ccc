"""Whether real guests can run here under qemu:///system, shared by the e2e tests that boot them.

When libvirtd does not answer and we are root, scripts/setup-host starts it (inside the `euca` network
namespace, with the VM bridge); anything else missing is a reason to skip, said in full.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LIBVIRT_URI = "qemu:///system"

libvirt: Any
try:
    import libvirt as _libvirt

    libvirt = _libvirt
except ImportError:  # pragma: no cover - the nc extra is not installed
    libvirt = None


def connect() -> Any:
    libvirt.registerErrorHandler(lambda *a: None, None)
    return libvirt.open(LIBVIRT_URI)


def unusable_reason() -> str | None:
    """Why guests cannot run under qemu:///system here, or None."""
    if libvirt is None:
        return "libvirt-python is not installed"
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        connect().close()
        return None
    except libvirt.libvirtError:
        pass
    if os.geteuid() != 0 or shutil.which("libvirtd") is None:
        return f"{LIBVIRT_URI} does not answer and libvirtd cannot be started here (run scripts/setup-host as root)"
    setup = subprocess.run(["bash", str(REPO / "scripts" / "setup-host")], capture_output=True, text=True)
    try:
        connect().close()
        return None
    except libvirt.libvirtError as e:
        return (
            f"{LIBVIRT_URI} does not answer after scripts/setup-host ({e}): "
            f"{setup.stdout[-300:]}{setup.stderr[-300:]}"
        )
