"""The lifecycle executor: applies every bucket's lifecycle rules on a schedule (walrus.lifecycle_interval),
one log line per run.

What it does, as S3 does it (the rules' arithmetic is pure, in protocol/s3/lifecycle.py):
- Expiration (Days or Date) of current versions: deleted in an unversioned bucket, given a delete marker in a
  versioned or versioning-suspended one;
- NoncurrentVersionExpiration: a version that has been noncurrent for NoncurrentDays (counted from when the
  next newer version was made) is deleted, keeping the NewerNoncurrentVersions newest noncurrent ones;
- ExpiredObjectDeleteMarker: a delete marker that is a key's only version is removed;
- AbortIncompleteMultipartUpload: uploads begun DaysAfterInitiation days ago are aborted.
Versions under object lock (a legal hold or an unexpired retention) are never deleted. A "day" is
walrus.lifecycle_day_seconds (86400; tests shorten it), and "N days after" rounds up to the next day boundary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from euca.core.store import Tx
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import meta
from euca.roles.walrus.meta import ObjectRow
from euca.roles.walrus.object_lock import check_version_delete
from euca.roles.walrus.service import WalrusService

log = logging.getLogger("euca.walrus")
lc = s3.lifecycle


@dataclass(slots=True)
class RunCounts:
    buckets: int = 0
    expired: int = 0
    noncurrent: int = 0
    markers: int = 0
    aborted: int = 0


async def run(svc: WalrusService, interval: float) -> None:
    """Apply the rules every `interval` seconds, forever."""
    while True:
        await trio.sleep(interval)
        try:
            await apply_once(svc, time.time())
        except Exception:
            log.exception("lifecycle run failed")


async def apply_once(svc: WalrusService, now: float) -> RunCounts:
    if svc.changes is not None:
        await svc.sync()  # the rules other walrus processes stored
    started = time.monotonic()
    counts = RunCounts()
    for bucket, settings in list(svc.settings.items()):
        rules = [r for r in settings.get("lifecycle") or [] if r["status"] == "Enabled"]
        if not rules or bucket not in svc.buckets:
            continue
        counts.buckets += 1
        for rule in rules:
            await _apply_rule(svc, bucket, rule, now, counts)
    log.info(
        "lifecycle run buckets=%d expired=%d noncurrent=%d delete_markers=%d aborted_uploads=%d seconds=%.3f",
        counts.buckets,
        counts.expired,
        counts.noncurrent,
        counts.markers,
        counts.aborted,
        time.monotonic() - started,
    )
    return counts


async def _apply_rule(svc: WalrusService, bucket: str, rule: lc.Rule, now: float, counts: RunCounts) -> None:
    day = svc.lifecycle_day
    prefix = rule["filter"]["prefix"]
    after = ""
    while True:
        rows = await svc.store.read(_versions(bucket, prefix, after))
        if not rows:
            break
        for versions in _by_key(rows):
            await _apply_to_key(svc, bucket, rule, versions, now, day, counts)
        after = rows[-1].key
    abort_days = rule.get("abort_days")
    if abort_days is not None:
        # Begun before this time, an upload is at least abort_days old by the rounded-up clock.
        uploads = await svc.store.read(
            lambda tx: meta.uploads_begun_before(tx, bucket, prefix, now - abort_days * day)
        )
        for upload_id, key in uploads:
            files = await svc.store.write(_finish(upload_id))
            await svc.storage.remove(files)
            counts.aborted += 1
            log.info("lifecycle abort-upload bucket=%s key=%s upload=%s", bucket, key, upload_id)


def _versions(bucket: str, prefix: str, after: str) -> Callable[[Tx], list[ObjectRow]]:
    return lambda tx: meta.versions_under(tx, bucket, prefix, after)


def _finish(upload_id: str) -> Callable[[Tx], list[str]]:
    return lambda tx: meta.finish_upload(tx, upload_id)


def _by_key(rows: list[ObjectRow]) -> list[list[ObjectRow]]:
    groups: list[list[ObjectRow]] = []
    for r in rows:
        if groups and groups[-1][0].key == r.key:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


async def _apply_to_key(
    svc: WalrusService,
    bucket: str,
    rule: lc.Rule,
    versions: list[ObjectRow],
    now: float,
    day: float,
    counts: RunCounts,
) -> None:
    current = versions[0]
    expiration: dict[str, Any] = rule.get("expiration") or {}
    if (
        current.is_latest
        and not current.delete_marker
        and lc.matches(rule, current.key, current.size, current.tags)
    ):
        due = None
        if "days" in expiration:
            due = lc.after_days(current.last_modified, expiration["days"], day)
        elif "date" in expiration:
            due = lc.date_ts(expiration["date"])
        if due is not None and due <= now:
            await _delete(svc, bucket, current.key, None, now)
            counts.expired += 1
            return  # the key has a new current version (a delete marker): the next run sees the rest
    noncurrent = rule.get("noncurrent")
    if noncurrent is not None:
        kept = 0
        for newer, version in zip(versions, versions[1:], strict=False):
            if not lc.matches(rule, version.key, version.size, version.tags):
                continue
            if not version.delete_marker:
                kept += 1
                if kept <= noncurrent.get("newer", 0):
                    continue
            if lc.after_days(newer.last_modified, noncurrent["days"], day) <= now:
                if await _delete(svc, bucket, version.key, version.version_id, now):
                    counts.noncurrent += 1
    if (
        expiration.get("delete_marker")
        and len(versions) == 1
        and current.delete_marker
        and current.key.startswith(rule["filter"]["prefix"])
        and rule["status"] == "Enabled"
    ):
        if await _delete(svc, bucket, current.key, current.version_id, now):
            counts.markers += 1


async def _delete(svc: WalrusService, bucket: str, key: str, version_id: str | None, now: float) -> bool:
    """Delete one version (None: the current object, which leaves a delete marker where versioning is on);
    False when object lock keeps it."""
    b = svc.buckets.get(bucket)
    if b is None:
        return False

    def work(tx: Any) -> meta.Deleted | None:
        if version_id is not None:
            o = meta.get_object(tx, bucket, key, version_id)
            if o is None:
                return None
            try:
                check_version_delete(o.headers, False, now)
            except S3Error:
                return None
        return meta.delete_object(tx, bucket, key, version_id, b.owner_id, b.owner_name, now)

    d = await svc.write(work, bucket, key)
    if d is None:
        return False
    await svc.storage.remove(d.removed)
    log.info("lifecycle expire bucket=%s key=%s version=%s", bucket, key, version_id or "current")
    return True
