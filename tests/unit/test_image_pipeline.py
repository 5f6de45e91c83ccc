"""euca.images.pipeline: bundle -> download manifest -> parts over loopback HTTP -> the exact image."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import trio

from euca.core.config import HttpLimits
from euca.core.http import FileBody, HttpServer, Request, Response
from euca.images import part_fetch, untar
from euca.images.bundler import bundle_image
from euca.images.pipeline import (
    ImageCorruptError,
    ImageDiskFullError,
    ImageKeyError,
    ImageSource,
    PartDigestError,
    PartMissingError,
    source_from_bundle_manifest,
    source_from_download_manifest,
    unbundle_image,
)
from euca.protocol import bundle as b
from helpers.bundle_keys import BundleKeys

MiB = 1024 * 1024


class PartServer:
    """Serves the files of one directory; counts requests running at once."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0

    async def handle(self, request: Request) -> Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await trio.sleep(0)  # let other fetches start: what is measured is the window, not timing
            name = unquote(request.path.lstrip("/"))
            path = self.directory / name
            if "/" in name or not path.is_file():
                return Response(404, [("Content-Type", "text/plain")], b"no such part\n")
            fd = os.open(path, os.O_RDONLY)
            return Response(
                200, [("Content-Type", "application/octet-stream")], FileBody(fd, 0, path.stat().st_size)
            )
        finally:
            self.in_flight -= 1

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
async def parts_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    return d


@pytest.fixture
async def server(nursery: trio.Nursery, parts_dir: Path) -> PartServer:
    ps = PartServer(parts_dir)
    http = HttpServer(ps.handle, "127.0.0.1", 0, HttpLimits())
    ps.port = await nursery.start(http.serve)
    return ps


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def make_image(path: Path, size: int, random_fraction: float = 1.0) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            r = int(n * random_fraction)
            f.write(os.urandom(r) + bytes(n - r))
            left -= n
    return path


def sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.digest()


def bundle(keys: BundleKeys, image: Path, dest: Path) -> b.BundleManifest:
    result = bundle_image(
        image,
        dest,
        user="000000000042",
        cloud_cert=keys.cloud_cert,
        user_cert=keys.user_cert,
        user_key=keys.user_key,
    )
    return b.parse_manifest(result.manifest)


