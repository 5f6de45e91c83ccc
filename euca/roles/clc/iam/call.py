"""One authenticated IAM or STS call as handlers see it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from euca.core.http import Request
from euca.core.identity import Principal
from euca.core.roles import RoleContext
from euca.core.store import Tx

T = TypeVar("T")


@dataclass(frozen=True)
class QueryCall:
    ctx: RoleContext
    principal: Principal
    request_id: str
    # The account the call acts in: the caller's own, or for the cloud admin the one DelegateAccount names.
    account_id: str
    request: Request

    async def read(self, fn: Callable[[Tx], T]) -> T:
        return await self.ctx.store.read(fn)

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """A change to identity: durable, and every process (on every host) drops what it cached."""
        return await self.ctx.identity.change(fn)


Handler = Callable[[QueryCall, dict[str, Any]], Awaitable[dict[str, Any] | None]]
