"""Identity policies on S3 requests (issue 12), combined with the bucket's policy and ACLs as AWS combines
them. Called by dispatch after the bucket policy's decision (access.decide), before the handler's ACL check:

- an account's admin user (and anonymous callers, who have no identity policies) pass: ACLs and bucket
  policies alone decide, as before;
- an explicit Deny in the caller's identity policies refuses (AccessDenied);
- an Allow lets the request go on to the bucket policy and ACL checks, which still apply;
- no Allow: only a bucket policy that grants this request (naming the caller) lets it go on, and only in the
  bucket owner's own account (across accounts AWS wants both sides to allow).
"""

from __future__ import annotations

from typing import Any

from euca.core.authorize import identity_verdict, request_keys
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


async def authorise(svc: WalrusService, call: S3Call, endpoint: Any) -> None:
    principal = call.principal
    if principal is None or principal.is_account_admin:
        return
    action = s3.action_of(endpoint)
    if action is None:
        return
    keys = request_keys(principal, call.request, svc.identity.clock())
    prefix = getattr(endpoint, "prefix", None)
    if isinstance(prefix, str) and action == "s3:ListBucket":
        keys["s3:prefix"] = [prefix]
    verdict = await identity_verdict(svc.identity, principal, action, resource_of(endpoint), keys)
    if verdict == ALLOW:
        return
    if verdict != DENY and call.access.policy_grant:
        bucket = svc.buckets.get(getattr(endpoint, "bucket", "") or "")
        if bucket is not None and bucket.owner_id == principal.canonical_id:
            return
    raise S3Error("AccessDenied")
