"""One counter, shared by every process on the host through a small mapped file beside the store, that says
"identity changed": a key deleted or disabled, a policy put or attached. Each process keeps its looked-up keys
and policies in memory and drops them when the counter moves, so a change made by the CLC (or `euca admin`)
holds in every process (walrus workers included) from the next request, with no store read per request.

A writer stores a fresh random value rather than an increment: two writers racing may both write, and
either value differs from what any reader last saw, so no change is missed."""

from __future__ import annotations

import mmap
import secrets
from pathlib import Path

from euca.core.files import map_shared

SIZE = 8


class ChangeCounter:
    def __init__(self, path: Path | None):
        self._map: mmap.mmap | None = None
        self._local = b"\0" * SIZE  # a store in memory: one process, the value lives here
        if path is not None:
            self._map = map_shared(path, SIZE)
        self._seen = self.value()

    def value(self) -> bytes:
        return self._map[:SIZE] if self._map is not None else self._local

    def bump(self) -> None:
        fresh = secrets.token_bytes(SIZE)
        if self._map is not None:
            self._map[:SIZE] = fresh
        else:
            self._local = fresh

    def changed(self) -> bool:
        """Whether anyone bumped since the last call that answered True (or since start)."""
        now = self.value()
        if now == self._seen:
            return False
        self._seen = now
        return True
