"""Object files in a walrus data dir that no metadata refers to (orphans), read straight from the files and
the state store (SQLite, read-only; or the data dir's PostgreSQL database under EUCA_TEST_STORE=postgresql)
— independently of the code that writes and sweeps them."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from helpers import postgres

_STORAGE_ID = re.compile(r"[0-9a-f]{32}")


def object_files(objects_dir: Path) -> dict[str, int]:
    """Every object file (`ab/cd/<32 hex>`; not temp files): storage id -> size."""
    found = {}
    for path in objects_dir.glob("??/??/*"):
        if path.is_file() and _STORAGE_ID.fullmatch(path.name):
            found[path.name] = path.stat().st_size
    return found


def referenced_files(db: Path) -> set[str]:
    """Storage ids the Walrus tables refer to: object versions, their segments, parts of open uploads."""
    refs: set[str] = set()
    for storage_id, segments in state_rows(db, "SELECT storage_id, segments FROM walrus_objects"):
        if storage_id:
            refs.add(storage_id)
        if segments:
            refs.update(json.loads(segments))
    refs.update(r[0] for r in state_rows(db, "SELECT storage_id FROM walrus_parts"))
    return refs


def state_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the state store of the data dir of `db` (its state.db, or its PostgreSQL database)."""
    url = postgres.registered_url(db.parent)
    if url is not None:
        import psycopg

        with psycopg.connect(url) as pg:
            return list(pg.execute(sql).fetchall())
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


def orphan_files(data_dir: Path) -> dict[str, int]:
    """Object files under data_dir/objects that no row of data_dir/state.db refers to: storage id -> size."""
    refs = referenced_files(data_dir / "state.db")
    return {sid: size for sid, size in object_files(data_dir / "objects").items() if sid not in refs}


def temp_files(data_dir: Path) -> list[Path]:
    tmp = data_dir / "objects" / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []
