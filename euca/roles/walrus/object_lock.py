"""Object lock in Walrus: a version's retention and legal hold (kept with its stored headers, so GET and HEAD
answer them without another read), set on writes (the request's headers or the bucket's default retention),
changed by Put/GetObjectRetention and Put/GetObjectLegalHold, and the delete refusals S3 makes.

A bucket has object lock when its "object_lock" setting exists (set at CreateBucket with
x-amz-bucket-object-lock-enabled, or by PutObjectLockConfiguration on a versioned bucket); its versioning can
then no longer be suspended. Overwrites make new versions (the bucket is versioned), so only deleting a
version by its id can destroy locked bytes: that is refused under a legal hold or an unexpired retention
(GOVERNANCE gives way to x-amz-bypass-governance-retention from the bucket owner or a caller the bucket
policy allows s3:BypassGovernanceRetention). Deleting without a version id adds a delete marker, as S3 allows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from euca.core.http import Response
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import meta
from euca.roles.walrus.access import decide
from euca.roles.walrus.authorize import authorise
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.meta import BucketRow
from euca.roles.walrus.responses import empty, xml
from euca.roles.walrus.service import WalrusService

MODE, UNTIL, HOLD = "lock_mode", "lock_until", "legal_hold"


def lock_enabled(svc: WalrusService, bucket: str) -> bool:
    settings = svc.settings.get(bucket)
    return settings is not None and "object_lock" in settings


def lock_for_write(
    svc: WalrusService, b: BucketRow, req: s3.lock_headers.ObjectLockRequest, now: float
) -> dict[str, Any]:
    """The lock fields a new version gets: the request's x-amz-object-lock-* headers, else the bucket's default
    retention; InvalidRequest for lock headers on a bucket without object lock."""
    conf = svc.setting(b.name, "object_lock")
    if conf is None:
        if req:
            raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")
        return {}
    fields: dict[str, Any] = {}
    if req.mode is not None and req.until is not None:
        s3.object_lock.check_future(req.until, now)
        fields[MODE], fields[UNTIL] = req.mode, req.until
    else:
        default = s3.object_lock.LockConfiguration.from_dict(conf)
        until = default.default_until(now)
        if until is not None:
            fields[MODE], fields[UNTIL] = default.mode, until
    if req.legal_hold == "ON":
        fields[HOLD] = "ON"
    return fields


def lock_response_headers(stored: dict[str, Any]) -> list[tuple[str, str]]:
    """x-amz-object-lock-* of a GET or HEAD, from a version's stored headers."""
    out = []
    if stored.get(MODE) and stored.get(UNTIL) is not None:
        out.append(("x-amz-object-lock-mode", str(stored[MODE])))
        out.append(("x-amz-object-lock-retain-until-date", s3.iso8601(float(stored[UNTIL]))))
    if stored.get(HOLD):
        out.append(("x-amz-object-lock-legal-hold", str(stored[HOLD])))
    return out


@dataclass(frozen=True, slots=True)
class _Bypass:
    """s3:BypassGovernanceRetention on one key, judged by the bucket policy as if it were a request."""

    action: ClassVar[str] = "s3:BypassGovernanceRetention"
    bucket: str
    key: str


async def may_bypass(svc: WalrusService, call: S3Call, b: BucketRow, key: str) -> bool:
    """Whether the caller may use x-amz-bypass-governance-retention on `key` (s3:BypassGovernanceRetention):
    the bucket owner's account, or a caller the bucket's policy allows it on that object; in both cases not
    denied, and for an IAM user allowed, by the caller's identity policies."""
    p = call.principal
    check = _Bypass(b.name, key)
    try:
        if p is not None and not p.is_account_admin:
            await authorise(svc, call, check)  # the caller's identity policies must not deny it (issue 12)
        if p is not None and p.canonical_id == b.owner_id:
            return True
        rules = svc.policies.get(b.name)
        return rules is not None and (await decide(svc, call, check, b.name, rules)).policy_grant
    except S3Error as e:
        if e.code == "AccessDenied":
            return False
        raise


def check_version_delete(stored: dict[str, Any], bypass: bool, now: float) -> None:
    """AccessDenied when a locked version may not be deleted."""
    if not s3.object_lock.may_remove(stored.get(MODE), stored.get(UNTIL), stored.get(HOLD), bypass, now):
        raise S3Error("AccessDenied", "Access Denied because object protected by object lock.")


def without_lock(stored: dict[str, Any]) -> dict[str, Any]:
    """Stored headers without the lock fields (a copy's source keeps its lock; the copy gets its own)."""
    if MODE not in stored and HOLD not in stored and UNTIL not in stored:
        return stored
    return {k: v for k, v in stored.items() if k not in (MODE, UNTIL, HOLD)}


# -- handlers -----------------------------------------------------------------------------------------------


def _require_lock(svc: WalrusService, b: BucketRow) -> None:
    if not lock_enabled(svc, b.name):
        raise S3Error("InvalidRequest", "Bucket is missing Object Lock Configuration")


async def put_object_retention(svc: WalrusService, call: S3Call, ep: s3.PutObjectRetention) -> Response:
    b = svc.authorized_bucket(call, ep)
    _require_lock(svc, b)
    mode, until = s3.object_lock.parse_retention(await call.xml_body())
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    now = time.time()
    if until is not None:
        s3.object_lock.check_future(until, now)
    bypass = ep.bypass_governance and await may_bypass(svc, call, b, o.key)
    old = o.headers
    if not s3.object_lock.may_change_retention(old.get(MODE), old.get(UNTIL), mode, until, bypass, now):
        raise S3Error("AccessDenied")
    headers = {k: v for k, v in old.items() if k not in (MODE, UNTIL)}
    if mode is not None:
        headers[MODE], headers[UNTIL] = mode, until
    await svc.write(
        lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, headers=headers), b.name, o.key
    )
    return empty(200)


async def get_object_retention(svc: WalrusService, call: S3Call, ep: s3.GetObjectRetention) -> Response:
    b = svc.authorized_bucket(call, ep)
    _require_lock(svc, b)
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    svc.permit(call, o.acl, ep.permission.name)
    if not o.headers.get(MODE) or o.headers.get(UNTIL) is None:
        raise S3Error("NoSuchObjectLockConfiguration")
    return xml(s3.object_lock.render_retention(o.headers[MODE], float(o.headers[UNTIL])))


async def put_object_legal_hold(svc: WalrusService, call: S3Call, ep: s3.PutObjectLegalHold) -> Response:
    b = svc.authorized_bucket(call, ep)
    _require_lock(svc, b)
    status = s3.object_lock.parse_legal_hold(await call.xml_body())
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    headers = dict(o.headers)
    headers[HOLD] = status
    await svc.write(
        lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, headers=headers), b.name, o.key
    )
    return empty(200)


async def get_object_legal_hold(svc: WalrusService, call: S3Call, ep: s3.GetObjectLegalHold) -> Response:
    b = svc.authorized_bucket(call, ep)
    _require_lock(svc, b)
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    svc.permit(call, o.acl, ep.permission.name)
    return xml(s3.object_lock.render_legal_hold(str(o.headers.get(HOLD) or "OFF")))
