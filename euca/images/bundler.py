"""Streaming bundler: image file -> tar -> SHA1 -> gzip -> AES-128-CBC -> 10 MiB parts + signed manifest.

One pass over the image in fixed-size chunks, so memory stays bounded whatever the image size. The stages
are the ones euca2ools chains (see euca.protocol.bundle for the format):

    tar stream with one member (the image, named by its basename)
      -> SHA1 over that uncompressed tar stream: the image digest
      -> gzip
      -> AES-128-CBC, PKCS#7 padding, random key and IV
      -> parts of 10485760 bytes named <prefix>.part.NN, each with the SHA1 of its encrypted bytes
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from euca.protocol.bundle import (
    PART_SIZE,
    BlockDeviceMapping,
    BundleContents,
    BundlePart,
    build_manifest,
    new_key_and_iv,
)

READ_CHUNK = 4 * 1024 * 1024
TAR_BLOCK = 512
# tar pads the archive to whole records of 20 blocks, as GNU tar and Python's tarfile do.
TAR_RECORD = 20 * TAR_BLOCK
# gzip's own default; level 1 is ~3x faster on real disk images for ~10% bigger bundles.
DEFAULT_COMPRESSLEVEL = 6

Progress = Callable[[int, int], None]


class BundleInputError(Exception):
    """The image file cannot be bundled (missing, not a regular file, changed while being read)."""


def tar_header(name: str, size: int, mtime: int, mode: int = 0o644) -> bytes:
    """The header block(s) of the one tar member. GNU format: base-256 sizes past 8 GiB, long names."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = mode
    info.type = tarfile.REGTYPE
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")


def tar_trailer(member_size: int, header_size: int) -> bytes:
    """Padding of the member to a block, two zero blocks, then zeros to a whole record."""
    pad = -member_size % TAR_BLOCK
    total = header_size + member_size + pad + 2 * TAR_BLOCK
    return bytes(pad + 2 * TAR_BLOCK + (-total % TAR_RECORD))


class PartWriter:
    """Cuts a byte stream into `<prefix>.part.NN` files of `part_size` bytes, hashing each."""

    def __init__(self, directory: Path, prefix: str, part_size: int = PART_SIZE):
        self.directory = directory
        self.prefix = prefix
        self.part_size = part_size
        self.parts: list[BundlePart] = []
        self.paths: list[Path] = []
        self.total = 0
        self._file: int | None = None
        self._written = 0
        self._sha1 = hashlib.sha1()

    def _open_next(self) -> None:
        index = len(self.parts)
        path = self.directory / f"{self.prefix}.part.{index:02d}"
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.paths.append(path)
        self._written = 0
        self._sha1 = hashlib.sha1()

    def _close_current(self) -> None:
        assert self._file is not None
        os.close(self._file)
        self._file = None
        self.parts.append(
            BundlePart(index=len(self.parts), filename=self.paths[-1].name, digest=self._sha1.hexdigest())
        )

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._file is None:
                self._open_next()
            assert self._file is not None
            room = self.part_size - self._written
            piece = view[:room]
            self._sha1.update(piece)
            _write_all(self._file, piece)
            self._written += len(piece)
            self.total += len(piece)
            view = view[len(piece) :]
            if self._written == self.part_size:
                self._close_current()

    def close(self) -> None:
        if self._file is not None:
            self._close_current()

    def abort(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None
        for path in self.paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class BundleStream:
    """The bundling stages after tar: feed the tar stream in order, then finish()."""

    def __init__(self, sink: PartWriter, key: bytes, iv: bytes, compresslevel: int = DEFAULT_COMPRESSLEVEL):
        self.sink = sink
        self.digest = hashlib.sha1()
        # wbits 31: a gzip wrapper (header and CRC trailer), as `gzip` writes.
        self._gzip = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)
        self._encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        self._plain_len = 0

    def feed(self, tar_bytes: bytes | memoryview) -> None:
        self.digest.update(tar_bytes)
        self._encrypt(self._gzip.compress(tar_bytes))

    def _encrypt(self, data: bytes) -> None:
        if data:
            self._plain_len += len(data)
            out = self._encryptor.update(data)
            if out:
                self.sink.write(out)

    def finish(self) -> None:
        self._encrypt(self._gzip.flush())
        pad = 16 - self._plain_len % 16  # PKCS#7: always 1..16 bytes
        out = self._encryptor.update(bytes([pad]) * pad) + self._encryptor.finalize()
        self.sink.write(out)
        self.sink.close()


