"""What a bucket holds, for the S3 quotas (s3:quota-bucketobjectnumber, s3:quota-buckettotalsize): read only
when a Limit policy names one of them."""

from __future__ import annotations

from euca.core.store import Tx


def bucket_usage(tx: Tx, bucket: str) -> tuple[int, int]:
    """(objects: latest versions that are no delete marker, bytes stored: every version's)."""
    row = tx.one(
        "SELECT COALESCE(SUM(CASE WHEN is_latest=1 AND delete_marker=0 THEN 1 ELSE 0 END), 0), "
        "COALESCE(SUM(size), 0) FROM walrus_objects "
        "WHERE bucket=? AND delete_marker=0",
        (bucket,),
    )
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)


def key_exists(tx: Tx, bucket: str, key: str) -> bool:
    return (
        tx.one(
            "SELECT 1 FROM walrus_objects WHERE bucket=? AND key=? AND is_latest=1 AND delete_marker=0",
            (bucket, key.encode()),
        )
        is not None
    )
