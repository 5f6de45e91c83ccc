"""Walrus: the S3 REST API, a real object store.

app: request ids, virtual hosts, authentication, endpoint parsing, error rendering.
service: the service object (caches, change counters, commits); dispatch: endpoint class -> handler, under
the access decision (access: bucket policy and public access block; acl: access control lists).
Handlers per resource: buckets, bucket_config, objects, multipart (its computations in completion),
listings, post_object, cors; settings (lifecycle, ownership, object lock, logging, encryption), object_lock,
ownership, attributes. meta: metadata (all SQL); storage: bytes on disk; sweep: removes the files no
metadata refers to (what a crash leaves); lifecycle: applies lifecycle rules; access_log: server access logs.
"""

from __future__ import annotations

import base64
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from euca.core.auth import AuthError, authenticate
from euca.core.config import ROLE_NAMES, Config
from euca.core.http import ClientDisconnected, Request, Response
from euca.core.https import is_secure
from euca.core.identity import Identity
from euca.core.roles import RoleContext
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import access_log, cors, encryption, lifecycle, meta, sweep, usage
from euca.roles.walrus.access_log import AccessLogs
from euca.roles.walrus.backend import open_byte_store
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.changes import Changes
from euca.roles.walrus.dispatch import dispatch as dispatch_request
from euca.roles.walrus.meta import usage as usage_meta
from euca.roles.walrus.service import WalrusService

log = logging.getLogger("euca.walrus")


class WalrusApp:
    name = "walrus"
    services: frozenset[str] = frozenset({"s3"})
    path_prefixes: tuple[str, ...] = ("/services/objectstorage", "/services/Walrus")

    def __init__(
        self,
        config: Config,
        identity: Identity,
        walrus: WalrusService,
        *,
        reuse_port: bool = False,
    ):
        self.config = config
        self.identity = identity
        self.walrus = walrus
        self.domains = tuple(d.lower().strip(".") for d in config.walrus.domains)
        # Served by several processes on one port (walrus.workers): the listener must allow it.
        self.reuse_port = reuse_port
        self.access_logs = AccessLogs(config.walrus.log_delivery_interval)
        self.usage = usage.UsageCounters(
            0, lambda b: row.owner_id if (row := walrus.buckets.get(b)) else None
        )

    def virtual_bucket(self, request: Request) -> str | None:
        """The bucket named by a Host of the form "<bucket>.<domain>" (virtual-host-style addressing)."""
        if "mount" in request.context:
            return None
        host = (request.headers.get("host") or "").lower()
        if host.startswith("["):
            return None
        host = host.rsplit(":", 1)[0] if ":" in host else host
        for domain in self.domains:
            if host.endswith("." + domain):
                return host[: -len(domain) - 1] or None
        return None

    def claims(self, request: Request) -> bool:
        return self.virtual_bucket(request) is not None

    async def handle(self, request: Request) -> Response:
        # One urandom call for both ids (8 bytes of request id, 24 of host id).
        rand = os.urandom(32)
        request_id = rand[:8].hex().upper()
        host_id = base64.b64encode(rand[8:]).decode()
        vbucket = None
        started = time.monotonic()
        principal_id: str | None = None
        auth_method = "anonymous"
        error_code: str | None = None
        if self.walrus.watching:
            await self.walrus.sync()
        try:
            vbucket = self.virtual_bucket(request)
            try:
                auth = await authenticate(
                    request, self.identity, service="s3", region=self.config.region, virtual_bucket=vbucket
                )
                auth_method = auth.method
                principal_id = auth.principal.canonical_id if auth.principal is not None else None
                endpoint = s3.parse_request(
                    request.method, request.path, request.query, request.headers, vbucket
                )
                if s3.lock_headers.requests_sse_c(request.headers):
                    # On plain HTTP a customer key has crossed the wire in clear: refused as S3 refuses it.
                    s3.lock_headers.refuse_sse_c_in_clear(request.headers, secure=is_secure(request))
                response = await dispatch_request(self.walrus, S3Call(request, auth, request_id), endpoint)
            except AuthError as e:
                raise S3Error(e.code, e.message, e.status) from e
        except S3Error as e:
            response = self.error_response(request, e, request_id, host_id)
            error_code = e.code
        except ClientDisconnected:
            raise
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except Exception:
            log.exception("walrus: %s %s failed", request.method, request.target[:200])
            response = self.error_response(request, S3Error("InternalError"), request_id, host_id)
        if "origin" in request.headers:
            try:
                cors.decorate(self.walrus, request, s3.split_path(request.path, vbucket)[0], response)
            except S3Error:
                pass
        response.headers.append(("x-amz-request-id", request_id))
        response.headers.append(("x-amz-id-2", host_id))
        self.usage.count(request, vbucket, response)  # S3 usage, in memory (usage.py)
        if self.walrus.settings:  # some bucket has settings: is this one's access logged?
            bucket = s3.split_path(request.path, vbucket)[0]
            if bucket is not None and self.walrus.setting(bucket, "logging") is not None:
                await self.access_logs.record(
                    self.walrus,
                    request,
                    response,
                    bucket,
                    principal_id,
                    auth_method,
                    request_id,
                    host_id,
                    error_code,
                    started,
                )
        return response

    @staticmethod
    def error_response(request: Request, e: S3Error, request_id: str, host_id: str) -> Response:
        headers = list(e.headers)
        if e.status == 304 or request.method == "HEAD":
            return Response(e.status, headers, b"")
        body = s3.render_error(e, request.context.get("raw_path", request.path), request_id, host_id)
        return Response(e.status, [("Content-Type", "application/xml"), *headers], body)


