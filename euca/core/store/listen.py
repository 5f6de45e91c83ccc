"""Changes other hosts committed, heard through PostgreSQL (LISTEN/NOTIFY): what keeps per-process caches
coherent when processes on several hosts share one database.

A write transaction names what it changed (`Tx.announce("identity")`); PgStore sends one NOTIFY per name in
the statement that commits it, so the notice goes out exactly when the change becomes visible, and never for a
unit that was rolled back. Every process that watches holds one more connection, LISTENing, in a thread of
its own (`Listener`): each notice moves a counter per name, which a cache compares with what it last saw
(`Watch.changed()`, a few attribute reads, no I/O, so it runs on every request).

What a notice cannot cover, the watch makes up for by saying "changed": until the listener's LISTEN has
taken effect, and whenever its connection is lost (a notice sent then is never delivered), `changed()` is
True at every call, so caches are not trusted; a reconnect starts a new epoch, which every watch sees as one
more change. A notice carries the announcing store's origin: a process ignores its own (it keeps its caches
in step itself).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import select
import threading
from collections.abc import Iterable
from typing import Any

import psycopg

log = logging.getLogger("euca.store")

# The one PostgreSQL channel; a notice's payload is "<name> <origin>".
CHANNEL = "euca_changes"
_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")

# Reconnecting after a lost connection: first after this, doubling up to the most.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0

# TCP keepalives on the listening connection (ignored on a unix socket): a silently dead peer is noticed in
# about a minute, and until then nothing is heard (the time-limited caches bound what that costs).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def new_origin() -> str:
    """A store's name in its notices: unique per store object (two stores in one process are two hosts)."""
    return secrets.token_hex(8)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"bad change name {name!r}")
    return name


def notify_sql(names: Iterable[str], origin: str) -> str:
    """The statement that sends one notice per name (names checked: they go into the SQL as literals)."""
    calls = ", ".join(f"pg_notify('{CHANNEL}', '{check_name(n)} {origin}')" for n in sorted(set(names)))
    return f"SELECT {calls}"


class Listener:
    """One LISTENing connection, in a daemon thread, for one store; started by the first watch."""

    def __init__(self, url: str, origin: str):
        self.url = url
        # What this store announces as (notices of its own writes are ignored).
        self.origin = origin
        self._counts: dict[str, int] = {}
        self._epoch = 0  # moved each time a LISTEN took effect
        self._live = False
        self._stopped = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()

    def watch(self, name: str) -> Watch:
        check_name(name)
        with self._lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="euca-store-listen", daemon=True)
                self._thread.start()
        return Watch(self, name)

    def generation(self, name: str) -> tuple[int, int] | None:
        """Where `name` stands (None: not listening, so anything may have changed)."""
        if not self._live:
            return None
        return self._epoch, self._counts.get(name, 0)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            os.write(self._wake_w, b"x")
            thread.join(10)
            if thread.is_alive():
                return  # stuck connecting: it may still wait on the pipe, which stays open
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stopped:
            epoch = self._epoch
            try:
                self._listen()
            except Exception as e:
                if self._stopped:
                    return
                if self._epoch != epoch:
                    delay = RETRY_FIRST  # it listened until the connection was lost: try again soon
                log.warning("store listener: %s (connecting again in %.1fs)", e, delay)
            if self._sleep(delay):
                return
            delay = min(delay * 2, RETRY_MAX)

    def _listen(self) -> None:
        """Connect, LISTEN, and count notices until the connection is lost (raises) or we stop."""
        conn = psycopg.connect(self.url, autocommit=True, **KEEPALIVES)  # type: ignore[arg-type]
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            # From here every commit that announces is heard; what committed before is in any read that
            # starts now: one more epoch makes every watch drop what it cached.
            self._epoch += 1
            self._live = True
            self._serve(conn)
        finally:
            self._live = False
            conn.close()

    def _sleep(self, seconds: float) -> bool:
        """Wait, or less if stopped; whether stopped."""
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        return bool(ready) or self._stopped

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        pgconn = conn.pgconn
        sock = pgconn.socket
        while not self._stopped:
            ready, _, _ = select.select([sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            pgconn.consume_input()  # raises once the connection is gone
            while (notice := pgconn.notifies()) is not None:
                self._heard(notice.extra.decode("utf-8", "replace"))

    def _heard(self, payload: str) -> None:
        name, _, origin = payload.partition(" ")
        if origin != self.origin:
            self._counts[name] = self._counts.get(name, 0) + 1


class Watch:
    """One cache's view of one name's changes committed by other processes (through the store)."""

    __slots__ = ("_listener", "name", "_seen")

    def __init__(self, listener: Listener, name: str):
        self._listener = listener
        self.name = name
        self._seen: tuple[int, int] | None = None

    def changed(self) -> bool:
        """Whether another process may have committed a change of `name` since the last call that answered
        True (always True while the listener is not listening)."""
        now = self._listener.generation(self.name)
        if now is None:
            self._seen = None
            return True
        if now == self._seen:
            return False
        self._seen = now
        return True
