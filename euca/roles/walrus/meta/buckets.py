"""Buckets and their configuration (policies, public access blocks, CORS rules)."""

from __future__ import annotations

import json
from typing import Any

from euca.core.store import Tx
from euca.protocol.s3 import S3Error
from euca.roles.walrus.meta.rows import BUCKET_COLUMNS, BucketRow, decode_bucket, dumps


def load_buckets(tx: Tx) -> list[BucketRow]:
    return [decode_bucket(r) for r in tx.all(f"SELECT {BUCKET_COLUMNS} FROM walrus_buckets")]


def insert_bucket(tx: Tx, b: BucketRow) -> BucketRow | None:
    """Insert; if the name is taken returns the existing bucket instead."""
    row = tx.one("SELECT name, owner_id FROM walrus_buckets WHERE name=?", (b.name,))
    if row is not None:
        return BucketRow(name=row[0], owner_id=row[1], owner_name="", created=0)
    tx.execute(
        "INSERT INTO walrus_buckets(name, owner_id, owner_name, created, location, versioning, acl, tags) "
        "VALUES(?,?,?,?,?,?,?,?)",
        (
            b.name,
            b.owner_id,
            b.owner_name,
            b.created,
            b.location,
            b.versioning,
            dumps(b.acl),
            None if b.tags is None else dumps(b.tags),
        ),
    )
    return None


def delete_bucket(tx: Tx, name: str) -> list[str]:
    """Delete an empty bucket (BucketNotEmpty otherwise) with its configuration (policy, public access block,
    CORS rules, settings: a new bucket of the same name starts without them); returns part files of abandoned uploads
    to remove."""
    if tx.one("SELECT 1 FROM walrus_objects WHERE bucket=? LIMIT 1", (name,)):
        raise S3Error("BucketNotEmpty", BucketName=name)
    files = [
        r[0]
        for r in tx.all(
            "SELECT p.storage_id FROM walrus_parts p JOIN walrus_uploads u ON u.upload_id = p.upload_id "
            "WHERE u.bucket=?",
            (name,),
        )
    ]
    tx.execute(
        "DELETE FROM walrus_parts WHERE upload_id IN (SELECT upload_id FROM walrus_uploads WHERE bucket=?)",
        (name,),
    )
    tx.execute("DELETE FROM walrus_uploads WHERE bucket=?", (name,))
    if not tx.execute("DELETE FROM walrus_buckets WHERE name=?", (name,)):
        raise S3Error("NoSuchBucket", BucketName=name)
    tx.execute("DELETE FROM walrus_bucket_policies WHERE bucket=?", (name,))
    tx.execute("DELETE FROM walrus_bucket_cors WHERE bucket=?", (name,))
    tx.execute("DELETE FROM walrus_bucket_settings WHERE bucket=?", (name,))
    return files


def update_bucket(tx: Tx, name: str, **values: Any) -> None:
    allowed = {"versioning", "acl", "tags"}
    assert set(values) <= allowed
    sets = ", ".join(f"{k}=?" for k in values)
    params = [dumps(v) if k in ("acl", "tags") and v is not None else v for k, v in values.items()]
    if not tx.execute(f"UPDATE walrus_buckets SET {sets} WHERE name=?", (*params, name)):
        raise S3Error("NoSuchBucket", BucketName=name)


def bucket_versioning(tx: Tx, bucket: str) -> str:
    """The bucket's versioning state, read in the writing transaction (NoSuchBucket if it went away)."""
    row = tx.one("SELECT versioning FROM walrus_buckets WHERE name=?", (bucket,))
    if row is None:
        raise S3Error("NoSuchBucket", BucketName=bucket)
    return str(row[0])


# -- policies and public access blocks (JSON text each; NULL: none set) --------------------------------


def load_policies(tx: Tx) -> list[tuple[str, str | None, str | None]]:
    """(bucket, policy text, public access block JSON) of every bucket that has either."""
    return [
        (r[0], r[1], r[2])
        for r in tx.all("SELECT bucket, policy, public_access_block FROM walrus_bucket_policies")
    ]


def save_policy(tx: Tx, bucket: str, policy: str | None, public_access_block: dict[str, bool] | None) -> None:
    """Set a bucket's policy text and public access block; both None forgets the bucket's entry."""
    if policy is None and public_access_block is None:
        tx.execute("DELETE FROM walrus_bucket_policies WHERE bucket=?", (bucket,))
        return
    pab = None if public_access_block is None else json.dumps(public_access_block)
    tx.execute(
        "INSERT INTO walrus_bucket_policies(bucket, policy, public_access_block) VALUES(?,?,?) "
        "ON CONFLICT(bucket) DO UPDATE SET policy=excluded.policy, "
        "public_access_block=excluded.public_access_block",
        (bucket, policy, pab),
    )


# -- CORS rules (a JSON list per bucket) ------------------------------------------------------------------


def load_cors(tx: Tx) -> list[tuple[str, str]]:
    """(bucket, rules JSON) of every bucket with CORS rules."""
    return [(r[0], r[1]) for r in tx.all("SELECT bucket, rules FROM walrus_bucket_cors")]


def save_cors(tx: Tx, bucket: str, rules: list[Any] | None) -> None:
    """Set a bucket's CORS rules; None deletes them."""
    if rules is None:
        tx.execute("DELETE FROM walrus_bucket_cors WHERE bucket=?", (bucket,))
    else:
        tx.execute(
            "INSERT INTO walrus_bucket_cors(bucket, rules) VALUES(?,?) "
            "ON CONFLICT(bucket) DO UPDATE SET rules=excluded.rules",
            (bucket, json.dumps(rules)),
        )


# -- settings (lifecycle, ownership controls, object lock, logging, encryption): JSON per bucket and name ----


def load_settings(tx: Tx) -> list[tuple[str, str, Any]]:
    """(bucket, setting name, value) of every setting of every bucket."""
    return [
        (r[0], r[1], json.loads(r[2]))
        for r in tx.all("SELECT bucket, name, value FROM walrus_bucket_settings")
    ]


def save_setting(tx: Tx, bucket: str, name: str, value: Any) -> None:
    """Set one setting of a bucket; None removes it."""
    if value is None:
        tx.execute("DELETE FROM walrus_bucket_settings WHERE bucket=? AND name=?", (bucket, name))
    else:
        tx.execute(
            "INSERT INTO walrus_bucket_settings(bucket, name, value) VALUES(?,?,?) "
            "ON CONFLICT(bucket, name) DO UPDATE SET value=excluded.value",
            (bucket, name, json.dumps(value)),
        )
