"""The AWS policy language (sans-I/O), one for every kind of policy: identity policies (IAM users, groups,
roles), resource policies (S3 bucket policies) and role trust policies.

`parse(text, rules)` reads and validates a document into `Policy`; what differs between kinds (a Principal
required or forbidden, which actions and resources are valid, the size limit) is in `Rules`, and a refusal is
a `PolicyDocumentError` that each service words in its own error (S3 MalformedPolicy, IAM
MalformedPolicyDocument). `evaluate(policy, ctx)` answers "Deny", "Allow" or None for one request;
`decide(...)` combines several policies as IAM does (an explicit Deny wins, then any Allow, else implicit deny).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from euca.protocol.bounded import BoundsError, loads_json

ALLOW = "Allow"
DENY = "Deny"
# Eucalyptus's quota statements: {"Effect": "Limit", "Action": .., "Resource": .., "Condition":
# {"NumericLessThanEquals": {"ec2:quota-vminstancenumber": "16"}}}. They never allow or deny; `limits` reads them.
LIMIT = "Limit"
MAX_POLICY_DEPTH = 16  # a statement's Condition values sit at depth 5


class PolicyDocumentError(ValueError):
    """A document the service refuses; `too_large` when only its size is wrong."""

    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.message = message
        self.too_large = too_large


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
    sid: str | None = None


@dataclass(slots=True)
class Policy:
    statements: list[Statement]


@dataclass(frozen=True)
class Rules:
    """What a kind of policy accepts."""

    # "required" (resource and trust policies), "forbidden" (identity policies)
    principal: str
    resource_required: bool = True
    max_body_bytes: int = 256 * 1024
    # Counted without the whitespace between JSON tokens, as AWS counts; None: no limit here.
    max_bytes: int | None = None
    # NotPrincipal only with Deny (IAM's rule); off for documents stored before the rule was checked.
    strict: bool = True
    check_action: Callable[[str], str | None] | None = None  # a message when the action is refused
    check_resource: Callable[[str], str | None] | None = None
    # Identity policies may hold Limit (quota) statements.
    allow_limit: bool = False


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


def base_operator(op: str) -> str:
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


def _str_list(v: Any, what: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return list(v)
    raise PolicyDocumentError(f"Invalid {what}")


def _principals(v: Any) -> list[str]:
    if v == "*":
        return ["*"]
    if isinstance(v, dict):
        out: list[str] = []
        for kind, ids in v.items():
            if kind not in ("AWS", "CanonicalUser", "Service", "Federated"):
                raise PolicyDocumentError("Invalid principal in policy")
            out += _str_list(ids, "principal")
        return out
    raise PolicyDocumentError("Invalid principal in policy")


def minified_size(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def parse(text: bytes | str, rules: Rules) -> Policy:
    """Parse and validate a policy document; PolicyDocumentError for anything the service would refuse."""
    if len(text) > rules.max_body_bytes:
        raise PolicyDocumentError("Policy exceeds the maximum allowed document size.", too_large=True)
    try:
        doc = loads_json(text, max_bytes=rules.max_body_bytes, max_depth=MAX_POLICY_DEPTH)
    except BoundsError:
        raise PolicyDocumentError("Policy document is nested too deeply") from None
    except ValueError:
        raise PolicyDocumentError("Policies must be valid JSON and the first byte must be '{'") from None
    if not isinstance(doc, dict):
        raise PolicyDocumentError("Policies must be valid JSON and the first byte must be '{'")
    if rules.max_bytes is not None and minified_size(doc) > rules.max_bytes:
        raise PolicyDocumentError("Policy exceeds the maximum allowed document size.", too_large=True)
    version = doc.get("Version")
    if version is not None and version not in ("2012-10-17", "2008-10-17"):
        raise PolicyDocumentError("Invalid policy document version")
    raw = doc.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyDocumentError("Missing required field Statement")
    return Policy([_statement(s, rules) for s in raw])


def _statement(s: Any, rules: Rules) -> Statement:
    if not isinstance(s, dict):
        raise PolicyDocumentError("Invalid statement")
    effect = s.get("Effect")
    if effect not in (ALLOW, DENY) and not (effect == LIMIT and rules.allow_limit):
        raise PolicyDocumentError("Invalid effect")
    st = Statement(effect)
    sid = s.get("Sid")
    st.sid = sid if isinstance(sid, str) else None
    if "Principal" in s:
        st.principals = _principals(s["Principal"])
    if "NotPrincipal" in s:
        st.not_principals = _principals(s["NotPrincipal"])
    has_principal = st.principals is not None or st.not_principals is not None
    if rules.principal == "required" and not has_principal:
        raise PolicyDocumentError("Missing required field Principal")
    if rules.principal == "forbidden" and has_principal:
        raise PolicyDocumentError("Policy document should not specify a principal.")
    if rules.strict and st.not_principals is not None and effect == ALLOW:
        # IAM allows NotPrincipal only with Deny: an Allow to "everyone but" is refused.
        raise PolicyDocumentError("NotPrincipal is not supported with Effect Allow")
    if "Action" in s:
        st.actions = _str_list(s["Action"], "action")
    if "NotAction" in s:
        st.not_actions = _str_list(s["NotAction"], "action")
    if st.actions is None and st.not_actions is None:
        raise PolicyDocumentError("Missing required field Action")
    if rules.check_action is not None:
        for a in (st.actions or []) + (st.not_actions or []):
            refused = rules.check_action(a)
            if refused is not None:
                raise PolicyDocumentError(refused)
    if "Resource" in s:
        st.resources = _str_list(s["Resource"], "resource")
    if "NotResource" in s:
        st.not_resources = _str_list(s["NotResource"], "resource")
    if rules.resource_required and st.resources is None and st.not_resources is None:
        raise PolicyDocumentError("Missing required field Resource")
    if rules.check_resource is not None:
        for r in (st.resources or []) + (st.not_resources or []):
            refused = rules.check_resource(r)
            if refused is not None:
                raise PolicyDocumentError(refused)
    cond = s.get("Condition", {})
    if not isinstance(cond, dict):
        raise PolicyDocumentError("Invalid Condition")
    if effect == LIMIT and (
        set(cond) != {"NumericLessThanEquals"}
        or not isinstance(cond["NumericLessThanEquals"], dict)
        or not all(str(k).lower() in QUOTA_KEYS for k in cond["NumericLessThanEquals"])
    ):
        raise PolicyDocumentError(
            "A Limit statement takes only NumericLessThanEquals conditions on quota keys"
        )
    for op, body in cond.items():
        if base_operator(op) not in _KNOWN_OPERATORS or not isinstance(body, dict):
            raise PolicyDocumentError(f"Invalid Condition type : {op}")
        for key, values in body.items():
            if isinstance(values, (bool, int, float)):
                values = str(values).lower() if isinstance(values, bool) else str(values)
            if isinstance(values, list):
                values = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
            wanted = _str_list(values, "condition value")
            if rules.strict:
                for value in wanted:
                    if not _valid_condition_value(base_operator(op), value):
                        raise PolicyDocumentError(
                            f"Invalid Condition value for {base_operator(op)}: {value[:100]}"
                        )
            st.conditions.append((op, key, wanted))
    return st


def vendor_action(action: str) -> str | None:
    """IAM's check of an identity policy's action: `*` or `vendor:pattern`."""
    if action == "*" or re.fullmatch(r"[A-Za-z0-9-]+:[A-Za-z0-9*?]*", action):
        return None
    return "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."


def arn_resource(resource: str) -> str | None:
    """IAM's check of an identity policy's resource: `*` or an ARN."""
    if resource == "*" or resource.startswith("arn:"):
        return None
    return f'Resource {resource[:200]} must be in ARN format or "*".'


# -- evaluation ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Context:
    """What a request looks like to a policy: action, resource arn, who, and condition keys (lower-case names)."""

    action: str
    resource: str
    account_id: str | None  # None: anonymous
    user_arn: str | None
    keys: dict[str, list[str]] = field(default_factory=dict)


_WILD_CACHE: dict[tuple[str, bool], re.Pattern[str]] = {}


def wild(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: `*` any run of characters, `?` one."""
    compiled = _WILD_CACHE.get((pattern, ignore_case))
    if compiled is None:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        compiled = re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))
        if len(_WILD_CACHE) > 4096:
            _WILD_CACHE.clear()
        _WILD_CACHE[(pattern, ignore_case)] = compiled
    return compiled.fullmatch(value) is not None


