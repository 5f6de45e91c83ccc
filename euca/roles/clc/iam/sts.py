"""STS's handlers: GetCallerIdentity, GetSessionToken, AssumeRole (the role's trust policy checked, then the
caller's own identity policies, as AWS does for a role of the caller's account or another)."""

from __future__ import annotations

import re
from typing import Any

from euca.core.authorize import identity_verdict, request_keys
from euca.core.iam import roles, sessions
from euca.core.iam.common import TRUST_RULES, checked_document, when
from euca.protocol import policy
from euca.protocol.query.wire import QueryError
from euca.roles.clc.iam.call import Handler, QueryCall

SESSION_DEFAULT = 43200
SESSION_RANGE = (900, 129600)
ROLE_DEFAULT = 3600
_ROLE_ARN = re.compile(r"^arn:aws:iam::(\d{12}):role/(?:[^/]+/)*([\w+=,.@-]+)$")
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")


def _credentials(session: sessions.Session) -> dict[str, Any]:
    return {
        "AccessKeyId": session.access_key_id,
        "SecretAccessKey": session.secret_key,
        "SessionToken": session.token,
        "Expiration": when(session.expires),
    }


def _duration(value: int | None, default: int, lo: int, hi: int) -> int:
    seconds = default if value is None else value
    if not lo <= seconds <= hi:
        raise QueryError(
            "ValidationError",
            f"1 validation error detected: Value '{seconds}' at 'durationSeconds' failed to satisfy constraint: "
            f"Member must have value {'less' if seconds > hi else 'greater'} than or equal to "
            f"{hi if seconds > hi else lo}",
        )
    return seconds


async def get_caller_identity(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    principal = call.principal
    user_id = (
        f"{principal.role_id}:{principal.session_name}"
        if principal.role_name is not None
        else principal.user_id
    )
    return {"UserId": user_id, "Account": principal.account_id, "Arn": principal.arn}


async def get_session_token(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    principal = call.principal
    if principal.temporary:
        raise QueryError("AccessDenied", "Cannot call GetSessionToken with session credentials", 403)
    seconds = _duration(p.get("DurationSeconds"), SESSION_DEFAULT, *SESSION_RANGE)
    now = call.ctx.identity.clock()
    session = await call.ctx.store.write(
        lambda tx: sessions.create(tx, principal.account_id, principal.user_name, now, seconds), durable=True
    )
    return {"Credentials": _credentials(session)}


async def assume_role(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    principal = call.principal
    role_arn, session_name = str(p["RoleArn"]), str(p["RoleSessionName"])
    if not _SESSION_NAME.match(session_name):
        raise QueryError("ValidationError", "The specified value for roleSessionName is invalid.")
    if p.get("Policy") or p.get("PolicyArns"):
        # A session policy narrows the role; without evaluating it the session would get more than was asked.
        raise QueryError("ValidationError", "Session policies are not supported by this cloud.")
    denied = QueryError(
        "AccessDenied",
        f"User: {principal.arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
        403,
    )
    m = _ROLE_ARN.match(role_arn)
    if m is None:
        raise QueryError("ValidationError", f"{role_arn} is invalid")
    account_id, role_name = m.group(1), m.group(2)
    try:
        role, trust_text = await call.read(lambda tx: roles.role_trust_policy(tx, account_id, role_name))
    except QueryError:
        raise denied from None
    if role["Arn"] != role_arn:
        raise denied
    now = call.ctx.identity.clock()
    keys = request_keys(principal, call.request, now)
    trust = checked_document(trust_text, TRUST_RULES)
    context = policy.Context("sts:AssumeRole", role_arn, principal.account_id, principal.arn, keys)
    if policy.evaluate(trust, context) != policy.ALLOW:
        raise denied
    # The trust policy lets the caller's account in; the caller's own policies must let the caller out, unless
    # the trust policy names the caller itself (AWS: a principal named in the trust policy needs nothing more).
    named = any(
        st.effect == policy.ALLOW and st.principals is not None and principal.arn in st.principals
        for st in trust.statements
    )
    if not named:
        verdict = await identity_verdict(call.ctx.identity, principal, "sts:AssumeRole", role_arn, keys)
        if verdict != policy.ALLOW:
            raise denied
    # Role chaining (a role session assuming a role) is limited to an hour, as AWS limits it.
    hi = ROLE_DEFAULT if principal.role_name is not None else int(role["MaxSessionDuration"])
    seconds = _duration(p.get("DurationSeconds"), ROLE_DEFAULT, 900, hi)
    session = await call.ctx.store.write(
        lambda tx: sessions.create(
            tx,
            account_id,
            principal.user_name,
            now,
            seconds,
            role_name=role["RoleName"],
            role_id=role["RoleId"],
            session_name=session_name,
        ),
        durable=True,
    )
    return {
        "Credentials": _credentials(session),
        "AssumedRoleUser": {
            "AssumedRoleId": f"{role['RoleId']}:{session_name}",
            "Arn": f"arn:aws:sts::{account_id}:assumed-role/{role['RoleName']}/{session_name}",
        },
    }


HANDLERS: dict[str, Handler] = {
    "GetCallerIdentity": get_caller_identity,
    "GetSessionToken": get_session_token,
    "AssumeRole": assume_role,
}
