"""Walrus object storage (euca/roles/walrus/storage.py) on a real directory: streamed writes (to a file or kept
inline), reads of byte ranges, copies, and the clean-up of what a failed or unfinished write leaves."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from pathlib import Path

import pytest

from euca.protocol.s3 import S3Error
from euca.roles.walrus.storage import BATCH, INLINE_MAX, Checksum, Storage, Written


class Body:
    """A request body read in the chunks given; `fail_after` chunks, it raises as a vanished client would."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None):
        self.chunks = list(chunks)
        self.fail_after = fail_after
        self.reads = 0

    async def read(self, max_bytes: int = BATCH) -> bytes:
        if self.fail_after is not None and self.reads >= self.fail_after:
            raise ConnectionResetError("client went away")
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""


class SignedBody(Body):
    """A body whose signed SHA-256 the storage feeds and checks before the rename (aws SigV4 payload)."""

    def __init__(self, chunks: list[bytes], expected_sha256: str):
        super().__init__(chunks)
        self.expected = expected_sha256
        self.hash = hashlib.sha256()

    def defer_hash(self) -> object:
        return self.hash

    def check_hash(self) -> None:
        if self.hash.hexdigest() != self.expected:
            raise S3Error("XAmzContentSHA256Mismatch")


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = Storage(tmp_path / "objects")
    s.prepare()
    return s


def _files(storage: Storage) -> list[str]:
    """Every object file (not temp files) under the objects dir."""
    return sorted(
        name for d, _, names in os.walk(storage.root) if not d.startswith(str(storage.tmp)) for name in names
    )


def _read(storage: Storage, written: Written) -> bytes:
    assert written.storage_id is not None
    return Path(storage.path(written.storage_id)).read_bytes()


# -- writing ----------------------------------------------------------------------------------------------


async def test_a_body_goes_to_a_fanned_out_file_hashed_on_the_way(storage: Storage) -> None:
    data = os.urandom(BATCH * 2 + 12345)
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    written = await storage.write_stream(Body(chunks), "CRC32", expected_size=len(data), inline=True)
    assert written.data is None and written.storage_id is not None
    assert written.size == len(data)
    assert written.md5 == hashlib.md5(data).hexdigest()
    assert written.checksum is not None
    assert written.checksum.digest() == zlib.crc32(data).to_bytes(4, "big")
    sid = written.storage_id
    assert storage.path(sid) == f"{storage.root}/{sid[:2]}/{sid[2:4]}/{sid}"
    assert _read(storage, written) == data
    assert written.files == [sid]
    assert os.listdir(storage.tmp) == []


async def test_a_small_body_of_known_length_is_kept_inline(storage: Storage) -> None:
    data = b"hello world" * 100
    written = await storage.write_stream(
        Body([data[:500], data[500:]]), "SHA256", expected_size=len(data), inline=True
    )
    assert written.storage_id is None and written.data == data
    assert written.files == []
    assert written.md5 == hashlib.md5(data).hexdigest()
    assert written.checksum is not None and written.checksum.digest() == hashlib.sha256(data).digest()
    assert _files(storage) == []


async def test_inline_needs_a_known_length_at_most_inline_max(storage: Storage) -> None:
    small = b"x" * 10
    unknown = await storage.write_stream(Body([small]), None, inline=True)
    assert unknown.storage_id is not None and _read(storage, unknown) == small
    big = b"y" * (INLINE_MAX + 1)
    large = await storage.write_stream(Body([big]), None, expected_size=len(big), inline=True)
    assert large.storage_id is not None and _read(storage, large) == big
    not_asked = await storage.write_stream(Body([small]), None, expected_size=len(small))
    assert not_asked.storage_id is not None


async def test_an_empty_body_is_an_empty_file(storage: Storage) -> None:
    written = await storage.write_stream(Body([]), None, expected_size=0)
    assert written.size == 0 and _read(storage, written) == b""
    assert written.md5 == hashlib.md5(b"").hexdigest()


@pytest.mark.parametrize("inline", [False, True])
async def test_a_body_shorter_or_longer_than_announced_leaves_nothing(storage: Storage, inline: bool) -> None:
    for chunks, announced in (([b"abc"], 4), ([b"abcde"], 4)):
        with pytest.raises(S3Error) as e:
            await storage.write_stream(Body(chunks), None, expected_size=announced, inline=inline)
        assert e.value.code == "IncompleteBody"
    assert os.listdir(storage.tmp) == [] and _files(storage) == []


async def test_a_body_over_max_size_is_refused_and_removed(storage: Storage) -> None:
    chunks = [b"z" * BATCH, b"z" * BATCH, b"z"]
    with pytest.raises(S3Error) as e:
        await storage.write_stream(Body(chunks), None, max_size=2 * BATCH)
    assert e.value.code == "EntityTooLarge"
    assert os.listdir(storage.tmp) == [] and _files(storage) == []


