"""The snapshot manifest codec (euca.protocol.snapshot_manifest) and the file backend's chunk streams on
real sparse files (SEEK_DATA/SEEK_HOLE)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from euca.protocol import snapshot_manifest as sm
from euca.roles.sc.backend import GIB
from euca.roles.sc.files import FileBackend

MIB = 1024 * 1024
CHUNK = sm.CHUNK_SIZE
D1 = "a" * 64
D2 = "b" * 64


def manifest(**kw: object) -> sm.SnapshotManifest:
    fields: dict[str, object] = {
        "snapshot_id": "snap-0123abcd",
        "volume_id": "vol-0123abcd",
        "size_bytes": GIB,
    }
    fields.update(kw)
    return sm.SnapshotManifest(**fields)  # type: ignore[arg-type]


def test_manifest_round_trip() -> None:
    m = manifest(parent="snap-89abcdef", chunks=[(0, D1), (255, D2)])
    back = sm.decode(sm.encode(m))
    assert back == m
    assert back.chunk_count == 256
    assert back.digests() == {0: D1, 255: D2}
    assert back.chunk_length(255) == CHUNK


@pytest.mark.parametrize(
    "bad",
    [
        {"chunks": [(256, D1)]},  # past the volume
        {"chunks": [(3, D1), (3, D2)]},  # repeated
        {"chunks": [(4, D1), (3, D2)]},  # out of order
        {"chunks": [(0, "xyz")]},
        {"snapshot_id": "snap-nothex!"},
        {"parent": "vol-0123abcd"},
        {"format": "other/9"},
        {"size_bytes": -1},
    ],
)
def test_bad_manifests_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(sm.ManifestError):
        sm.encode(manifest(**bad))
    raw = sm._encoder.encode(manifest(**bad))
    with pytest.raises(sm.ManifestError):
        sm.decode(raw)


def test_decode_refuses_garbage() -> None:
    for data in (b"", b"[]", b"{", b'{"snapshot_id": 1}', b"[" * 10000):
        with pytest.raises(sm.ManifestError):
            sm.decode(data)


def test_keys_and_references() -> None:
    assert sm.manifest_key("snap-0123abcd") == "manifests/snap-0123abcd.json"
    assert sm.snapshot_of_manifest_key("manifests/snap-0123abcd.json") == "snap-0123abcd"
    assert sm.snapshot_of_manifest_key("manifests/x.json") is None
    assert sm.chunk_key(D1) == "chunks/" + D1
    assert sm.digest_of_chunk_key("chunks/" + D1) == D1
    assert sm.digest_of_chunk_key("chunks/zz") is None
    with pytest.raises(sm.ManifestError):
        sm.chunk_key("../etc")
    with pytest.raises(sm.ManifestError):
        sm.manifest_key("snap-../x")
    a = manifest(chunks=[(0, D1)])
    b = manifest(snapshot_id="snap-11111111", chunks=[(0, D1), (1, D2)])
    assert sm.referenced([a, b]) == {D1, D2}
    assert sm.referenced([a]) == {D1}


def test_unchanged_is_same_digest_at_same_offset() -> None:
    parent = {0: D1, 1: D2}
    assert sm.unchanged(parent, 0, D1)
    assert not sm.unchanged(parent, 1, D1)  # same content elsewhere: still uploaded by this rule
    assert not sm.unchanged(parent, 2, D1)
    assert not sm.unchanged(None, 0, D1)


def test_chunk_arithmetic() -> None:
    assert sm.chunk_count(0) == 0
    assert sm.chunk_count(1) == 1
    assert sm.chunk_count(CHUNK + 1) == 2
    assert sm.chunk_length(CHUNK + 10, 1) == 10
    assert sm.chunk_length(CHUNK, 1) == 0


def test_data_chunks_skip_holes(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.create("vol-0123abcd", 1)
    path = backend.path("vol-0123abcd")
    reader = backend.open_chunks("vol-0123abcd")
    assert reader.data_chunks(CHUNK) == []
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(b"x" * 100)  # chunk 0
        f.seek(10 * CHUNK - 5)
        f.write(b"y" * 10)  # straddles chunks 9 and 10
        f.seek(255 * CHUNK + CHUNK - 1)
        f.write(b"z")  # the last byte of the last chunk
    found = reader.data_chunks(CHUNK)
    # The file system may report data in whole blocks, never fewer than were written.
    assert {0, 9, 10, 255} <= set(found)
    assert len(found) <= 8
    assert found == sorted(set(found))
    assert reader.read_chunk(0, CHUNK)[:101] == b"x" * 100 + b"\0"
    assert len(reader.read_chunk(255, CHUNK)) == CHUNK
    assert reader.size_bytes() == GIB
    # Deleted meanwhile: the open reader still reads the volume as it was.
    backend.delete("vol-0123abcd")
    assert not path.exists()
    assert reader.read_chunk(0, CHUNK)[:100] == b"x" * 100
    assert reader.data_chunks(CHUNK) == found
    reader.close()


def test_write_chunks_rebuilds_the_volume(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path)
    backend.create("vol-0123abcd", 1)
    data = os.urandom(CHUNK)
    with open(backend.path("vol-0123abcd"), "r+b") as f:
        f.seek(7 * CHUNK)
        f.write(data)
    copy = FileBackend(tmp_path / "copy")
    copy.create("vol-89abcdef", 1)
    reader = backend.open_chunks("vol-0123abcd")
    for index in reader.data_chunks(CHUNK):
        copy.write_chunk("vol-89abcdef", index, CHUNK, reader.read_chunk(index, CHUNK))
    reader.close()
    copy.flush("vol-89abcdef")

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(MIB):
                h.update(block)
        return h.hexdigest()

    assert digest(copy.path("vol-89abcdef")) == digest(backend.path("vol-0123abcd"))
    # Only what was written takes space in the copy.
    assert os.stat(copy.path("vol-89abcdef")).st_blocks * 512 <= 2 * CHUNK
