"""S3 bucket policies (sans-I/O): parsing and validating a policy document, and evaluating it for one request
(explicit Deny wins, then Allow, else no opinion); the public access block configuration. The endpoints (?policy,
?policyStatus, ?publicAccessBlock) are in endpoints.py with all the others, and re-exported here; the action an
endpoint is authorised as is its class's `action` (see endpoints.action_of)."""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from euca.protocol.bounded import BoundsError, loads_json
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

ALLOW = "Allow"
DENY = "Deny"

# -- policy documents ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Statement:
    effect: str
    principals: list[str] | None = None  # "*" or account ids/arns; None: no Principal element
    not_principals: list[str] | None = None
    actions: list[str] | None = None
    not_actions: list[str] | None = None
    resources: list[str] | None = None
    not_resources: list[str] | None = None
    conditions: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (operator, key, values)


@dataclass(slots=True)
class Policy:
    statements: list[Statement]


# S3 limits a bucket policy to 20 KB, counted without the whitespace between JSON tokens. The body itself may
# be pretty-printed, so it is allowed more before it is parsed at all.
MAX_POLICY_BYTES = 20 * 1024
MAX_POLICY_BODY_BYTES = 256 * 1024
MAX_POLICY_DEPTH = 16  # a statement's Condition values sit at depth 5


def policy_too_large() -> S3Error:
    # S3 documents the limit but not the code; this is the code S3-compatible stores (MinIO) answer with.
    return S3Error("PolicyTooLarge", "Policy exceeds the maximum allowed document size.")


def _malformed(msg: str) -> S3Error:
    return S3Error("MalformedPolicy", msg)


