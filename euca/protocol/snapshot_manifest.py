"""The snapshot manifest: what a snapshot of an EBS volume is, as kept in Walrus (issue 10). Pure.

A snapshot is a volume cut into fixed chunks (`CHUNK_SIZE`, 4 MiB) at fixed offsets (chunk i covers bytes
[i * chunk_size, (i + 1) * chunk_size) of the volume). Each chunk holding any non-zero byte is one object
named by its SHA-256 (`chunk_key`), shared by every snapshot (of any volume) with that content; a chunk that
is a hole or reads as zeros is in no manifest and restores as zeros. The manifest (`manifest_key`), one JSON
object per snapshot, lists every non-zero chunk's index and digest, the volume's size and the snapshot it
was made incrementally from (`parent`, for the record: a manifest is always whole, so a restore reads one
manifest and never walks a chain). It is written last: a snapshot without a manifest is never restorable.

Incremental: `unchanged(parent, index, digest)` says a chunk need not travel because the parent snapshot
already has that content at that offset (and so the object exists). A chunk object is garbage once no
manifest names it (`referenced`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import msgspec

CHUNK_SIZE = 4 * 1024 * 1024
FORMAT = "euca-snapshot/1"
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNKS_PREFIX = "chunks/"
MANIFESTS_PREFIX = "manifests/"
# The largest manifest a reader takes: 16 TiB of 4 MiB chunks, each "[index, "<64 hex>"]," ~80 bytes.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024 * 80 + 65536


class ManifestError(ValueError):
    """A manifest that is not one (bad JSON, wrong format, chunks out of range or repeated)."""


class SnapshotManifest(msgspec.Struct, frozen=True, kw_only=True):
    format: str = FORMAT
    snapshot_id: str
    volume_id: str
    size_bytes: int
    chunk_size: int = CHUNK_SIZE
    parent: str | None = None
    # (chunk index, SHA-256 hex of its bytes), ascending by index; holes and all-zero chunks left out
    chunks: list[tuple[int, str]] = []

    @property
    def chunk_count(self) -> int:
        """Chunks in the volume (holes included): what progress counts."""
        return chunk_count(self.size_bytes, self.chunk_size)

    def digests(self) -> dict[int, str]:
        return dict(self.chunks)

    def chunk_length(self, index: int) -> int:
        return chunk_length(self.size_bytes, index, self.chunk_size)


def chunk_count(size_bytes: int, chunk_size: int = CHUNK_SIZE) -> int:
    return -(-size_bytes // chunk_size)


def chunk_length(size_bytes: int, index: int, chunk_size: int = CHUNK_SIZE) -> int:
    """The bytes chunk `index` covers (the last one may be short)."""
    return max(0, min(chunk_size, size_bytes - index * chunk_size))


def chunk_key(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise ManifestError(f"not a SHA-256 hex digest: {digest!r}")
    return CHUNKS_PREFIX + digest


def manifest_key(snapshot_id: str) -> str:
    if not SNAPSHOT_ID_RE.match(snapshot_id):
        raise ManifestError(f"not a snapshot id: {snapshot_id!r}")
    return f"{MANIFESTS_PREFIX}{snapshot_id}.json"


def snapshot_of_manifest_key(key: str) -> str | None:
    """The snapshot id a manifest key names, or None for any other key."""
    if not key.startswith(MANIFESTS_PREFIX) or not key.endswith(".json"):
        return None
    name = key[len(MANIFESTS_PREFIX) : -len(".json")]
    return name if SNAPSHOT_ID_RE.match(name) else None


def digest_of_chunk_key(key: str) -> str | None:
    if not key.startswith(CHUNKS_PREFIX):
        return None
    digest = key[len(CHUNKS_PREFIX) :]
    return digest if DIGEST_RE.match(digest) else None


def unchanged(parent: Mapping[int, str] | None, index: int, digest: str) -> bool:
    """True when the parent snapshot already holds this content at this offset: the chunk need not travel."""
    return parent is not None and parent.get(index) == digest


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SnapshotManifest)


def encode(manifest: SnapshotManifest) -> bytes:
    check(manifest)
    return _encoder.encode(manifest)


def decode(data: bytes) -> SnapshotManifest:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"a manifest of {len(data)} bytes is larger than any volume needs")
    try:
        manifest = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
        raise ManifestError(f"not a snapshot manifest: {e}") from None
    check(manifest)
    return manifest


def check(manifest: SnapshotManifest) -> None:
    if manifest.format != FORMAT:
        raise ManifestError(f"unknown manifest format {manifest.format!r}")
    if not SNAPSHOT_ID_RE.match(manifest.snapshot_id):
        raise ManifestError(f"not a snapshot id: {manifest.snapshot_id!r}")
    if manifest.parent is not None and not SNAPSHOT_ID_RE.match(manifest.parent):
        raise ManifestError(f"not a snapshot id: {manifest.parent!r}")
    if manifest.size_bytes < 0 or manifest.chunk_size <= 0:
        raise ManifestError("negative size or empty chunks")
    count = manifest.chunk_count
    last = -1
    for index, digest in manifest.chunks:
        if not last < index < count:
            raise ManifestError(f"chunk {index} out of order or past the volume's {count} chunks")
        if not DIGEST_RE.match(digest):
            raise ManifestError(f"chunk {index}: not a SHA-256 hex digest")
        last = index


def referenced(manifests: Iterable[SnapshotManifest]) -> set[str]:
    """Every chunk digest some manifest names: the chunk objects that must stay."""
    return {digest for manifest in manifests for _, digest in manifest.chunks}
