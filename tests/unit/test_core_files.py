"""core/files.map_shared: a small file mapped by several processes (here two maps in one)."""

from __future__ import annotations

from pathlib import Path

from euca.core.files import map_shared


def test_map_shared_makes_or_extends_the_file_and_maps_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "counters"
    path.write_bytes(b"ab")  # shorter than asked: extended with zeros, what it held kept
    one, two = map_shared(path, 8), map_shared(path, 8)
    assert one[:8] == b"ab" + b"\0" * 6
    one[:2] = b"xy"
    assert two[:2] == b"xy" and path.stat().st_size == 8
    fresh = map_shared(tmp_path / "new", 16)
    assert fresh[:16] == b"\0" * 16 and (tmp_path / "new").stat().st_mode & 0o777 == 0o600
