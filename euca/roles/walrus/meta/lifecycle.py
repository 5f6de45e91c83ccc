"""What the lifecycle executor reads: every version under a prefix, and the uploads begun before a time."""

from __future__ import annotations

from euca.core.store import Tx
from euca.roles.walrus.meta.rows import OBJECT_COLUMNS, ObjectRow, decode_object


def _prefix_bounds(prefix: str) -> tuple[bytes, bytes]:
    low = prefix.encode()
    return low, low + b"\xff"


def versions_under(
    tx: Tx, bucket: str, prefix: str, after_key: str = "", limit: int = 1000
) -> list[ObjectRow]:
    """Every version (delete markers too) of up to `limit` keys under `prefix` after `after_key`, each key's
    versions newest first."""
    low, high = _prefix_bounds(prefix)
    start = max(low, after_key.encode() + b"\x00") if after_key else low
    keys = [
        r[0]
        for r in tx.all(
            "SELECT DISTINCT key FROM walrus_objects WHERE bucket=? AND key>=? AND key<? ORDER BY key LIMIT ?",
            (bucket, start, high, limit),
        )
    ]
    if not keys:
        return []
    rows = tx.all(
        f"SELECT {OBJECT_COLUMNS} FROM walrus_objects WHERE bucket=? AND key>=? AND key<=? ORDER BY key, id DESC",
        (bucket, keys[0], keys[-1]),
    )
    return [decode_object(r) for r in rows]


def uploads_begun_before(tx: Tx, bucket: str, prefix: str, before: float) -> list[tuple[str, str]]:
    """(upload id, key) of the bucket's uploads under `prefix` initiated before `before`."""
    low, high = _prefix_bounds(prefix)
    return [
        (r[0], bytes(r[1]).decode())
        for r in tx.all(
            "SELECT upload_id, key FROM walrus_uploads WHERE bucket=? AND key>=? AND key<? AND initiated<?",
            (bucket, low, high, before),
        )
    ]
