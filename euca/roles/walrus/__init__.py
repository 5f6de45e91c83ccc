"""Walrus: the S3 REST API."""

from __future__ import annotations

from typing import Any

import trio

from euca.core.http import Request, Response
from euca.core.supervisor import RoleContext


class WalrusApp:
    name = "walrus"
    services = frozenset({"s3"})
    path_prefixes = ("/services/objectstorage", "/services/Walrus")

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx

    def claims(self, request: Request) -> bool:
        return False

    async def handle(self, request: Request) -> Response:
        return Response(501, [("Content-Type", "text/plain")], b"walrus not built yet\n")


class WalrusRole:
    name = "walrus"

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        self.apps = [WalrusApp(ctx)]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


def create(ctx: RoleContext) -> WalrusRole:
    return WalrusRole(ctx)
