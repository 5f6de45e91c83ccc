"""Rows of the Walrus tables as values, their JSON columns, and the decoders from SELECTed rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


def dumps(value: Any) -> str:
    return _enc.encode(value).decode()


def loads(value: str | None) -> Any:
    return None if value is None else _dec.decode(value)


def new_version_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class BucketRow:
    name: str
    owner_id: str
    owner_name: str
    created: float
    location: str = ""
    versioning: str = ""  # "", "Enabled", "Suspended"
    acl: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] | None = None


OBJECT_COLUMNS = (
    "id, key, version_id, is_latest, delete_marker, size, etag, last_modified, storage_id, owner_id, owner_name, "
    "headers, checksum_algorithm, checksum_type, checksum, parts, acl, tags, segments"
)


@dataclass(slots=True)
class ObjectRow:
    key: str
    version_id: str
    size: int
    etag: str
    last_modified: float
    storage_id: str | None
    owner_id: str
    owner_name: str
    headers: dict[str, Any] = field(default_factory=dict)
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    checksum: str | None = None
    parts: list[int] | None = None
    acl: dict[str, Any] | None = None
    tags: dict[str, str] | None = None
    delete_marker: bool = False
    is_latest: bool = True
    id: int = 0
    # The bytes of an object kept inline (storage_id None); loaded only by get_object(with_data=True).
    data: bytes | None = None
    # A multipart object kept as its part files (storage_id None): their storage ids, sizes in `parts`.
    segments: list[str] | None = None
    # The response headers that depend on this row alone, rendered once (rows are not changed once read).
    rendered: list[tuple[str, str]] | None = None

    @property
    def inline(self) -> bool:
        return self.storage_id is None and self.segments is None and not self.delete_marker

    @property
    def files(self) -> list[str]:
        """The object files holding this version's bytes (none for inline objects and delete markers)."""
        if self.storage_id:
            return [self.storage_id]
        return list(self.segments or [])


# What a listing shows of each version: no JSON to decode (headers, ACL, tags, parts) for rows that only
# become <Contents> entries.
LISTED_COLUMNS = (
    "id, key, version_id, is_latest, delete_marker, size, etag, last_modified, owner_id, owner_name, "
    "checksum_algorithm, checksum_type"
)


def decode_listed(row: Any) -> ObjectRow:
    """An ObjectRow from a row of LISTED_COLUMNS."""
    return ObjectRow(
        key=bytes(row[1]).decode(),
        version_id=row[2],
        is_latest=bool(row[3]),
        delete_marker=bool(row[4]),
        size=row[5],
        etag=row[6],
        last_modified=row[7],
        storage_id=None,
        owner_id=row[8],
        owner_name=row[9],
        checksum_algorithm=row[10],
        checksum_type=row[11],
        id=row[0],
    )


def decode_object(row: Any) -> ObjectRow:
    """An ObjectRow from a row of OBJECT_COLUMNS (and the inline bytes, when SELECTed after them)."""
    return ObjectRow(
        key=bytes(row[1]).decode(),
        version_id=row[2],
        is_latest=bool(row[3]),
        delete_marker=bool(row[4]),
        size=row[5],
        etag=row[6],
        last_modified=row[7],
        storage_id=row[8],
        owner_id=row[9],
        owner_name=row[10],
        headers=loads(row[11]) or {},
        checksum_algorithm=row[12],
        checksum_type=row[13],
        checksum=row[14],
        parts=loads(row[15]),
        acl=loads(row[16]),
        tags=loads(row[17]),
        id=row[0],
        segments=loads(row[18]),
        data=row[19] if len(row) > 19 else None,
    )


@dataclass(slots=True)
class UploadRow:
    upload_id: str
    bucket: str
    key: str
    initiated: float
    owner_id: str
    owner_name: str
    headers: dict[str, Any]
    acl: dict[str, Any]
    tags: dict[str, str] | None = None
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


@dataclass(slots=True)
class PartRow:
    part_number: int
    size: int
    etag: str
    storage_id: str
    checksum: str | None
    last_modified: float
    # The part's CTR nonce (base64) when its upload is encrypted (the upload's headers hold the data key).
    sse: str | None = None


UPLOAD_COLUMNS = "upload_id, bucket, key, initiated, owner_id, owner_name, headers, acl, tags, checksum_algorithm, checksum_type"


def decode_upload(r: Any) -> UploadRow:
    """An UploadRow from a row of UPLOAD_COLUMNS."""
    return UploadRow(
        upload_id=r[0],
        bucket=r[1],
        key=bytes(r[2]).decode(),
        initiated=r[3],
        owner_id=r[4],
        owner_name=r[5],
        headers=loads(r[6]) or {},
        acl=loads(r[7]) or {},
        tags=loads(r[8]),
        checksum_algorithm=r[9],
        checksum_type=r[10],
    )


PART_COLUMNS = "part_number, size, etag, storage_id, checksum, last_modified, sse"


def decode_part(r: Any) -> PartRow:
    """A PartRow from a row of PART_COLUMNS."""
    return PartRow(
        part_number=r[0], size=r[1], etag=r[2], storage_id=r[3], checksum=r[4], last_modified=r[5], sse=r[6]
    )


BUCKET_COLUMNS = "name, owner_id, owner_name, created, location, versioning, acl, tags"


def decode_bucket(r: Any) -> BucketRow:
    """A BucketRow from a row of BUCKET_COLUMNS."""
    return BucketRow(
        name=r[0],
        owner_id=r[1],
        owner_name=r[2],
        created=r[3],
        location=r[4],
        versioning=r[5],
        acl=loads(r[6]) or {},
        tags=loads(r[7]),
    )
