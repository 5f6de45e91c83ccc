"""Two hosts on one PostgreSQL database: two store objects with data directories of their own (so no mapped
change counter is shared), each with its Identity, as two CLC hosts would have. What one changes, the other's
caches let go of once the change's notice arrives (core/store/listen.py): nothing here waits for a cache to age
out (the key cache's age limit is set beyond any test's length)."""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import trio

from euca.core.authorize import identity_verdict
from euca.core.iam import policies as iam_policies
from euca.core.identity import Identity
from euca.core.store import Store, Tx, listen, open_store
from euca.core.store.postgres import PgStore
from euca.protocol.policy import ALLOW, DENY
from helpers import postgres
from helpers.polling import wait_until_async

ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
DENY_EC2 = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "ec2:*", "Resource": "*"}]}
)


@pytest.fixture
def hosts(pg_cluster: postgres.Cluster, tmp_path: Path) -> Iterator[tuple[Identity, Identity]]:
    url = pg_cluster.create_database("hosts")
    stores = [open_store(url, tmp_path / name) for name in ("host-a", "host-b")]
    try:
        a, b = (Identity(s) for s in stores)
        b.CACHE_SECONDS = 1e9  # only a heard change may drop b's cached keys
        yield a, b
    finally:
        for s in stores:
            s.close()


async def _listening(identity: Identity) -> None:
    """Until the identity's watch is live (its first answers are 'changed' until the LISTEN took effect)."""
    remote = identity.remote
    assert remote is not None
    await wait_until_async("the listener to listen", lambda: _async(not remote.changed()))


async def _async(value: bool) -> bool:
    return value


async def test_a_key_disabled_on_one_host_is_refused_on_the_other(hosts: tuple[Identity, Identity]) -> None:
    a, b = hosts
    a.create_account("acme")
    a.create_user("acme", "alice")
    akid = a.create_access_key("acme", "alice").access_key_id
    await _listening(b)
    key = await b.access_key(akid)
    assert key is not None and key.active  # now in b's cache

    a.set_access_key_active(akid, False)

    async def refused() -> bool:
        found = await b.access_key(akid)
        return found is not None and not found.active

    await wait_until_async("b to see the key disabled", refused)

    a.delete_access_key(akid)

    async def gone() -> bool:
        return await b.access_key(akid) is None

    await wait_until_async("b to see the key deleted", gone)


async def test_a_policy_changed_on_one_host_applies_on_the_other(hosts: tuple[Identity, Identity]) -> None:
    a, b = hosts
    account = a.create_account("acme")
    a.create_user("acme", "bob")
    akid = a.create_access_key("acme", "bob").access_key_id
    await _listening(b)
    key = await b.access_key(akid)
    assert key is not None
    bob = key.principal

    async def verdict() -> str | None:
        return await identity_verdict(b, bob, "ec2:DescribeInstances", "*", {})

    assert await verdict() is None  # no policy: nothing allows (and the empty set is cached on b)

    def put(document: str) -> Callable[[Tx], None]:
        return lambda tx: iam_policies.put_inline(tx, account.account_id, "user", "bob", "p", document)

    def verdict_is(wanted: str | None) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return await verdict() == wanted

        return probe

    await a.change(put(ALLOW_ALL))
    await wait_until_async("b to apply the new policy", verdict_is(ALLOW))
    await a.change(put(DENY_EC2))
    await wait_until_async("b to apply the changed policy", verdict_is(DENY))
    await a.change(lambda tx: iam_policies.delete_inline(tx, account.account_id, "user", "bob", "p"))
    await wait_until_async("b to drop the deleted policy", verdict_is(None))


def _stores(pg_cluster: postgres.Cluster, tmp_path: Path) -> tuple[PgStore, PgStore]:
    url = pg_cluster.create_database("notices")
    a, b = (open_store(url, tmp_path / name) for name in ("host-a", "host-b"))
    assert isinstance(a, PgStore) and isinstance(b, PgStore)
    return a, b


