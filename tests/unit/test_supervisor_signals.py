"""SIGTERM/SIGINT: a graceful stop once the cloud is ready, and an abandoned start before that (a role whose
start waits on something that never comes must not make the process deaf to signals). And the start hooks
the supervisor is handed (the one-box's default image): run once, before the cloud is ready."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import trio

from euca.core.config import load_config
from euca.core.roles import RoleContext
from euca.core.supervisor import Supervisor, serve_until_signalled

# Bounds the waits, so a supervisor that ignores the signal fails the test instead of hanging it.
HANG_GUARD = 30


async def test_a_signal_while_a_role_is_starting_abandons_the_start(tmp_path: Path) -> None:
    supervisor = Supervisor(load_config(None, {"data_dir": str(tmp_path)}), [])
    starting = trio.Event()

    async def start_that_never_ends(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        starting.set()
        await trio.sleep_forever()

    supervisor.run = start_that_never_ends  # type: ignore[method-assign]
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_until_signalled, supervisor)
            await starting.wait()
            os.kill(os.getpid(), signal.SIGTERM)
    assert not supervisor.ready


async def test_a_signal_once_ready_stops_gracefully(tmp_path: Path) -> None:
    supervisor = Supervisor(load_config(None, {"data_dir": str(tmp_path)}), [])
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_until_signalled, supervisor)
            while not supervisor.ready:
                await trio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
    assert supervisor.ready


async def test_start_hooks_run_once_every_role_is_up(tmp_path: Path) -> None:
    seen: list[tuple[str, bool]] = []

    async def hook(ctx: RoleContext) -> None:
        assert ctx is supervisor.ctx
        seen.append(("hook", supervisor.ready))  # before the cloud says it is ready

    supervisor = Supervisor(load_config(None, {"data_dir": str(tmp_path)}), [], start_hooks=[hook])
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            supervisor.stop()
    assert seen == [("hook", False)]
