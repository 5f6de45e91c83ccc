"""The ids the CLC hands out for EC2 resources: `prefix-` and eight hex digits, as EC2's short ids."""

from __future__ import annotations

import secrets
from collections.abc import Callable


def unused_id(prefix: str, taken: Callable[[str], bool]) -> str:
    """A new `prefix-xxxxxxxx` id that is not `taken` yet (drawn again on a collision). `taken` asks the
    records module that owns the table (the only module that queries it)."""
    while True:
        new = f"{prefix}-{secrets.token_hex(4)}"
        if not taken(new):
            return new
