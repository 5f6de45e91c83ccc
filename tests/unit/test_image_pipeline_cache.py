"""euca.images.cache: bounded, LRU, shared, produced once, and it survives restarts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

from euca.images.cache import CacheFullError, ImageCache


class Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate: trio.Event | None = None

    def of(self, key: str, size: int):  # type: ignore[no-untyped-def]
        async def produce(tmp: Path) -> None:
            self.calls.append(key)
            if self.gate is not None:
                await self.gate.wait()
            tmp.write_bytes(key.encode()[:1] * size)

        return produce


def counter_clock():  # type: ignore[no-untyped-def]
    ticks = itertools.count(1)
    return lambda: float(next(ticks))


async def test_produced_once_and_shared(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 1000, clock=counter_clock())
    p = Producer()
    path = await cache.acquire("emi-1", produce=p.of("emi-1", 100), size_hint=100)
    again = await cache.acquire("emi-1", produce=p.of("emi-1", 100), size_hint=100)
    assert path == again == tmp_path / "emi-1.img" and path.read_bytes() == b"e" * 100
    assert p.calls == ["emi-1"] and cache.pins("emi-1") == 2
    cache.release("emi-1")
    cache.release("emi-1")
    assert cache.pins("emi-1") == 0 and "emi-1" in cache


async def test_concurrent_requests_produce_once(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 1000)
    p = Producer()
    p.gate = trio.Event()
    paths: list[Path] = []

    async def boot() -> None:
        paths.append(await cache.acquire("emi-1", produce=p.of("emi-1", 10), size_hint=10))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(boot)
        await trio.testing.wait_all_tasks_blocked()
        p.gate.set()
    assert p.calls == ["emi-1"] and len(paths) == 5 and cache.pins("emi-1") == 5


async def test_lru_eviction_spares_pinned_entries(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 300, clock=counter_clock())
    p = Producer()
    for key in ("a", "b", "c"):
        await cache.acquire(key, produce=p.of(key, 100), size_hint=100)
    cache.release("a")
    cache.release("c")  # b stays in use
    await cache.acquire("a", produce=p.of("a", 100))  # a is now more recent than c
    cache.release("a")
    await cache.acquire("d", produce=p.of("d", 100), size_hint=100)
    assert sorted(cache.entries) == ["a", "b", "d"]  # c: least recently used among the unpinned
    assert not (tmp_path / "c.img").exists() and not (tmp_path / "c.json").exists()
    assert cache.used_bytes <= 300


async def test_full_of_pinned_images(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 250)
    p = Producer()
    await cache.acquire("a", produce=p.of("a", 100), size_hint=100)
    await cache.acquire("b", produce=p.of("b", 100), size_hint=100)
    with pytest.raises(CacheFullError):
        await cache.acquire("c", produce=p.of("c", 100), size_hint=100)
    with pytest.raises(CacheFullError):
        await cache.acquire("huge", produce=p.of("h", 1000), size_hint=1000)
    assert p.calls == ["a", "b"] and sorted(cache.entries) == ["a", "b"]


async def test_failed_producer_leaves_nothing(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 1000)

    async def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("part 3 is corrupt")

    with pytest.raises(RuntimeError):
        await cache.acquire("emi-1", produce=broken, size_hint=10)
    assert "emi-1" not in cache and cache.pins("emi-1") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp"]
    assert list((tmp_path / ".tmp").iterdir()) == []
    # The next request tries again.
    p = Producer()
    await cache.acquire("emi-1", produce=p.of("emi-1", 10))
    assert p.calls == ["emi-1"]


async def test_survives_restart_and_cleans_leftovers(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 1000, clock=counter_clock())
    p = Producer()
    await cache.acquire("emi-1", produce=p.of("emi-1", 100), size_hint=100, digest="ab" * 20)
    await cache.acquire("eki-2", produce=p.of("eki-2", 50), size_hint=50)
    # What a crash leaves behind: a download in progress, an image whose sidecar was never written,
    # a sidecar whose image is gone, a half-written sidecar.
    (tmp_path / ".tmp" / "emi-9.abc").write_bytes(b"partial")
    (tmp_path / "emi-7.img").write_bytes(b"orphan")
    (tmp_path / "eri-8.json").write_bytes(b'{"key":"eri-8","size":3,"created":1,"last_used":1}')
    (tmp_path / "emi-1.json.tmp").write_bytes(b"{")

    reopened = await ImageCache.open(tmp_path, 1000)
    assert sorted(reopened.entries) == ["eki-2", "emi-1"]
    assert reopened.entries["emi-1"].digest == "ab" * 20 and reopened.entries["emi-1"].size == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp",
        "eki-2.img",
        "eki-2.json",
        "emi-1.img",
        "emi-1.json",
    ]
    assert list((tmp_path / ".tmp").iterdir()) == []
    # Nothing pinned after a restart until the node says which images its running instances use.
    assert reopened.pin("emi-1") and not reopened.pin("emi-404")
    again = Producer()
    await reopened.acquire("emi-1", produce=again.of("emi-1", 100))
    assert again.calls == []


async def test_restart_with_a_smaller_bound_evicts_lru(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 1000, clock=counter_clock())
    p = Producer()
    for key in ("old", "new"):
        await cache.acquire(key, produce=p.of(key, 100))
    smaller = await ImageCache.open(tmp_path, 150)
    assert list(smaller.entries) == ["new"]


async def test_explicit_evict(tmp_path: Path) -> None:
    cache = await ImageCache.open(tmp_path, 1000)
    p = Producer()
    await cache.acquire("emi-1", produce=p.of("emi-1", 10))
    assert not await cache.evict("emi-1")  # in use
    cache.release("emi-1")
    assert await cache.evict("emi-1") and "emi-1" not in cache
    with pytest.raises(ValueError):
        await cache.acquire("../etc", produce=p.of("x", 1))


async def test_with_the_pipeline(tmp_path: Path) -> None:
    from euca.core.pki import CloudCA
    from euca.images.bundler import bundle_image
    from euca.images.pipeline import source_from_bundle_manifest, write_image
    from euca.protocol import bundle as b

    ca = CloudCA.load_or_create(tmp_path / "ca")
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(range(256)) * 40000)
    result = bundle_image(
        image, tmp_path / "parts", user="1", cloud_cert=ca.cert, user_cert=ca.cert, user_key=ca.key
    )
    m = b.parse_manifest(result.manifest)
    source = source_from_bundle_manifest(m, ca.key, str(tmp_path / "parts"))
    cache = await ImageCache.open(tmp_path / "cache", 100 * 1024 * 1024)
    async with cache.use(
        "emi-1", produce=lambda tmp: write_image(source, tmp), size_hint=m.size, digest=m.digest
    ) as path:
        assert path.read_bytes() == image.read_bytes()
        assert cache.pins("emi-1") == 1
    assert cache.pins("emi-1") == 0 and cache.entries["emi-1"].digest == m.digest
