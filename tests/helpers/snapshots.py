"""Snapshot tests' shared pieces: the SC's volume files, writing into them as a guest would, their SHA-256, and
the system account's snapshot bucket as counted from outside (S3)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from helpers.instances import wait_for

MIB = 1024 * 1024
CHUNK = 4 * MIB


def volume_path(data_dir: Path, volume_id: str) -> Path:
    return Path(data_dir) / "sc" / "volumes" / f"{volume_id}.raw"


def write_random(path: Path, offset: int, length: int, seed: int | None = None) -> None:
    """`length` random bytes at `offset` of a volume file (as a guest's writes would land)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        left = length
        while left:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def file_sha256(path: Path, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = length if length is not None else os.path.getsize(path)
        while left:
            block = f.read(min(8 * MIB, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def snapshot_bucket(ctx: Any) -> str:
    """The system account's bucket the SCs keep snapshots in (named after the cloud CA)."""
    return f"euca-snapshots-{ctx.ca.sha256[:16]}"


def bucket_objects(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """key -> size of every object under prefix (nothing when the bucket is not made yet)."""
    found: dict[str, int] = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                found[o["Key"]] = o["Size"]
    except s3.exceptions.NoSuchBucket:
        return {}
    return found


def wait_snapshot(
    ec2: Any, snapshot_id: str, state: str = "completed", timeout: float = 120
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        (s,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        if s["State"] == "error" and state != "error":
            raise AssertionError(f"{snapshot_id} ended in error: {s.get('StateMessage')}")
        return s if s["State"] == state else None

    found: dict[str, Any] = wait_for(f"{snapshot_id} {state}", check, timeout=timeout)
    return found
