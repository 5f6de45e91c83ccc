"""The one-box trial's default machine image, built from Debian packages on this machine.

Three files, cached per kernel version and rebuilt only when missing:

    ~/.cache/euca/bootimage/<kernel version>/vmlinuz      the Debian cloud kernel (linux-image-*-cloud-amd64)
    ~/.cache/euca/bootimage/<kernel version>/initrd.img   gzip'd newc cpio: busybox-static, virtio modules, /init
    ~/.cache/euca/bootimage/<kernel version>/root.img     a 4 MiB ext2 file system with a marker file

plus a `recipe` stamp: a set made by another version of this recipe counts as missing. ($XDG_CACHE_HOME
replaces ~/.cache when set.) `find_boot_image()` returns the newest complete set without building anything;
`build_boot_image()` builds what is missing (`euca build-boot-image` on the command line).

The guest needs nothing but a kernel command line with `console=ttyS0` (the initramfs ignores `root=`): its
/init loads the virtio modules in dependency order, prints `euca-guest: booted <instance id>` on the console
(the id comes from `euca.instance_id=` on the kernel command line or an SMBIOS system serial starting with
"i-", else "unknown"), mounts /dev/vda read-only and lists it, asks for a DHCP lease on eth0 in the background,
then hands PID 1 to busybox init, which never exits. busybox acpid, started before the marker, powers off on
the ACPI power button, so libvirt's ACPI reboot and shutdown work once the marker is out. `euca.shell=1` on the command line adds a shell on ttyS0 for debugging.

At the first start of `--role all` the image is bundled, uploaded to the admin account's bucket
`euca-default-images` and registered (eki, eri, emi; public) by `ensure_default_image`. EUCA_DEFAULT_IMAGE=0
in the environment turns that off.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import click
import httpx
import trio

from euca.core.s3client import S3Client, S3Error
from euca.images.bundler import BundleInputError, bundle_image
from euca.images.upload import BundleFiles, Ec2ApiError, UploadError, ec2_call, register_bundle, upload_bundle
from euca.protocol.bundle import BundleError, load_certificate, load_private_key
from euca.protocol.sigv4 import SigningKey

if TYPE_CHECKING:
    from euca.core.roles import RoleContext

log = logging.getLogger("euca.bootimage")

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BOOT_MARKER = "euca-guest: booted"
ROOT_MARKER_FILE = "euca-root-marker"
ROOT_IMAGE_MIB = 4
BUSYBOX = Path("/bin/busybox")
# What a guest needs from the kernel: the PCI virtio transport, disk and network, and the ACPI power
# button with evdev so busybox acpid can power off on libvirt's shutdown/reboot request. Dependencies
# (virtio, virtio_ring, failover, ...) come from each module's own .modinfo; built-in ones are skipped.
WANTED_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "button", "evdev")
FILE_NAMES = ("vmlinuz", "initrd.img", "root.img")
RECIPE_FILE = "recipe"

Progress = Callable[[str], None]


class BootImageUnavailable(Exception):
    """The kernel package cannot be found or fetched (no apt, no network, no busybox-static)."""


@dataclass(frozen=True)
class BootImage:
    kernel_version: str
    directory: Path

    @property
    def vmlinuz(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def root(self) -> Path:
        return self.directory / "root.img"

    def complete(self) -> bool:
        """All three files, built by this version of the recipe (a set from an older one is rebuilt)."""
        try:
            stamp = (self.directory / RECIPE_FILE).read_text().strip()
        except OSError:
            return False
        return stamp == recipe_id() and all((self.directory / name).is_file() for name in FILE_NAMES)


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "euca" / "bootimage"


# -- newc cpio -------------------------------------------------------------------------------------------

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


# -- kernel modules --------------------------------------------------------------------------------------


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


# -- the guest's init --------------------------------------------------------------------------------------

INIT_TEMPLATE = r"""#!/bin/busybox sh
# euca default guest. PID 1 until it hands over to busybox init (PID 1 must never exit: that panics).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt/root /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
say() { echo "euca-guest: $*"; }

loaded=""; failed=""
for m in @MODULES@; do
    if insmod "/lib/modules/@KVER@/$m.ko" 2>/dev/null; then loaded="$loaded $m"; else failed="$failed $m"; fi
