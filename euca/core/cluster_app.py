"""The cluster listener's app: mutual-TLS callers, cluster messages in, replies or Faults out.

A CC or NC role mounts `ClusterApp(role, handlers)` as its App. The supervisor serves an app with
`tls = True` on a TLS listener (euca/core/supervisor.py), so the caller's verified certificate is on
`request.context["peer"]`. Order of checks: the caller's OU against ALLOWED_CALLERS, its serial against the
cloud CA's revocation list (a deregistered component's certificate: refused at once), and, where the app
was given one, its CN against `caller_name` (an NC: the CC of its own cluster, whose CN is the cluster) —
403 Unauthorized before anything is decoded — then the message (400 BadMessage), then the handler. Every answer is JSON:
a reply struct, or a `Fault` — never an HTML page or a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from euca.core.components import Revocations
from euca.core.http import Peer, Request, Response
from euca.protocol.cluster import (
    ALLOWED_CALLERS,
    PATH_PREFIX,
    BadMessage,
    ClusterFault,
    DescribeResources,
    NcDescribeNode,
    NcDescribeResource,
    decode_request,
    encode_fault,
    encode_reply,
)

log = logging.getLogger("euca.cluster")

# RunInstances of many instances with user data and download manifests stays well under this.
MAX_BODY = 64 * 1024 * 1024

JSON = [("Content-Type", "application/json")]

ClusterHandler = Callable[[Any, Peer], Awaitable[msgspec.Struct]]


def fault_response(status: int, code: str, message: str) -> Response:
    return Response(status, list(JSON), encode_fault(code, message))


class ClusterApp:
    """An App (euca.core.roles.App) answering POST /cluster/<Message> for one role.

    handlers: message type -> `async def handler(message, peer) -> reply struct`; a handler raises
    ClusterFault(code, message, status) for an answer the caller should see as a fault.
    caller_name: when given, the CN a caller must have as well as an allowed OU (an NC passes its cluster,
    so only that cluster's CC drives it; without it any CC of the cloud could).
    """

    services: frozenset[str] = frozenset()
    path_prefixes: tuple[str, ...] = (PATH_PREFIX.rstrip("/"),)
    tls = True  # the supervisor serves this app on a mutual-TLS listener

    def __init__(
        self,
        role: str,
        handlers: Mapping[type, ClusterHandler],
        *,
        caller_name: str | None = None,
        revocations: Revocations | None = None,
    ):
        if role not in ALLOWED_CALLERS:
            raise ValueError(f"no cluster listener is defined for role {role!r}")
        self.name = role
        self.role = role
        self.allowed = ALLOWED_CALLERS[role]
        self.caller_name = caller_name
        # The cloud CA's revocation list; the supervisor hands in its host's when the role did not.
        self.revocations = revocations
        self.handlers = dict(handlers)

    def _refuse(self, request: Request, peer: Peer | None, why: str) -> Response:
        who = f"{peer.role}/{peer.name}" if peer is not None else "no certificate"
        log.warning("cluster call refused role=%s caller=%s path=%s", self.role, who, request.path[:100])
        return fault_response(403, "Unauthorized", why)

    def claims(self, request: Request) -> bool:
        return False

    async def handle(self, request: Request) -> Response:
        peer = request.context.get("peer")
        if not isinstance(peer, Peer) or peer.role not in self.allowed:
            return self._refuse(
                request,
                peer if isinstance(peer, Peer) else None,
                f"a {self.role} takes calls from {sorted(self.allowed)} only",
            )
        if self.revocations is not None and self.revocations.is_revoked(peer.serial):
            return self._refuse(request, peer, "the caller's certificate is revoked")
        if self.caller_name is not None and peer.name != self.caller_name:
            return self._refuse(
                request,
                peer,
                f"this {self.role} takes calls from the {peer.role} of cluster {self.caller_name} only",
            )
        if request.method != "POST":
            return fault_response(405, "BadMessage", "cluster messages are sent with POST")
        try:
            body = await request.body.read_all(MAX_BODY)
        except ValueError:
            return fault_response(413, "BadMessage", f"message larger than {MAX_BODY} bytes")
        try:
            message = decode_request(request.path, body)
        except BadMessage as e:
            return fault_response(400, "BadMessage", str(e))
        if (
            isinstance(message, DescribeResources | NcDescribeResource | NcDescribeNode)
            and message.crl
            and self.revocations is not None
        ):
            self.revocations.accept(message.crl.encode())  # a poll carries the CLC's CRL: keep it when newer
        handler = self.handlers.get(type(message))
        if handler is None:
            return fault_response(
                400, "BadMessage", f"a {self.role} does not answer {type(message).__name__}"
            )
        try:
            reply = await handler(message, peer)
        except ClusterFault as e:
            log.info(
                "cluster fault message=%s caller=%s code=%s status=%d",
                type(message).__name__,
                peer.name,
                e.code,
                e.status,
            )
            return fault_response(e.status, e.code, e.message)
        except Exception:
            log.exception("cluster handler failed message=%s caller=%s", type(message).__name__, peer.name)
            return fault_response(500, "InternalError", f"{type(message).__name__} failed on the {self.role}")
        return Response(200, list(JSON), encode_reply(reply))
