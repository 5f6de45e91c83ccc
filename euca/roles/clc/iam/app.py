"""The IAM (Eucalyptus's Euare, /services/Euare) and STS (/services/Tokens) Query endpoints of the CLC: body ->
authentication -> typed parameters (botocore's models, euca.protocol.query) -> authorisation -> handler -> XML.
Both also answer requests whose SigV4 scope names `iam` or `sts`, wherever they are sent on the CLC's port."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from euca.core.auth import AuthError, authenticate
from euca.core.http import Request, Response
from euca.core.roles import RoleContext
from euca.protocol.errors import CodedError
from euca.protocol.query import wire
from euca.protocol.query.wire import QueryError
from euca.roles.clc.iam import api
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
            body = await request.body.read_all(MAX_BODY)
        except ValueError:
            raise QueryError(
                "ValidationError", f"The request body is larger than {MAX_BODY} bytes."
            ) from None
        ctype = request.headers.get("content-type")
        form = wire.parse_form("", body, ctype) if request.method == "POST" else None
        params = wire.parse_form(request.query, body if request.method == "POST" else b"", ctype)
        try:
            result = await authenticate(
                request,
                self.ctx.identity,
                service=self.service,
                region=self.ctx.config.region,
                body_sha256=hashlib.sha256(body).hexdigest(),
                form=form,
            )
        except AuthError as e:
            raise auth_failure(e) from None
        if result.principal is None:
            raise QueryError("MissingAuthenticationToken", "Request is missing Authentication Token", 403)
        env = wire.envelope(self.service, params)
        call = QueryCall(self.ctx, result.principal, request_id, result.principal.account_id)
        return env.action, wire.decode_input(self.service, env.action, env.params), call

    async def dispatch(self, call: QueryCall, action: str, params: dict[str, Any]) -> dict[str, Any] | None:
        handler = self.handlers.get(action)
        if handler is None:
            raise QueryError("NotImplemented", f"The action {action} is not supported by this cloud.", 501)
        self.authorise(call, action)
        return await handler(call, params)

    def authorise(self, call: QueryCall, action: str) -> None:
        """The account's admin user may do everything in its account, the cloud admin in any. Anyone else
        needs a policy allowing it."""
        principal = call.principal
        if principal.user_name == "admin" and (
            principal.account_id == call.account_id or principal.is_cloud_admin
        ):
            return
        raise not_authorized(call, self.service, action, f"arn:aws:iam::{call.account_id}:*")


class IamApp:
    name = "iam"
    services = frozenset({"iam"})
    path_prefixes = ("/services/Euare",)

    def __init__(self, ctx: RoleContext):
        self.api = QueryApi(ctx, "iam", api.HANDLERS)

    def claims(self, request: Request) -> bool:
        return False

    async def handle(self, request: Request) -> Response:
        return await self.api(request)
