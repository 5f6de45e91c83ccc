"""Authorisation by identity policies, for every role that authenticates: what a principal's IAM policies
(its own, its groups', an assumed role's) say about one action on one resource.

    verdict = await identity_verdict(identity, principal, "ec2:RunInstances", "*", keys)
    -> "Allow", "Deny" (explicit) or None (no policy allows: an implicit deny)

An account's `admin` user (and its sessions) may do everything in its account: "Allow" without looking.
Policies are parsed once per principal and kept until identity changes (any process's IAM write moves the
shared change counter, euca.core.iam.changes). Each service combines the verdict with its own resource rules
(S3: bucket policies and ACLs) as AWS does; the condition keys every request has come from `request_keys`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from euca.core.http_messages import Request
from euca.core.iam import policies as iam_policies
from euca.core.identity import Identity, Principal
from euca.protocol import policy
from euca.protocol.policy import ALLOW, Context, Policy

log = logging.getLogger("euca.authorize")

# Stored documents were checked when they were put; read back, they are parsed leniently (never dropped).
_STORED = policy.Rules(
    principal="forbidden", resource_required=False, max_body_bytes=1 << 20, strict=False, allow_limit=True
)


def _owner(principal: Principal) -> tuple[str, str]:
    if principal.role_name is not None:
        return "role", principal.role_name
    return "user", principal.user_name


class PrincipalPolicies:
    """A principal's parsed identity policies, and the verdicts already reached for (action, resource) when no
    statement has a condition or a policy variable (the verdict then depends on nothing else): a repeated
    request costs one lookup."""

    __slots__ = ("policies", "conditional", "verdicts")

    def __init__(self, found: list[Policy]):
        self.policies = found
        # Conditions, and variables in resources (`${aws:SourceIp}`), make a verdict depend on the request.
        self.conditional = any(
            st.effect != policy.LIMIT
            and (st.conditions or any("${" in r for r in (st.resources or []) + (st.not_resources or [])))
            for p in found
            for st in p.statements
        )
        self.verdicts: dict[tuple[str, str], str | None] = {}

    def verdict(self, ctx: Context) -> str | None:
        if self.conditional:
            return policy.evaluate_all(self.policies, ctx)
        key = (ctx.action, ctx.resource)
        try:
            return self.verdicts[key]
        except KeyError:
            pass
        answer = policy.evaluate_all(self.policies, ctx)
        if len(self.verdicts) > 4096:
            self.verdicts.clear()
        self.verdicts[key] = answer
        return answer


async def identity_policies(identity: Identity, principal: Principal) -> PrincipalPolicies:
    kind, name = _owner(principal)
    return await owner_policies(identity, principal.account_id, kind, name)


async def owner_policies(identity: Identity, account_id: str, kind: str, name: str) -> PrincipalPolicies:
    """The parsed policies of one user (with its groups') or role, cached until identity changes."""
    identity.check_changes()
    key = (account_id, kind, name)
    found: PrincipalPolicies | None = identity.policy_cache.get(key)
    if found is None:
        documents = await identity.store.read(
            lambda tx: iam_policies.effective_documents(tx, account_id, kind, name)
        )
        parsed = []
        for document in documents:
            try:
                parsed.append(policy.parse(document, _STORED))
            except policy.PolicyDocumentError as e:  # never expected: logged, and the document grants nothing
                log.warning("stored policy unreadable account=%s %s=%s: %s", account_id, kind, name, e)
        found = PrincipalPolicies(parsed)
        if len(identity.policy_cache) > 10000:
            identity.policy_cache.clear()
        identity.policy_cache[key] = found
    return found


def request_keys(principal: Principal, request: Request | None, now: float) -> dict[str, list[str]]:
    """The global condition keys of a request (lower-case names, as the evaluator looks them up)."""
    source_ip = request.client[0] if request is not None and request.client else None
    secure = request is not None and "peer" in request.context  # the listener served TLS
    keys = {
        "aws:securetransport": ["true" if secure else "false"],
        "aws:currenttime": [datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")],
        "aws:epochtime": [str(int(now))],
        "aws:principalaccount": [principal.account_id],
        "aws:principalarn": [principal.arn],
        "aws:principaltype": ["AssumedRole" if principal.role_name is not None else "User"],
    }
    if source_ip:
        keys["aws:sourceip"] = [source_ip]
    if principal.role_name is None:
        keys["aws:username"] = [principal.user_name]
        keys["aws:userid"] = [principal.user_id]
    else:
        keys["aws:userid"] = [f"{principal.role_id}:{principal.session_name}"]
    return keys


async def identity_verdict(
    identity: Identity, principal: Principal, action: str, resource: str, keys: dict[str, list[str]]
) -> str | None:
    if principal.is_account_admin:
        return ALLOW
    found = await identity_policies(identity, principal)
    return found.verdict(Context(action, resource, principal.account_id, principal.arn, keys))