def _str_list(v: Any, what: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return list(v)
    raise _malformed(f"Invalid {what}")


def _principals(v: Any) -> list[str]:
    if v == "*":
        return ["*"]
    if isinstance(v, dict):
        out: list[str] = []
        for kind, ids in v.items():
            if kind not in ("AWS", "CanonicalUser", "Service", "Federated"):
                raise _malformed("Invalid principal in policy")
            out += _str_list(ids, "principal")
        return out
    raise _malformed("Invalid principal in policy")


_KNOWN_OPERATORS = {
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "IpAddress",
    "NotIpAddress",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Null",
}


def _base_operator(op: str) -> str:
    op = op.removesuffix("IfExists")
    for prefix in ("ForAnyValue:", "ForAllValues:"):
        op = op.removeprefix(prefix)
    return op


_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?")


def _valid_condition_value(base: str, value: str) -> bool:
    if base in ("IpAddress", "NotIpAddress"):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return True
    if base.startswith("Numeric"):
        return re.fullmatch(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", value) is not None
    if base in ("Bool", "Null"):
        return value.lower() in ("true", "false")
    if base.startswith("Date"):
        return value.isdigit() or _DATE_RE.fullmatch(value) is not None
    return True


def _check_condition_values(base: str, values: list[str]) -> None:
    """MalformedPolicy for a value its operator cannot compare with (an address that is no address, a number
    that is no number): evaluated, such a condition would silently be true or false."""
    for value in values:
        if not _valid_condition_value(base, value):
            raise _malformed(f"Invalid Condition value for {base}: {value[:100]}")


def parse_policy(text: bytes | str, bucket: str, *, strict: bool = True) -> Policy:
    """Parse and validate a policy document; MalformedPolicy for anything S3 would refuse.

    strict=False is for a policy stored before the checks added with issue 13 (its size, NotPrincipal with
    Allow, condition values): such a policy keeps being evaluated as it was when accepted, rather than
    dropped, which would quietly lift its Deny statements."""
    # Before these checks Walrus stored any policy a request body could carry (1 MiB).
    max_body = MAX_POLICY_BODY_BYTES if strict else 2 * 1024 * 1024
    if len(text) > max_body:
        raise policy_too_large()
    try:
        doc = loads_json(text, max_bytes=max_body, max_depth=MAX_POLICY_DEPTH)
    except BoundsError:
        raise _malformed("Policy document is nested too deeply") from None
    except ValueError:
        raise _malformed("Policies must be valid JSON and the first byte must be '{'") from None
    if not isinstance(doc, dict):
        raise _malformed("Policies must be valid JSON and the first byte must be '{'")
    if strict and len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_POLICY_BYTES:
        raise policy_too_large()
    version = doc.get("Version")
    if version is not None and version not in ("2012-10-17", "2008-10-17"):
        raise _malformed("Invalid policy document version")
    raw = doc.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _malformed("Missing required field Statement")
    statements = []
    for s in raw:
        if not isinstance(s, dict):
            raise _malformed("Invalid statement")
        effect = s.get("Effect")
        if effect not in (ALLOW, DENY):
            raise _malformed("Invalid effect")
        st = Statement(effect)
        if "Principal" in s:
            st.principals = _principals(s["Principal"])
        if "NotPrincipal" in s:
            st.not_principals = _principals(s["NotPrincipal"])
        if st.principals is None and st.not_principals is None:
            raise _malformed("Missing required field Principal")
        if strict and st.not_principals is not None and effect == ALLOW:
            # IAM allows NotPrincipal only with Deny: an Allow to "everyone but" is refused.
            raise _malformed("NotPrincipal is not supported with Effect Allow")
        if "Action" in s:
            st.actions = _str_list(s["Action"], "action")
        if "NotAction" in s:
            st.not_actions = _str_list(s["NotAction"], "action")
        if st.actions is None and st.not_actions is None:
            raise _malformed("Missing required field Action")
        for a in (st.actions or []) + (st.not_actions or []):
            if a != "*" and not a.lower().startswith("s3:"):
                raise _malformed("Policy has invalid action")
        if "Resource" in s:
            st.resources = _str_list(s["Resource"], "resource")
        if "NotResource" in s:
            st.not_resources = _str_list(s["NotResource"], "resource")
        if st.resources is None and st.not_resources is None:
            raise _malformed("Missing required field Resource")
        for r in (st.resources or []) + (st.not_resources or []):
            if r == "*":
                continue
            if not r.startswith("arn:aws:s3:::"):
                raise _malformed("Policy has invalid resource")
            target = r[len("arn:aws:s3:::") :].split("/", 1)[0]
            if not fnmatch.fnmatchcase(bucket, target.replace("[", "[[]")):
                raise _malformed("Policy has invalid resource")
        cond = s.get("Condition", {})
        if not isinstance(cond, dict):
            raise _malformed("Invalid Condition")
        for op, body in cond.items():
            if _base_operator(op) not in _KNOWN_OPERATORS or not isinstance(body, dict):
                raise _malformed(f"Invalid Condition type : {op}")
            for key, values in body.items():
                if isinstance(values, (bool, int, float)):
                    values = str(values).lower() if isinstance(values, bool) else str(values)
                if isinstance(values, list):
                    values = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
                wanted = _str_list(values, "condition value")
                if strict:
                    _check_condition_values(_base_operator(op), wanted)
                st.conditions.append((op, key, wanted))
        statements.append(st)
    return Policy(statements)


# -- evaluation ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Context:
    """What a request looks like to a policy: action, resource arn, who, and condition keys (lower-case names)."""

    action: str
    resource: str
    account_id: str | None  # None: anonymous
    user_arn: str | None
    keys: dict[str, list[str]] = field(default_factory=dict)


def _wild(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _principal_matches(ids: list[str], ctx: Context) -> bool:
    for p in ids:
        if p == "*":
            return True
        if ctx.account_id is None:
            continue
        if p in (ctx.account_id, f"arn:aws:iam::{ctx.account_id}:root"):
            return True
        if ctx.user_arn is not None and _wild(p, ctx.user_arn):
            return True
    return False


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _compare(op: str, actual: str, wanted: str) -> bool:
    if op in ("StringEquals", "ArnEquals"):
        return actual == wanted
    if op == "StringEqualsIgnoreCase":
        return actual.lower() == wanted.lower()
    if op in ("StringLike", "ArnLike"):
        return _wild(wanted, actual)
    if op == "Bool":
        return actual.lower() == wanted.lower()
    if op == "IpAddress":
        try:
            return ipaddress.ip_address(actual) in ipaddress.ip_network(wanted, strict=False)
        except ValueError:
            return False
    if op.startswith("Numeric"):
        a, w = _number(actual), _number(wanted)
        if a is None or w is None:
            return False
        return {
            "NumericEquals": a == w,
            "NumericLessThan": a < w,
            "NumericLessThanEquals": a <= w,
            "NumericGreaterThan": a > w,
            "NumericGreaterThanEquals": a >= w,
        }.get(op, False)
    if op.startswith("Date"):
        return False
    return False


_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "NotIpAddress": "IpAddress",
    "NumericNotEquals": "NumericEquals",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "DateNotEquals": "DateEquals",
}


def _condition(op: str, key: str, wanted: list[str], ctx: Context) -> bool:
    if_exists = op.endswith("IfExists")
    base = op.removesuffix("IfExists")
    quantifier = ""
    for prefix in ("ForAnyValue:", "ForAllValues:"):
        if base.startswith(prefix):
            quantifier, base = prefix, base.removeprefix(prefix)
    actual = ctx.keys.get(key.lower())
    if base == "Null":
        return (actual is None) == (wanted[0].lower() == "true")
    if actual is None:
        if if_exists:
            return True
        # A missing key fails a positive test and satisfies a negated one, as IAM does.
        return base in _NEGATED or quantifier == "ForAllValues:"
    negated = base in _NEGATED
    positive = _NEGATED.get(base, base)

    def one(value: str) -> bool:
        return any(_compare(positive, value, w) for w in wanted)

    if quantifier == "ForAllValues:":
        hit = all(one(v) for v in actual)
    else:
        hit = any(one(v) for v in actual)
    return not hit if negated else hit


def _statement_applies(st: Statement, ctx: Context) -> bool:
    if st.principals is not None and not _principal_matches(st.principals, ctx):
        return False
    if st.not_principals is not None and _principal_matches(st.not_principals, ctx):
        return False
    if st.actions is not None and not any(_wild(a, ctx.action, True) for a in st.actions):
        return False
    if st.not_actions is not None and any(_wild(a, ctx.action, True) for a in st.not_actions):
        return False
    if st.resources is not None and not any(_wild(r, ctx.resource) for r in st.resources):
        return False
    if st.not_resources is not None and any(_wild(r, ctx.resource) for r in st.not_resources):
        return False
    return all(_condition(op, key, values, ctx) for op, key, values in st.conditions)


def evaluate(policy: Policy, ctx: Context) -> str | None:
    """ "Deny" if any statement denies, else "Allow" if one allows, else None (the policy has no opinion)."""
    verdict = None
    for st in policy.statements:
        if _statement_applies(st, ctx):
            if st.effect == DENY:
                return DENY
            verdict = ALLOW
    return verdict


def uses_key(policy: Policy, prefix: str) -> bool:
    """Whether any condition reads a key starting with `prefix` (lower-case), so a caller loads it only then."""
    return any(key.lower().startswith(prefix) for st in policy.statements for _, key, _ in st.conditions)


def is_public(policy: Policy) -> bool:
    """S3's idea of a public policy: an Allow to everyone ("*", or everyone but some NotPrincipal) not narrowed
    by a condition."""
    return any(
        st.effect == ALLOW
        and not st.conditions
        and ((st.principals is not None and "*" in st.principals) or st.not_principals is not None)
        for st in policy.statements
    )


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
