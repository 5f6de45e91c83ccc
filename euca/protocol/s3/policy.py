"""S3 bucket policies (sans-I/O): the S3 rules of the policy language (euca.protocol.policy: parsing and
evaluation, shared with IAM; re-exported here), and the public access block configuration. The endpoints (?policy,
?policyStatus, ?publicAccessBlock) are in endpoints.py with all the others, and re-exported here; the action an
endpoint is authorised as is its class's `action` (see endpoints.action_of)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

from euca.protocol.policy import (
    ALLOW,
    DENY,
    Context,
    Policy,
    PolicyDocumentError,
    Rules,
    Statement,
    evaluate,
    is_public,
    parse,
    uses_key,
)
from euca.protocol.s3.endpoints import (
    DeleteBucketPolicy,
    DeletePublicAccessBlock,
    GetBucketPolicy,
    GetBucketPolicyStatus,
    GetPublicAccessBlock,
    PutBucketPolicy,
    PutPublicAccessBlock,
    action_of,
)
from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.wire import document
from euca.protocol.s3.xml import parse_document

# S3 limits a bucket policy to 20 KB, counted without the whitespace between JSON tokens. The body itself may
# be pretty-printed, so it is allowed more before it is parsed at all.
MAX_POLICY_BYTES = 20 * 1024
MAX_POLICY_BODY_BYTES = 256 * 1024


def policy_too_large() -> S3Error:
    # S3 documents the limit but not the code; this is the code S3-compatible stores (MinIO) answer with.
    return S3Error("PolicyTooLarge", "Policy exceeds the maximum allowed document size.")


def _s3_action(action: str) -> str | None:
    return None if action == "*" or action.lower().startswith("s3:") else "Policy has invalid action"


def _bucket_resource(bucket: str) -> Callable[[str], str | None]:
    def check(resource: str) -> str | None:
        if resource == "*":
            return None
        if not resource.startswith("arn:aws:s3:::"):
            return "Policy has invalid resource"
        target = resource[len("arn:aws:s3:::") :].split("/", 1)[0]
        if not fnmatch.fnmatchcase(bucket, target.replace("[", "[[]")):
            return "Policy has invalid resource"
        return None

    return check


def parse_policy(text: bytes | str, bucket: str, *, strict: bool = True) -> Policy:
    """Parse and validate a bucket policy; MalformedPolicy for anything S3 would refuse.

    strict=False is for a policy stored before the checks added with issue 13 (its size, NotPrincipal with
    Allow, condition values): such a policy keeps being evaluated as it was when accepted, rather than
    dropped, which would quietly lift its Deny statements."""
    rules = Rules(
        principal="required",
        # Before these checks Walrus stored any policy a request body could carry (1 MiB).
        max_body_bytes=MAX_POLICY_BODY_BYTES if strict else 2 * 1024 * 1024,
        max_bytes=MAX_POLICY_BYTES if strict else None,
        strict=strict,
        check_action=_s3_action,
        check_resource=_bucket_resource(bucket),
    )
    try:
        return parse(text, rules)
    except PolicyDocumentError as e:
        if e.too_large:
            raise policy_too_large() from None
        raise S3Error("MalformedPolicy", e.message) from None


# -- public access block ---------------------------------------------------------------------------------

PAB_FIELDS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def parse_public_access_block(body: bytes) -> dict[str, bool]:
    root = parse_document(body)
    out = dict.fromkeys(PAB_FIELDS, False)
    for child in root:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag in out:
            out[tag] = (child.text or "").strip().lower() == "true"
    return out


def render_public_access_block(conf: Mapping[str, bool]) -> bytes:
    inner = "".join(f"<{k}>{'true' if conf.get(k) else 'false'}</{k}>" for k in PAB_FIELDS)
    return document("PublicAccessBlockConfiguration", inner)


def render_policy_status(public: bool) -> bytes:
    return document("PolicyStatus", f"<IsPublic>{'true' if public else 'false'}</IsPublic>")


__all__ = [
    "ALLOW",
    "Context",
    "DENY",
    "DeleteBucketPolicy",
    "DeletePublicAccessBlock",
    "GetBucketPolicy",
    "GetBucketPolicyStatus",
    "GetPublicAccessBlock",
    "PAB_FIELDS",
    "Policy",
    "PutBucketPolicy",
    "PutPublicAccessBlock",
    "Statement",
    "action_of",
    "evaluate",
    "is_public",
    "parse_policy",
    "parse_public_access_block",
    "render_policy_status",
    "render_public_access_block",
    "uses_key",
]
