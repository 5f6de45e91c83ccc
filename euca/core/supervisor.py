"""The role supervisor: runs the chosen roles in one trio nursery on a shared HTTP core.

Each role is a package `euca.roles.<name>` with `create(ctx) -> Role` (the shapes are in euca.core.roles).
The supervisor knows roles only by name; roles that share a listen address share one HTTP server, and a
dispatcher hands each request to the role it is for. A role reaches another only over HTTP through
euca/protocol, so `--role all` and one role per host take the same path. What a particular set of roles
does once all are up (the one-box's default image) comes in as start hooks from the caller.
"""

from __future__ import annotations

import importlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from euca.core import https
from euca.core.cluster_app import ClusterApp
from euca.core.components import (
    COMPONENT_ROLES,
    Components,
    component_hosts,
    component_name,
    ensure_components,
    open_cloud_ca,
)
from euca.core.config import ROLE_NAMES, Config
from euca.core.credentials import write_user_credentials
from euca.core.http import HttpServer
from euca.core.identity import ADMIN_ACCOUNT, ADMIN_USER, Identity
from euca.core.pki import CloudCA, NoCAKey
from euca.core.roles import App, Dispatcher, Role, RoleContext
from euca.core.store import open_store

log = logging.getLogger("euca.supervisor")


class RoleNotBuilt(Exception):
    """A role whose package exists but cannot run yet."""


def first_start(ctx: RoleContext) -> None:
    """Make the admin account, its key and its credentials directory (with a signing certificate), once.
    A directory from before certificates existed gets one added."""
    account, key, created = ctx.identity.ensure_admin()
    creds = ctx.config.data_path / "credentials" / ADMIN_ACCOUNT / ADMIN_USER
    if created or not (creds / "eucarc").exists() or not (creds / "cert.pem").exists():
        write_user_credentials(ctx.config, ctx.identity, ctx.ca, key, creds)
        log.info("credentials written account=%s dir=%s", account.name, creds)


# Run once every role has started and every on_ready callback has run (the one-box's default image is one).
StartHook = Callable[[RoleContext], Awaitable[None]]