async def test_notices_go_with_the_commit_and_not_with_a_rolled_back_unit(
    pg_cluster: postgres.Cluster, tmp_path: Path
) -> None:
    a, b = _stores(pg_cluster, tmp_path)
    try:
        a.migrate("t", ["CREATE TABLE t (k TEXT PRIMARY KEY)"])
        first, second, own = b.watch("first"), b.watch("second"), a.watch("first")
        await wait_until_async("b to listen", lambda: _async(not first.changed()))
        second.changed()  # its first answer (the listener is live now): from here, only notices move it
        await wait_until_async("a to listen", lambda: _async(not own.changed()))

        def fails(tx: Tx) -> None:
            tx.announce("first")
            tx.execute("INSERT INTO t VALUES('x')")
            tx.execute("INSERT INTO t VALUES('x')")  # a duplicate: this unit is rolled back

        def stands(tx: Tx) -> None:
            tx.announce("second")
            tx.execute("INSERT INTO t VALUES('y')")

        def stands_first(tx: Tx) -> None:
            tx.execute("INSERT INTO t VALUES('w')")

        with pytest.raises(psycopg.errors.UniqueViolation):
            await a.write(fails)  # alone in its transaction
        failed: list[BaseException] = []

        async def write_expecting_failure() -> None:
            try:
                await a.write(fails)
            except psycopg.errors.UniqueViolation as e:
                failed.append(e)

        # While the first write's transaction is in flight the other two queue, and commit together: the
        # failing unit rolled back to its savepoint, the other standing.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.write, stands_first)
            nursery.start_soon(write_expecting_failure)
            nursery.start_soon(a.write, stands)
        assert len(failed) == 1
        await wait_until_async("b to hear the committed unit", lambda: _async(second.changed()))
        # Notices arrive in commit order: the one of the rolled-back unit would have come first.
        assert not first.changed()
        # a ignores its own notices (it keeps its caches in step itself).
        assert not own.changed()
        await b.write(lambda tx: tx.announce("first"))
        await wait_until_async("a to hear b", lambda: _async(own.changed()))
    finally:
        a.close()
        b.close()


async def test_a_lost_listener_connection_counts_as_a_change(
    pg_cluster: postgres.Cluster, tmp_path: Path
) -> None:
    a, b = _stores(pg_cluster, tmp_path)
    try:
        watch = b.watch("identity")
        await wait_until_async("b to listen", lambda: _async(not watch.changed()))
        with psycopg.connect(b.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        # Notices sent while it was cut off are lost: the watch says "changed" (not listening, then a new
        # epoch once it listens again), so caches start afresh.
        await wait_until_async("the watch to say changed", lambda: _async(watch.changed()))
        await wait_until_async("b to listen again", lambda: _async(not watch.changed()))
        await a.write(lambda tx: tx.announce("identity"))
        await wait_until_async("b to hear a after reconnecting", lambda: _async(watch.changed()))
    finally:
        a.close()
        b.close()


def test_a_watch_asked_of_a_closed_store_starts_no_listener(
    pg_cluster: postgres.Cluster, tmp_path: Path
) -> None:
    """A cache made after shutdown (a late request) gets a watch that always says "changed", and no LISTEN
    thread that nobody would stop (it would retry for the life of the process)."""
    s = open_store(pg_cluster.create_database("closed"), tmp_path)
    s.close()
    before = {t.name for t in threading.enumerate()}
    watch = s.watch("identity")
    assert watch is not None and watch.changed() and watch.changed()
    assert "euca-store-listen" not in {t.name for t in threading.enumerate()} - before


def test_sqlite_stores_have_no_remote_watch(tmp_path: Path) -> None:
    """One host by definition: its processes share the mapped counters (iam/changes.py, walrus/changes.py)."""
    s = Store(tmp_path / "state.db")
    try:
        assert s.watch("identity") is None
        s.write_sync(lambda tx: tx.announce("identity"))  # accepted, and nothing to send
    finally:
        s.close()


def test_notify_sql_sends_each_name_once_and_refuses_names_that_are_not_plain() -> None:
    assert listen.notify_sql(["walrus.objects", "identity", "identity"], "ab12") == (
        "SELECT pg_notify('euca_changes', 'identity ab12'), pg_notify('euca_changes', 'walrus.objects ab12')"
    )
    for bad in ("", "Identity", "it's", "a b", "x" * 64):
        with pytest.raises(ValueError):
            listen.check_name(bad)


async def test_closing_the_store_ends_its_listener(pg_cluster: postgres.Cluster, tmp_path: Path) -> None:
    a, b = _stores(pg_cluster, tmp_path)
    a.close()

    def listeners() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "euca-store-listen" and t.is_alive()}

    before = listeners()  # other tests' stores still open, if any
    watch = b.watch("identity")
    await wait_until_async("b to listen", lambda: _async(not watch.changed()))
    assert len(listeners() - before) == 1
    url = b.url
    b.close()
    assert listeners() - before == set()

    def listening() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            ).fetchone()
        return int(row[0]) if row else 0

    await wait_until_async("the listening session to end", lambda: _async(listening() == 0))
