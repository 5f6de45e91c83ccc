"""Walrus metadata in the state store: every SQL statement Walrus runs lives in this module.

Keys are stored as BLOBs of their UTF-8 bytes, so SQLite's memcmp order is S3's UTF-8 binary order, and
listing bounds can use b"\\xff" (a byte UTF-8 never contains) as "after everything with this prefix".
Every object version is one row; `is_latest` marks the current one, and listings of current objects walk a
partial index over (bucket, key) of the live rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from euca.core.store import Tx
from euca.protocol.s3 import S3Error

SCHEMA = [
    """
    CREATE TABLE walrus_buckets (
        name TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        owner_name TEXT NOT NULL,
        created REAL NOT NULL,
        location TEXT NOT NULL DEFAULT '',
        versioning TEXT NOT NULL DEFAULT '',
        acl TEXT NOT NULL,
        tags TEXT
    );
    CREATE TABLE walrus_objects (
        id INTEGER PRIMARY KEY,
        bucket TEXT NOT NULL,
        key BLOB NOT NULL,
        version_id TEXT NOT NULL,
        is_latest INTEGER NOT NULL,
        delete_marker INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL DEFAULT 0,
        etag TEXT NOT NULL DEFAULT '',
        last_modified REAL NOT NULL,
        storage_id TEXT,
        owner_id TEXT NOT NULL,
        owner_name TEXT NOT NULL,
        headers TEXT NOT NULL DEFAULT '{}',
        checksum_algorithm TEXT,
        checksum_type TEXT,
        checksum TEXT,
        parts TEXT,
        acl TEXT,
        tags TEXT
    );
    CREATE UNIQUE INDEX walrus_objects_version ON walrus_objects(bucket, key, version_id);
    CREATE INDEX walrus_objects_history ON walrus_objects(bucket, key, id);
    CREATE INDEX walrus_objects_live ON walrus_objects(bucket, key) WHERE is_latest = 1 AND delete_marker = 0;
    CREATE TABLE walrus_uploads (
        upload_id TEXT PRIMARY KEY,
        bucket TEXT NOT NULL,
        key BLOB NOT NULL,
        initiated REAL NOT NULL,
        owner_id TEXT NOT NULL,
        owner_name TEXT NOT NULL,
        headers TEXT NOT NULL,
        acl TEXT NOT NULL,
        tags TEXT,
        checksum_algorithm TEXT,
        checksum_type TEXT
    );
    CREATE INDEX walrus_uploads_key ON walrus_uploads(bucket, key, upload_id);
    CREATE TABLE walrus_parts (
        upload_id TEXT NOT NULL,
        part_number INTEGER NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        storage_id TEXT NOT NULL,
        checksum TEXT,
        last_modified REAL NOT NULL,
        PRIMARY KEY (upload_id, part_number)
    );
    """,
    # Bucket policies and public access block settings (JSON text each; NULL: none set).
    """
    CREATE TABLE walrus_bucket_policies (
        bucket TEXT PRIMARY KEY,
        policy TEXT,
        public_access_block TEXT
    );
    """,
    # CORS rules per bucket (JSON list).
    """
    CREATE TABLE walrus_bucket_cors (
        bucket TEXT PRIMARY KEY,
        rules TEXT NOT NULL
    );
    """,
    # Small objects kept in the store itself (no file, no per-object fsync: the bytes commit, durably, with
    # their metadata row); keyed by walrus_objects.id, a separate table so listings never read the bytes.
    """
    CREATE TABLE walrus_inline (
        object_id INTEGER PRIMARY KEY,
        data BLOB NOT NULL
    );
    """,
    # A multipart object kept as its part files (JSON list of storage ids, in order; sizes in `parts`), so that
    # CompleteMultipartUpload does not copy every byte into a new file.
    """
    ALTER TABLE walrus_objects ADD COLUMN segments TEXT;
    """,
]

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


_OBJ_COLS = (
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
_LIST_COLS = ("id, key, version_id, is_latest, delete_marker, size, etag, last_modified, owner_id, owner_name, "
              "checksum_algorithm, checksum_type")


def _listed(row: Any) -> ObjectRow:
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


def _object(row: Any) -> ObjectRow:
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


# -- buckets ----------------------------------------------------------------------------------------


def load_buckets(tx: Tx) -> list[BucketRow]:
    return [
        BucketRow(r[0], r[1], r[2], r[3], r[4], r[5], loads(r[6]) or {}, loads(r[7]))
        for r in tx.all(
            "SELECT name, owner_id, owner_name, created, location, versioning, acl, tags FROM walrus_buckets"
        )
    ]


def insert_bucket(tx: Tx, b: BucketRow) -> BucketRow | None:
    """Insert; if the name is taken returns the existing bucket instead."""
    row = tx.one("SELECT name, owner_id FROM walrus_buckets WHERE name=?", (b.name,))
    if row is not None:
        return BucketRow(row[0], row[1], "", 0)
    tx.execute(
        "INSERT INTO walrus_buckets(name, owner_id, owner_name, created, location, versioning, acl, tags) "
        "VALUES(?,?,?,?,?,?,?,?)",
        (b.name, b.owner_id, b.owner_name, b.created, b.location, b.versioning, dumps(b.acl),
         None if b.tags is None else dumps(b.tags)),
    )
    return None


def delete_bucket(tx: Tx, name: str) -> list[str]:
    """Delete an empty bucket (BucketNotEmpty otherwise); returns part files of abandoned uploads to remove."""
    if tx.one("SELECT 1 FROM walrus_objects WHERE bucket=? LIMIT 1", (name,)):
        raise S3Error("BucketNotEmpty", BucketName=name)
    files = [r[0] for r in tx.all(
        "SELECT p.storage_id FROM walrus_parts p JOIN walrus_uploads u ON u.upload_id = p.upload_id "
        "WHERE u.bucket=?", (name,))]
    tx.execute("DELETE FROM walrus_parts WHERE upload_id IN (SELECT upload_id FROM walrus_uploads WHERE bucket=?)",
               (name,))
    tx.execute("DELETE FROM walrus_uploads WHERE bucket=?", (name,))
    if not tx.execute("DELETE FROM walrus_buckets WHERE name=?", (name,)):
        raise S3Error("NoSuchBucket", BucketName=name)
    return files


def update_bucket(tx: Tx, name: str, **values: Any) -> None:
    allowed = {"versioning", "acl", "tags"}
    assert set(values) <= allowed
    sets = ", ".join(f"{k}=?" for k in values)
    params = [dumps(v) if k in ("acl", "tags") and v is not None else v for k, v in values.items()]
    if not tx.execute(f"UPDATE walrus_buckets SET {sets} WHERE name=?", (*params, name)):
        raise S3Error("NoSuchBucket", BucketName=name)


# -- object versions ----------------------------------------------------------------------------------


_OBJ_COLS_DATA = (
    "o.id, o.key, o.version_id, o.is_latest, o.delete_marker, o.size, o.etag, o.last_modified, o.storage_id, "
    "o.owner_id, o.owner_name, o.headers, o.checksum_algorithm, o.checksum_type, o.checksum, o.parts, o.acl, "
    "o.tags, o.segments, i.data FROM walrus_objects o LEFT JOIN walrus_inline i ON i.object_id = o.id"
)


def get_object(tx: Tx, bucket: str, key: str, version_id: str | None = None, *,
               with_data: bool = False) -> ObjectRow | None:
    """One version (the latest if None); with_data also loads the bytes of an inline object."""
    if with_data:
        cols, where = _OBJ_COLS_DATA, "o.bucket=? AND o.key=? AND "
        where += "o.is_latest=1" if version_id is None else "o.version_id=?"
    else:
        cols, where = f"{_OBJ_COLS} FROM walrus_objects", "bucket=? AND key=? AND "
        where += "is_latest=1" if version_id is None else "version_id=?"
    params = (bucket, key.encode()) if version_id is None else (bucket, key.encode(), version_id)
    row = tx.one(f"SELECT {cols} WHERE {where}", params)
    return None if row is None else _object(row)


def get_inline_data(tx: Tx, object_id: int) -> bytes:
    data = tx.scalar("SELECT data FROM walrus_inline WHERE object_id=?", (object_id,))
    return bytes(data) if data is not None else b""


def _insert(tx: Tx, bucket: str, o: ObjectRow) -> None:
    tx.execute(
        "INSERT INTO walrus_objects(bucket, key, version_id, is_latest, delete_marker, size, etag, last_modified, "
        "storage_id, owner_id, owner_name, headers, checksum_algorithm, checksum_type, checksum, parts, acl, tags, "
        "segments) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (bucket, o.key.encode(), o.version_id, 1, int(o.delete_marker), o.size, o.etag, o.last_modified,
         o.storage_id, o.owner_id, o.owner_name, dumps(o.headers), o.checksum_algorithm, o.checksum_type,
         o.checksum, None if o.parts is None else dumps(o.parts), None if o.acl is None else dumps(o.acl),
         None if o.tags is None else dumps(o.tags), None if o.segments is None else dumps(o.segments)),
    )
    if o.data is not None:
        tx.execute("INSERT INTO walrus_inline(object_id, data) VALUES((SELECT id FROM walrus_objects "
                   "WHERE bucket=? AND key=? AND version_id=?), ?)", (bucket, o.key.encode(), o.version_id, o.data))


def _delete_version(tx: Tx, object_id: int, storage_id: str | None, segments: str | None) -> list[str]:
    """Remove one version row and its inline bytes, if any; returns its files, to remove once committed."""
    tx.execute("DELETE FROM walrus_inline WHERE object_id=?", (object_id,))
    tx.execute("DELETE FROM walrus_objects WHERE id=?", (object_id,))
    if storage_id:
        return [storage_id]
    return list(loads(segments) or [])


def bucket_versioning(tx: Tx, bucket: str) -> str:
    """The bucket's versioning state, read in the writing transaction (NoSuchBucket if it went away)."""
    row = tx.one("SELECT versioning FROM walrus_buckets WHERE name=?", (bucket,))
    if row is None:
        raise S3Error("NoSuchBucket", BucketName=bucket)
    return str(row[0])


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
        old = tx.one("SELECT id, storage_id, segments FROM walrus_objects WHERE bucket=? AND key=? "
                     "AND version_id='null'", (bucket, key))
        if old is not None:
            removed += _delete_version(tx, old[0], old[1], old[2])
    if versioning:
        tx.execute("UPDATE walrus_objects SET is_latest=0 WHERE bucket=? AND key=? AND is_latest=1", (bucket, key))
    _insert(tx, bucket, o)
    return removed


