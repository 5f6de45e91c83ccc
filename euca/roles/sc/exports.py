"""What the SC has exported for attachments (sc_exports in this host's store), the only module touching it.

A row is written (durably) before the NBD export is made and removed after it is gone, so an SC restarted
with a new qemu-storage-daemon exports again every volume its rows name (controller.recover): a node whose
QEMU lost the connection reconnects to the same export name.
"""

from __future__ import annotations

import time

from euca.core.store import Store, Tx

MIGRATION = [
    """
    CREATE TABLE sc_exports (
        volume_id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
]


def migrate(store: Store) -> None:
    store.migrate("sc.exports", MIGRATION)


def record(tx: Tx, volume_id: str, node: str) -> None:
    tx.execute(
        "INSERT INTO sc_exports(volume_id, node, created) VALUES(?,?,?) "
        "ON CONFLICT(volume_id) DO UPDATE SET node=excluded.node",
        (volume_id, node, time.time()),
    )


def forget(tx: Tx, volume_id: str) -> None:
    tx.execute("DELETE FROM sc_exports WHERE volume_id=?", (volume_id,))


def exported(tx: Tx) -> dict[str, str]:
    """volume id -> the node it is exported for."""
    return {r["volume_id"]: r["node"] for r in tx.all("SELECT volume_id, node FROM sc_exports")}


def is_exported(tx: Tx, volume_id: str) -> bool:
    return tx.one("SELECT 1 FROM sc_exports WHERE volume_id=?", (volume_id,)) is not None
