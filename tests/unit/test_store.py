"""The state store (euca/core/store) on both engines: SQLite on real files, and PostgreSQL in a private cluster
(helpers.postgres; a fresh database per test). Tests that only make sense for one engine say so."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from euca.core.store import Store, Tx, open_store
from euca.core.store.postgres import PgStore
from helpers import postgres

SCHEMA = [
    "CREATE TABLE item (name TEXT PRIMARY KEY, n INTEGER NOT NULL);",
    "ALTER TABLE item ADD COLUMN note TEXT; CREATE INDEX item_n ON item(n);",
]


# make_store(): a new Store on this test's one database (a second call: another connection to the same one).
MakeStore = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    made: list[Store] = []
    if request.param == "sqlite":
        url = f"sqlite:{tmp_path / 'state.db'}"
    else:
        cluster: postgres.Cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database("store")

    def make() -> Store:
        s = open_store(url, tmp_path)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    s = make_store()
    s.migrate("test", SCHEMA)
    return s


def _tables(tx: Tx) -> set[str]:
    return {name for name in ("a", "item", "other_thing") if tx.table_exists(name)}


def test_open_store_puts_relative_paths_under_the_data_dir(tmp_path: Path) -> None:
    s = open_store("sqlite:sub/state.db", tmp_path)
    try:
        assert Path(s.path) == tmp_path / "sub" / "state.db"
        assert s.read_sync(lambda tx: tx.scalar("PRAGMA journal_mode")) == "wal"
    finally:
        s.close()
    with pytest.raises(ValueError):
        open_store("mysql://x", tmp_path)


def test_migrate_is_idempotent_and_only_applies_new_steps(make_store: MakeStore) -> None:
    s = make_store()
    s.migrate("test", SCHEMA[:1])
    s.write_sync(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES('a', 1)"))
    s.migrate("test", SCHEMA[:1])  # again: nothing to do, data kept
    s.close()

    s = make_store()  # a restart with one more step appended
    s.migrate("test", SCHEMA)
    s.migrate("test", SCHEMA)
    version = s.read_sync(
        lambda tx: tx.scalar("SELECT version FROM schema_migrations WHERE namespace='test'")
    )
    rows = s.read_sync(lambda tx: [tuple(r) for r in tx.all("SELECT name, n, note FROM item")])
    assert version == 2
    assert rows == [("a", 1, None)]


def test_migrate_namespaces_are_independent(store: Store) -> None:
    store.migrate("other", ["CREATE TABLE other_thing (id INTEGER PRIMARY KEY);"])
    store.migrate("test", SCHEMA)
    versions = store.read_sync(lambda tx: dict(tx.all("SELECT namespace, version FROM schema_migrations")))
    assert versions == {"test": 2, "other": 1}


def test_failed_migration_step_leaves_nothing_behind(make_store: MakeStore) -> None:
    s = make_store()
    with pytest.raises(Exception, match="no such table|does not exist"):
        s.migrate("test", ["CREATE TABLE a (x INTEGER);", "INSERT INTO missing VALUES (1);"])
    assert "a" not in s.read_sync(_tables)
    s.migrate("test", ["CREATE TABLE a (x INTEGER);"])  # and a corrected migration still applies
    assert "a" in s.read_sync(_tables)


async def test_write_commits_and_read_sees_it(store: Store) -> None:
    def put(tx: Tx) -> int:
        return tx.execute("INSERT INTO item(name, n) VALUES(?, ?)", ("k", 7))

    assert await store.write(put) == 1
    row = await store.read(lambda tx: tx.one("SELECT n FROM item WHERE name=?", ("k",)))
    assert row is not None and row["n"] == 7


async def test_write_rolls_back_when_the_function_raises(store: Store) -> None:
    def half_then_fail(tx: Tx) -> None:
        tx.execute("INSERT INTO item(name, n) VALUES('gone', 1)")
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await store.write(half_then_fail)
    assert await store.read(lambda tx: tx.scalar("SELECT count(*) FROM item")) == 0
    # The writer connection is usable afterwards.
    await store.write(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES('kept', 2)"))
    assert await store.read(lambda tx: tx.scalar("SELECT count(*) FROM item")) == 1


async def test_read_sees_committed_data_from_another_store_on_the_same_file(make_store: MakeStore) -> None:
    a = make_store()
    a.migrate("test", SCHEMA)
    b = make_store()  # e.g. `euca admin` while the server runs
    await a.write(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES('x', 1)"))
    assert await b.read(lambda tx: tx.scalar("SELECT n FROM item WHERE name='x'")) == 1
    b.write_sync(lambda tx: tx.execute("UPDATE item SET n=2 WHERE name='x'"))
    assert await a.read(lambda tx: tx.scalar("SELECT n FROM item WHERE name='x'")) == 2


async def test_concurrent_writers_are_serialised(store: Store) -> None:
    await store.write(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES('counter', 0)"))
    inside = 0
    most_inside = 0

    def increment(tx: Tx) -> None:
        # Read-modify-write: loses updates unless transactions are serialised.
        nonlocal inside, most_inside
        inside += 1
        most_inside = max(most_inside, inside)
        n = tx.scalar("SELECT n FROM item WHERE name='counter'")
        tx.execute("UPDATE item SET n=? WHERE name='counter'", (n + 1,))
        inside -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(store.write, increment)
    assert await store.read(lambda tx: tx.scalar("SELECT n FROM item WHERE name='counter'")) == 50
    assert most_inside == 1


async def test_concurrent_reads_run_beside_a_write(store: Store) -> None:
    await store.write(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES('r', 1)"))
    results: list[int] = []

    async def reader() -> None:
        results.append(await store.read(lambda tx: tx.scalar("SELECT n FROM item WHERE name='r'")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.write, lambda tx: tx.execute("UPDATE item SET n=2 WHERE name='r'"))
        for _ in range(10):
            nursery.start_soon(reader)
    # Each read saw one committed state, before or after the update, never anything else.
    assert set(results) <= {1, 2} and len(results) == 10


async def test_concurrent_writes_share_transactions_and_fail_alone(store: Store) -> None:
    """Writers that queue while a transaction is in flight are group-committed; one that raises is rolled back
    alone (its savepoint) and the others of its batch still commit."""
    data_versions: list[int] = []

    def put(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        def fn(tx: Tx) -> str:
            tx.execute("INSERT INTO item(name, n) VALUES(?, 1)", (name,))
            data_versions.append(tx.scalar("SELECT count(*) FROM item"))
            if fail:
                raise ValueError(name)
            return name

        return fn

    results: dict[str, object] = {}

    async def writer(name: str, fail: bool) -> None:
        try:
            results[name] = await store.write(put(name, fail), durable=name.endswith("0"))
        except ValueError as e:
            results[name] = e

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(writer, f"w{i}", i % 7 == 3)
    failed = {f"w{i}" for i in range(40) if i % 7 == 3}
    assert all(isinstance(results[n], ValueError) for n in failed)
    assert all(results[n] == n for n in results if n not in failed)
    names = await store.read(lambda tx: {r[0] for r in tx.all("SELECT name FROM item")})
    assert names == {f"w{i}" for i in range(40)} - failed
    if isinstance(store, PgStore):
        return
    # SQLite: the store is back at its configured synchronous mode after durable batches.
    assert store.read_sync(lambda tx: tx.scalar("PRAGMA synchronous")) == 1  # NORMAL
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 1


async def test_a_write_cancelled_before_its_transaction_does_not_run(store: Store) -> None:
    ran: list[str] = []
    gate = threading.Event()

    def slow(tx: Tx) -> None:
        gate.wait(10)
        ran.append("slow")

    def queued(tx: Tx) -> None:
        ran.append("queued")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.write, slow)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as cs:
            cs.cancel()
            await store.write(queued)  # queued behind `slow`, cancelled before its turn
        assert cs.cancelled_caught
        gate.set()
    assert ran == ["slow"]


async def test_a_write_cancelled_once_its_transaction_started_waits_for_its_commit(store: Store) -> None:
    ran: list[str] = []
    first_gate, second_gate = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def first(tx: Tx) -> None:
        first_gate.wait(10)
        ran.append("first")

    def second(tx: Tx) -> str:
        second_gate.wait(10)
        tx.execute("INSERT INTO item(name, n) VALUES('second', 2)")
        ran.append("second")
        return "second"

    async def cancelled_writer(cs: trio.CancelScope) -> None:
        with cs:
            outcome["result"] = await store.write(second)  # returns, then the next checkpoint is cancelled
            outcome["returned"] = True
            await trio.lowlevel.checkpoint()
        outcome["cancelled"] = cs.cancelled_caught

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.write, first)
        await trio.testing.wait_all_tasks_blocked()
        cs = trio.CancelScope()
        nursery.start_soon(cancelled_writer, cs)
        await trio.testing.wait_all_tasks_blocked()
        first_gate.set()  # `first` commits; `second` is taken into the next transaction, which waits
        with trio.fail_after(10):
            while store._pending:  # still queued: not taken yet
                await trio.sleep(0.01)
        cs.cancel()  # taken already: its outcome stands and the caller still hears it
        await trio.testing.wait_all_tasks_blocked()
        second_gate.set()
    assert ran == ["first", "second"]
    assert outcome == {"result": "second", "returned": True, "cancelled": True}
    names = await store.read(lambda tx: {r[0] for r in tx.all("SELECT name FROM item")})
    assert "second" in names


async def _block_every_reader(store: Store, nursery: trio.Nursery, gate: threading.Event) -> None:
    """Occupy every reader hop with a read that waits for `gate`: reads made now queue."""
    for _ in range(store._read_hops_max):
        nursery.start_soon(store.read, lambda tx: gate.wait(10))
    await trio.testing.wait_all_tasks_blocked()
    assert store._read_hops == store._read_hops_max


async def test_reads_queued_behind_busy_readers_share_hops_and_each_get_their_own_outcome(
    store: Store,
) -> None:
    store.write_sync(
        lambda tx: [tx.execute("INSERT INTO item(name, n) VALUES(?, ?)", (f"k{i}", i)) for i in range(40)]
    )
    gate = threading.Event()
    results: dict[int, object] = {}

    async def reader(i: int) -> None:
        def fn(tx: Tx) -> int:
            if i % 9 == 4:
                raise ValueError(i)
            return int(tx.scalar("SELECT n FROM item WHERE name=?", (f"k{i}",)))

        try:
            results[i] = await store.read(fn)
        except ValueError as e:
            results[i] = e

    async with trio.open_nursery() as nursery:
        await _block_every_reader(store, nursery, gate)
        for i in range(40):
            nursery.start_soon(reader, i)
        await trio.testing.wait_all_tasks_blocked()
        assert len(store._read_pending) == 40  # all queued
        gate.set()
    for i in range(40):
        if i % 9 == 4:
            assert isinstance(results[i], ValueError) and results[i].args == (i,)
        else:
            assert results[i] == i
    assert store._read_pending == [] and store._read_hops == 0


async def test_a_queued_read_sees_what_was_committed_before_it_was_made(store: Store) -> None:
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        await _block_every_reader(store, nursery, gate)
        await store.write(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES('w', 7)"))
        seen: list[object] = []

        async def reader() -> None:
            seen.append(await store.read(lambda tx: tx.scalar("SELECT n FROM item WHERE name='w'")))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert seen == [7]


async def test_a_read_cancelled_while_queued_does_not_run(store: Store) -> None:
    gate = threading.Event()
    ran: list[str] = []
    cs = trio.CancelScope()

    async def reader() -> None:
        with cs:
            await store.read(lambda tx: ran.append("queued"))

    async with trio.open_nursery() as nursery:
        await _block_every_reader(store, nursery, gate)
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert len(store._read_pending) == 1
        cs.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert cs.cancelled_caught
        assert store._read_pending == []
        gate.set()
    assert ran == []
    # The readers are all free again, and a read runs.
    assert await store.read(lambda tx: 1) == 1


async def test_a_read_cancelled_once_taken_returns_its_result(store: Store) -> None:
    gate, inner = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}
    cs = trio.CancelScope()

    async def reader() -> None:
        with cs:
            outcome["result"] = await store.read(lambda tx: (inner.wait(10), "done")[1])
            await trio.lowlevel.checkpoint()
        outcome["cancelled"] = cs.cancelled_caught

    async with trio.open_nursery() as nursery:
        await _block_every_reader(store, nursery, gate)
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()  # the blocking reads finish; the queued one is taken into a hop and waits on `inner`
        with trio.fail_after(10):
            while store._read_pending:
                await trio.sleep(0.01)
        cs.cancel()
        await trio.testing.wait_all_tasks_blocked()
        inner.set()
    assert outcome == {"result": "done", "cancelled": True}


async def test_a_committer_returns_once_its_own_unit_commits(store: Store) -> None:
    """The caller that commits for the queue stops after the batch with its own unit and hands the committing
    to the next queued caller: under writes that never pause, the queue is never empty, and a committer that
    ran until it was would keep its caller waiting as long as the load lasted."""
    first_gate, second_gate = threading.Event(), threading.Event()
    first_returned = trio.Event()

    def first(tx: Tx) -> str:
        first_gate.wait(10)
        tx.execute("INSERT INTO item(name, n) VALUES('first', 1)")
        return "first"

    def second(tx: Tx) -> str:
        second_gate.wait(10)
        tx.execute("INSERT INTO item(name, n) VALUES('second', 2)")
        return "second"

    results: dict[str, str] = {}

    async def writer(name: str, fn: Callable[[Tx], str], done: trio.Event | None = None) -> None:
        results[name] = await store.write(fn)
        if done is not None:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "first", first, first_returned)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(writer, "second", second)  # queued behind `first`'s transaction
        await trio.testing.wait_all_tasks_blocked()
        first_gate.set()
        with trio.fail_after(8):  # a guard, not a measure: the old committer waited for `second` (10 s)
            await first_returned.wait()
        assert "second" not in results  # its transaction is still open, committed by its own caller
        second_gate.set()
    assert results == {"first": "first", "second": "second"}


async def test_a_caller_handed_the_committing_and_cancelled_passes_it_on(store: Store) -> None:
    """The cancellation lands first, then the committer hands the next transaction to that (still queued)
    caller: it must not run its unit, and must pass the committing on, or the writers behind it wait forever."""
    gate = threading.Event()
    cs = trio.CancelScope()
    hand_over = store._pass_committing

    def cancel_then_hand_over() -> None:
        cs.cancel()  # the queued caller is woken with Cancelled before it is handed the committing
        hand_over()

    def slow(tx: Tx) -> None:
        gate.wait(10)

    def put(name: str) -> Callable[[Tx], int]:
        return lambda tx: tx.execute("INSERT INTO item(name, n) VALUES(?, 1)", (name,))

    async def cancelled() -> None:
        with cs:
            await store.write(put("cancelled"))

    with trio.fail_after(10):  # a guard: without the pass-on, `after` waits for ever
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, slow)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(cancelled)  # the oldest queued
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store.write, put("after"))
            await trio.testing.wait_all_tasks_blocked()
            store._pass_committing = cancel_then_hand_over  # type: ignore[method-assign]
            gate.set()
    store._pass_committing = hand_over  # type: ignore[method-assign]
    assert cs.cancelled_caught
    names = await store.read(lambda tx: {r[0] for r in tx.all("SELECT name FROM item")})
    assert "after" in names and "cancelled" not in names
    assert not store._committing and not store._pending


async def test_a_batch_whose_transaction_cannot_start_fails_each_caller(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds SQLite's write lock past the busy timeout: every caller of the batch hears the
    error (none is left waiting), and the store takes writes again once the lock is free."""
    if isinstance(store, PgStore):
        pytest.skip("SQLite's busy timeout: PostgreSQL waits on its row and table locks instead")
    import euca.core.store as store_module

    monkeypatch.setattr(store_module, "_BUSY_TIMEOUT", 0.2)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    outcomes: list[object] = []

    async def writer(name: str) -> None:
        try:
            await store.write(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES(?, 1)", (name,)))
            outcomes.append(name)
        except sqlite3.OperationalError as e:
            outcomes.append(e)

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(writer, name)
    assert len(outcomes) == 3 and all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    other.execute("ROLLBACK")
    other.close()
    await store.write(lambda tx: tx.execute("INSERT INTO item(name, n) VALUES('after', 1)"))
    assert not store._committing and not store._pending
