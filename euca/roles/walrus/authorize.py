"""Identity policies on S3 requests (issue 12), combined with the bucket's policy and ACLs as AWS combines
them. Called by dispatch after the bucket policy's decision (access.decide), before the handler's ACL check:

- an account's admin user (and anonymous callers, who have no identity policies) pass: ACLs and bucket
  policies alone decide, as before;
- an explicit Deny in the caller's identity policies refuses (AccessDenied);
- an Allow lets the request go on to the bucket policy and ACL checks, which still apply;
- no Allow: only a bucket policy that grants this request (naming the caller) lets it go on, and only in the
  bucket owner's own account (across accounts AWS wants both sides to allow).

A copy also needs the caller's policies to allow reading its source (s3:GetObject, or s3:GetObjectVersion
with a source version). A browser POST upload is judged as its form signer's s3:PutObject of the form's key
(`authorise_form`, from post_object, which also checks a signer's session token: `check_form_session`).
"""

from __future__ import annotations

from typing import Any

from euca.core import quotas
from euca.core.authorize import identity_verdict, request_keys
from euca.core.identity import AccessKey, Principal
from euca.core.quotas import quota_limits
from euca.protocol import s3
from euca.protocol.policy import ALLOW, DENY
from euca.protocol.s3 import S3Error
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.meta import quota_counts
from euca.roles.walrus.service import WalrusService


def resource_of(endpoint: Any) -> str:
    bucket = getattr(endpoint, "bucket", None)
    if bucket is None:
        return "arn:aws:s3:::*"
    key = getattr(endpoint, "key", None)
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


async def _verdict(
    svc: WalrusService,
    call: S3Call,
    principal: Principal,
    action: str,
    resource: str,
    prefix: str | None = None,
) -> str | None:
    keys = request_keys(principal, call.request, svc.identity.clock())
    if prefix is not None:
        keys["s3:prefix"] = [prefix]
    return await identity_verdict(svc.identity, principal, action, resource, keys)


async def authorise(svc: WalrusService, call: S3Call, endpoint: Any) -> None:
    principal = call.principal
    if principal is None:
        return
    if isinstance(endpoint, _ADDING):
        await check_quotas(svc, call, principal, endpoint)
    if principal.is_account_admin:
        return
    action = s3.action_of(endpoint)
    if action is None:
        return
    prefix = getattr(endpoint, "prefix", None)
    listing_prefix = prefix if isinstance(prefix, str) and action == "s3:ListBucket" else None
    bucket_name = getattr(endpoint, "bucket", None)
    if isinstance(endpoint, s3.DeleteObjects):
        return  # each key is judged as its own DeleteObject (refused_by_identity, from the handler)
    await _decide(svc, call, principal, action, resource_of(endpoint), bucket_name, listing_prefix)
    source = getattr(endpoint, "source", None)
    if isinstance(endpoint, (s3.CopyObject, s3.UploadPartCopy)) and source is not None:
        read = "s3:GetObjectVersion" if source.version_id else "s3:GetObject"
        if await _verdict(svc, call, principal, read, f"arn:aws:s3:::{source.bucket}/{source.key}") != ALLOW:
            raise S3Error("AccessDenied")


async def _decide(
    svc: WalrusService,
    call: S3Call,
    principal: Principal,
    action: str,
    resource: str,
    bucket_name: str | None,
    prefix: str | None = None,
) -> None:
    verdict = await _verdict(svc, call, principal, action, resource, prefix)
    if verdict == ALLOW:
        return
    if verdict != DENY and call.access.policy_grant:
        bucket = svc.buckets.get(bucket_name or "")
        if bucket is not None and bucket.owner_id == principal.canonical_id:
            return
    raise S3Error("AccessDenied")


async def refused_by_identity(svc: WalrusService, call: S3Call, bucket: str, items: list[Any]) -> set[int]:
    """The indexes of a DeleteObjects' keys the caller's identity policies do not allow deleting
    (s3:DeleteObject, or s3:DeleteObjectVersion for a version): each answers AccessDenied in the result."""
    principal = call.principal
    if principal is None or principal.is_account_admin:
        return set()
    refused = set()
    for index, item in enumerate(items):
        action = "s3:DeleteObjectVersion" if item.version_id else "s3:DeleteObject"
        if await _verdict(svc, call, principal, action, f"arn:aws:s3:::{bucket}/{item.key}") != ALLOW:
            refused.add(index)
    return refused