@dataclass(slots=True)
class Deleted:
    version_id: str | None = None
    delete_marker: bool = False
    removed: list[str] = field(default_factory=list)


def delete_object(tx: Tx, bucket: str, key: str, version_id: str | None,
                  owner_id: str, owner_name: str, now: float) -> Deleted:
    versioning = bucket_versioning(tx, bucket)
    k = key.encode()
    if version_id is not None:
        row = tx.one("SELECT id, storage_id, is_latest, delete_marker, segments FROM walrus_objects "
                     "WHERE bucket=? AND key=? AND version_id=?", (bucket, k, version_id))
        if row is None:
            return Deleted(version_id)
        files = _delete_version(tx, row[0], row[1], row[4])
        if row[2]:
            tx.execute("UPDATE walrus_objects SET is_latest=1 WHERE id=(SELECT id FROM walrus_objects "
                       "WHERE bucket=? AND key=? ORDER BY id DESC LIMIT 1)", (bucket, k))
        return Deleted(version_id, bool(row[3]), files)
    if not versioning:
        row = tx.one("SELECT id, storage_id, segments FROM walrus_objects WHERE bucket=? AND key=? "
                     "AND version_id='null'", (bucket, k))
        if row is None:
            return Deleted()
        return Deleted(None, False, _delete_version(tx, row[0], row[1], row[2]))
    marker = ObjectRow(key, "", 0, "", now, None, owner_id, owner_name, delete_marker=True)
    removed = put_object(tx, bucket, marker)
    return Deleted(marker.version_id, True, removed)


