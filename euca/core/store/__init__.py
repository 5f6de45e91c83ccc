"""The state store: every role keeps its metadata here.

SQLite in WAL mode by default; `store.url = "postgresql://..."` puts it in PostgreSQL instead, behind the same
interface (`postgres.py`: `PgStore`, a Store whose engine is PostgreSQL; what differs is said there). All SQLite calls run in worker threads so the event loop never blocks:
one writer connection and a small pool of readers that see the last committed state.

Writes are group-committed: units of work that arrive while a transaction is in flight wait, and then run
together, one after the other, in the next transaction (BEGIN IMMEDIATE, a SAVEPOINT around each unit, one
COMMIT). Each unit still sees the ones before it, one that raises is rolled back alone (to its savepoint),
and every caller returns only once the COMMIT is done. Concurrent writers thus share one thread hop, one
commit and, for `durable` writes, one WAL sync, instead of queueing for one each. The caller that runs a
transaction is one of the writers: it stops once its own unit is committed and hands the next transaction
to the oldest caller still queued, so no caller waits for more than the batches ahead of its own. Reads that
queue while every reader is busy likewise share the next reader's thread hop (each in its own snapshot).

The interface roles use is narrow on purpose: `migrate()` at start, `write(fn)` for a
transaction, `read(fn)` for a snapshot, where `fn` receives a `Tx` with execute/one/all.
Only plain SQL with `?` placeholders goes through it, in the subset both engines take (PostgreSQL's store
translates the placeholders; migrations' DDL types are mapped there).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from euca.core.store.listen import Watch

log = logging.getLogger("euca.store")

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


class Tx:
    """One unit of work on one connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._conn.executemany(sql, rows)

    def one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def table_exists(self, name: str) -> bool:
        """Whether the store has a table of that name (each engine keeps its catalogue its own way)."""
        return self.one("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)) is not None

    def announce(self, name: str) -> None:
        """In a write: processes watching `name` through the store (`Store.watch`) hear of it once this unit
        commits, and never if it is rolled back. SQLite's store is one host's, whose processes share mapped
        counters instead: nothing to send."""


# Most units of work one transaction takes: bounds how long the last of a burst waits for its commit.
MAX_BATCH = 256


class _WriteJob(Generic[T]):
    __slots__ = ("fn", "durable", "taken", "called", "done", "wake", "result", "error")

    def __init__(self, fn: Callable[[Tx], T], durable: bool):
        self.fn = fn
        self.durable = durable
        self.taken = False  # part of a transaction now: its outcome will stand
        self.called = False  # its caller was handed the committing (the previous committer is done)
        self.done = False
        self.wake = trio.Event()  # set when done, or when called
        self.result: Any = None
        self.error: BaseException | None = None


# What a read taken into a hop that never ran (the hop itself failed) raises.
_NOT_RUN = RuntimeError("the store read was not run")

# Most reads one thread hop takes: bounds how long a read waits behind the others of its hop.
MAX_READ_BATCH = 16


class _ReadJob(Generic[T]):
    __slots__ = ("fn", "taken", "called", "done", "wake", "result", "error")

    def __init__(self, fn: Callable[[Tx], T]):
        self.fn = fn
        self.taken = False  # in a reader's hop now: it will run
        self.called = False  # its caller was woken to take the reader that became free
        self.done = False
        self.wake = trio.Event()  # set when done, or when called
        self.result: Any = None
        self.error: BaseException | None = None


class Store:
    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", readers: int = 4):
        self.path = str(path)
        self.synchronous = synchronous.upper()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        self._init_queues(readers)
        self._readers: list[sqlite3.Connection] = []
        self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (namespace TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )

    def _init_queues(self, readers: int) -> None:
        """What every engine shares: the group-commit queue and the reader pool's bounds."""
        # Held while the writer connection is in a transaction (batches in worker threads, write_sync).
        self._writer_lock = threading.RLock()  # re-entered only to fail as SQLite would, not to deadlock
        self._pending: list[_WriteJob[Any]] = []
        self._committing = False
        # Reads: at most `readers` thread hops at once; reads that queue meanwhile share the next hop.
        self._read_hops_max = readers
        self._read_hops = 0
        self._read_pending: list[_ReadJob[Any]] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    # -- schema -------------------------------------------------------------------------------

    def migrate(self, namespace: str, steps: Sequence[str | Callable[[Tx], None]]) -> None:
        """Apply the steps of `namespace` not applied yet (synchronous: called once at start).

        A step is SQL (may hold several statements) or a function of a Tx. Steps are only ever appended.
        """
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT version FROM schema_migrations WHERE namespace=?", (namespace,)
            ).fetchone()
            done = row[0] if row else 0
            for i, step in enumerate(steps[done:], start=done + 1):
                if callable(step):
                    step(Tx(conn))
                else:
                    for statement in _split_sql(step):
                        conn.execute(statement)
                log.info("store migrated namespace=%s version=%d", namespace, i)
            if len(steps) > done:
                conn.execute(
                    "INSERT INTO schema_migrations(namespace, version) VALUES(?, ?) "
                    "ON CONFLICT(namespace) DO UPDATE SET version=excluded.version",
                    (namespace, len(steps)),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- changes other hosts make ---------------------------------------------------------------

    def watch(self, name: str) -> Watch | None:
        """How this process hears of changes to `name` committed through another store object sharing the
        database (`Tx.announce`), for its caches; None where no other host can share it (SQLite: a file)."""
        return None

    # -- work ---------------------------------------------------------------------------------

    def write_sync(self, fn: Callable[[Tx], T], *, durable: bool = False) -> T:
        """Run `fn` in one write transaction on the calling thread (for CLI tools and start-up)."""
        job = _WriteJob(fn, durable)
        self._run_batch([job])
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _run_batch(self, batch: list[_WriteJob[Any]]) -> None:
        """One transaction for the batch (in a worker thread); sets each job's result or error."""
        with self._writer_lock:
            conn = self._writer
            sync = any(j.durable for j in batch) and self.synchronous == "NORMAL"
            if sync:
                # A durable unit is on disk when its caller hears back: this commit syncs the WAL.
                conn.execute("PRAGMA synchronous=FULL")
            try:
                _begin_immediate(conn)
                try:
                    if len(batch) == 1:
                        batch[0].result = batch[0].fn(Tx(conn))
                    else:
                        for job in batch:
                            conn.execute("SAVEPOINT unit")
                            try:
                                job.result = job.fn(Tx(conn))
                            except Exception as e:
                                job.error = e
                                conn.execute("ROLLBACK TO unit")
                            conn.execute("RELEASE unit")
                    conn.execute("COMMIT")
                except BaseException as e:
                    # The function of a lone unit raised, or the transaction itself failed (I/O error, a unit
                    # that broke it): nothing of this batch is committed.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    for job in batch:
                        if job.error is None:
                            job.result = None
                            job.error = e
            finally:
                if sync:
                    conn.execute(f"PRAGMA synchronous={self.synchronous}")

    def read_sync(self, fn: Callable[[Tx], T]) -> T:
        conn = self._take_reader()
        try:
            conn.execute("BEGIN")
            try:
                return fn(Tx(conn))
            finally:
                conn.execute("COMMIT")
        finally:
            self._give_reader(conn)

    async def write(self, fn: Callable[[Tx], T], *, durable: bool = False) -> T:
        """Run `fn` in a write transaction, in the writer thread; committed if it returns, rolled back if it
        raises (the exception is raised here). With `durable`, the commit is synced to disk (WAL fsync) even
        when the store runs at synchronous=NORMAL, before this returns.

        Cancelled before its transaction started, `fn` does not run; once started, the outcome stands and
        is returned (the cancellation arrives at the caller's next checkpoint), as with a thread call."""
        job: _WriteJob[T] = _WriteJob(fn, durable)
        self._pending.append(job)
        if self._committing:
            try:
                await job.wake.wait()
            except trio.Cancelled:
                if not job.taken:
                    # Not in a transaction: it never runs. Handed the committing meanwhile, pass it on.
                    self._pending.remove(job)
                    if job.called:
                        self._pass_committing()
                    raise
            if not job.done and job.called:
                await self._commit_until(job)
            with trio.CancelScope(shield=True):
                await job.wake.wait()  # taken into a transaction while cancelled: its outcome stands
        else:
            # No transaction in flight: this task commits, for itself and whoever queues meanwhile.
            self._committing = True
            await self._commit_until(job)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    async def _commit_until(self, job: _WriteJob[Any]) -> None:
        """Commit queued batches, oldest first, until `job`'s own is done; then hand the committing to the
        caller of the oldest unit still queued. A caller never commits for others past its own unit: with
        writes arriving without pause the queue may never be empty, and a committer that ran until it was
        would keep its own caller waiting for as long as the load lasts."""
        try:
            with trio.CancelScope(shield=True):
                while not job.done:
                    batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                    for j in batch:
                        j.taken = True
                    try:
                        await trio.to_thread.run_sync(self._run_batch, batch)
                    except BaseException as e:  # the transaction could not be had (busy past the timeout ...)
                        for j in batch:
                            if j.error is None:
                                j.result, j.error = None, e
                        if not isinstance(e, Exception):
                            raise
                    finally:
                        for j in batch:
                            j.done = True
                            j.wake.set()
        finally:
            self._pass_committing()

    def _pass_committing(self) -> None:
        """The committer is done: the caller of the oldest queued unit commits next, or nobody is needed."""
        if self._pending:
            nxt = self._pending[0]
            nxt.called = True
            nxt.wake.set()
        else:
            self._committing = False

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` against a consistent snapshot, in a reader thread.

        At most `readers` thread hops run at once. Reads that arrive while all of them are busy queue, and
        the next free hop takes up to MAX_READ_BATCH of them: each still runs alone in a snapshot of its own
        taken when it starts (read_sync), one after the other, so a burst of reads (GETs of objects not in
        a cache) shares a thread hop, as a burst of writes shares a commit. Cancelled while queued, `fn`
        does not run; once taken, it runs and its result is returned (the cancellation arrives at the
        caller's next checkpoint), as with a thread call."""
        await trio.lowlevel.checkpoint_if_cancelled()
        job: _ReadJob[T] = _ReadJob(fn)
        self._read_pending.append(job)
        while not job.taken:
            if self._read_hops < self._read_hops_max:
                await self._read_hop()  # takes the oldest queued reads, ours among them or not
                continue
            try:
                await job.wake.wait()
            except trio.Cancelled:
                if job.taken:
                    break  # it runs: wait for it below
                self._read_pending.remove(job)
                if job.called:
                    self._call_next_reader()  # the free hop it was woken for goes to the next one
                raise
            if not job.taken:  # called: loop to take the free hop (or wait again if another took it)
                job.called = False
                job.wake = trio.Event()
        if not job.done:
            with trio.CancelScope(shield=True):
                await job.wake.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    async def _read_hop(self) -> None:
        batch = self._read_pending[:MAX_READ_BATCH]
        del self._read_pending[:MAX_READ_BATCH]
        for job in batch:
            job.taken = True
            job.error = _NOT_RUN
            if job.wake.is_set():  # it was called: its caller must now wait for the outcome instead
                job.wake = trio.Event()
        self._read_hops += 1
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._run_reads, batch)
        finally:
            self._read_hops -= 1
            for job in batch:
                job.done = True
                job.wake.set()
            self._call_next_reader()

    def _run_reads(self, batch: list[_ReadJob[Any]]) -> None:
        """The reads of one hop, in the reader thread, each in its own snapshot; each outcome kept for its
        caller."""
        for job in batch:
            try:
                job.result = self.read_sync(job.fn)
                job.error = None
            except BaseException as e:  # raised to its own caller, as from a thread of its own
                job.error = e

    def _call_next_reader(self) -> None:
        """A hop is free: wake the oldest queued read not woken yet, whose caller takes it."""
        for job in self._read_pending:
            if not job.called:
                job.called = True
                job.wake.set()
                return

    def _take_reader(self) -> sqlite3.Connection:
        with self._readers_lock:
            if self._readers:
                return self._readers.pop()
        return self._connect()

    def _give_reader(self, conn: sqlite3.Connection) -> None:
        with self._readers_lock:
            if not self._closed:
                self._readers.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self._writer_lock:
            self._writer.close()


# Waiting for another process's write transaction: SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms between
# tries, longer than most transactions here last; polling every 0.1-1 ms keeps a writer that shares the file
# with other processes (walrus.workers) close behind them.
_BUSY_POLL_FIRST = 0.0001
_BUSY_POLL_MAX = 0.001
_BUSY_TIMEOUT = 30.0


def _begin_immediate(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout=0")
    try:
        delay = _BUSY_POLL_FIRST
        deadline = time.monotonic() + _BUSY_TIMEOUT
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                # The primary code: extended codes (SQLITE_BUSY_SNAPSHOT ...) count too.
                busy = e.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _BUSY_POLL_MAX)
    finally:
        conn.execute("PRAGMA busy_timeout=30000")


def _split_sql(script: str) -> list[str]:
    """Statements of a script, split at each `;` that ends one (not those in literals or trigger bodies)."""
    statements = []
    buf = ""
    pieces = script.split(";")
    for i, piece in enumerate(pieces):
        buf += piece if i == len(pieces) - 1 else piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip().strip(";").strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


def open_store(url: str, data_dir: Path, synchronous: str = "NORMAL") -> Store:
    """`sqlite:PATH` (relative to the data directory) or `postgresql://...` (a libpq URI)."""
    if url.startswith(("postgresql:", "postgres:")):
        from euca.core.store.postgres import PgStore

        return PgStore(url, synchronous=synchronous, local_dir=data_dir)
    if not url.startswith("sqlite:"):
        raise ValueError(f"unsupported store url {url!r}")
    path = Path(url[len("sqlite:") :])
    if not path.is_absolute():
        path = data_dir / path
    return Store(path, synchronous=synchronous)