async def authorise_form(
    svc: WalrusService, call: S3Call, principal: Principal | None, bucket: str, key: str
) -> None:
    """A POST upload: the form signer's identity policies must allow s3:PutObject of the form's key."""
    if principal is None:
        return
    found = await quota_limits(svc.identity, principal, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}")
    if "s3:quota-bucketobjectnumber" in found or "s3:quota-buckettotalsize" in found:
        await check_object_quota(svc, found, bucket, key, 0)
    if principal.is_account_admin:
        return
    await _decide(svc, call, principal, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}", bucket)


def check_form_session(svc: WalrusService, key: AccessKey, token: str | None) -> None:
    """Temporary credentials signing a POST form: the form must carry their session token, before expiry."""
    if key.session_token is None:
        if token:
            raise S3Error("InvalidToken", "The provided token is malformed or otherwise invalid.", 400)
        return
    if token != key.session_token:
        raise S3Error("InvalidToken", "The provided token is malformed or otherwise invalid.", 400)
    if key.expires is not None and svc.identity.clock() >= key.expires:
        raise S3Error("ExpiredToken", "The provided token has expired.", 400)


# What adds to an S3 quota: a bucket, or an object (its bytes counted where the request declares them).
_ADDING = (s3.CreateBucket, s3.PutObject, s3.CopyObject, s3.CompleteMultipartUpload)


async def check_quotas(svc: WalrusService, call: S3Call, principal: Principal, endpoint: Any) -> None:
    """Eucalyptus's S3 quotas (Limit policies): s3:quota-bucketnumber on CreateBucket, and for a bucket's
    owner s3:quota-bucketobjectnumber and s3:quota-buckettotalsize on a write of a new object. The size of a
    copy or a completed multipart upload is not known before it is made: those count as one object."""
    action = s3.action_of(endpoint) or ""
    if isinstance(endpoint, s3.CreateBucket):
        found = await quota_limits(svc.identity, principal, action, resource_of(endpoint))
        if "s3:quota-bucketnumber" not in found:
            return
        owned = sum(1 for b in svc.buckets.values() if b.owner_id == principal.canonical_id)
        try:
            quotas.check(found, "s3:quota-bucketnumber", current=owned, adding=1)
        except quotas.QuotaExceeded:
            raise S3Error(
                "TooManyBuckets", "You have attempted to create more buckets than allowed"
            ) from None
        return
    bucket = svc.buckets.get(endpoint.bucket)
    if bucket is None:
        return
    owner_account = principal.account_id
    if bucket.owner_id != principal.canonical_id:
        account = await svc.identity.account_by_canonical_id(bucket.owner_id)
        if account is None:
            return
        owner_account = account.account_id
    found = await quota_limits(svc.identity, principal, action, resource_of(endpoint), owner_account)
    if "s3:quota-bucketobjectnumber" not in found and "s3:quota-buckettotalsize" not in found:
        return
    await check_object_quota(svc, found, bucket.name, endpoint.key, call.auth.decoded_length or 0)


async def check_object_quota(
    svc: WalrusService, found: dict[str, int], bucket: str, key: str, size: int
) -> None:
    """A new object of `size` bytes in `bucket`: refused past the bucket owner's object or byte quota."""
    objects, stored = await svc.store.read(lambda tx: quota_counts.bucket_usage(tx, bucket))
    exists = await svc.store.read(lambda tx: quota_counts.key_exists(tx, bucket, key))
    try:
        quotas.check(found, "s3:quota-bucketobjectnumber", current=objects, adding=0 if exists else 1)
        quotas.check(found, "s3:quota-buckettotalsize", current=stored, adding=size)
    except quotas.QuotaExceeded as e:
        raise S3Error("AccessDenied", f"Quota exceeded: {e.key} is {e.limit}") from None
