"""The IAM (Eucalyptus's Euare, /services/Euare) and STS (/services/Tokens) Query endpoints of the CLC: body ->
authentication -> typed parameters (botocore's models, euca.protocol.query) -> authorisation -> handler -> XML.
Both also answer requests whose SigV4 scope names `iam` or `sts`, wherever they are sent on the CLC's port."""

from __future__ import annotations

import logging
from typing import Any

from euca.core import quotas
from euca.core.auth import AuthError, BodyTooLarge, authenticate_query
from euca.core.authorize import identity_verdict, request_keys
from euca.core.http import Request, Response
from euca.core.iam import roles
from euca.core.identity import ADMIN_USER, Principal, find_account_tx
from euca.core.quotas import quota_limits
from euca.core.roles import RoleContext
from euca.protocol import policy
from euca.protocol.errors import CodedError
from euca.protocol.query import wire
from euca.protocol.query.wire import QueryError
from euca.roles.clc.iam import accounts, api, sts
from euca.roles.clc.iam.call import Handler, QueryCall

log = logging.getLogger("euca.clc")

MAX_BODY = 1024 * 1024
XML = [("Content-Type", "text/xml;charset=UTF-8")]

# How an authentication failure reads to an IAM or STS client.
_AUTH_CODES = {
    "InvalidAccessKeyId": (
        "InvalidClientTokenId",
        "The security token included in the request is invalid.",
        403,
    ),
    "AccessDenied": ("AccessDenied", None, 403),
    "InvalidToken": ("InvalidClientTokenId", "The security token included in the request is invalid.", 403),
    "ExpiredToken": ("ExpiredToken", "The security token included in the request is expired", 400),
    "RequestTimeTooSkewed": ("RequestExpired", None, 400),
    "MissingSecurityHeader": ("MissingAuthenticationToken", None, 403),
    "AuthorizationHeaderMalformed": ("IncompleteSignature", None, 400),
    "AuthorizationQueryParametersError": ("IncompleteSignature", None, 400),
}


def auth_failure(error: AuthError) -> QueryError:
    code, message, status = _AUTH_CODES.get(error.code, (error.code, None, error.status))
    return QueryError(code, message or error.message, status)


def not_authorized(call: QueryCall, service: str, action: str, resource: str) -> QueryError:
    return QueryError(
        "AccessDenied",
        f"User: {call.principal.arn} is not authorized to perform: {service}:{action} on resource: {resource}",
        403,
    )


class QueryApi:
    """Parses, authenticates, authorises and dispatches one request of a query-protocol service."""

    def __init__(self, ctx: RoleContext, service: str, handlers: dict[str, Handler]):
        self.ctx = ctx
        self.service = service
        self.handlers = handlers

    async def __call__(self, request: Request) -> Response:
        request_id = wire.new_request_id()
        try:
            action, params, call = await self._parse(request, request_id)
            result = await self.dispatch(call, action, params)
            return Response(200, list(XML), wire.render_response(self.service, action, result, request_id))
        except QueryError as e:
            return Response(e.status, list(XML), wire.render_error(self.service, e, request_id))
        except CodedError as e:
            error = QueryError(e.code, e.message, e.status)
            return Response(error.status, list(XML), wire.render_error(self.service, error, request_id))
        except Exception:
            log.exception("%s request failed request_id=%s", self.service.upper(), request_id)
            error = QueryError("ServiceFailure", "An internal error has occurred.", 500)
            return Response(500, list(XML), wire.render_error(self.service, error, request_id))

    async def _parse(self, request: Request, request_id: str) -> tuple[str, dict[str, Any], QueryCall]:
        try:
            params, result = await authenticate_query(
                request,
                self.ctx.identity,
                service=self.service,
                region=self.ctx.config.region,
                max_body=MAX_BODY,
                parse_form=wire.parse_form,
            )
        except BodyTooLarge:
            raise QueryError(
                "ValidationError", f"The request body is larger than {MAX_BODY} bytes."
            ) from None
        except AuthError as e:
            raise auth_failure(e) from None
        if result.principal is None:
            raise QueryError("MissingAuthenticationToken", "Request is missing Authentication Token", 403)
        env = wire.envelope(self.service, params)
        account_id = result.principal.account_id
        if env.delegate:
            account_id = await self._delegated(result.principal, env.delegate)
        call = QueryCall(self.ctx, result.principal, request_id, account_id, request)
        return env.action, wire.decode_input(self.service, env.action, env.params), call

    async def _delegated(self, principal: Principal, delegate: str) -> str:
        """The account a DelegateAccount names (by name or id): the cloud administrator's alone to use."""
        if not principal.is_cloud_admin or not principal.is_account_admin:
            raise QueryError("AccessDenied", "Only the cloud administrator may act in another account.", 403)
        found = await self.ctx.store.read(lambda tx: find_account_tx(tx, delegate))
        if found is None:
            raise QueryError("NoSuchEntity", f"The account with name {delegate} cannot be found.")
        return found.account_id

    async def dispatch(self, call: QueryCall, action: str, params: dict[str, Any]) -> dict[str, Any] | None:
        handler = self.handlers.get(action)
        if handler is None:
            raise QueryError("NotImplemented", f"The action {action} is not supported by this cloud.", 501)
        if action in accounts.HANDLERS:
            # Account operations are the cloud administrator's (its admin user), never granted by a policy.
            if not (call.principal.is_cloud_admin and call.principal.is_account_admin):
                raise not_authorized(call, "iam", action, f"arn:aws:iam::{call.principal.account_id}:*")
        elif self.service == "iam":
            await authorise_iam(call, action, params)
        # STS: GetCallerIdentity and GetSessionToken need no permission (as in AWS); AssumeRole decides itself.
        return await handler(call, params)