class Supervisor:
    def __init__(self, config: Config, role_names: list[str], start_hooks: Sequence[StartHook] = ()):
        self.config = config
        self.role_names = role_names
        self.start_hooks = list(start_hooks)
        self.servers: list[HttpServer] = []
        self.ctx: RoleContext | None = None
        self.ready = False  # every role started (the graceful stop waits for that)
        self._stop = trio.Event()

    async def _serve_https(self, nursery: trio.Nursery, ctx: RoleContext, host: str, apps: list[App]) -> None:
        """The users' APIs on HTTPS (https.port) beside HTTP: the same apps through one Dispatcher, each request
        marked secure. A host with neither the CA key nor the operator's certificate serves HTTP only."""
        config = self.config
        try:
            context = await trio.to_thread.run_sync(https.server_context, config, ctx.ca)
        except (NoCAKey, OSError, ValueError) as e:
            log.error("https not started (set https.cert and https.key, or run where the cloud CA is): %s", e)
            return
        server = HttpServer(
            https.SecureDispatcher(Dispatcher(apps)), host, config.https.port, config.http, access_log=True,
            ssl_context=context,
        )  # fmt: skip
        bound = await nursery.start(server.serve)
        self.servers.append(server)
        public = config.public_host if host in ("0.0.0.0", "::", "") else host
        ctx.endpoints["https"] = f"https://{public}:{bound}"
        log.info("listening address=%s:%d tls=https apps=%s", host, bound, ",".join(a.name for a in apps))

    def open_context(self) -> RoleContext:
        cfg = self.config
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        store = open_store(cfg.store.url, cfg.data_path, cfg.store.synchronous)
        identity = Identity(store)
        ca = open_cloud_ca(cfg)
        components = open_components(cfg, ca, self.role_names)
        ctx = RoleContext(config=cfg, store=store, identity=identity, ca=ca, components=components)
        if ca.has_key:  # a joined host has no CA key: its admin credentials live on the CLC host
            first_start(ctx)
        return ctx

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started = time.monotonic()
        ctx = self.ctx = self.open_context()
        roles: list[Role] = []
        for name in self.role_names:
            module = importlib.import_module(f"euca.roles.{name}")
            roles.append(module.create(ctx))
        by_address: dict[tuple[str, int, str], list[tuple[str, App]]] = {}
        for role in roles:
            listen = self.config.listen_for(role.name)
            for app in role.apps:
                if isinstance(app, ClusterApp) and app.revocations is None:
                    app.revocations = ctx.components.revocations  # every cluster listener checks the CRL
                # Port 0 (tests: any free port) is a listener per role for TLS apps, which cannot share
                # one with plain apps or another role's certificate; fixed ports are shared as configured.
                own = role.name if listen.port == 0 and getattr(app, "tls", False) else ""
                by_address.setdefault((listen.host, listen.port, own), []).append((role.name, app))
        tls_roles = {key: listener_tls_role(key[:2], mounted) for key, mounted in by_address.items()}
        try:
            async with trio.open_nursery() as roles_nursery:
                async with trio.open_nursery() as http_nursery:
                    for (host, port, own), mounted in by_address.items():
                        tls_role = tls_roles[(host, port, own)]
                        server = HttpServer(
                            Dispatcher([app for _, app in mounted]),
                            host,
                            port,
                            self.config.http,
                            access_log=True,
                            ssl_context=ctx.components.server_context(tls_role) if tls_role else None,
                            # An app served by several processes (walrus.workers) shares its port.
                            reuse_port=any(getattr(app, "reuse_port", False) for _, app in mounted),
                        )
                        bound = await http_nursery.start(server.serve)
                        self.servers.append(server)
                        public = self.config.public_host if host in ("0.0.0.0", "::", "") else host
                        scheme = "https" if tls_role else "http"
                        for role_name, _ in mounted:
                            ctx.endpoints[role_name] = f"{scheme}://{public}:{bound}"
                        log.info(
                            "listening address=%s:%d roles=%s tls=%s",
                            host,
                            bound,
                            ",".join(sorted({r for r, _ in mounted})),
                            tls_role or "no",
                        )
                    plain = [
                        app for key, mounted in by_address.items() if not tls_roles[key] for _, app in mounted
                    ]
                    if self.config.https.port >= 0 and plain:
                        host = self.config.https.host or next(k[0] for k in by_address if not tls_roles[k])
                        await self._serve_https(http_nursery, ctx, host, plain)
                    for role in roles:
                        await roles_nursery.start(role.run)
                        log.info("role ready name=%s", role.name)
                    roles_nursery.start_soon(watch_certificates, ctx.components)
                    for on_ready in ctx.on_ready:
                        await on_ready()
                    for hook in self.start_hooks:
                        await hook(ctx)
                    log.info(
                        "cloud ready roles=%s in %.2fs", ",".join(self.role_names), time.monotonic() - started
                    )
                    self.ready = True
                    task_status.started(ctx)
                    await self._stop.wait()
                    log.info("shutting down: finishing requests in flight")
                    for server in self.servers:
                        server.shutdown()
                roles_nursery.cancel_scope.cancel()
        finally:
            ctx.store.close()
            log.info("stopped")


# How often a running process looks for a certificate of its own issued anew (one stat per role).
CERTIFICATE_CHECK_SECONDS = 2.0


async def watch_certificates(components: Components) -> None:
    """Listeners and clients present a component certificate re-issued on this host (re-registration after
    a deregistration revoked it) from their next handshake, without a restart."""
    while True:
        await trio.sleep(CERTIFICATE_CHECK_SECONDS)
        components.reload_changed()


