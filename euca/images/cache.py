"""The node's image cache: one verified copy of each image, shared by every instance that boots from it.

- Bounded: entries plus downloads in progress stay under `max_bytes`; room is made by evicting the least
  recently used entries that no instance holds (pins are counted, in memory).
- Survives restarts: each entry is `<key>.img` plus a sidecar `<key>.json` (size, digest, times), both
  fsync'd. The sidecar is written after the image is in place and removed before it goes, so at start an
  image without a sidecar is a leftover and is deleted, as is everything in the `.tmp/` directory.
- An image is produced at most once at a time: concurrent requests for the same key wait for the first.

Typical use on a node (the producer writes the temp file it is given; the cache publishes it by rename):

    path = await cache.acquire(image_id, size_hint=source.size,
                               produce=lambda tmp: pipeline.write_image(source, tmp, client=client))
    ...  # boot instances from `path` (read-only, or as the backing file of per-instance overlays)
    cache.release(image_id)

After a restart the node pins the images of the instances still running with `cache.pin(key)`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

from euca.core.files import fsync_directory

TMP_DIR = ".tmp"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class CacheFullError(Exception):
    """There is no room for the image even after evicting everything not in use."""


class CacheEntry(msgspec.Struct):
    key: str
    size: int
    created: float
    last_used: float
    digest: str = ""


def _write_durably(path: Path, data: bytes) -> None:
    # A unique name in the cache's .tmp/ (cleaned at start): concurrent writers of one sidecar don't collide.
    tmp = path.parent / TMP_DIR / f"{path.name}.{os.urandom(6).hex()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class ImageCache:
    def __init__(self, directory: Path, max_bytes: int, *, clock: Callable[[], float] = time.time):
        self.directory = directory
        self.max_bytes = max_bytes
        self.clock = clock
        self.entries: dict[str, CacheEntry] = {}
        self._pins: dict[str, int] = {}
        self._busy: dict[str, trio.Event] = {}
        self._reserved = 0

    # -- start ----------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, directory: Path, max_bytes: int, *, clock: Callable[[], float] = time.time
    ) -> ImageCache:
        cache = cls(directory, max_bytes, clock=clock)
        await trio.to_thread.run_sync(cache._load)
        return cache

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / TMP_DIR
        tmp.mkdir(exist_ok=True)
        for leftover in tmp.iterdir():  # downloads a crash interrupted
            _unlink(leftover)
        decoder = msgspec.json.Decoder(CacheEntry)
        for sidecar in self.directory.glob("*.json"):
            key = sidecar.stem
            image = self.image_path(key) if _KEY.fullmatch(key) else None
            try:
                entry = decoder.decode(sidecar.read_bytes())
                ok = image is not None and entry.key == key and image.stat().st_size == entry.size
            except (msgspec.DecodeError, OSError):
                ok = False
            if ok:
                self.entries[key] = entry
            else:
                _unlink(sidecar)
        for path in self.directory.iterdir():
            if path.name.endswith(".json.tmp") or (path.suffix == ".img" and path.stem not in self.entries):
                _unlink(path)
        for key in self._pick_victims(self.max_bytes):
            self._delete_files(key)
            del self.entries[key]
        fsync_directory(self.directory)

    # -- queries --------------------------------------------------------------------------------------

    def image_path(self, key: str) -> Path:
        return self.directory / f"{key}.img"

    def _sidecar(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    @property
    def used_bytes(self) -> int:
        return sum(e.size for e in self.entries.values())

    def pins(self, key: str) -> int:
        return self._pins.get(key, 0)

    # -- use ------------------------------------------------------------------------------------------

    def pin(self, key: str) -> bool:
        """Hold an entry that is already cached (e.g. for instances found running at start)."""
        if key not in self.entries:
            return False
        self._pins[key] = self._pins.get(key, 0) + 1
        return True

    def release(self, key: str) -> None:
        count = self._pins.get(key, 0)
        if count <= 1:
            self._pins.pop(key, None)
        else:
            self._pins[key] = count - 1

    async def acquire(
        self,
        key: str,
        *,
        produce: Callable[[Path], Awaitable[Any]],
        size_hint: int | None = None,
        digest: str = "",
    ) -> Path:
        """The cached image's path, pinned (call release). Produces it first if it is not cached.

        `produce(tmp_path)` must write the complete, verified image at tmp_path (or raise); the cache
        publishes it by atomic rename. `size_hint` reserves room before producing.
        """
        if not _KEY.fullmatch(key):
            raise ValueError(f"bad cache key {key!r}")
        while True:
            if key in self.entries:
                self._pins[key] = self._pins.get(key, 0) + 1
                entry = self.entries[key]
                entry.last_used = self.clock()
                await trio.to_thread.run_sync(_write_durably, self._sidecar(key), msgspec.json.encode(entry))
                return self.image_path(key)
            busy = self._busy.get(key)
            if busy is None:
                break
            await busy.wait()  # being produced or deleted: look again once that is over
        done = self._busy[key] = trio.Event()
        try:
            await self._produce(key, produce, size_hint or 0, digest)
        finally:
            del self._busy[key]
            done.set()
        self._pins[key] = self._pins.get(key, 0) + 1
        return self.image_path(key)

    @asynccontextmanager
    async def use(
        self,
        key: str,
        *,
        produce: Callable[[Path], Awaitable[Any]],
        size_hint: int | None = None,
        digest: str = "",
    ) -> AsyncIterator[Path]:
        path = await self.acquire(key, produce=produce, size_hint=size_hint, digest=digest)
        try:
            yield path
        finally:
            self.release(key)

    async def _produce(
        self, key: str, produce: Callable[[Path], Awaitable[Any]], size: int, digest: str
    ) -> None:
        if size > self.max_bytes:
            raise CacheFullError(
                f"an image of {size} bytes is larger than the whole cache ({self.max_bytes})"
            )
        await self._make_room(size)
        self._reserved += size
        tmp = self.directory / TMP_DIR / f"{key}.{os.urandom(6).hex()}"
        try:
            await produce(tmp)
            actual = tmp.stat().st_size
            now = self.clock()
            entry = CacheEntry(key=key, size=actual, created=now, last_used=now, digest=digest)

            def publish() -> None:
                os.replace(tmp, self.image_path(key))
                _write_durably(self._sidecar(key), msgspec.json.encode(entry))

            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(publish)
            self.entries[key] = entry
        except BaseException:
            _unlink(tmp)
            raise
        finally:
            self._reserved -= size
        # The hint may have been short: get back under the bound if anything unused can go.
        await self._evict(self._pick_victims(self.max_bytes))

    # -- eviction -------------------------------------------------------------------------------------

    async def _make_room(self, size: int) -> None:
        target = self.max_bytes - self._reserved - size
        await self._evict(self._pick_victims(target))
        if self.used_bytes > target:
            pinned = sum(e.size for k, e in self.entries.items() if self._pins.get(k))
            raise CacheFullError(
                f"no room for {size} bytes: {pinned} bytes of the {self.max_bytes}-byte cache are in use"
                f" and {self._reserved} bytes are being downloaded"
            )

    def _pick_victims(self, target: int) -> list[str]:
        """Unpinned entries, least recently used first, whose removal brings the cache to <= target bytes."""
        candidates = sorted(
            (e for k, e in self.entries.items() if not self._pins.get(k) and k not in self._busy),
            key=lambda e: e.last_used,
        )
        used = self.used_bytes
        victims = []
        for entry in candidates:
            if used <= target:
                break
            victims.append(entry.key)
            used -= entry.size
        return victims

    async def _evict(self, keys: list[str]) -> None:
        if not keys:
            return
        # Off the books first (decisions stay on the event loop); then the files, in a thread, while
        # an acquire of the same key waits for the deletion to finish.
        busy = trio.Event()
        for key in keys:
            del self.entries[key]
            self._busy[key] = busy
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._delete_all, keys)
        finally:
            for key in keys:
                del self._busy[key]
            busy.set()

    def _delete_all(self, keys: list[str]) -> None:
        for key in keys:
            self._delete_files(key)

    def _delete_files(self, key: str) -> None:
        # Sidecar first: if we die in between, the image is an orphan that the next start deletes.
        _unlink(self._sidecar(key))
        _unlink(self.image_path(key))

    async def evict(self, key: str) -> bool:
        """Drop an entry no one uses (e.g. its image was deregistered). False if it is in use or absent."""
        if key not in self.entries or self._pins.get(key) or key in self._busy:
            return False
        await self._evict([key])
        return True