@dataclass(frozen=True)
class BundleResult:
    manifest_path: Path
    part_paths: tuple[Path, ...]
    contents: BundleContents
    manifest: bytes


def _read_chunks(fd: int, size: int) -> Iterator[bytes]:
    remaining = size
    while remaining:
        chunk = os.read(fd, min(READ_CHUNK, remaining))
        if not chunk:
            raise BundleInputError("the image file shrank while it was being bundled")
        remaining -= len(chunk)
        yield chunk
    if os.read(fd, 1):
        raise BundleInputError("the image file grew while it was being bundled")


def bundle_image(
    image_path: Path,
    destination: Path,
    *,
    user: str,
    cloud_cert: x509.Certificate,
    user_cert: x509.Certificate,
    user_key: rsa.RSAPrivateKey | None,
    prefix: str | None = None,
    architecture: str = "x86_64",
    image_type: str = "machine",
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    block_device_mappings: Sequence[BlockDeviceMapping] = (),
    product_codes: Sequence[str] = (),
    part_size: int = PART_SIZE,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    progress: Progress | None = None,
    key_iv: tuple[bytes, bytes] | None = None,
) -> BundleResult:
    """Bundle `image_path` into `destination` (parts, then `<prefix>.manifest.xml`). Synchronous, one pass.

    On failure, any parts already written are removed; the manifest is written last, so a manifest on disk
    always describes complete parts.
    """
    name = image_path.name
    prefix = prefix or name
    if "/" in prefix or prefix in (".", ".."):
        raise BundleInputError(f"bad bundle prefix {prefix!r}")
    try:
        fd = os.open(image_path, os.O_RDONLY)
    except OSError as e:
        raise BundleInputError(f"cannot open {image_path}: {e.strerror}") from e
    destination.mkdir(parents=True, exist_ok=True)
    key, iv = key_iv or new_key_and_iv()
    parts = PartWriter(destination, prefix, part_size)
    try:
        st = os.fstat(fd)
        if not _is_regular(st.st_mode):
            raise BundleInputError(f"{image_path} is not a regular file")
        size = st.st_size
        stream = BundleStream(parts, key, iv, compresslevel)
        header = tar_header(name, size, int(st.st_mtime))
        stream.feed(header)
        done = 0
        for chunk in _read_chunks(fd, size):
            stream.feed(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, size)
        stream.feed(tar_trailer(size, len(header)))
        stream.finish()
        contents = BundleContents(
            name=name,
            user=user,
            image_type=image_type,
            architecture=architecture,
            digest=stream.digest.hexdigest(),
            size=size,
            bundled_size=parts.total,
            parts=tuple(parts.parts),
            kernel_id=kernel_id,
            ramdisk_id=ramdisk_id,
            block_device_mappings=tuple(block_device_mappings),
            product_codes=tuple(product_codes),
        )
        manifest = build_manifest(
            contents, key=key, iv=iv, cloud_cert=cloud_cert, user_cert=user_cert, user_key=user_key
        )
        manifest_path = destination / f"{prefix}.manifest.xml"
        tmp = manifest_path.with_name(manifest_path.name + ".tmp")
        tmp.write_bytes(manifest)
        os.replace(tmp, manifest_path)
    except BaseException:
        parts.abort()
        raise
    finally:
        os.close(fd)
    return BundleResult(manifest_path, tuple(parts.paths), contents, manifest)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)