def open_components(config: Config, ca: CloudCA, role_names: list[str]) -> Components:
    """This host's component files. With the CA key here, certificates missing for the roles it runs are
    issued now, and the node image key where a CLC or NC runs (the CLC encrypts download manifests for it;
    on one box the NC reads it from the same place). Without the CA key (a joined host) they must be there
    already: MissingComponent says how to join."""
    components = Components.for_config(config)
    roles = [role for role in role_names if role in COMPONENT_ROLES]
    if ca.has_key:
        wanted = [(role, component_name(config, role), component_hosts(config, role)) for role in roles]
        node_image = "clc" in role_names or "nc" in role_names
        # This host's NC belongs to its configured cluster (one-box: the local CC's, registered at first start).
        ensure_components(
            components,
            ca,
            wanted,
            cluster=config.cc.cluster,
            node_image=node_image,
            node_image_name=config.cc.cluster,
        )
    else:
        for role in roles:
            adopt_registered_name(config, role, components.identity(role).name)  # MissingComponent if none
    return components


def adopt_registered_name(config: Config, role: str, registered: str) -> None:
    """On a joined host the certificate's CN is the name the CLC registered: the NC reports itself, and the
    CC knows its cluster, under that name whatever the local configuration guessed (the host name)."""
    if role == "nc":
        if config.nc.name and config.nc.name != registered:
            log.warning(
                "nc.name=%s differs from the registered name %s; using %s",
                config.nc.name,
                registered,
                registered,
            )
        config.nc.name = registered
    elif role == "cc":
        if config.cc.cluster != registered:
            log.info(
                "cluster name from the certificate cluster=%s (configured %s)", registered, config.cc.cluster
            )
        config.cc.cluster = registered


def listener_tls_role(address: tuple[str, int], mounted: list[tuple[str, App]]) -> str | None:
    """The role whose certificate a listener presents, or None for plain HTTP. TLS and plain apps, or two
    TLS roles, cannot share one address: that is a configuration error, said at start."""
    tls = {role for role, app in mounted if getattr(app, "tls", False)}
    plain = {role for role, app in mounted if not getattr(app, "tls", False)}
    if tls and plain:
        raise ValueError(
            f"{address[0]}:{address[1]}: roles {sorted(tls)} need mutual TLS and {sorted(plain)} plain HTTP; "
            "give them different listen ports"
        )
    if len(tls) > 1:
        raise ValueError(f"{address[0]}:{address[1]}: roles {sorted(tls)} each need their own listen port")
    return next(iter(tls)) if tls else None


def resolve_roles(spec: str) -> tuple[list[str], list[str]]:
    """`all` or a comma list -> (roles to run, unbuilt roles skipped). Explicitly named unbuilt roles raise."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    explicit = "all" not in names
    wanted = list(ROLE_NAMES) if not explicit else names
    unknown = [n for n in wanted if n not in ROLE_NAMES]
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLE_NAMES)} or all")
    run, skipped = [], []
    for name in dict.fromkeys(wanted):
        module = importlib.import_module(f"euca.roles.{name}")
        reason = getattr(module, "NOT_BUILT", None)
        if reason:
            if explicit:
                raise RoleNotBuilt(f"role {name} cannot start: {reason}")
            skipped.append(name)
        else:
            run.append(name)
    return run, skipped


async def serve_until_signalled(supervisor: Supervisor) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully (requests in flight finish). Before the cloud is
    ready (a role still starting, which may wait on something that never comes) a signal cancels the start
    instead: the graceful stop only begins once every role has started."""
    async with trio.open_nursery() as nursery:

        async def watch_signals(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()  # only now is a signal ours to handle, not the default (death)
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if supervisor.ready:
                        log.info("signal %s received", name)
                        supervisor.stop()
                    else:
                        log.info("signal %s received while starting; start abandoned", name)
                        nursery.cancel_scope.cancel()

        await nursery.start(watch_signals)
        await supervisor.run()
        nursery.cancel_scope.cancel()


def credentials_dir(config: Config, account: str = ADMIN_ACCOUNT, user: str = ADMIN_USER) -> Path:
    return config.data_path / "credentials" / account / user
