"""The default guest image's pieces: newc cpio, kernel module metadata and load order, the init script, the
build from an unpacked kernel package and its cache (with a stand-in package: no download here)."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from euca import onebox
from euca.core.config import load_config
from euca.core.roles import RoleContext
from euca.images import bootimage as bi
from euca.images import cpio, dropbear, guest_init, kmodules
from euca.images import default_image as di

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
needs_busybox = pytest.mark.skipif(not Path("/bin/busybox").is_file(), reason="busybox-static not installed")
needs_mke2fs = pytest.mark.skipif(shutil.which("mke2fs") is None, reason="e2fsprogs not installed")


# -- cpio ---------------------------------------------------------------------------------------------------


def _archive() -> bytes:
    w = cpio.CpioWriter()
    w.add_file("bin/busybox", b"\x7fELF" + bytes(1000), 0o755)
    w.add_symlink("bin/sh", "busybox")
    w.add_char_device("dev/console", 5, 1)
    w.add_file("init", b"#!/bin/sh\necho hi\n", 0o755)
    w.add_file("a/b/c/odd-size", b"x" * 3)
    w.add_dir("empty")
    return w.finish()


def test_cpio_round_trip_with_python_reader() -> None:
    entries = {e.name: e for e in cpio.read_cpio(_archive())}
    # parents come first, once each
    assert list(entries)[:2] == ["bin", "bin/busybox"]
    assert {"a", "a/b", "a/b/c", "empty", "dev"} <= set(entries)
    assert entries["bin/busybox"].data == b"\x7fELF" + bytes(1000)
    assert entries["bin/busybox"].mode == cpio.S_IFREG | 0o755
    assert entries["bin/sh"].mode & 0o170000 == cpio.S_IFLNK and entries["bin/sh"].data == b"busybox"
    console = entries["dev/console"]
    assert console.mode & 0o170000 == cpio.S_IFCHR and (console.rdev_major, console.rdev_minor) == (5, 1)
    assert entries["a/b/c/odd-size"].data == b"xxx"
    assert entries["empty"].mode == cpio.S_IFDIR | 0o755


def test_cpio_is_deterministic_and_padded() -> None:
    a, b = _archive(), _archive()
    assert a == b
    assert len(a) % 512 == 0


@needs_busybox
def test_cpio_lists_with_busybox_cpio(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    archive.write_bytes(_archive())
    listed = subprocess.run(
        [BUSYBOX, "cpio", "-t", "-F", str(archive)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"bin/busybox", "bin/sh", "dev/console", "init", "a/b/c/odd-size", "empty"} <= set(listed)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(
        [BUSYBOX, "cpio", "-i", "-d", "-F", str(archive)], cwd=out, check=True, capture_output=True
    )
    assert (out / "init").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "bin/sh").is_symlink() and (out / "bin/sh").readlink() == Path("busybox")


def test_read_cpio_refuses_other_bytes() -> None:
    with pytest.raises(ValueError):
        cpio.read_cpio(b"not a cpio archive" * 10)


# -- kernel modules -----------------------------------------------------------------------------------------


def elf_module(depends: list[str], name: str = "m") -> bytes:
    """A minimal little-endian ELF64 with a .modinfo section, as a kernel module carries."""
    modinfo = b"license=GPL\0" + f"depends={','.join(depends)}\0".encode() + f"name={name}\0".encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    shstr_off = data_off + len(modinfo)
    shoff = (shstr_off + len(shstrtab) + 7) // 8 * 8
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)

    def section(name_at: int, type_: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_at, type_, 0, 0, offset, size, 0, 0, 1, 0)

    body = header + modinfo + shstrtab
    body += bytes(shoff - len(body))
    body += (
        section(0, 0, 0, 0) + section(1, 1, data_off, len(modinfo)) + section(10, 3, shstr_off, len(shstrtab))
    )
    return body


def test_module_depends_reads_modinfo() -> None:
    assert kmodules.module_depends(elf_module(["virtio", "virtio_ring"])) == ["virtio", "virtio_ring"]
    assert kmodules.module_depends(elf_module([])) == []
    with pytest.raises(ValueError):
        kmodules.module_depends(b"not an elf file at all")


def _modules_tree(root: Path, deps: dict[str, list[str]], builtin: list[str] = ()) -> Path:
    mods = root / "lib" / "modules" / "6.1.0-9-cloud-amd64"
    for name, needs in deps.items():
        path = mods / "kernel" / "drivers" / f"{name.replace('_', '-') if name == 'virtio_pci' else name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(elf_module(needs, name))
    mods.mkdir(parents=True, exist_ok=True)
    (mods / "modules.builtin").write_text("".join(f"kernel/fs/{b}/{b}.ko\n" for b in builtin))
    return mods


DEPS = {
    "virtio": [],
    "virtio_ring": [],
    "virtio_pci_modern_dev": [],
    "virtio_pci": ["virtio_pci_modern_dev", "virtio", "virtio_ring"],
    "virtio_blk": ["virtio", "virtio_ring"],
    "failover": [],
    "net_failover": ["failover"],
    "virtio_net": ["net_failover", "virtio", "virtio_ring"],
}


def test_load_order_puts_dependencies_first_and_skips_builtins(tmp_path: Path) -> None:
    available, builtin = kmodules.kernel_modules(_modules_tree(tmp_path, DEPS, builtin=["ext4"]))
    assert "virtio_pci" in available  # the file is virtio-pci.ko: names normalise - to _
    order, missing = kmodules.module_load_order(
        ["virtio_pci", "virtio_blk", "virtio_net", "ext4", "nosuch"], available, builtin
    )
    assert missing == ["nosuch"]
    assert "ext4" not in order
    assert sorted(order) == sorted(DEPS)
    for name, needs in DEPS.items():
        for dep in needs:
            assert order.index(dep) < order.index(name), (dep, name)


def test_load_order_refuses_a_cycle(tmp_path: Path) -> None:
    available, builtin = kmodules.kernel_modules(_modules_tree(tmp_path, {"a": ["b"], "b": ["a"]}))
    with pytest.raises(ValueError):
        kmodules.module_load_order(["a"], available, builtin)


def test_parse_apt_depends_and_kconfig() -> None:
    text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n |Depends: <virtual>\n"
    assert bi.parse_apt_depends(text) == ["linux-image-6.1.0-57-cloud-amd64"]
    assert bi.kernel_version_of("linux-image-6.1.0-57-cloud-amd64") == "6.1.0-57-cloud-amd64"
    conf = kmodules.parse_kconfig(
        '# comment\nCONFIG_VIRTIO=m\nCONFIG_EXT4_FS=y\n# CONFIG_X is not set\nCONFIG_S="a=b"\n'
    )
    assert conf == {"CONFIG_VIRTIO": "m", "CONFIG_EXT4_FS": "y", "CONFIG_S": '"a=b"'}


# -- the init script ------------------------------------------------------------------------------------------


def test_init_script_content() -> None:
    script = bi.init_script("6.1.0-9-cloud-amd64", ["virtio_ring", "virtio", "virtio_blk"])
    assert script.startswith("#!/bin/busybox sh\n")
    assert "/bin/busybox --install -s" in script
    assert "for m in virtio_ring virtio virtio_blk; do" in script
    assert 'insmod "/lib/modules/6.1.0-9-cloud-amd64/$m.ko"' in script
    assert f'echo "{bi.BOOT_MARKER} ${{iid:-unknown}}' in script
    assert "euca.instance_id=*" in script and "/sys/class/dmi/id/product_serial" in script
    assert "udhcpc -i eth0" in script and ") &" in script  # DHCP in the background
    assert "mount -o ro /dev/vda /mnt/root" in script
    # PID 1 never exits: the script ends by handing over to busybox init
    assert script.rstrip().endswith("exec /bin/busybox init")
    assert "@" not in script.replace("169.254.169.254", "")  # every placeholder filled


def test_init_script_is_valid_shell(tmp_path: Path) -> None:
    path = tmp_path / "init"
    path.write_text(bi.init_script("6.1.0-9-cloud-amd64", ["virtio"]))
    subprocess.run(["sh", "-n", str(path)], check=True)
    for text in (bi.UDHCPC_SCRIPT, bi.POWER_BUTTON, guest_init.setup_script()):
        path.write_text(text)
        subprocess.run(["sh", "-n", str(path)], check=True)


def test_setup_script_reads_the_metadata_service_at_the_ec2_paths() -> None:
    script = guest_init.setup_script()
    assert "PUT /latest/api/token HTTP/1.0" in script and "X-aws-ec2-metadata-token-ttl-seconds:" in script
    assert '--header "X-aws-ec2-metadata-token: $token"' in script
    for path in ("meta-data/instance-id", "meta-data/local-hostname", "meta-data/public-keys/0/openssh-key"):
        assert f"md {path}" in script
    assert "md user-data > /run/user-data" in script and '= "#!" ]' in script
    assert '-r "$HOST_KEY" -s -p 22' in script and guest_init.DROPBEAR_HOST_KEY in script
    assert "@" not in script.replace("169.254.169.254", "")
    # /init runs it after the lease, in the background
    assert f"{guest_init.SETUP_PATH} </dev/null) &" in bi.init_script(KVER, ["virtio"])


def test_parse_ldd() -> None:
    text = (
        "\tlinux-vdso.so.1 (0x00007ffd3a7e5000)\n"
        "\tlibtomcrypt.so.1 => /lib/x86_64-linux-gnu/libtomcrypt.so.1 (0x00007f5c6a2d4000)\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5c6a079000)\n"
        "\tlibgone.so.2 => not found\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f5c6a3f5000)\n"
    )
    assert dropbear.parse_ldd(text) == [
        "/lib/x86_64-linux-gnu/libtomcrypt.so.1",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]


# -- build and cache --------------------------------------------------------------------------------------------

KVER = "6.1.0-9-cloud-amd64"
PACKAGE = f"linux-image-{KVER}"


def fake_package(workdir: Path) -> Path:
    """An unpacked 'kernel package': vmlinuz, config and the virtio modules (stand-in ELF files)."""
    tree = workdir / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / f"vmlinuz-{KVER}").write_bytes(b"MZ fake kernel" + bytes(4096))
    (tree / "boot" / f"config-{KVER}").write_text(
        "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_EXT4_FS=y\n"
    )
    _modules_tree(tree, {**DEPS, "button": [], "evdev": []}, builtin=["ext4"])
    return tree


class CountingFetch:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, package: str, workdir: Path) -> Path:
        self.calls.append(package)
        return fake_package(workdir)


@needs_busybox
@needs_mke2fs
def test_build_then_reuse_from_cache(tmp_path: Path) -> None:
    fetch = CountingFetch()
    lines: list[str] = []
    image = bi.build_boot_image(tmp_path, package=PACKAGE, fetch=fetch, progress=lines.append)
    assert fetch.calls == [PACKAGE]
    assert image.directory == tmp_path / KVER and image.complete()
    assert image.vmlinuz.read_bytes().startswith(b"MZ fake kernel")
    assert any("modules:" in line for line in lines)

    entries = {e.name: e for e in cpio.read_cpio(gzip.decompress(image.initrd.read_bytes()))}
    assert entries["bin/busybox"].data == Path("/bin/busybox").read_bytes()
    assert entries["dev/console"].rdev_major == 5
    init = entries["init"].data.decode()
    loaded = init.split("for m in ", 1)[1].split(";", 1)[0].split()
    assert sorted(loaded) == sorted([*DEPS, "button", "evdev"])
    assert loaded.index("virtio_pci_modern_dev") < loaded.index("virtio_pci")
    for name in loaded:
        assert f"lib/modules/{KVER}/{name}.ko" in entries
    dep = entries[f"lib/modules/{KVER}/modules.dep"].data.decode()
    assert "net_failover.ko: failover.ko\n" in dep
    assert "etc/inittab" in entries and "etc/acpi/PWRF/00000080" in entries
    assert entries["usr/sbin/euca-guest-setup"].data.decode() == guest_init.setup_script()
    assert entries["etc/passwd"].data == b"root:*:0:0:root:/root:/bin/sh\n"
    if dropbear.available():  # the ssh server and what it loads, at the paths ldd names
        assert entries["usr/sbin/dropbear"].data == dropbear.DROPBEAR.read_bytes()
        assert "usr/bin/dropbearkey" in entries and "lib64/ld-linux-x86-64.so.2" in entries

    root = image.root.read_bytes()
    assert len(root) == bi.ROOT_IMAGE_MIB * 1024 * 1024
    assert root[1080:1082] == b"\x53\xef"  # ext2 superblock magic
    if shutil.which("debugfs"):
        marker = subprocess.run(
            ["debugfs", "-R", f"cat /{bi.ROOT_MARKER_FILE}", str(image.root)], capture_output=True, text=True
        ).stdout
        assert "euca default root image" in marker

    # Second time: nothing fetched, same files.
    before = {n: (image.directory / n).stat().st_mtime_ns for n in bi.FILE_NAMES}
    again = bi.build_boot_image(tmp_path, package=PACKAGE, fetch=fetch, progress=lines.append)
    assert again == image and fetch.calls == [PACKAGE]
    assert {n: (image.directory / n).stat().st_mtime_ns for n in bi.FILE_NAMES} == before
    assert bi.find_boot_image(tmp_path) == image
    # Nothing but the image directory and the lock is left in the cache.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", KVER]

    # A set made by another recipe (an older euca's init script) is rebuilt, not booted.
    (image.directory / bi.RECIPE_FILE).write_text("0123456789abcdef\n")
    assert bi.find_boot_image(tmp_path) is None
    rebuilt = bi.build_boot_image(tmp_path, package=PACKAGE, fetch=fetch, progress=lines.append)
    assert rebuilt == image and rebuilt.complete() and fetch.calls == [PACKAGE, PACKAGE]


@needs_busybox
@needs_mke2fs
def test_offline_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_apt(meta: str = bi.KERNEL_META_PACKAGE) -> str:
        raise bi.BootImageUnavailable("apt-cache not found")

    monkeypatch.setattr(bi, "resolve_kernel_package", no_apt)
    with pytest.raises(bi.BootImageUnavailable):
        bi.build_boot_image(tmp_path, fetch=CountingFetch())
    built = bi.build_boot_image(tmp_path, package=PACKAGE, fetch=CountingFetch())
    fetch = CountingFetch()
    assert bi.build_boot_image(tmp_path, fetch=fetch) == built
    assert fetch.calls == []


def test_an_incomplete_build_is_not_found(tmp_path: Path) -> None:
    (tmp_path / KVER).mkdir()
    (tmp_path / KVER / "vmlinuz").write_bytes(b"x")
    assert bi.find_boot_image(tmp_path) is None
    assert bi.find_boot_image(tmp_path / "missing") is None


def test_a_package_without_a_kernel_is_unavailable(tmp_path: Path) -> None:
    def empty(package: str, workdir: Path) -> Path:
        (workdir / "tree").mkdir()
        return workdir / "tree"

    with pytest.raises(bi.BootImageUnavailable):
        bi.build_boot_image(tmp_path, package=PACKAGE, fetch=empty)
    assert bi.find_boot_image(tmp_path) is None


# -- the default image's switch and record ------------------------------------------------------------------------


def test_the_one_box_hook_is_for_clc_with_walrus() -> None:
    assert onebox.start_hooks(["clc", "walrus", "cc", "nc"]) == [onebox.register_default_image]
    assert onebox.start_hooks(["clc"]) == [] and onebox.start_hooks(["walrus", "cc"]) == []


async def test_disabled_by_configuration(tmp_path: Path) -> None:
    config = load_config(None, {"data_dir": str(tmp_path), "default_image": False})
    # Nothing but the configuration is looked at: no identity, endpoints or CA are there to reach.
    await onebox.register_default_image(cast(RoleContext, SimpleNamespace(config=config)))
    assert not (tmp_path / di.STATE_FILE).exists()


async def test_registered_once_then_read_back(tmp_path: Path) -> None:
    state = tmp_path / di.STATE_FILE
    state.write_text(
        json.dumps(
            {"machine_id": "emi-1", "kernel_id": "eki-1", "ramdisk_id": "eri-1", "kernel_version": KVER}
        )
    )
    # The endpoint does not exist: a recorded image is not registered again, nothing is contacted.
    up = di.Uploader(
        "http://127.0.0.1:9/services/compute", "http://127.0.0.1:9", "AK", "SK", "r", "1", b"", b"", b""
    )
    assert await di.ensure_default_image(up, state) == di.DefaultImage("emi-1", "eki-1", "eri-1", KVER)


async def test_no_kernel_skips_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    def unavailable(*args: object, **kwargs: object) -> bi.BootImage:
        raise bi.BootImageUnavailable("apt-cache not found")

    monkeypatch.setattr(bi, "build_boot_image", unavailable)
    up = di.Uploader(
        "http://127.0.0.1:9/services/compute", "http://127.0.0.1:9", "AK", "SK", "r", "1", b"", b"", b""
    )
    assert await di.ensure_default_image(up, tmp_path / di.STATE_FILE) is None