done
say "modules loaded:${loaded:- none}${failed:+ failed:$failed}"
# Before the boot marker, so a guest that reported booted also powers off on libvirt's ACPI request.
acpid -c /etc/acpi -l /run/acpid.log

iid=""; shell=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        euca.instance_id=*|instance_id=*) iid="${word#*=}" ;;
        euca.shell=1) shell=1 ;;
    esac
done
if [ -z "$iid" ]; then
    for f in /sys/class/dmi/id/product_serial /sys/class/dmi/id/chassis_asset_tag /sys/class/dmi/id/board_serial; do
        v="$(cat "$f" 2>/dev/null)"
        case "$v" in i-*) iid="$v"; break ;; esac
    done
fi
[ -n "$iid" ] && hostname "$iid"
echo "@MARKER@ ${iid:-unknown} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s"

disks=""
for d in /sys/block/vd*; do [ -e "$d" ] && disks="$disks ${d##*/}"; done
say "disks:${disks:- none}"
if [ -b /dev/vda ]; then
    if mount -o ro /dev/vda /mnt/root 2>/dev/null; then
        say "/dev/vda mounted: $(ls /mnt/root | tr '\n' ' ')"
        [ -f /mnt/root/@ROOT_MARKER@ ] && say "root marker: $(head -n 1 /mnt/root/@ROOT_MARKER@)"
    else
        say "/dev/vda present, not mountable"
    fi
fi

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    # In the background: a guest without a DHCP server must not wait for one.
    (udhcpc -i eth0 -s /etc/udhcpc.script -t 5 -T 2 -A 10 -b >/dev/null 2>&1
     sleep 1
     if [ -z "$iid" ] && ip route | grep -q default; then
         md="$(wget -q -T 2 -O - http://169.254.169.254/latest/meta-data/instance-id 2>/dev/null)"
         [ -n "$md" ] && say "metadata instance-id=$md"
     fi) &
else
    say "no eth0"
fi

if [ -n "$shell" ]; then
    echo "ttyS0::respawn:/bin/cttyhack /bin/sh" >> /etc/inittab
fi
say "ready"
exec /bin/busybox init
"""

INITTAB = """::ctrlaltdel:/bin/busybox reboot
::shutdown:/bin/busybox umount -a -r
"""

# poweroff -f: straight to the kernel, as PID 1 may still be /init (which ignores poweroff's signal) when the
# button is pressed early; nothing needs an orderly shutdown (the root disk is mounted read-only).
POWER_BUTTON = """#!/bin/sh
echo "euca-guest: power button, powering off" > /dev/console
sync
poweroff -f
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc hook: configure $interface from the lease and report it on the console.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$router" ]; then
            ip route add default via "${router%% *}" dev "$interface" 2>/dev/null
        fi
        : > /etc/resolv.conf
        for s in $dns; do echo "nameserver $s" >> /etc/resolv.conf; done
        echo "euca-guest: $interface $1 $ip/${mask:-24} router=${router:-none}" > /dev/console
        ;;
