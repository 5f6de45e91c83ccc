"""Which object files the metadata refers to (for the sweep of files nothing refers to)."""

from __future__ import annotations

from euca.core.store import Tx
from euca.roles.walrus.meta.rows import loads

_PAGE = 10_000


def referenced_files(tx: Tx) -> set[str]:
    """Every storage id a row refers to: object versions (one file, or their part files as segments) and
    the parts of uploads in progress."""
    refs: set[str] = set()
    last = -1
    while True:  # in pages by id, so that the rows are never all in memory at once beside the set
        rows = tx.all(
            "SELECT id, storage_id, segments FROM walrus_objects WHERE id > ? "
            "AND (storage_id IS NOT NULL OR segments IS NOT NULL) ORDER BY id LIMIT ?",
            (last, _PAGE),
        )
        for _, storage_id, segments in rows:
            if storage_id:
                refs.add(storage_id)
            if segments:
                refs.update(loads(segments) or [])
        if len(rows) < _PAGE:
            break
        last = rows[-1][0]
    refs.update(row[0] for row in tx.all("SELECT storage_id FROM walrus_parts"))
    return refs
