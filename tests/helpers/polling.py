"""Waiting on real processes and guests in the end-to-end tests: loopback ports to start them on, and a poll
whose long deadline (HANG_GUARD) only turns a hang into a failure; nothing asserts how long things take."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

# Bounds every wait on a process or a guest: a guest that never boots fails its test instead of hanging the
# run. Generous, as TCG guests on a busy 2-core box take their time.
HANG_GUARD = 300.0

T = TypeVar("T")


def free_ports(count: int) -> list[int]:
    """Loopback ports free right now (the sockets are held together, so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    *,
    deadline: float = HANG_GUARD,
    interval: float = 0.5,
    detail: Callable[[], str] | None = None,
) -> T:
    """probe() until it returns something other than None/False; AssertionError naming `what` (and
    `detail()`) when it has not after `deadline` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > end:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"gave up waiting ({deadline:.0f}s) for {what}{extra}")
        time.sleep(interval)


async def wait_until_async(
    what: str,
    probe: Callable[[], Awaitable[T | None]],
    *,
    deadline: float = HANG_GUARD,
    interval: float = 0.05,
) -> T:
    """wait_until for trio tests: awaits probe() until it returns something other than None/False."""
    end = time.monotonic() + deadline
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting ({deadline:.0f}s) for {what}")
        await trio.sleep(interval)