esac
exit 0
"""


def init_script(kernel_version: str, modules: list[str]) -> str:
    return (
        INIT_TEMPLATE.replace("@MODULES@", " ".join(modules))
        .replace("@KVER@", kernel_version)
        .replace("@MARKER@", BOOT_MARKER)
        .replace("@ROOT_MARKER@", ROOT_MARKER_FILE)
    )


def recipe_id() -> str:
    """A digest of what goes into the image besides the kernel package (scripts, module list, sizes), so a
    cached set made by an older euca is rebuilt rather than booted."""
    parts = (
        INIT_TEMPLATE,
        INITTAB,
        POWER_BUTTON,
        UDHCPC_SCRIPT,
        " ".join(WANTED_MODULES),
        str(ROOT_IMAGE_MIB),
        "1",
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build_initramfs(kernel_version: str, modules: list[tuple[str, bytes]], busybox: bytes) -> bytes:
    """The gzip'd newc archive: busybox, the modules (in load order), /init and its configuration."""
    cpio = CpioWriter()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "mnt/root", "etc"):
        cpio.add_dir(d)
    # The kernel opens /dev/console before /init runs; without the node init would have no stdout.
    cpio.add_char_device("dev/console", 5, 1)
    cpio.add_char_device("dev/null", 1, 3, 0o666)
    cpio.add_file("bin/busybox", busybox, 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    names = [name for name, _ in modules]
    for name, data in modules:
        cpio.add_file(f"lib/modules/{kernel_version}/{name}.ko", data)
    # modules.dep as depmod writes it (paths relative to the directory), so busybox modprobe works too.
    dep = ""
    for name, data in modules:
        deps = [d.replace("-", "_") for d in module_depends(data)]
        dep += f"{name}.ko:" + "".join(f" {d}.ko" for d in deps if d in names) + "\n"
    cpio.add_file(f"lib/modules/{kernel_version}/modules.dep", dep.encode())
    cpio.add_file("init", init_script(kernel_version, names).encode(), 0o755)
    cpio.add_file("etc/inittab", INITTAB.encode())
    cpio.add_file("etc/acpi/PWRF/00000080", POWER_BUTTON.encode(), 0o755)
    cpio.add_file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    cpio.add_file("etc/euca-image", f"euca default guest, kernel {kernel_version}\n".encode())
    return gzip.compress(cpio.finish(), compresslevel=9, mtime=0)


def make_root_image(path: Path, kernel_version: str, size_mib: int = ROOT_IMAGE_MIB) -> None:
    """A small ext2 file system (mke2fs -d) holding a marker file the guest prints when it mounts it."""
    with tempfile.TemporaryDirectory(prefix="euca-rootfs-") as tree:
        (Path(tree) / ROOT_MARKER_FILE).write_text(f"euca default root image (kernel {kernel_version})\n")
        (Path(tree) / "README").write_text(
            "Root disk of the euca default image; the guest runs from its initramfs.\n"
        )
        path.unlink(missing_ok=True)
        _run(
            [
                "mke2fs", "-q", "-F", "-t", "ext2", "-L", "euca-root", "-E", "root_owner=0:0",
                "-d", tree, str(path), f"{size_mib}M",
            ]
        )  # fmt: skip


# -- fetching the kernel -------------------------------------------------------------------------------------


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise BootImageUnavailable(f"{argv[0]} not found") from e
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BootImageUnavailable(
            f"{' '.join(argv[:3])} failed: {detail[-1] if detail else done.returncode}"
        )
    return done.stdout


def parse_apt_depends(text: str) -> list[str]:
    """Package names from `apt-cache depends` output's Depends: lines (alternatives included)."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.strip().lstrip("|").partition(":")
        if sep and key.strip() == "Depends":
            name = value.strip()
            if name and not name.startswith("<"):
                out.append(name)
    return out


def resolve_kernel_package(meta: str = KERNEL_META_PACKAGE) -> str:
    """The versioned kernel package the meta package depends on (linux-image-6.1.0-NN-cloud-amd64)."""
    names = [
        n for n in parse_apt_depends(_run(["apt-cache", "depends", meta])) if n.startswith("linux-image-")
    ]
    if not names:
        raise BootImageUnavailable(f"{meta} depends on no linux-image package")
    return names[0]


def kernel_version_of(package: str) -> str:
    return package.removeprefix("linux-image-")


def download_kernel_package(package: str, workdir: Path) -> Path:
    """`apt-get download` the package and `dpkg -x` it; returns the unpacked tree."""
    _run(["apt-get", "download", "-q", package], cwd=workdir)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise BootImageUnavailable(f"apt-get download {package} left no .deb")
    tree = workdir / "tree"
    _run(["dpkg", "-x", str(debs[-1]), str(tree)])
    return tree


# -- building and caching -------------------------------------------------------------------------------------


def find_boot_image(cache_root: Path | None = None) -> BootImage | None:
    """The newest complete boot image in the cache, without building or touching the network."""
    root = cache_root or default_cache_root()
    if not root.is_dir():
        return None
    found = [BootImage(d.name, d) for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    complete = sorted((b for b in found if b.complete()), key=lambda b: b.directory.stat().st_mtime)
    return complete[-1] if complete else None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One builder at a time per cache (two processes starting at once must not write the same files)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_from_tree(tree: Path, kernel_version: str, out: Path, progress: Progress) -> BootImage:
    """Write vmlinuz, initrd.img and root.img into `out` from an unpacked kernel package."""
    vmlinuz = tree / "boot" / f"vmlinuz-{kernel_version}"
    modules_dir = tree / "lib" / "modules" / kernel_version
    if not vmlinuz.is_file() or not modules_dir.is_dir():
        raise BootImageUnavailable(f"kernel package for {kernel_version} has no vmlinuz or modules")
    if not BUSYBOX.is_file():
        raise BootImageUnavailable(f"{BUSYBOX} missing (apt-get install busybox-static)")
    config_file = tree / "boot" / f"config-{kernel_version}"
    config = parse_kconfig(config_file.read_text()) if config_file.exists() else {}
    if config.get("CONFIG_BLK_DEV_INITRD") == "n" or config.get("CONFIG_RD_GZIP") == "n":
        raise BootImageUnavailable(f"kernel {kernel_version} cannot unpack a gzip initramfs")
    available, builtin = kernel_modules(modules_dir)
    order, missing = module_load_order(WANTED_MODULES, available, builtin)
    progress(f"modules: {' '.join(order) or 'none'} (built in: "
             f"{' '.join(m for m in WANTED_MODULES if m in builtin) or 'none'})")  # fmt: skip
    if missing:
        progress(f"modules not in the package (skipped): {' '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out.parent))
    try:
        shutil.copyfile(vmlinuz, staging / "vmlinuz")
        progress(f"vmlinuz {vmlinuz.stat().st_size // 1024} KiB")
        initrd = build_initramfs(
            kernel_version, [(name, available[name].read_bytes()) for name in order], BUSYBOX.read_bytes()
        )
        (staging / "initrd.img").write_bytes(initrd)
        progress(f"initrd.img {len(initrd) // 1024} KiB")
        make_root_image(staging / "root.img", kernel_version)
        progress(f"root.img {ROOT_IMAGE_MIB} MiB ext2")
        (staging / RECIPE_FILE).write_text(recipe_id() + "\n")
        for name in (*FILE_NAMES, RECIPE_FILE):  # the stamp last: it marks the set complete
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BootImage(kernel_version, out)


def build_boot_image(
    cache_root: Path | None = None,
    *,
    package: str | None = None,
    fetch: Callable[[str, Path], Path] = download_kernel_package,
    progress: Progress = lambda line: None,
) -> BootImage:
    """The boot image of the current Debian cloud kernel, built into the cache unless already there.
    Offline (apt cannot resolve the kernel) a complete cached image is used instead."""
    root = cache_root or default_cache_root()
    if package is None:
        try:
            package = resolve_kernel_package()
        except BootImageUnavailable:
            cached = find_boot_image(root)
            if cached is not None:
                progress(f"apt cannot resolve {KERNEL_META_PACKAGE}; using cached {cached.directory}")
                return cached
            raise
    version = kernel_version_of(package)
    image = BootImage(version, root / version)
    if image.complete():
        progress(f"cached: {image.directory}")
        return image
    with _locked(root):
        if image.complete():
            return image
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as work:
            progress(f"fetching {package}")
            tree = fetch(package, Path(work))
            progress(f"building boot image for kernel {version}")
            built = build_from_tree(tree, version, image.directory, progress)
    progress(f"done: {built.directory}")
    return built


# -- the default image in the cloud -------------------------------------------------------------------------

DEFAULT_IMAGE_BUCKET = "euca-default-images"
DEFAULT_IMAGE_ENV = "EUCA_DEFAULT_IMAGE"
STATE_FILE = "default-image.json"
EC2_PATH = "/services/compute"
S3_PATH = "/services/objectstorage"
REGISTER_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


@dataclass(frozen=True)
class DefaultImage:
    machine_id: str
    kernel_id: str
    ramdisk_id: str
    kernel_version: str


@dataclass(frozen=True)
class Uploader:
    """Who registers the default image and where: the admin's key, certificate and the cloud certificate."""

    ec2_url: str
    s3_url: str
    access_key_id: str
    secret_key: str
    region: str
    account_id: str
    user_cert_pem: bytes
    user_key_pem: bytes
    cloud_cert_pem: bytes


def default_image_enabled() -> bool:
    return os.environ.get(DEFAULT_IMAGE_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def image_names(kernel_version: str) -> dict[str, str]:
    return {
        "kernel": f"euca-default-kernel-{kernel_version}",
        "ramdisk": f"euca-default-ramdisk-{kernel_version}",
        "machine": f"euca-default-{kernel_version}",
    }


async def _owned_images_named(http: httpx.AsyncClient, up: Uploader, names: Iterable[str]) -> dict[str, str]:
    """name -> image id of the caller's images with these names (left from an interrupted earlier run)."""
    key = SigningKey(up.access_key_id, up.secret_key, up.region, "ec2")
    params = {"Owner.1": "self", "Filter.1.Name": "name"}
    for i, name in enumerate(names, 1):
        params[f"Filter.1.Value.{i}"] = name
    body = await ec2_call(http, up.ec2_url, key, "DescribeImages", params)
    found = {}
    for item in ElementTree.fromstring(body).iter():
        if item.tag.rpartition("}")[2] != "item":
            continue
        fields = {child.tag.rpartition("}")[2]: (child.text or "") for child in item}
        if "imageId" in fields and "name" in fields:
            found[fields["name"]] = fields["imageId"]
    return found


async def _bundle_upload_register(
    http: httpx.AsyncClient,
    up: Uploader,
    image_file: Path,
    image_type: str,
    name: str,
    prefix: str,
    work: Path,
    *,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
) -> str:
    destination = work / image_type
    result = await trio.to_thread.run_sync(
        lambda: bundle_image(
            image_file,
            destination,
            user=up.account_id,
            cloud_cert=load_certificate(up.cloud_cert_pem),
            user_cert=load_certificate(up.user_cert_pem),
            user_key=load_private_key(up.user_key_pem),
            image_type=image_type,
            kernel_id=kernel_id,
            ramdisk_id=ramdisk_id,
            compresslevel=1,
        )
    )
    s3 = S3Client(http, up.s3_url, SigningKey(up.access_key_id, up.secret_key, up.region, "s3"))
    location = await upload_bundle(
        s3, DEFAULT_IMAGE_BUCKET, prefix, BundleFiles(result.manifest_path, result.part_paths)
    )
    ec2_key = SigningKey(up.access_key_id, up.secret_key, up.region, "ec2")
    image_id = await register_bundle(
        http,
        up.ec2_url,
        ec2_key,
        location,
        name,
        architecture="x86_64",
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        description=f"euca default {image_type} image (Debian cloud kernel, busybox initramfs)",
    )
    log.info("default image %s registered image_id=%s location=%s", image_type, image_id, location)
    return image_id


async def register_default_image(
    up: Uploader, image: BootImage, *, work_dir: Path | None = None
) -> DefaultImage:
    """Bundle, upload (bucket euca-default-images, prefix <kernel version>/) and register the kernel, the
    ramdisk and the machine image (root.img booting with them), all public. Images of the same names the
    account already has are reused, so an interrupted run picks up where it stopped."""
    names = image_names(image.kernel_version)
    prefix = f"{image.kernel_version}/"
    ec2_key = SigningKey(up.access_key_id, up.secret_key, up.region, "ec2")
    async with httpx.AsyncClient(timeout=REGISTER_TIMEOUT) as http:
        existing = await _owned_images_named(http, up, names.values())
        ids: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="euca-default-image-", dir=work_dir) as tmp:
            for image_type, file in (
                ("kernel", image.vmlinuz),
                ("ramdisk", image.initrd),
                ("machine", image.root),
            ):
                name = names[image_type]
                if name in existing:
                    ids[image_type] = existing[name]
                    log.info("default image %s already registered image_id=%s", image_type, ids[image_type])
                    continue
                ids[image_type] = await _bundle_upload_register(
                    http,
                    up,
                    file,
                    image_type,
                    name,
                    prefix,
                    Path(tmp),
                    kernel_id=ids.get("kernel") if image_type == "machine" else None,
                    ramdisk_id=ids.get("ramdisk") if image_type == "machine" else None,
                )
        for image_id in ids.values():
            await ec2_call(
                http,
                up.ec2_url,
                ec2_key,
                "ModifyImageAttribute",
                {"ImageId": image_id, "LaunchPermission.Add.1.Group": "all"},
            )
    return DefaultImage(ids["machine"], ids["kernel"], ids["ramdisk"], image.kernel_version)


async def ensure_default_image(
    up: Uploader, state_file: Path, *, cache_root: Path | None = None, work_dir: Path | None = None
) -> DefaultImage | None:
    """The default image, registered once: on the first call it is built (or taken from the cache), bundled,
    uploaded and registered, and its ids are written to `state_file`; later calls read them from there (an
    admin who deregisters it is not overruled). None, with one log line, when it cannot be had or
    EUCA_DEFAULT_IMAGE=0. Never raises for a failure: a cloud without its default image still runs."""
    if not default_image_enabled():
        log.info("default image skipped: %s=0", DEFAULT_IMAGE_ENV)
        return None
    try:
        done = DefaultImage(**json.loads(state_file.read_text()))
        log.info(
            "default image registered earlier emi=%s eki=%s eri=%s",
            done.machine_id,
            done.kernel_id,
            done.ramdisk_id,
        )
        return done
    except (OSError, ValueError, TypeError):
        pass
    try:
        image = await trio.to_thread.run_sync(
            lambda: build_boot_image(cache_root, progress=lambda line: log.info("boot image: %s", line))
        )
    except BootImageUnavailable as e:
        log.info("default image skipped: no kernel (%s)", e)
        return None
    try:
        registered = await register_default_image(up, image, work_dir=work_dir)
    except (Ec2ApiError, S3Error, UploadError, BundleError, BundleInputError, OSError) as e:
        log.warning("default image not registered: %s", e)
        return None
    except Exception as e:  # a cloud without its default image still runs; say why and go on
        log.warning("default image not registered: %s: %s", type(e).__name__, e)
        return None
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(asdict(registered), indent=1) + "\n")
    os.replace(tmp, state_file)
    log.info(
        "default image ready emi=%s eki=%s eri=%s kernel=%s",
        registered.machine_id,
        registered.kernel_id,
        registered.ramdisk_id,
        registered.kernel_version,
    )
    return registered