def set_object_fields(tx: Tx, bucket: str, key: str, version_id: str, **values: Any) -> None:
    assert set(values) <= {"acl", "tags"}
    sets = ", ".join(f"{k}=?" for k in values)
    params = [None if v is None else dumps(v) for v in values.values()]
    tx.execute(f"UPDATE walrus_objects SET {sets} WHERE bucket=? AND key=? AND version_id=?",
               (*params, bucket, key.encode(), version_id))


# -- listings -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RawListing:
    rows: list[ObjectRow] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str | None = None  # last key or prefix returned
    last_version: str | None = None


def _common_prefix(key: bytes, prefix: bytes, delimiter: bytes) -> bytes | None:
    """The common prefix `key` rolls up into (through the first delimiter after `prefix`), if any."""
    if not delimiter:
        return None
    idx = key.find(delimiter, len(prefix))
    return key[: idx + len(delimiter)] if idx >= 0 else None


def _skip_marker(marker: bytes, prefix: bytes, delimiter: bytes) -> bytes:
    """A marker inside a rolled-up common prefix resumes after the whole prefix (it was returned already)."""
    if marker.startswith(prefix):
        cp = _common_prefix(marker, prefix, delimiter)
        if cp is not None:
            return cp + b"\xff"
    return marker


def list_objects(tx: Tx, bucket: str, prefix: str, delimiter: str, after: str, max_keys: int) -> RawListing:
    """Current objects with key > after, under prefix, rolled up at delimiter; pagination in SQL."""
    pfx, dl = prefix.encode(), delimiter.encode()
    cursor = _skip_marker(after.encode(), pfx, dl)
    out = RawListing()
    if max_keys <= 0:  # max-keys=0 answers nothing and is not truncated (as S3 does)
        return out
    hi_clause = " AND key < ?" if pfx else ""
    hi = (pfx + b"\xff",) if pfx else ()
    sql = (f"SELECT {_LIST_COLS} FROM walrus_objects WHERE bucket=? AND is_latest=1 AND delete_marker=0 "
           f"AND key > ? AND key >= ?{hi_clause} ORDER BY key LIMIT ?")
    count = 0
    while True:
        want = max_keys - count + 1
        rows = tx.all(sql, (bucket, cursor, pfx, *hi, want))
        if not rows:
            return out
        restart = False
        for r in rows:
            k = bytes(r[1])
            if count >= max_keys:
                out.truncated = True
                return out
            cp = _common_prefix(k, pfx, dl)
            if cp is not None:
                out.prefixes.append(cp.decode())
                out.last = cp.decode()
                count += 1
                cursor = cp + b"\xff"
                restart = True
                break
            out.rows.append(_listed(r))
            out.last = k.decode()
            count += 1
            cursor = k
        if not restart and len(rows) < want:
            return out