def _principal_matches(ids: list[str], ctx: Context) -> bool:
    for p in ids:
        if p == "*":
            return True
        if ctx.account_id is None:
            continue
        if p in (ctx.account_id, f"arn:aws:iam::{ctx.account_id}:root"):
            return True
        if ctx.user_arn is not None and wild(p, ctx.user_arn):
            return True
    return False


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _date(s: str) -> float | None:
    text = s.strip()
    if text.isdigit():
        return float(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _ordered(op: str, a: float, w: float) -> bool:
    return {
        "Equals": a == w,
        "LessThan": a < w,
        "LessThanEquals": a <= w,
        "GreaterThan": a > w,
        "GreaterThanEquals": a >= w,
    }.get(op, False)


def _compare(op: str, actual: str, wanted: str) -> bool:
    if op in ("StringEquals", "ArnEquals"):
        return actual == wanted
    if op == "StringEqualsIgnoreCase":
        return actual.lower() == wanted.lower()
    if op in ("StringLike", "ArnLike"):
        return wild(wanted, actual)
    if op == "Bool":
        return actual.lower() == wanted.lower()
    if op == "IpAddress":
        try:
            return ipaddress.ip_address(actual) in ipaddress.ip_network(wanted, strict=False)
        except ValueError:
            return False
    if op.startswith("Numeric"):
        a, w = _number(actual), _number(wanted)
        return a is not None and w is not None and _ordered(op.removeprefix("Numeric"), a, w)
    if op.startswith("Date"):
        da, dw = _date(actual), _date(wanted)
        return da is not None and dw is not None and _ordered(op.removeprefix("Date"), da, dw)
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


_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _expand(pattern: str, ctx: Context) -> str:
    """Policy variables in a resource (`arn:aws:s3:::home/${aws:username}/*`): the request's value of the key;
    `${*}`, `${?}`, `${$}` the character itself. A key the request lacks matches nothing (IAM's rule)."""
    if "${" not in pattern:
        return pattern

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in ("*", "?", "$"):
            return name
        found = ctx.keys.get(name.lower())
        return found[0] if found else "\0"  # no request value: a character no ARN holds

    return _VARIABLE.sub(value, pattern)


def statement_applies(st: Statement, ctx: Context) -> bool:
    if st.principals is not None and not _principal_matches(st.principals, ctx):
        return False
    if st.not_principals is not None and _principal_matches(st.not_principals, ctx):
        return False
    if st.actions is not None and not any(wild(a, ctx.action, True) for a in st.actions):
        return False
    if st.not_actions is not None and any(wild(a, ctx.action, True) for a in st.not_actions):
        return False
    if st.resources is not None and not any(wild(_expand(r, ctx), ctx.resource) for r in st.resources):
        return False
    if st.not_resources is not None and any(wild(_expand(r, ctx), ctx.resource) for r in st.not_resources):
        return False
    return all(_condition(op, key, values, ctx) for op, key, values in st.conditions)


def evaluate(policy: Policy, ctx: Context) -> str | None:
    """ "Deny" if any statement denies, else "Allow" if one allows, else None (the policy has no opinion).
    Limit statements have no say here."""
    verdict = None
    for st in policy.statements:
        if st.effect == LIMIT:
            continue
        if statement_applies(st, ctx):
            if st.effect == DENY:
                return DENY
            verdict = ALLOW
    return verdict


# The quota keys of Eucalyptus's Limit statements (lower-case).
QUOTA_KEYS = frozenset(
    {
        "ec2:quota-vminstancenumber",
        "ec2:quota-cputotalsize",
        "ec2:quota-memorytotalsize",
        "ec2:quota-disktotalsize",
        "ec2:quota-volumenumber",
        "ec2:quota-volumetotalsize",
        "ec2:quota-snapshotnumber",
        "ec2:quota-addressnumber",
        "s3:quota-bucketnumber",
        "s3:quota-bucketobjectnumber",
        "s3:quota-buckettotalsize",
        "iam:quota-usernumber",
        "iam:quota-groupnumber",
        "iam:quota-rolenumber",
    }
)


def limits(policies: Iterable[Policy], action: str, resource: str) -> dict[str, int]:
    """The smallest value each quota key has in the Limit statements that match `action` on `resource`."""
    found: dict[str, int] = {}
    ctx = Context(action, resource, None, None)
    for p in policies:
        for st in p.statements:
            if st.effect != LIMIT or not _matches_target(st, ctx):
                continue
            for _, key, values in st.conditions:
                for value in values:
                    number = _number(value)
                    if number is not None:
                        k = key.lower()
                        found[k] = min(found.get(k, int(number)), int(number))
    return found


def _matches_target(st: Statement, ctx: Context) -> bool:
    if st.actions is not None and not any(wild(a, ctx.action, True) for a in st.actions):
        return False
    if st.not_actions is not None and any(wild(a, ctx.action, True) for a in st.not_actions):
        return False
    if st.resources is not None and not any(wild(r, ctx.resource) for r in st.resources):
        return False
    return not (st.not_resources is not None and any(wild(r, ctx.resource) for r in st.not_resources))


def evaluate_all(policies: Iterable[Policy], ctx: Context) -> str | None:
    """Several policies as one: a Deny in any wins, else an Allow in any, else None."""
    verdict = None
    for p in policies:
        answer = evaluate(p, ctx)
        if answer == DENY:
            return DENY
        if answer == ALLOW:
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
