"""Which cloud key the cloud's Walrus hosts encrypt with (its id only: the key itself never enters the store)."""

from __future__ import annotations

from euca.core.store import Tx


def claim_cloud_key(tx: Tx, kid: str, now: float) -> str:
    """Record `kid` as the cloud's key if none is recorded yet; the recorded one (the first host's)."""
    tx.execute(
        "INSERT INTO walrus_sse_key(id, kid, created) VALUES(1, ?, ?) ON CONFLICT(id) DO NOTHING", (kid, now)
    )
    row = tx.one("SELECT kid FROM walrus_sse_key WHERE id = 1", ())
    assert row is not None
    return str(row[0])
