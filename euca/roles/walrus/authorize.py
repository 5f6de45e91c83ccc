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

from euca.core.authorize import identity_verdict, request_keys
from euca.core.identity import AccessKey, Principal
from euca.protocol import s3
from euca.protocol.policy import ALLOW, DENY
from euca.protocol.s3 import S3Error
from euca.roles.walrus.call import S3Call
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
    if principal is None or principal.is_account_admin:
        return
    action = s3.action_of(endpoint)
    if action is None:
        return
    prefix = getattr(endpoint, "prefix", None)
    listing_prefix = prefix if isinstance(prefix, str) and action == "s3:ListBucket" else None
    bucket_name = getattr(endpoint, "bucket", None)
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


async def authorise_form(
    svc: WalrusService, call: S3Call, principal: Principal | None, bucket: str, key: str
) -> None:
    """A POST upload: the form signer's identity policies must allow s3:PutObject of the form's key."""
    if principal is None or principal.is_account_admin:
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