def list_versions(tx: Tx, bucket: str, prefix: str, delimiter: str, key_marker: str, version_marker: str,
                  max_keys: int) -> RawListing:
    pfx, dl = prefix.encode(), delimiter.encode()
    out = RawListing()
    cursor_key = _skip_marker(key_marker.encode(), pfx, dl)
    cursor_id: int | None = None
    if version_marker and key_marker:
        row = tx.one("SELECT id FROM walrus_objects WHERE bucket=? AND key=? AND version_id=?",
                     (bucket, key_marker.encode(), version_marker))
        # A marker version deleted since the last page (s3-tests' teardown deletes page by page) resumes at
        # the marker key's remaining versions, rather than failing the walk.
        cursor_id = row[0] if row is not None else 1 << 62
    hi_clause = " AND key < ?" if pfx else ""
    hi = (pfx + b"\xff",) if pfx else ()
    count = 0
    while True:
        want = max_keys - count + 1
        if cursor_id is not None:
            rows = tx.all(f"SELECT {_LIST_COLS} FROM walrus_objects WHERE bucket=? AND "
                          f"((key = ? AND id < ?) OR key > ?) AND key >= ?{hi_clause} ORDER BY key, id DESC LIMIT ?",
                          (bucket, cursor_key, cursor_id, cursor_key, pfx, *hi, want))
        else:
            rows = tx.all(f"SELECT {_LIST_COLS} FROM walrus_objects WHERE bucket=? AND key > ? AND key >= ?{hi_clause} "
                          "ORDER BY key, id DESC LIMIT ?", (bucket, cursor_key, pfx, *hi, want))
        if not rows:
            return out
        restart = False
        for r in rows:
            k = bytes(r[1])
            if count >= max_keys:
                out.truncated = True
                return out
            cp = _common_prefix(k, pfx, dl)
            if cp is not None:
                out.prefixes.append(cp.decode())
                out.last, out.last_version = cp.decode(), None
                count += 1
                cursor_key, cursor_id = cp + b"\xff", None
                restart = True
                break
            o = _listed(r)
            out.rows.append(o)
            out.last, out.last_version = o.key, o.version_id
            count += 1
            cursor_key, cursor_id = k, o.id
        if not restart and len(rows) < want:
            return out


