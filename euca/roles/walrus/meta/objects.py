"""Object versions: read one, make one current, delete one (or add a delete marker), change its ACL or tags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from euca.core.store import Tx
from euca.roles.walrus.meta.buckets import bucket_versioning
from euca.roles.walrus.meta.rows import OBJECT_COLUMNS, ObjectRow, decode_object, dumps, loads, new_version_id

_OBJECT_WITH_DATA = (
    "o.id, o.key, o.version_id, o.is_latest, o.delete_marker, o.size, o.etag, o.last_modified, o.storage_id, "
    "o.owner_id, o.owner_name, o.headers, o.checksum_algorithm, o.checksum_type, o.checksum, o.parts, o.acl, "
    "o.tags, o.segments, i.data FROM walrus_objects o LEFT JOIN walrus_inline i ON i.object_id = o.id"
)


def get_object(
    tx: Tx, bucket: str, key: str, version_id: str | None = None, *, with_data: bool = False
) -> ObjectRow | None:
    """One version (the latest if None); with_data also loads the bytes of an inline object."""
    if with_data:
        cols, where = _OBJECT_WITH_DATA, "o.bucket=? AND o.key=? AND "
        where += "o.is_latest=1" if version_id is None else "o.version_id=?"
    else:
        cols, where = f"{OBJECT_COLUMNS} FROM walrus_objects", "bucket=? AND key=? AND "
        where += "is_latest=1" if version_id is None else "version_id=?"
    params = (bucket, key.encode()) if version_id is None else (bucket, key.encode(), version_id)
    row = tx.one(f"SELECT {cols} WHERE {where}", params)
    return None if row is None else decode_object(row)


def get_inline_data(tx: Tx, object_id: int) -> bytes:
    data = tx.scalar("SELECT data FROM walrus_inline WHERE object_id=?", (object_id,))
    return bytes(data) if data is not None else b""


def _insert(tx: Tx, bucket: str, o: ObjectRow) -> None:
    tx.execute(
        "INSERT INTO walrus_objects(bucket, key, version_id, is_latest, delete_marker, size, etag, last_modified, "
        "storage_id, owner_id, owner_name, headers, checksum_algorithm, checksum_type, checksum, parts, acl, tags, "
        "segments) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            bucket,
            o.key.encode(),
            o.version_id,
            1,
            int(o.delete_marker),
            o.size,
            o.etag,
            o.last_modified,
            o.storage_id,
            o.owner_id,
            o.owner_name,
            dumps(o.headers),
            o.checksum_algorithm,
            o.checksum_type,
            o.checksum,
            None if o.parts is None else dumps(o.parts),
            None if o.acl is None else dumps(o.acl),
            None if o.tags is None else dumps(o.tags),
            None if o.segments is None else dumps(o.segments),
        ),
    )
    if o.data is not None:
        tx.execute(
            "INSERT INTO walrus_inline(object_id, data) VALUES((SELECT id FROM walrus_objects "
            "WHERE bucket=? AND key=? AND version_id=?), ?)",
            (bucket, o.key.encode(), o.version_id, o.data),
        )


def _delete_version(tx: Tx, object_id: int, storage_id: str | None, segments: str | None) -> list[str]:
    """Remove one version row and its inline bytes, if any; returns its files, to remove once committed."""
    tx.execute("DELETE FROM walrus_inline WHERE object_id=?", (object_id,))
    tx.execute("DELETE FROM walrus_objects WHERE id=?", (object_id,))
    if storage_id:
        return [storage_id]
    return list(loads(segments) or [])


def put_object(tx: Tx, bucket: str, o: ObjectRow) -> list[str]:
    """Make `o` the current version of its key. Returns storage ids no version refers to any more.

    Versioning enabled: a new version id, older versions stay. Otherwise the 'null' version is replaced."""
    versioning = bucket_versioning(tx, bucket)
    key = o.key.encode()
    removed: list[str] = []
    if versioning == "Enabled":
        o.version_id = new_version_id()
    else:
        o.version_id = "null"
        old = tx.one(
            "SELECT id, storage_id, segments FROM walrus_objects WHERE bucket=? AND key=? "
            "AND version_id='null'",
            (bucket, key),
        )
        if old is not None:
            removed += _delete_version(tx, old[0], old[1], old[2])
    if versioning:
        tx.execute(
            "UPDATE walrus_objects SET is_latest=0 WHERE bucket=? AND key=? AND is_latest=1", (bucket, key)
        )
    _insert(tx, bucket, o)
    return removed


@dataclass(slots=True)
class Deleted:
    version_id: str | None = None
    delete_marker: bool = False
    removed: list[str] = field(default_factory=list)


def delete_object(
    tx: Tx, bucket: str, key: str, version_id: str | None, owner_id: str, owner_name: str, now: float
) -> Deleted:
    versioning = bucket_versioning(tx, bucket)
    k = key.encode()
    if version_id is not None:
        row = tx.one(
            "SELECT id, storage_id, is_latest, delete_marker, segments FROM walrus_objects "
            "WHERE bucket=? AND key=? AND version_id=?",
            (bucket, k, version_id),
        )
        if row is None:
            return Deleted(version_id)
        files = _delete_version(tx, row[0], row[1], row[4])
        if row[2]:
            tx.execute(
                "UPDATE walrus_objects SET is_latest=1 WHERE id=(SELECT id FROM walrus_objects "
                "WHERE bucket=? AND key=? ORDER BY id DESC LIMIT 1)",
                (bucket, k),
            )
        return Deleted(version_id, bool(row[3]), files)
    if not versioning:
        row = tx.one(
            "SELECT id, storage_id, segments FROM walrus_objects WHERE bucket=? AND key=? "
            "AND version_id='null'",
            (bucket, k),
        )
        if row is None:
            return Deleted()
        return Deleted(None, False, _delete_version(tx, row[0], row[1], row[2]))
    marker = ObjectRow(
        key=key,
        version_id="",
        size=0,
        etag="",
        last_modified=now,
        storage_id=None,
        owner_id=owner_id,
        owner_name=owner_name,
        delete_marker=True,
    )
    removed = put_object(tx, bucket, marker)
    return Deleted(marker.version_id, True, removed)


def set_object_fields(tx: Tx, bucket: str, key: str, version_id: str, **values: Any) -> None:
    assert set(values) <= {"acl", "tags", "headers"}
    sets = ", ".join(f"{k}=?" for k in values)
    params = [None if v is None else dumps(v) for v in values.values()]
    tx.execute(
        f"UPDATE walrus_objects SET {sets} WHERE bucket=? AND key=? AND version_id=?",
        (*params, bucket, key.encode(), version_id),
    )


def version_from_upload(tx: Tx, bucket: str, key: str, upload_id: str, field: str) -> ObjectRow | None:
    """The version of `key` completed from multipart upload `upload_id` (its stored headers name it)."""
    row = tx.one(
        f"SELECT {OBJECT_COLUMNS} FROM walrus_objects WHERE bucket=? AND key=? AND delete_marker=0 "
        "AND json_extract(headers, ?) = ? ORDER BY id DESC LIMIT 1",
        (bucket, key.encode(), f"$.{field}", upload_id),
    )
    return None if row is None else decode_object(row)
