"""The S3 usage tables (namespace "walrus.usage", apart from the object tables' "walrus"): what each Walrus
process counted per bucket (requests, bytes in and out), flushed every few seconds, and what each bucket held
(bytes, objects), sampled when it changed. walrus/usage.py writes them; the CLC's usage reports read them where
the CLC shares Walrus's store."""

from __future__ import annotations

from collections.abc import Iterable

from euca.core.store import Tx

NAMESPACE = "walrus.usage"
SCHEMA = [
    """
    CREATE TABLE walrus_usage_requests (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        bucket TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        process INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL
    );
    CREATE INDEX walrus_usage_requests_at ON walrus_usage_requests(at);
    -- objects -1: the bucket is gone.
    CREATE TABLE walrus_usage_stored (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        bucket TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        objects INTEGER NOT NULL
    );
    CREATE INDEX walrus_usage_stored_at ON walrus_usage_stored(at);
    """,
]


def add_traffic(tx: Tx, at: float, process: int, rows: Iterable[tuple[str, str, int, int, int]]) -> None:
    """(bucket, owner id, requests, bytes in, bytes out) counted by `process` since its last flush."""
    tx.executemany(
        "INSERT INTO walrus_usage_requests(at, bucket, owner_id, process, requests, bytes_in, bytes_out) "
        "VALUES(?,?,?,?,?,?,?)",
        [
            (at, bucket, owner, process, n, bytes_in, bytes_out)
            for bucket, owner, n, bytes_in, bytes_out in rows
        ],
    )


def stored_now(tx: Tx) -> dict[str, tuple[str, int, int]]:
    """bucket -> (owner id, bytes, objects) of every bucket: every version kept is stored (and billed)."""
    held = {
        r["bucket"]: (int(r["bytes"]), int(r["objects"]))
        for r in tx.all(
            "SELECT bucket, SUM(size) AS bytes, COUNT(*) AS objects FROM walrus_objects "
            "WHERE delete_marker=0 GROUP BY bucket"
        )
    }
    return {
        r["name"]: (r["owner_id"], *held.get(r["name"], (0, 0)))
        for r in tx.all("SELECT name, owner_id FROM walrus_buckets")
    }


def last_samples(tx: Tx) -> dict[str, tuple[str, int, int]]:
    """bucket -> (owner id, bytes, objects) as last sampled (a restarted Walrus samples only changes)."""
    return {
        r["bucket"]: (r["owner_id"], r["bytes"], r["objects"])
        for r in tx.all(
            "SELECT s.bucket, s.owner_id, s.bytes, s.objects FROM walrus_usage_stored s "
            "JOIN (SELECT bucket, MAX(seq) AS seq FROM walrus_usage_stored GROUP BY bucket) l ON l.seq = s.seq"
        )
    }


def add_samples(tx: Tx, at: float, rows: Iterable[tuple[str, str, int, int]]) -> None:
    """(bucket, owner id, bytes, objects) held from `at` on."""
    tx.executemany(
        "INSERT INTO walrus_usage_stored(at, bucket, owner_id, bytes, objects) VALUES(?,?,?,?,?)",
        [(at, bucket, owner, size, objects) for bucket, owner, size, objects in rows],
    )
