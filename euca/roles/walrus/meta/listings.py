"""Listings of current objects, of versions and of multipart uploads: prefix, delimiter and markers, paginated in SQL."""

from __future__ import annotations

from dataclasses import dataclass, field

from euca.core.store import Tx
from euca.roles.walrus.meta.rows import (
    LISTED_COLUMNS,
    UPLOAD_COLUMNS,
    ObjectRow,
    UploadRow,
    decode_listed,
    decode_upload,
)


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
    sql = (
        f"SELECT {LISTED_COLUMNS} FROM walrus_objects WHERE bucket=? AND is_latest=1 AND delete_marker=0 "
        f"AND key > ? AND key >= ?{hi_clause} ORDER BY key LIMIT ?"
    )
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
            out.rows.append(decode_listed(r))
            out.last = k.decode()
            count += 1
            cursor = k
        if not restart and len(rows) < want:
            return out


def list_versions(
    tx: Tx, bucket: str, prefix: str, delimiter: str, key_marker: str, version_marker: str, max_keys: int
) -> RawListing:
    pfx, dl = prefix.encode(), delimiter.encode()
    out = RawListing()
    cursor_key = _skip_marker(key_marker.encode(), pfx, dl)
    cursor_id: int | None = None
    if version_marker and key_marker:
        row = tx.one(
            "SELECT id FROM walrus_objects WHERE bucket=? AND key=? AND version_id=?",
            (bucket, key_marker.encode(), version_marker),
        )
        # A marker version deleted since the last page (s3-tests' teardown deletes page by page) resumes at
        # the marker key's remaining versions, rather than failing the walk.
        cursor_id = row[0] if row is not None else 1 << 62
    hi_clause = " AND key < ?" if pfx else ""
    hi = (pfx + b"\xff",) if pfx else ()
    count = 0
    while True:
        want = max_keys - count + 1
        if cursor_id is not None:
            rows = tx.all(
                f"SELECT {LISTED_COLUMNS} FROM walrus_objects WHERE bucket=? AND "
                f"((key = ? AND id < ?) OR key > ?) AND key >= ?{hi_clause} ORDER BY key, id DESC LIMIT ?",
                (bucket, cursor_key, cursor_id, cursor_key, pfx, *hi, want),
            )
        else:
            rows = tx.all(
                f"SELECT {LISTED_COLUMNS} FROM walrus_objects WHERE bucket=? AND key > ? AND key >= ?{hi_clause} "
                "ORDER BY key, id DESC LIMIT ?",
                (bucket, cursor_key, pfx, *hi, want),
            )
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
            o = decode_listed(r)
            out.rows.append(o)
            out.last, out.last_version = o.key, o.version_id
            count += 1
            cursor_key, cursor_id = k, o.id
        if not restart and len(rows) < want:
            return out


def list_uploads(
    tx: Tx, bucket: str, prefix: str, delimiter: str, key_marker: str, upload_id_marker: str, max_uploads: int
) -> tuple[list[UploadRow], list[str], bool]:
    pfx, dl = prefix.encode(), delimiter.encode()
    km = key_marker.encode()
    if upload_id_marker and key_marker:
        rows = tx.all(
            f"SELECT {UPLOAD_COLUMNS} FROM walrus_uploads WHERE bucket=? AND "
            "((key = ? AND upload_id > ?) OR key > ?) ORDER BY key, upload_id",
            (bucket, km, upload_id_marker, km),
        )
    else:
        rows = tx.all(
            f"SELECT {UPLOAD_COLUMNS} FROM walrus_uploads WHERE bucket=? AND key > ? ORDER BY key, upload_id",
            (bucket, km),
        )
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
        uploads.append(decode_upload(r))
    return uploads, prefixes, False
