"""The EC2 Query endpoint of the CLC: body -> authentication -> typed request -> handler -> XML.

Handlers never see the wire: they take the request Struct euca.protocol.ec2 parsed and return a result
Struct (or None for actions whose answer is just `<return>true</return>`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from euca.core.auth import AuthError, BodyTooLarge, authenticate_query
from euca.core.authorize import identity_policies, identity_verdict, request_keys
from euca.core.http import Request, Response
from euca.core.identity import Principal
from euca.core.roles import RoleContext
from euca.core.store import Tx
from euca.protocol import policy
from euca.protocol.ec2 import messages, wire
from euca.protocol.ec2.wire import Ec2Error
from euca.protocol.policy import ALLOW
from euca.roles.clc.cluster_link import ClusterLink

log = logging.getLogger("euca.clc")

# Query API bodies are small forms; anything bigger is not an EC2 request.
MAX_BODY = 1024 * 1024

XML = [("Content-Type", "text/xml;charset=UTF-8")]


@dataclass(frozen=True)
class Ec2Call:
    """One authenticated EC2 call as handlers see it."""

    ctx: RoleContext
    principal: Principal
    request_id: str
    # The CLC's connection to its clusters (caller, node image certificate, poller poke); None where the
    # API runs without one (a handler needing it answers Unavailable).
    cluster: ClusterLink | None = None
    # The HTTP request (the client's address and transport, for policy conditions); None in handler tests.
    request: Request | None = None

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    def network_changed(self) -> None:
        """Groups, rules or public addresses changed: poll the clusters now (each poll carries the cluster's
        network view), so their networks follow within a poll round trip."""
        if self.cluster is not None:
            self.cluster.poke()


Handler = Callable[[Ec2Call, Any], Awaitable[Any]]
TagsOf = Callable[[Tx, str, list[str]], dict[str, dict[str, str]]]

# How an authentication failure reads to an EC2 client (EC2 has no SignatureDoesNotMatch or
# InvalidAccessKeyId of its own: it answers AuthFailure).
_AUTH_CODES = {
    "InvalidAccessKeyId": ("AuthFailure", 401),
    "SignatureDoesNotMatch": ("AuthFailure", 401),
    "AccessDenied": ("AuthFailure", 401),
    "RequestTimeTooSkewed": ("RequestExpired", 400),
    "MissingSecurityHeader": ("MissingAuthenticationToken", 401),
    "AuthorizationHeaderMalformed": ("IncompleteSignature", 400),
    "AuthorizationQueryParametersError": ("IncompleteSignature", 400),
    # Temporary credentials: EC2 answers expired ones RequestExpired (its documented code), bad tokens AuthFailure.
    "InvalidToken": ("AuthFailure", 401),
    "ExpiredToken": ("RequestExpired", 400),
}


def auth_failure(error: AuthError) -> Ec2Error:
    code, status = _AUTH_CODES.get(error.code, (error.code, 400 if error.status < 500 else error.status))
    return Ec2Error(code, error.message, status)


class Ec2Api:
    """Parses, authenticates and dispatches one EC2 Query request."""

    def __init__(
        self,
        ctx: RoleContext,
        handlers: dict[str, Handler],
        cluster: ClusterLink | None = None,
        tags_of: TagsOf | None = None,
    ):
        self.ctx = ctx
        self.handlers = handlers
        self.cluster = cluster
        # The tags of resources by id (tags.records.tags_of, handed in by the composition root: tags' api
        # imports this module), for conditions on ec2:ResourceTag/...; None: no tags known.
        self.tags_of: TagsOf = tags_of if tags_of is not None else (lambda tx, account, ids: {})

    async def __call__(self, request: Request) -> Response:
        request_id = wire.new_request_id()
        version = wire.API_VERSION
        try:
            try:
                params, result = await authenticate_query(
                    request,
                    self.ctx.identity,
                    service="ec2",
                    region=self.ctx.config.region,
                    max_body=MAX_BODY,
                    parse_form=wire.parse_form,
                )
            except BodyTooLarge:
                raise Ec2Error(
                    "InvalidParameterValue", f"The request body is larger than {MAX_BODY} bytes."
                ) from None
            except AuthError as e:
                raise auth_failure(e) from None
            if result.principal is None:
                raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials")
            call = Ec2Call(self.ctx, result.principal, request_id, self.cluster, request)
            env = wire.envelope(params)
            version = env.version
            answer = await self.dispatch(call, env)
            return Response(200, list(XML), wire.render_response(env.action, answer, request_id, version))
        except Ec2Error as e:
            return Response(e.status, list(XML), wire.render_error(e, request_id))
        except Exception:
            log.exception("EC2 request failed request_id=%s", request_id)
            error = Ec2Error("InternalError", "An internal error has occurred.")
            return Response(error.status, list(XML), wire.render_error(error, request_id))

    async def dispatch(self, call: Ec2Call, env: wire.QueryEnvelope) -> Any:
        action = env.action
        handler = self.handlers.get(action)
        request_type = messages.REQUEST_TYPES.get(action)
        if handler is None or request_type is None:
            if not wire.is_known_action(action):
                raise Ec2Error("InvalidAction", f"The action {action} is not valid for this web service.")
            raise Ec2Error("UnsupportedOperation", f"The action {action} is not supported by this cloud.")
        typed = wire.parse_request(action, env.params, request_type)
        await self.authorise(call, action, typed)
        if getattr(typed, "dry_run", False):
            raise Ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
        return await handler(call, typed)

    async def authorise(self, call: Ec2Call, action: str, typed: Any) -> None:
        """The caller's identity policies must allow the action (an account's admin user: always) on each
        instance it names, or on the account's EC2 resources; an explicit Deny wins. AWS checks this before
        DryRun, so a dry run tells whether the call would be allowed."""
        principal = call.principal
        if principal.is_account_admin:
            return
        region, account = self.ctx.config.region, principal.account_id
        ids = getattr(typed, "instance_ids", None)
        resources = (
            [f"arn:aws:ec2:{region}:{account}:instance/{i}" for i in ids]
            if isinstance(ids, list) and ids and action != "DescribeInstances"
            else [f"arn:aws:ec2:{region}:{account}:*"]
        )
        keys = request_keys(principal, call.request, self.ctx.identity.clock())
        tags: dict[str, dict[str, str]] = {}
        if isinstance(ids, list) and ids and await self._reads_resource_tags(principal):
            read_tags = self.tags_of
            tags = await self.ctx.store.read(lambda tx: read_tags(tx, account, ids))
        for resource in resources:
            resource_keys = keys
            found = tags.get(resource.rsplit("/", 1)[-1])
            if found:
                resource_keys = dict(keys)
                for k, v in found.items():
                    resource_keys[f"ec2:resourcetag/{k.lower()}"] = [v]
                    resource_keys[f"aws:resourcetag/{k.lower()}"] = [v]
            verdict = await identity_verdict(
                self.ctx.identity, principal, f"ec2:{action}", resource, resource_keys
            )
            if verdict != ALLOW:
                raise Ec2Error(
                    "UnauthorizedOperation",
                    f"You are not authorized to perform this operation. User: {principal.arn} is not authorized "
                    f"to perform: ec2:{action} on resource: {resource}",
                )

    async def _reads_resource_tags(self, principal: Principal) -> bool:
        """Whether the caller's policies have a condition on a resource's tags (only then are tags read)."""
        found = await identity_policies(self.ctx.identity, principal)
        return any(
            policy.uses_key(p, "ec2:resourcetag/") or policy.uses_key(p, "aws:resourcetag/")
            for p in found.policies
        )
