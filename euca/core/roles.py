"""What the supervisor and the roles agree on: a role's shape (`Role`, the `App`s it mounts), the context
it is created with (`RoleContext`), and the `Dispatcher` that hands each request on a shared listener to the
app it is for. Roles import this module, never the supervisor that runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from euca.core.components import Components
from euca.core.config import Config
from euca.core.http import Request, Response
from euca.core.identity import Identity
from euca.core.pki import CloudCA
from euca.core.store import Store


class App(Protocol):
    """What a role mounts on an HTTP listener."""

    name: str
    # SigV4 credential-scope service names this app answers ("s3", "ec2").
    services: frozenset[str]
    # Path prefixes that select this app and are stripped before it sees the request.
    path_prefixes: tuple[str, ...]
    # An app may set `tls = True` (ClusterApp does): its listener then serves mutual TLS with the role's
    # component certificate, and the caller's certificate subject is on request.context["peer"].

    def claims(self, request: Request) -> bool:
        """A last look for requests no prefix or signature placed (virtual hosts, `?Action=`)."""
        ...

    async def handle(self, request: Request) -> Response: ...


class Role(Protocol):
    name: str
    apps: list[App]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the role; calls task_status.started() when ready; runs until cancelled."""
        ...


@dataclass
class RoleContext:
    config: Config
    store: Store
    identity: Identity
    # The full CA on the CLC host (or one-box); on a host that joined the cloud, the CA certificate only
    # (ca.has_key is False and ca.issue raises NoCAKey).
    ca: CloudCA
    # This host's component certificates (pki/components): TLS contexts, node image key.
    components: Components
    # Filled in once listeners are bound: role name -> "http://host:port" ("https://" for TLS listeners).
    endpoints: dict[str, str] = field(default_factory=dict)
    # Called by the supervisor once every listener is up (port 0 resolved).
    on_ready: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def _scope_service(request: Request) -> str | None:
    """The service named in a SigV4 credential scope (header or presigned query), if any."""
    auth = request.headers.get("authorization") or ""
    idx = auth.find("Credential=")
    if idx >= 0:
        scope = auth[idx + len("Credential=") :].split(",", 1)[0].strip()
        parts = scope.split("/")
        return parts[3] if len(parts) >= 5 else None
    q = request.query
    idx = q.find("X-Amz-Credential=")
    if idx >= 0:
        scope = q[idx + len("X-Amz-Credential=") :].split("&", 1)[0].replace("%2F", "/").replace("%2f", "/")
        parts = scope.split("/")
        return parts[3] if len(parts) >= 5 else None
    return None


class Dispatcher:
    """Chooses the app for a request: path prefix, then signature scope, then claims, then the default."""

    def __init__(self, apps: list[App]):
        self.apps = apps
        self.default = apps[-1] if apps else None
        for app in apps:  # S3 takes what nobody claims: its paths are arbitrary bucket names.
            if "s3" in app.services:
                self.default = app

    async def __call__(self, request: Request) -> Response:
        app = self.choose(request)
        if app is None:
            return Response(404, [("Content-Type", "text/plain")], b"no service here\n")
        return await app.handle(request)

    def choose(self, request: Request) -> App | None:
        request.context["raw_path"] = request.path
        for app in self.apps:
            for prefix in app.path_prefixes:
                if request.path == prefix or request.path.startswith(prefix + "/"):
                    request.context["mount"] = prefix
                    request.path = request.path[len(prefix) :] or "/"
                    return app
        service = _scope_service(request)
        if service is not None:
            for app in self.apps:
                if service in app.services:
                    return app
        for app in self.apps:
            if app.claims(request):
                return app
        return self.default
