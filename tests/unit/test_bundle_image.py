"""euca.images.bundler: the streaming bundler's output, checked by hand and against openssl | gunzip | tar."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from euca.images.bundler import BundleInputError, bundle_image, tar_header, tar_trailer
from euca.protocol import bundle as b
from helpers.bundle_keys import BundleKeys


def make_image(path: Path, size: int) -> Path:
    # Incompressible data, so the bundle really spans the parts the size suggests.
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def bundle(keys: BundleKeys, image: Path, dest: Path, **kw: object) -> b.BundleManifest:
    result = bundle_image(
        image,
        dest,
        user="000000000042",
        cloud_cert=keys.cloud_cert,
        user_cert=keys.user_cert,
        user_key=keys.user_key,
        **kw,  # type: ignore[arg-type]
    )
    assert result.manifest_path == dest / f"{kw.get('prefix') or image.name}.manifest.xml"
    assert result.manifest_path.read_bytes() == result.manifest
    m = b.parse_manifest(result.manifest)
    b.verify_manifest(m, keys.user_cert)
    return m


def decrypt_all(keys: BundleKeys, m: b.BundleManifest, dest: Path) -> bytes:
    key, iv = b.manifest_key_iv(m, keys.cloud_key)
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = d.update(b"".join((dest / p.filename).read_bytes() for p in m.parts)) + d.finalize()
    assert 1 <= plain[-1] <= 16 and plain.endswith(bytes([plain[-1]]) * plain[-1])
    return plain[: -plain[-1]]


def test_layout_digests_and_sizes(keys: BundleKeys, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 2 * b.PART_SIZE + 5000)
    m = bundle(keys, image, tmp_path / "out", architecture="i386", kernel_id="eki-1", ramdisk_id="eri-2")
    assert [p.filename for p in m.parts] == ["disk.img.part.00", "disk.img.part.01", "disk.img.part.02"]
    sizes = [(tmp_path / "out" / p.filename).stat().st_size for p in m.parts]
    assert sizes == b.part_sizes(m.bundled_size, 3) and sizes[0] == sizes[1] == 10485760
    assert m.bundled_size == sum(sizes)
    for p in m.parts:
        assert p.digest == hashlib.sha1((tmp_path / "out" / p.filename).read_bytes()).hexdigest()
    assert (m.name, m.size, m.architecture, m.kernel_id, m.ramdisk_id) == (
        "disk.img",
        image.stat().st_size,
        "i386",
        "eki-1",
        "eri-2",
    )
    tar_stream = zlib.decompress(decrypt_all(keys, m, tmp_path / "out"), 31)
    assert hashlib.sha1(tar_stream).hexdigest() == m.digest
    assert len(tar_stream) % 10240 == 0  # whole tar records, as tar writes them
    member = tar_stream[512 : 512 + m.size]
    assert member == image.read_bytes()


def test_part_names_keep_two_digits_then_grow(keys: BundleKeys, tmp_path: Path) -> None:
    image = make_image(tmp_path / "small.img", 120_000)
    m = bundle(keys, image, tmp_path / "out", part_size=1024, prefix="pfx")
    names = [p.filename for p in m.parts]
    assert len(names) > 101
    assert names[0] == "pfx.part.00" and names[9] == "pfx.part.09" and names[100] == "pfx.part.100"
    assert sorted(os.listdir(tmp_path / "out")) == sorted([*names, "pfx.manifest.xml"])


def test_tar_header_is_what_tarfile_reads(tmp_path: Path) -> None:
    for size in (0, 1, 511, 512, 513, 9 * 1024**3):  # 9 GiB needs GNU base-256 sizes
        header = tar_header("x" * 120, size, 1_700_000_000)
        info = tarfile.TarInfo.frombuf(header[-512:], "utf-8", "surrogateescape")
        assert info.size == size and info.isreg()
        assert (len(header) + size + len(tar_trailer(size, len(header)))) % 10240 == 0


def test_missing_image_and_cleanup(keys: BundleKeys, tmp_path: Path) -> None:
    with pytest.raises(BundleInputError):
        bundle(keys, tmp_path / "nope.img", tmp_path / "out")
    with pytest.raises(BundleInputError):
        bundle(keys, tmp_path, tmp_path / "out2")  # a directory
    image = make_image(tmp_path / "disk.img", 3 * 1024 * 1024)

    def fail(done: int, total: int) -> None:
        if done > 1024 * 1024:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        bundle(keys, image, tmp_path / "out3", part_size=100_000, progress=fail)
    assert os.listdir(tmp_path / "out3") == []


def test_progress_reports_bytes_of_the_image(keys: BundleKeys, tmp_path: Path) -> None:
    image = make_image(tmp_path / "disk.img", 9 * 1024 * 1024 + 7)
    seen: list[tuple[int, int]] = []
    bundle(keys, image, tmp_path / "out", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (image.stat().st_size, image.stat().st_size)
    assert all(a[0] < c[0] for a, c in zip(seen, seen[1:], strict=False))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("size", [0, 1, b.PART_SIZE + 1])
def test_eucalyptus_node_pipe_unbundles_it(keys: BundleKeys, tmp_path: Path, size: int) -> None:
    """Eucalyptus 4's node: cat parts | openssl enc -d -aes-128-cbc -K .. -iv .. | gunzip | tar -x."""
    image = make_image(tmp_path / "disk.img", size)
    m = bundle(keys, image, tmp_path / "out")
    key, iv = b.manifest_key_iv(m, keys.cloud_key)
    out = tmp_path / "extracted"
    out.mkdir()
    parts = " ".join(str(tmp_path / "out" / p.filename) for p in m.parts)
    subprocess.run(
        f"set -o pipefail; cat {parts} | openssl enc -d -aes-128-cbc -K {key.hex()} -iv {iv.hex()}"
        f" | gunzip | tar -x -C {out}",
        shell=True,
        check=True,
        executable="/bin/bash",
    )
    assert os.listdir(out) == ["disk.img"]
    assert (
        hashlib.sha256((out / "disk.img").read_bytes()).digest()
        == hashlib.sha256(image.read_bytes()).digest()
    )