async def test_a_client_that_goes_away_leaves_no_temp_file(storage: Storage) -> None:
    body = Body([b"a" * BATCH, b"b" * BATCH, b"c" * BATCH], fail_after=2)
    with pytest.raises(ConnectionResetError):
        await storage.write_stream(body, "CRC32C")
    assert os.listdir(storage.tmp) == [] and _files(storage) == []


async def test_a_signed_body_is_checked_before_it_is_renamed_into_place(storage: Storage) -> None:
    data = b"q" * (INLINE_MAX * 2)
    good = await storage.write_stream(SignedBody([data], hashlib.sha256(data).hexdigest()), None)
    assert _read(storage, good) == data
    with pytest.raises(S3Error):
        await storage.write_stream(SignedBody([data], "0" * 64), None)
    assert os.listdir(storage.tmp) == [] and _files(storage) == [good.storage_id]


# -- copying and reading ranges ------------------------------------------------------------------------------


async def _stored(storage: Storage, data: bytes) -> str:
    written = await storage.write_stream(Body([data]), None)
    assert written.storage_id is not None
    return written.storage_id


async def test_copy_concatenates_ranges_of_files_and_inline_bytes(storage: Storage) -> None:
    a = os.urandom(300_000)
    b = os.urandom(200_000)
    inline = os.urandom(1000)
    sa, sb = await _stored(storage, a), await _stored(storage, b)
    sources: list[tuple[str | bytes, int, int]] = [(sa, 1000, 100_000), (inline, 10, 500), (sb, 0, len(b))]
    expected = a[1000:101_000] + inline[10:510] + b
    hashed = await storage.copy(sources, "CRC64NVME")
    assert _read(storage, hashed) == expected
    assert hashed.size == len(expected) and hashed.md5 == hashlib.md5(expected).hexdigest()
    check = Checksum("CRC64NVME")
    check.update(expected)
    assert hashed.checksum is not None and hashed.checksum.b64() == check.b64()


async def test_copy_without_hashing_moves_the_bytes_kernel_side(storage: Storage) -> None:
    a = os.urandom(3 * BATCH + 7)
    sa = await _stored(storage, a)
    written = await storage.copy([(sa, 5, len(a) - 5), (sa, 0, 5)], None, hash_md5=False)
    assert _read(storage, written) == a[5:] + a[:5]
    assert written.checksum is None


async def test_a_small_copy_may_come_back_inline(storage: Storage) -> None:
    a = os.urandom(100_000)
    sa = await _stored(storage, a)
    written = await storage.copy([(sa, 50, 4096)], "CRC32", inline=True)
    assert written.storage_id is None and written.data == a[50 : 50 + 4096]
    assert written.md5 == hashlib.md5(a[50 : 50 + 4096]).hexdigest()
    assert base64.b64decode(written.checksum.b64() if written.checksum else "") == zlib.crc32(
        a[50 : 50 + 4096]
    ).to_bytes(4, "big")


@pytest.mark.parametrize("hash_md5", [True, False])
async def test_a_source_shorter_than_recorded_fails_the_copy_and_leaves_nothing(
    storage: Storage, hash_md5: bool
) -> None:
    sa = await _stored(storage, b"x" * (INLINE_MAX + 10))
    with pytest.raises(OSError):
        await storage.copy([(sa, 0, INLINE_MAX + 11)], None, hash_md5=hash_md5)
    with pytest.raises(OSError):
        await storage.copy([(b"short", 0, INLINE_MAX + 1)], None)
    assert os.listdir(storage.tmp) == [] and _files(storage) == [sa]


async def test_open_reads_a_range_and_open_all_is_all_or_nothing(storage: Storage) -> None:
    a = b"0123456789" * 10_000
    sa = await _stored(storage, a)
    sb = await _stored(storage, b"other" * 20_000)
    fd = storage.open(sa)
    try:
        assert os.pread(fd, 10, 95) == a[95:105]
    finally:
        os.close(fd)
    fds = storage.open_all([sa, sb])
    assert fds is not None and len(fds) == 2
    for fd in fds:
        os.close(fd)
    storage.remove_sync([sb])
    assert storage.open_all([sa, sb]) is None


# -- removing and cleaning up ----------------------------------------------------------------------------------


async def test_remove_deletes_files_and_ignores_missing_and_empty_ids(storage: Storage) -> None:
    sa = await _stored(storage, b"a" * (INLINE_MAX + 1))
    sb = await _stored(storage, b"b" * (INLINE_MAX + 1))
    await storage.remove([sa, "", "f" * 32])
    storage.remove_sync([None, sa])
    assert _files(storage) == [sb]
    await storage.remove([])


def test_prepare_removes_unfinished_uploads_and_keeps_objects(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "objects")
    assert storage.prepare() == 0
    kept = Path(storage.path("ab" * 16))
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"object")
    (storage.tmp / "upload-1").write_bytes(b"partial")
    (storage.tmp / "dir").mkdir()
    (storage.tmp / "dir" / "nested").write_bytes(b"partial")
    assert storage.prepare() == 2
    assert os.listdir(storage.tmp) == []
    assert kept.read_bytes() == b"object"
