"""Change counters shared by the processes that serve S3 (walrus.workers), so each can keep its caches.

Every Walrus process keeps the buckets (with their policies and CORS rules) and recently read object rows in
memory. With one process that is the truth; with several, a write in one must reach the others' caches. A
small file in the data directory, mapped by every process, holds one slot per process with two counters:
object writes and bucket (configuration) writes. A process bumps only its own slot after it commits, so no
increment is ever lost, and at the start of each request reads the others' slots (a few hundred bytes of
shared memory, no system call): a changed object counter drops its object cache, a changed configuration
counter reloads the buckets from the store before the request goes on.

A request that starts after another process answered a write therefore sees that write, which is what
clients rely on (read-after-write). The store stays the truth; the counters only say when to look again.
Walrus on other hosts sharing a PostgreSQL store hears of writes through the store instead (service.py,
`watch_other_hosts`: core/store/listen.py).
"""

from __future__ import annotations

import struct
from pathlib import Path

from euca.core.files import map_shared

SLOTS = 64
_SLOT = struct.Struct("<QQ")  # objects, configuration
SIZE = SLOTS * _SLOT.size

OBJECTS = 0
CONFIG = 1


class Changes:
    def __init__(self, path: Path, slot: int):
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot {slot} out of range")
        self.slot = slot
        self._map = map_shared(path, SIZE)
        self._raw = self._map[:SIZE]
        self._seen = list(_SLOT.iter_unpack(self._raw))

    def bump(self, kind: int) -> None:
        """Count one committed write of `kind` (OBJECTS or CONFIG) by this process."""
        offset = self.slot * _SLOT.size
        counters = list(_SLOT.unpack_from(self._map, offset))
        counters[kind] += 1
        _SLOT.pack_into(self._map, offset, *counters)
        self._seen[self.slot] = (counters[0], counters[1])
        self._raw = b""  # own change: the next poll compares slot by slot

    def poll(self) -> tuple[bool, bool]:
        """(objects changed, configuration changed) by other processes since the last poll."""
        raw = self._map[:SIZE]
        if raw == self._raw:
            return False, False
        self._raw = raw
        now = list(_SLOT.iter_unpack(raw))
        objects = config = False
        for slot, (was, is_) in enumerate(zip(self._seen, now, strict=True)):
            if slot == self.slot:
                continue
            objects |= was[OBJECTS] != is_[OBJECTS]
            config |= was[CONFIG] != is_[CONFIG]
        now[self.slot] = self._seen[self.slot]
        self._seen = now
        return objects, config

    def close(self) -> None:
        self._map.close()
