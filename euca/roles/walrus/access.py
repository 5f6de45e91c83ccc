"""The access decision: a bucket's policy and public access block, evaluated once per request into an `Access`
value that the ACL checks (acl.allowed) are handed.

The decision combines a bucket's policy with its ACLs the way S3 does: an explicit Deny in the policy refuses
the request (even to the owner, except the owner managing the policy itself); an Allow grants it to whoever it
names (other accounts, anonymous); otherwise the ACL checks decide. The public access block refuses requests
that would make ACLs public (BlockPublicAcls), makes public ACL grants count for nothing (IgnorePublicAcls) and
withdraws a public policy's Allow from everyone but the owner (RestrictPublicBuckets).

A decision is made against one bucket's rules (`decide`) and holds for that bucket only. A request that touches
a second bucket has that part decided against the second bucket's own rules: a copy (CopyObject,
UploadPartCopy) must hold write on its destination (dispatch's decision) and read on its source exactly as a
GET of the source object by the same caller (`decide_copy_source`: s3:GetObject, or s3:GetObjectVersion with
x-amz-copy-source-version-id, under the source bucket's policy and public access block), so an Allow in the
destination's policy never reads anything in the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from euca.core.https import is_secure
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import policy as s3_policy
from euca.roles.walrus import meta

if TYPE_CHECKING:
    from euca.core.http import Request
    from euca.core.identity import Principal
    from euca.roles.walrus.call import S3Call
    from euca.roles.walrus.service import WalrusService

_POLICY_MANAGEMENT = (s3.PutBucketPolicy, s3.GetBucketPolicy, s3.DeleteBucketPolicy)
_PUBLIC_CANNED = ("public-read", "public-read-write", "authenticated-read")


@dataclass(frozen=True, slots=True)
class Access:
    """What a bucket's policy and public access block decided for one request.

    bucket: the bucket whose rules made the decision (None: ACL_ONLY, the bucket has neither a policy nor a
    public access block, so the ACLs alone decide); policy_grant: the policy allows the request (every ACL
    check passes); ignore_public_acls: ACL grants to everyone / to all authenticated users count for nothing."""

    bucket: str | None = None
    policy_grant: bool = False
    ignore_public_acls: bool = False


class Caller(Protocol):
    """Who asks, and the request they ask with: what a decision reads of a call (an S3Call is one)."""

    @property
    def request(self) -> Request: ...

    @property
    def principal(self) -> Principal | None: ...


# Shared by every request to a bucket without a policy or public access block (most of them): no allocation.
ACL_ONLY = Access()


@dataclass(slots=True)
class BucketPolicy:
    """A bucket's access rules as cached by the service: the policy (its text and parsed form) and the public
    access block settings (None: not set)."""

    text: str | None = None
    policy: s3_policy.Policy | None = None
    public_access_block: dict[str, bool] | None = None

    def copy(self) -> BucketPolicy:
        return BucketPolicy(self.text, self.policy, self.public_access_block)


async def decide(
    svc: WalrusService,
    call: Caller,
    endpoint: Any,
    bucket: str,
    rules: BucketPolicy,
    condition_keys: dict[str, list[str]] | None = None,
) -> Access:
    """Evaluate `bucket`'s `rules` for `endpoint`: AccessDenied on a Deny (or a public ACL the public access
    block refuses), else the Access the ACL checks are to use. `condition_keys` override what the request
    itself gives (a decision for another action than the request's own)."""
    pab = rules.public_access_block or {}
    if pab.get("BlockPublicAcls"):
        _block_public_acls(endpoint)
    verdict = None
    action = s3.action_of(endpoint)
    if rules.policy is not None and action is not None:
        context = await _context(svc, call, endpoint, bucket, rules.policy, action)
        if condition_keys:
            context.keys.update(condition_keys)
        verdict = s3_policy.evaluate(rules.policy, context)
        b = svc.buckets.get(bucket)
        p = call.principal
        is_owner = b is not None and p is not None and p.canonical_id == b.owner_id
        if verdict == s3_policy.DENY and not (is_owner and isinstance(endpoint, _POLICY_MANAGEMENT)):
            raise S3Error("AccessDenied")
        if (
            verdict == s3_policy.ALLOW
            and pab.get("RestrictPublicBuckets")
            and s3_policy.is_public(rules.policy)
            and not is_owner
        ):
            verdict = None
    return Access(bucket, verdict == s3_policy.ALLOW, bool(pab.get("IgnorePublicAcls")))


@dataclass(frozen=True, slots=True)
class _FormSigner:
    """A POST Object request as made by its form's signer (the request itself carries no signature)."""

    request: Request
    principal: Principal | None


async def decide_form_upload(
    svc: WalrusService,
    call: S3Call,
    bucket: str,
    key: str,
    principal: Principal | None,
    acl: s3.AclRequest,
    tagging: dict[str, str] | None = None,
) -> Access:
    """POST Object, once its form is read: judged as a PutObject of `key` by the form's signer (`principal`;
    None for an anonymous form) under the bucket's rules, BlockPublicAcls seeing the form's acl. dispatch
    cannot decide it (the request is unsigned and names no key; PostObject's `action` is None), so without
    this the bucket's policy never applies to form uploads: neither its Deny nor its Allow."""
    rules = svc.policies.get(bucket)
    if rules is None:
        return ACL_ONLY
    upload = s3.PutObject(bucket, key, acl=acl, tagging=tagging)
    return await decide(svc, _FormSigner(call.request, principal), upload, bucket, rules)


async def decide_copy_source(svc: WalrusService, call: S3Call, source: s3.CopySource) -> Access:
    """The decision for reading a copy's source: the request judged as a GET of the source object (its version
    if named) by the same caller, against the source bucket's rules (ACL_ONLY when it has none)."""
    rules = svc.policies.get(source.bucket)
    if rules is None:
        return ACL_ONLY
    read = s3.GetObject(source.bucket, source.key, source.version_id)
    return await decide(svc, call, read, source.bucket, rules)


async def decide_each_delete(
    svc: WalrusService, call: S3Call, bucket: str, rules: BucketPolicy, key: str, version_id: str | None
) -> Access | None:
    """DeleteObjects names its keys in the body: each is judged as a DeleteObject of that key (and version:
    s3:DeleteObjectVersion), as S3 does, so a statement on bucket/* or on one key applies to it. None: the
    policy (or the public access block) refuses this key."""
    try:
        return await decide(svc, call, s3.DeleteObject(bucket, key, version_id), bucket, rules)
    except S3Error as e:
        if e.code == "AccessDenied":
            return None
        raise


async def check_expected_owner(
    svc: WalrusService, call: S3Call, bucket: str | None, header: str = "x-amz-expected-bucket-owner"
) -> None:
    """x-amz-expected-bucket-owner (or, for a copy's source, x-amz-source-expected-bucket-owner): AccessDenied
    unless `bucket` belongs to the account it names. A bucket that does not exist is left to the handler
    (NoSuchBucket)."""
    expected = call.request.headers.get(header)
    if expected is not None:
        await _check_owner(svc, bucket, expected)


async def _check_owner(svc: WalrusService, bucket: str | None, expected: str) -> None:
    b = svc.buckets.get(bucket) if bucket is not None else None
    if b is None:
        return
    account = await svc.identity.account_by_canonical_id(b.owner_id)
    if account is None or account.account_id != expected.strip():
        raise S3Error("AccessDenied")


async def decide_listing_of(
    svc: WalrusService, call: S3Call, bucket: str, rules: BucketPolicy, key: str
) -> Access:
    """The decision for listing `bucket` at the prefix `key` (s3:ListBucket, s3:prefix = the key): what S3 asks
    before it tells a caller that a key does not exist."""
    listing = s3.ListObjects(bucket, prefix=key)
    return await decide(svc, call, listing, bucket, rules, {"s3:prefix": [key]})


def refuse_public_acl(svc: WalrusService, bucket: str, grants: list[list[str]]) -> None:
    """AccessDenied if `bucket`'s BlockPublicAcls is on and `grants` (an ACL's stored grants) make it public:
    for an ACL given as an AccessControlPolicy body, which the header check in `decide` does not see."""
    rules = svc.policies.get(bucket)
    if rules is None or not (rules.public_access_block or {}).get("BlockPublicAcls"):
        return
    if any(g[1] == "Group" and g[2] in (s3.ALL_USERS, s3.AUTHENTICATED_USERS) for g in grants):
        raise S3Error("AccessDenied")


def _block_public_acls(endpoint: Any) -> None:
    acl = getattr(endpoint, "acl", None)
    if not isinstance(acl, s3.AclRequest):
        return
    if acl.canned in _PUBLIC_CANNED or any(
        g.grantee_type == "Group" and g.grantee in (s3.ALL_USERS, s3.AUTHENTICATED_USERS) for g in acl.grants
    ):
        raise S3Error("AccessDenied")


_CONDITION_HEADERS = (
    "x-amz-acl",
    "x-amz-copy-source",
    "x-amz-metadata-directive",
    "x-amz-server-side-encryption",
    "x-amz-grant-full-control",
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-content-sha256",
    "x-amz-storage-class",
)


async def _context(
    svc: WalrusService, call: Caller, endpoint: Any, bucket: str, policy: s3_policy.Policy, action: str
) -> s3_policy.Context:
    """The request as the policy's conditions see it: resource, principal and condition keys."""
    key = getattr(endpoint, "key", None)
    resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
    p = call.principal
    request = call.request
    keys: dict[str, list[str]] = {
        "aws:sourceip": [request.client[0]] if hasattr(request, "client") else [],
        "aws:securetransport": ["true" if is_secure(request) else "false"],  # the HTTPS listener marks it
    }
    q = s3.parse_query(request.query) if request.query else {}
    for name in ("prefix", "delimiter", "max-keys"):
        if name in q:
            keys[f"s3:{name.lower()}"] = [q[name]]
    # The version the endpoint acts on: for a copy source judged as a GET, x-amz-copy-source's versionId,
    # not the copy request's query.
    if hasattr(endpoint, "version_id"):
        version_id = endpoint.version_id
    else:
        version_id = q.get("versionId")
    if version_id is not None:
        keys["s3:versionid"] = [version_id]
    headers = request.headers
    for h in _CONDITION_HEADERS:
        v = headers.get(h)
        if v is not None:
            keys[f"s3:{h}"] = [v]
    referer = headers.get("referer")
    if referer is not None:
        keys["aws:referer"] = [referer]
    user_agent = headers.get("user-agent")
    if user_agent is not None:
        keys["aws:useragent"] = [user_agent]
    if p is not None:
        keys["aws:username"] = [p.user_name]
        keys["aws:principalaccount"] = [p.account_id]
    request_tags = _request_tags(endpoint)
    if request_tags is not None:
        for k, v in request_tags.items():
            keys[f"s3:requestobjecttag/{k.lower()}"] = [v]
        keys["s3:requestobjecttagkeys"] = list(request_tags)
    if key is not None and s3_policy.uses_key(policy, "s3:existingobjecttag/"):
        version = getattr(endpoint, "version_id", None)
        o = await svc.store.read(lambda tx: meta.get_object(tx, bucket, key, version))
        for k, v in ((o.tags or {}) if o is not None and not o.delete_marker else {}).items():
            keys[f"s3:existingobjecttag/{k.lower()}"] = [v]
    return s3_policy.Context(action, resource, p.account_id if p else None, p.arn if p else None, keys)


def _request_tags(endpoint: Any) -> dict[str, str] | None:
    tagging = getattr(endpoint, "tagging", None)
    if isinstance(tagging, dict) and tagging:
        return {str(k): str(v) for k, v in tagging.items()}
    return None