# -- multipart --------------------------------------------------------------------------------------------


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


_UPLOAD_COLS = ("upload_id, bucket, key, initiated, owner_id, owner_name, headers, acl, tags, checksum_algorithm, "
                "checksum_type")


def _upload(r: Any) -> UploadRow:
    return UploadRow(r[0], r[1], bytes(r[2]).decode(), r[3], r[4], r[5], loads(r[6]) or {}, loads(r[7]) or {},
                     loads(r[8]), r[9], r[10])


def create_upload(tx: Tx, u: UploadRow) -> None:
    tx.execute(f"INSERT INTO walrus_uploads({_UPLOAD_COLS}) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
               (u.upload_id, u.bucket, u.key.encode(), u.initiated, u.owner_id, u.owner_name, dumps(u.headers),
                dumps(u.acl), None if u.tags is None else dumps(u.tags), u.checksum_algorithm, u.checksum_type))


def get_upload(tx: Tx, bucket: str, key: str, upload_id: str) -> UploadRow:
    r = tx.one(f"SELECT {_UPLOAD_COLS} FROM walrus_uploads WHERE upload_id=? AND bucket=? AND key=?",
               (upload_id, bucket, key.encode()))
    if r is None:
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    return _upload(r)


def put_part(tx: Tx, bucket: str, key: str, upload_id: str, p: PartRow) -> list[str]:
    """Record a part (replacing an earlier upload of the same number); NoSuchUpload if it is gone."""
    get_upload(tx, bucket, key, upload_id)
    old = tx.one("SELECT storage_id FROM walrus_parts WHERE upload_id=? AND part_number=?", (upload_id, p.part_number))
    tx.execute("INSERT OR REPLACE INTO walrus_parts(upload_id, part_number, size, etag, storage_id, checksum, "
               "last_modified) VALUES(?,?,?,?,?,?,?)",
               (upload_id, p.part_number, p.size, p.etag, p.storage_id, p.checksum, p.last_modified))
    return [old[0]] if old else []


def list_parts(tx: Tx, upload_id: str, after: int = 0, limit: int = 10001) -> list[PartRow]:
    return [PartRow(*r) for r in tx.all(
        "SELECT part_number, size, etag, storage_id, checksum, last_modified FROM walrus_parts "
        "WHERE upload_id=? AND part_number > ? ORDER BY part_number LIMIT ?", (upload_id, after, limit))]


def finish_upload(tx: Tx, upload_id: str) -> list[str]:
    """Forget an upload and its parts; returns the part files to remove."""
    files = [r[0] for r in tx.all("SELECT storage_id FROM walrus_parts WHERE upload_id=?", (upload_id,))]
    tx.execute("DELETE FROM walrus_parts WHERE upload_id=?", (upload_id,))
    tx.execute("DELETE FROM walrus_uploads WHERE upload_id=?", (upload_id,))
    return files


def list_uploads(tx: Tx, bucket: str, prefix: str, delimiter: str, key_marker: str, upload_id_marker: str,
                 max_uploads: int) -> tuple[list[UploadRow], list[str], bool]:
    pfx, dl = prefix.encode(), delimiter.encode()
    km = key_marker.encode()
    if upload_id_marker and key_marker:
        rows = tx.all(f"SELECT {_UPLOAD_COLS} FROM walrus_uploads WHERE bucket=? AND "
                      "((key = ? AND upload_id > ?) OR key > ?) ORDER BY key, upload_id", (bucket, km, upload_id_marker, km))
    else:
        rows = tx.all(f"SELECT {_UPLOAD_COLS} FROM walrus_uploads WHERE bucket=? AND key > ? ORDER BY key, upload_id",
                      (bucket, km))
    uploads: list[UploadRow] = []
    prefixes: list[str] = []
    for r in rows:
        k = bytes(r[2])
        if not k.startswith(pfx):
            continue
        if len(uploads) + len(prefixes) >= max_uploads:
            return uploads, prefixes, True
        cp = _common_prefix(k, pfx, dl)
        if cp is not None:
            if cp.decode() not in prefixes:
                prefixes.append(cp.decode())
            continue
        uploads.append(_upload(r))
    return uploads, prefixes, False