def default_image_hook(ctx: RoleContext) -> Callable[[], Awaitable[None]]:
    """The supervisor's on_ready step for a process running both the CLC and Walrus: the admin account
    registers the default image through the EC2 and S3 APIs, as any user would."""

    async def hook() -> None:
        if not default_image_enabled():
            log.info("default image skipped: %s=0", DEFAULT_IMAGE_ENV)
            return
        from euca.core.identity import ADMIN_ACCOUNT, ADMIN_USER

        account, key, _ = ctx.identity.ensure_admin()
        creds = ctx.config.data_path / "credentials" / ADMIN_ACCOUNT / ADMIN_USER
        try:
            cert_pem, key_pem = (creds / "cert.pem").read_bytes(), (creds / "pk.pem").read_bytes()
        except OSError as e:
            log.warning("default image skipped: admin certificate unreadable (%s)", e)
            return
        up = Uploader(
            ec2_url=ctx.endpoints["clc"].rstrip("/") + EC2_PATH,
            s3_url=ctx.endpoints["walrus"].rstrip("/") + S3_PATH,
            access_key_id=key.access_key_id,
            secret_key=key.secret_key,
            region=ctx.config.region,
            account_id=account.account_id,
            user_cert_pem=cert_pem,
            user_key_pem=key_pem,
            cloud_cert_pem=ctx.ca.cert_pem,
        )
        await ensure_default_image(up, ctx.config.data_path / STATE_FILE, work_dir=ctx.config.data_path)

    return hook


# -- command line -------------------------------------------------------------------------------------------


@click.command("build-boot-image")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Also copy vmlinuz, initrd.img and root.img here (they are built into the cache either way).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache root (default ~/.cache/euca/bootimage).",
)
def build_boot_image_command(out: str | None, cache_dir: str | None) -> None:
    """Build the default guest image (Debian cloud kernel, busybox initramfs, small root disk) from Debian
    packages on this machine; cached, so a second run only prints the paths."""
    try:
        image = build_boot_image(
            Path(cache_dir) if cache_dir else None,
            progress=lambda line: click.echo(f"build-boot-image: {line}", err=True),
        )
    except BootImageUnavailable as e:
        raise click.ClickException(str(e)) from e
    directory = image.directory
    if out:
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        for name in FILE_NAMES:
            shutil.copyfile(image.directory / name, directory / name)
    click.echo(f"KERNEL\t{image.kernel_version}")
    for name in FILE_NAMES:
        click.echo(f"FILE\t{directory / name}")
