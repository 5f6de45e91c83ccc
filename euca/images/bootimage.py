"""The one-box trial's default machine image, built from Debian packages on this machine.

Three files, cached per kernel version and rebuilt only when missing:

    ~/.cache/euca/bootimage/<kernel version>/vmlinuz      the Debian cloud kernel (linux-image-*-cloud-amd64)
    ~/.cache/euca/bootimage/<kernel version>/initrd.img   gzip'd newc cpio: busybox-static, virtio modules, /init
    ~/.cache/euca/bootimage/<kernel version>/root.img     a 4 MiB ext2 file system with a marker file

plus a `recipe` stamp: a set made by another version of this recipe counts as missing. ($XDG_CACHE_HOME
replaces ~/.cache when set.) `find_boot_image()` returns the newest complete set without building anything;
`build_boot_image()` builds what is missing (`euca build-boot-image` on the command line).

The guest needs nothing but a kernel command line with `console=ttyS0` (the initramfs ignores `root=`): its
/init (euca.images.guest_init) loads the virtio modules in dependency order, prints `euca-guest: booted
<instance id>` on the console (the id comes from `euca.instance_id=` on the kernel command line or an SMBIOS
system serial starting with "i-", else "unknown"), mounts /dev/vda read-only and lists it, then in the
background asks for a DHCP lease on eth0 and reads the metadata service (hostname, root's ssh key, the
dropbear ssh server, user data starting with `#!`), one console line per step; PID 1 goes to busybox init,
which never exits. busybox acpid, started before the marker, powers off on the ACPI power button, so
libvirt's ACPI reboot and shutdown work once the marker is out. `euca.shell=1` on the command line adds a
shell on ttyS0 for debugging. Dropbear and its libraries come from this machine's dropbear-bin package
(euca.images.dropbear); without it the image has no ssh server.

The newc archive is written by euca.images.cpio, the modules chosen by euca.images.kmodules. At the first
start of `--role all` the image is bundled, uploaded and registered by euca.images.default_image (configuration
key `default_image`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from euca.images import dropbear, guest_init
from euca.images.cpio import CpioWriter
from euca.images.guest_init import (
    GROUP,
    HOSTS,
    INITTAB,
    PASSWD,
    POWER_BUTTON,
    ROOT_MARKER_FILE,
    SETUP_PATH,
    SHELLS,
    UDHCPC_SCRIPT,
    all_scripts,
    init_script,
    setup_script,
)
from euca.images.kmodules import kernel_modules, module_depends, module_load_order, parse_kconfig

log = logging.getLogger("euca.bootimage")

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BOOT_MARKER = guest_init.BOOT_MARKER  # what the tests look for on a guest's console, here as before
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


def recipe_id() -> str:
    """A digest of what goes into the image besides the kernel package (scripts, module list, sizes), so a
    cached set made by an older euca is rebuilt rather than booted."""
    parts = (
        *all_scripts(),
        " ".join(WANTED_MODULES),
        str(ROOT_IMAGE_MIB),
        "2",
        "dropbear" if dropbear.available() else "no ssh server",
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build_initramfs(
    kernel_version: str,
    modules: list[tuple[str, bytes]],
    busybox: bytes,
    extra_files: Sequence[tuple[str, bytes, int]] = (),
) -> bytes:
    """The gzip'd newc archive: busybox, the modules (in load order), /init and its configuration, the
    metadata setup script, and `extra_files` (path, content, mode: the ssh server and its libraries)."""
    cpio = CpioWriter()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "mnt/root", "etc"):
        cpio.add_dir(d)
    cpio.add_dir("root", 0o700)
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
    cpio.add_file(SETUP_PATH.lstrip("/"), setup_script().encode(), 0o755)
    for name, text in (("passwd", PASSWD), ("group", GROUP), ("shells", SHELLS), ("hosts", HOSTS)):
        cpio.add_file(f"etc/{name}", text.encode())
    for path, data, mode in extra_files:
        cpio.add_file(path, data, mode)
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
        ssh_server: list[tuple[str, bytes, int]] = []
        if dropbear.available():
            try:
                ssh_server = dropbear.files()
            except (OSError, dropbear.MissingLibrary) as e:
                raise BootImageUnavailable(f"dropbear cannot be copied into the image: {e}") from e
            progress(f"ssh server: dropbear with {len(ssh_server) - len(dropbear.BINARIES)} libraries")
        else:
            progress(
                f"{dropbear.DROPBEAR} missing (apt-get install dropbear-bin): the image has no ssh server"
            )
        initrd = build_initramfs(
            kernel_version,
            [(name, available[name].read_bytes()) for name in order],
            BUSYBOX.read_bytes(),
            ssh_server,
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
