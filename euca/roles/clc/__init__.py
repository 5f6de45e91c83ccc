"""CLC: the EC2 Query API (the actions arrive with the EC2 issue)."""

from __future__ import annotations

from typing import Any

import trio

from euca.core.http import Request, Response
from euca.core.supervisor import RoleContext


class Ec2App:
    name = "clc"
    services = frozenset({"ec2"})
    path_prefixes = ("/services/compute", "/services/Eucalyptus")

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx

    def claims(self, request: Request) -> bool:
        # EC2 Query requests: ?Action=... or a form POST to the root.
        if "Action=" in request.query:
            return True
        ctype = request.headers.get("content-type") or ""
        return request.method == "POST" and request.path in ("", "/") and ctype.startswith(
            "application/x-www-form-urlencoded"
        )

    async def handle(self, request: Request) -> Response:
        return Response(501, [("Content-Type", "text/plain")], b"EC2 API not built yet\n")


class ClcRole:
    name = "clc"

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        self.apps = [Ec2App(ctx)]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


def create(ctx: RoleContext) -> ClcRole:
    return ClcRole(ctx)