def node_source(keys: BundleKeys, m: b.BundleManifest, server: PartServer) -> ImageSource:
    """What the CLC hands the node, and what the node makes of it."""
    b.verify_manifest(m, keys.user_cert)
    data = b.build_download_manifest(
        m,
        image_id="emi-0123abcd",
        part_urls=[server.url(p.filename) for p in m.parts],
        cloud_key=keys.cloud_key,
        node_cert=keys.node_cert,
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    dm = b.parse_download_manifest(data)
    b.verify_download_manifest(dm, keys.cloud_cert, node_cert=keys.node_cert, now=dt.datetime.now(dt.UTC))
    return source_from_download_manifest(dm, keys.node_key)


def leftovers(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("size", [0, 1, 10 * MiB, 10 * MiB + 1, 25 * MiB + 3])
async def test_round_trip_exact_bytes(
    keys: BundleKeys,
    tmp_path: Path,
    parts_dir: Path,
    server: PartServer,
    client: httpx.AsyncClient,
    size: int,
) -> None:
    image = make_image(tmp_path / "disk.img", size)
    m = bundle(keys, image, parts_dir)
    out = tmp_path / "cache"
    out.mkdir()
    seen: list[int] = []
    written = await unbundle_image(
        node_source(keys, m, server), out / "emi.img", client=client, progress=lambda d, t: seen.append(d)
    )
    assert (written.name, written.size, written.digest) == ("disk.img", size, m.digest)
    assert sha256(out / "emi.img") == sha256(image)
    assert leftovers(out) == ["emi.img"]
    if size:
        assert seen[-1] == size


@pytest.mark.slow
async def test_round_trip_over_100_mib(
    keys: BundleKeys, tmp_path: Path, parts_dir: Path, server: PartServer, client: httpx.AsyncClient
) -> None:
    size = 100 * MiB + 12345
    image = make_image(tmp_path / "disk.img", size, random_fraction=0.3)
    m = bundle(keys, image, parts_dir)
    assert len(m.parts) > 2
    written = await unbundle_image(
        node_source(keys, m, server), tmp_path / "out.img", client=client, concurrency=3
    )
    assert written.size == size
    assert sha256(tmp_path / "out.img") == sha256(image)
    # Parts are fetched in parallel but never more than the window at once: bounded memory.
    assert 1 <= server.max_in_flight <= 3


async def test_local_directory_source(keys: BundleKeys, tmp_path: Path, parts_dir: Path) -> None:
    image = make_image(tmp_path / "disk.img", 3 * MiB)
    m = bundle(keys, image, parts_dir)
    source = source_from_bundle_manifest(m, keys.user_key, str(parts_dir), holder="user")
    await unbundle_image(source, tmp_path / "out.img", concurrency=1)
    assert sha256(tmp_path / "out.img") == sha256(image)


async def test_highly_compressible_image(keys: BundleKeys, tmp_path: Path, parts_dir: Path) -> None:
    # 64 MiB of zeros is a few KiB of bundle: the inflater must hand it on in bounded steps.
    image = make_image(tmp_path / "zeros.img", 64 * MiB, random_fraction=0)
    m = bundle(keys, image, parts_dir)
    assert len(m.parts) == 1
    await unbundle_image(source_from_bundle_manifest(m, keys.cloud_key, str(parts_dir)), tmp_path / "out.img")
    assert sha256(tmp_path / "out.img") == sha256(image)


async def _expect_failure(
    source: ImageSource, out_dir: Path, client: httpx.AsyncClient, exc: type[Exception]
) -> None:
    out_dir.mkdir(exist_ok=True)
    with pytest.raises(exc):
        await unbundle_image(source, out_dir / "emi.img", client=client)
    assert leftovers(out_dir) == []  # no half-written entry, no temp file


async def test_corrupt_part(
    keys: BundleKeys, tmp_path: Path, parts_dir: Path, server: PartServer, client: httpx.AsyncClient
) -> None:
    m = bundle(keys, make_image(tmp_path / "disk.img", 15 * MiB), parts_dir)
    victim = parts_dir / m.parts[1].filename
    data = bytearray(victim.read_bytes())
    data[1000] ^= 1
    victim.write_bytes(bytes(data))
    await _expect_failure(node_source(keys, m, server), tmp_path / "out", client, PartDigestError)


async def test_missing_part(
    keys: BundleKeys, tmp_path: Path, parts_dir: Path, server: PartServer, client: httpx.AsyncClient
) -> None:
    m = bundle(keys, make_image(tmp_path / "disk.img", 15 * MiB), parts_dir)
    (parts_dir / m.parts[1].filename).unlink()
    await _expect_failure(node_source(keys, m, server), tmp_path / "out", client, PartMissingError)


async def test_unreachable_server(
    keys: BundleKeys,
    tmp_path: Path,
    parts_dir: Path,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(part_fetch, "FETCH_ATTEMPTS", 1)
    m = bundle(keys, make_image(tmp_path / "disk.img", 1000), parts_dir)
    dead = PartServer(parts_dir)
    dead.port = 1  # nothing listens on port 1
    await _expect_failure(node_source(keys, m, dead), tmp_path / "out", client, PartMissingError)


async def test_wrong_key(
    keys: BundleKeys, tmp_path: Path, parts_dir: Path, server: PartServer, client: httpx.AsyncClient
) -> None:
    m = bundle(keys, make_image(tmp_path / "disk.img", 2 * MiB), parts_dir)
    good = node_source(keys, m, server)
    for key, iv in ((os.urandom(16), good.iv), (good.key, os.urandom(16))):
        bad = ImageSource(good.parts, key, iv, good.digest, good.size, good.bundled_size)
        await _expect_failure(bad, tmp_path / "out", client, ImageKeyError)
    # A key wrapped for someone else cannot be unwrapped by the node.
    with pytest.raises(ImageKeyError):
        source_from_bundle_manifest(m, keys.node_key, server.url(""))


async def test_digest_mismatch(
    keys: BundleKeys, tmp_path: Path, parts_dir: Path, server: PartServer, client: httpx.AsyncClient
) -> None:
    m = bundle(keys, make_image(tmp_path / "disk.img", 2 * MiB), parts_dir)
    good = node_source(keys, m, server)
    bad = ImageSource(good.parts, good.key, good.iv, "0" * 40, good.size, good.bundled_size)
    await _expect_failure(bad, tmp_path / "out", client, ImageCorruptError)
    wrong_size = ImageSource(good.parts, good.key, good.iv, good.digest, 123, good.bundled_size)
    await _expect_failure(wrong_size, tmp_path / "out2", client, ImageCorruptError)


async def test_truncated_bundle(
    keys: BundleKeys, tmp_path: Path, parts_dir: Path, server: PartServer, client: httpx.AsyncClient
) -> None:
    m = bundle(keys, make_image(tmp_path / "disk.img", 15 * MiB), parts_dir)
    good = node_source(keys, m, server)
    short = ImageSource(good.parts[:1], good.key, good.iv, good.digest, good.size, good.bundled_size)
    await _expect_failure(short, tmp_path / "out", client, ImageCorruptError)


async def test_disk_full(
    keys: BundleKeys,
    tmp_path: Path,
    parts_dir: Path,
    server: PartServer,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = bundle(keys, make_image(tmp_path / "disk.img", 3 * MiB), parts_dir)
    source = node_source(keys, m, server)

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    await _expect_failure(source, tmp_path / "out", client, ImageDiskFullError)
    # And when the filesystem cannot preallocate, the write itself reports it.
    monkeypatch.setattr(
        os, "posix_fallocate", lambda *a: (_ for _ in ()).throw(OSError(errno.EOPNOTSUPP, "no"))
    )
    monkeypatch.setattr(untar, "_write_all", no_space)
    await _expect_failure(source, tmp_path / "out2", client, ImageDiskFullError)
