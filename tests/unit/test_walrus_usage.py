"""S3 usage counting (walrus/usage.py, meta/usage.py): counts in memory per process, one row per bucket per
flush, and bucket sizes sampled only when they change."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from euca.core.http import Response
from euca.core.http_messages import FileBody
from euca.core.store import Store
from euca.roles.walrus import meta, usage
from euca.roles.walrus.meta import usage as usage_meta

OWNER = "c" * 64


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    store.migrate("walrus", meta.SCHEMA)
    store.migrate(usage_meta.NAMESPACE, usage_meta.SCHEMA)
    return store


def _request(path: str, length: int | None = None) -> Any:
    headers = {} if length is None else {"content-length": str(length)}
    return SimpleNamespace(path=path, headers=headers)


def test_counts_per_bucket_and_flushes_one_row_each(tmp_path: Path) -> None:
    store = _store(tmp_path)
    counters = usage.UsageCounters(3, lambda b: OWNER if b in ("photos", "logs") else None)
    counters.count(_request("/photos/cat.jpg", 100), None, Response(200, [], b""))
    counters.count(_request("/photos/cat.jpg"), None, Response(200, [], b"x" * 40))
    counters.count(_request("/cat.jpg"), "logs", Response(200, [], b"y" * 7))  # virtual-host style
    counters.count(_request("/"), None, Response(200, [], b"<ListAllMyBuckets/>"))  # no bucket: nobody's
    counters.count(_request("/nobucket/k", 5), None, Response(404, [], b"<Error/>"))  # no such bucket
    head = Response(200, [], b"", head_length=1000)
    counters.count(_request("/photos/cat.jpg"), None, head)
    usage.set_clock(lambda: 5000.0)
    try:
        assert trio.run(counters.flush, store) == 2
        assert trio.run(counters.flush, store) == 0  # nothing new
    finally:
        usage.set_clock(__import__("time").time)
    rows = store.read_sync(
        lambda tx: [
            tuple(r)
            for r in tx.all(
                "SELECT at, bucket, owner_id, process, requests, bytes_in, bytes_out FROM walrus_usage_requests "
                "ORDER BY bucket"
            )
        ]
    )
    assert rows == [(5000.0, "logs", OWNER, 3, 1, 0, 7), (5000.0, "photos", OWNER, 3, 3, 100, 40)]
    store.close()


def test_body_length_of_files_and_streams(tmp_path: Path) -> None:
    assert usage.body_length(Response(200, [], FileBody(-1, 0, 123))) == 123

    async def chunks() -> Any:
        yield b"abc"

    assert usage.body_length(Response(200, [("Content-Length", "3")], chunks())) == 3
    assert usage.body_length(Response(200, [], chunks())) == 0


def test_sampler_writes_only_changes_and_gone_buckets(tmp_path: Path) -> None:
    store = _store(tmp_path)

    def bucket(name: str) -> None:
        store.write_sync(
            lambda tx: tx.execute(
                "INSERT INTO walrus_buckets(name, owner_id, owner_name, created, acl) VALUES(?,?,?,?,?)",
                (name, OWNER, "alpha", 0.0, "{}"),
            )
        )

    def put(name: str, key: str, size: int, marker: int = 0) -> None:
        store.write_sync(
            lambda tx: tx.execute(
                "INSERT INTO walrus_objects(bucket, key, version_id, is_latest, delete_marker, size, last_modified, "
                "owner_id, owner_name) VALUES(?,?,?,1,?,?,0,?,?)",
                (name, key.encode(), key + str(size), marker, size, OWNER, "alpha"),
            )
        )

    bucket("photos")
    bucket("empty")
    put("photos", "a", 100)
    put("photos", "b", 50)
    put("photos", "c", 0, marker=1)  # a delete marker holds nothing
    sampler = usage.StoredSampler()
    now = [1000.0]
    usage.set_clock(lambda: now[0])
    try:
        assert trio.run(sampler.sample, store) == 2
        now[0] = 2000.0
        assert trio.run(sampler.sample, store) == 0  # nothing changed: nothing written
        put("photos", "d", 10)
        store.write_sync(lambda tx: tx.execute("DELETE FROM walrus_buckets WHERE name='empty'"))
        now[0] = 3000.0
        assert trio.run(sampler.sample, store) == 2
        # A restarted Walrus starts from the last samples written.
        assert trio.run(usage.StoredSampler().sample, store) == 0
    finally:
        usage.set_clock(__import__("time").time)
    rows = store.read_sync(
        lambda tx: [
            tuple(r)
            for r in tx.all("SELECT at, bucket, bytes, objects FROM walrus_usage_stored ORDER BY seq")
        ]
    )
    assert sorted(rows) == [
        (1000.0, "empty", 0, 0),
        (1000.0, "photos", 150, 2),
        (3000.0, "empty", 0, -1),
        (3000.0, "photos", 160, 3),
    ]
    store.close()