# The parameter that names the entity an IAM action acts on, and the ARN kind it makes.
_ENTITY_PARAMS = (
    ("UserName", "user"),
    ("GroupName", "group"),
    ("RoleName", "role"),
    ("InstanceProfileName", "instance-profile"),
)


def iam_resource(call: QueryCall, action: str, params: dict[str, Any]) -> str:
    """The ARN an IAM action is authorised on: the entity it names (a managed policy by its ARN; the caller
    itself for key, certificate and login actions without a user), else the account's IAM resources."""
    account = call.account_id
    if "PolicyArn" in params and not action.startswith(("Attach", "Detach")):
        return str(params["PolicyArn"])
    if action in ("CreatePolicy",):
        return f"arn:aws:iam::{account}:policy{params.get('Path') or '/'}{params['PolicyName']}"
    for param, kind in _ENTITY_PARAMS:
        if param in params:
            path = params.get("Path") or "/" if action.startswith("Create") else "/"
            return f"arn:aws:iam::{account}:{kind}{path}{params[param]}"
    if action in api.CALLER_DEFAULT_ACTIONS:
        return call.principal.arn
    return f"arn:aws:iam::{account}:*"


async def authorise_iam(call: QueryCall, action: str, params: dict[str, Any]) -> None:
    """The account's admin user may do everything in its account, the cloud admin in any; anyone else what
    its identity policies allow (an explicit Deny wins)."""
    principal = call.principal
    resource = iam_resource(call, action, params)
    if principal.account_id != call.account_id and not principal.is_cloud_admin:
        raise not_authorized(call, "iam", action, resource)
    if (
        action in _ADMIN_USER_POLICY_ACTIONS
        and str(params.get("UserName", "")).lower() == ADMIN_USER
        and not principal.is_cloud_admin
    ):
        # The admin user's policies are the account's quotas (Limit statements): the cloud administrator's
        # to set, as in Eucalyptus (an account admin may read them, not change them).
        raise not_authorized(call, "iam", action, resource)
    keys = request_keys(principal, call.request, call.ctx.identity.clock())
    verdict = await identity_verdict(call.ctx.identity, principal, f"iam:{action}", resource, keys)
    if verdict != policy.ALLOW:
        raise not_authorized(call, "iam", action, resource)
    if action in _COUNTED:
        await _check_quota(call, action, resource)


_ADMIN_USER_POLICY_ACTIONS = frozenset(
    {"PutUserPolicy", "DeleteUserPolicy", "AttachUserPolicy", "DetachUserPolicy"}
)
# What an IAM action adds, by quota key: the entity count of the account.
_COUNTED = {
    "CreateUser": ("iam:quota-usernumber", "Users"),
    "CreateGroup": ("iam:quota-groupnumber", "Groups"),
    "CreateRole": ("iam:quota-rolenumber", "Roles"),
}


async def _check_quota(call: QueryCall, action: str, resource: str) -> None:
    key, counted = _COUNTED[action]
    found = await quota_limits(call.ctx.identity, call.principal, f"iam:{action}", resource, call.account_id)
    if key not in found:
        return
    summary = await call.read(lambda tx: roles.account_summary(tx, call.account_id))
    try:
        quotas.check(found, key, current=summary[counted], adding=1)
    except quotas.QuotaExceeded as e:
        raise QueryError("LimitExceeded", f"Cannot exceed quota for {key}: {e.limit}") from None


class IamApp:
    name = "iam"
    services = frozenset({"iam"})
    path_prefixes = ("/services/Euare",)

    def __init__(self, ctx: RoleContext):
        self.api = QueryApi(ctx, "iam", {**api.HANDLERS, **accounts.HANDLERS})

    def claims(self, request: Request) -> bool:
        return False

    async def handle(self, request: Request) -> Response:
        return await self.api(request)


class StsApp:
    name = "sts"
    services = frozenset({"sts"})
    path_prefixes = ("/services/Tokens",)

    def __init__(self, ctx: RoleContext):
        self.api = QueryApi(ctx, "sts", sts.HANDLERS)

    def claims(self, request: Request) -> bool:
        return False

    async def handle(self, request: Request) -> Response:
        return await self.api(request)
