"""Multipart uploads and their parts."""

from __future__ import annotations

from euca.core.store import Tx
from euca.protocol.s3 import S3Error
from euca.roles.walrus.meta.rows import (
    PART_COLUMNS,
    UPLOAD_COLUMNS,
    PartRow,
    UploadRow,
    decode_part,
    decode_upload,
    dumps,
)


def create_upload(tx: Tx, u: UploadRow) -> None:
    tx.execute(
        f"INSERT INTO walrus_uploads({UPLOAD_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
        (
            u.upload_id,
            u.bucket,
            u.key.encode(),
            u.initiated,
            u.owner_id,
            u.owner_name,
            dumps(u.headers),
            dumps(u.acl),
            None if u.tags is None else dumps(u.tags),
            u.checksum_algorithm,
            u.checksum_type,
        ),
    )


def get_upload(tx: Tx, bucket: str, key: str, upload_id: str) -> UploadRow:
    r = tx.one(
        f"SELECT {UPLOAD_COLUMNS} FROM walrus_uploads WHERE upload_id=? AND bucket=? AND key=?",
        (upload_id, bucket, key.encode()),
    )
    if r is None:
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    return decode_upload(r)


def put_part(tx: Tx, bucket: str, key: str, upload_id: str, p: PartRow) -> list[str]:
    """Record a part (replacing an earlier upload of the same number); NoSuchUpload if it is gone."""
    get_upload(tx, bucket, key, upload_id)
    old = tx.one(
        "SELECT storage_id FROM walrus_parts WHERE upload_id=? AND part_number=?", (upload_id, p.part_number)
    )
    tx.execute(
        "INSERT INTO walrus_parts(upload_id, part_number, size, etag, storage_id, checksum, "
        "last_modified, sse) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(upload_id, part_number) DO UPDATE SET "
        "size=excluded.size, etag=excluded.etag, storage_id=excluded.storage_id, checksum=excluded.checksum, "
        "last_modified=excluded.last_modified, sse=excluded.sse",
        (upload_id, p.part_number, p.size, p.etag, p.storage_id, p.checksum, p.last_modified, p.sse),
    )
    return [old[0]] if old else []


def list_parts(tx: Tx, upload_id: str, after: int = 0, limit: int = 10001) -> list[PartRow]:
    return [
        decode_part(r)
        for r in tx.all(
            f"SELECT {PART_COLUMNS} FROM walrus_parts WHERE upload_id=? AND part_number > ? ORDER BY part_number LIMIT ?",
            (upload_id, after, limit),
        )
    ]


def finish_upload(tx: Tx, upload_id: str) -> list[str]:
    """Forget an upload and its parts; returns the part files to remove."""
    files = [r[0] for r in tx.all("SELECT storage_id FROM walrus_parts WHERE upload_id=?", (upload_id,))]
    tx.execute("DELETE FROM walrus_parts WHERE upload_id=?", (upload_id,))
    tx.execute("DELETE FROM walrus_uploads WHERE upload_id=?", (upload_id,))
    return files