class WalrusRole:
    name = "walrus"

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        ctx.store.migrate("walrus", meta.SCHEMA)
        ctx.store.migrate(usage_meta.NAMESPACE, usage_meta.SCHEMA)
        self.storage = open_byte_store(ctx.config.walrus, ctx.config.path(ctx.config.walrus.objects_dir))
        self.walrus = WalrusService(ctx.store, ctx.identity, self.storage, ctx.config.region)
        self.walrus.lifecycle_day = ctx.config.walrus.lifecycle_day_seconds
        self.walrus.cloud_key = encryption.load_cloud_key(ctx.config.path(encryption.CLOUD_KEY_FILE))
        self.walrus.watch_other_hosts()
        self.workers = worker_count(ctx.config)
        if self.workers > 1:
            self.walrus.changes = Changes(changes_path(ctx.config), 0)
        self.apps = [WalrusApp(ctx.config, ctx.identity, self.walrus, reuse_port=self.workers > 1)]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # S3 usage beside the serving: this process's counts flushed, every bucket's size sampled (usage.py).
        cfg = self.ctx.config.walrus
        async with trio.open_nursery() as nursery:
            await nursery.start(
                usage.run,
                self.ctx.store,
                self.apps[0].usage,
                cfg.usage_flush_interval,
                cfg.usage_sample_interval,
            )
            await self._serve(task_status=task_status)

    async def _serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        _raise_open_files_limit()
        removed = await self.storage.setup()
        if removed:
            log.info("removed %d unfinished upload file(s) left by an earlier run", removed)
        await self.walrus.load()
        self.walrus.cloud_key = await encryption.cloud_key_of_the_cloud(self.ctx.store, self.walrus.cloud_key)
        log.info(
            "walrus ready objects_dir=%s buckets=%d processes=%d",
            self.storage.describe(),
            len(self.walrus.buckets),
            self.workers,
        )
        interval = self.ctx.config.walrus.lifecycle_interval
        if self.workers == 1:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sweep.run, self.storage, self.ctx.store)  # files no row refers to
                nursery.start_soon(lifecycle.run, self.walrus, interval)  # bucket lifecycle rules
                nursery.start_soon(access_log.run, self.walrus, self.apps[0].access_logs)
                task_status.started()
            return
        port = int(self.ctx.endpoints["walrus"].rsplit(":", 1)[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sweep.run, self.storage, self.ctx.store)
            nursery.start_soon(lifecycle.run, self.walrus, interval)
            nursery.start_soon(access_log.run, self.walrus, self.apps[0].access_logs)
            for index in range(1, self.workers):
                nursery.start_soon(self._run_worker, index, port)
            task_status.started()

    async def _run_worker(self, index: int, port: int) -> None:
        """One more process serving S3 on our port, restarted if it dies; stopped (SIGTERM: it finishes its
        requests in flight) when the role stops."""
        args = [sys.executable, "-m", "euca.roles.walrus.worker", str(index), str(port)]
        config = msgspec.json.encode(self.ctx.config)
        while True:
            log.info("walrus worker starting index=%d port=%d", index, port)
            result = await trio.run_process(args, stdin=config, check=False)
            log.warning("walrus worker exited index=%d status=%s; restarting", index, result.returncode)
            await trio.sleep(1)


def worker_count(config: Config) -> int:
    """How many processes serve S3: walrus.workers, when walrus has a port of its own."""
    wanted = config.walrus.workers
    if wanted > 1:
        port = config.walrus.listen.port
        shared = [role for role in ROLE_NAMES if role != "walrus" and config.listen_for(role).port == port]
        if shared:
            log.warning(
                "walrus.workers=%d ignored: port %d is shared with %s (give walrus a port of its own)",
                wanted,
                port,
                ",".join(shared),
            )
            return 1
    return wanted


def changes_path(config: Config) -> Path:
    return config.data_path / "walrus-changes"


def _raise_open_files_limit() -> None:
    """Open files up to the hard limit: every connection is one, and a GET of a multipart object kept as its
    parts holds one per part it covers (the usual soft limit, 1024, is a few dozen such GETs)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the open files limit: %s", e)


def create(ctx: RoleContext) -> WalrusRole:
    return WalrusRole(ctx)
