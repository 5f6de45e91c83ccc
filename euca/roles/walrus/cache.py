"""The object cache: recently read object rows (and inline bytes) of this process."""

from __future__ import annotations

from euca.roles.walrus.meta import ObjectRow


class ObjectCache:
    """The latest versions of recently read objects (their rows, and an inline object's bytes), so that GET and
    HEAD of a hot key need no store read and no thread hop.

    Coherent because this process is the only writer of the Walrus tables (as for the bucket cache): every
    write of a key drops it before and after the store write (`forget`), and a read that overlapped a write
    does not fill the cache (`generation`, bumped by each forget, must be unchanged since the read began)."""

    def __init__(self, max_entries: int = 16384, max_bytes: int = 64 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.generation = 0
        self._rows: dict[tuple[str, str], ObjectRow] = {}
        self._bytes = 0

    def get(self, bucket: str, key: str) -> ObjectRow | None:
        return self._rows.get((bucket, key))

    def fill(self, bucket: str, key: str, row: ObjectRow, generation: int) -> None:
        if generation != self.generation or row.delete_marker:
            return
        size = len(row.data) if row.data is not None else 0
        if size > self.max_bytes // 64:
            return
        old = self._rows.pop((bucket, key), None)
        if old is not None and old.data is not None:
            self._bytes -= len(old.data)
        while self._rows and (len(self._rows) >= self.max_entries or self._bytes + size > self.max_bytes):
            # Oldest filled first out (dicts keep insertion order).
            evicted = self._rows.pop(next(iter(self._rows)))
            if evicted.data is not None:
                self._bytes -= len(evicted.data)
        self._rows[(bucket, key)] = row
        self._bytes += size

    def forget(self, bucket: str, key: str) -> None:
        self.generation += 1
        old = self._rows.pop((bucket, key), None)
        if old is not None and old.data is not None:
            self._bytes -= len(old.data)

    def clear(self) -> None:
        self.generation += 1
        self._rows.clear()
        self._bytes = 0
