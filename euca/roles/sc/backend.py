"""The one narrow interface between the SC and where volume bytes live.

The SC's controller (controller.py) knows volumes only through `VolumeBackend`; the CLC and the NCs never
see a backend at all: the CLC sees volume ids, sizes and states in cluster messages, and an NC sees a
`VolumeExport` (euca/protocol/cluster.py), a description of how QEMU reaches the bytes, which it turns into a
libvirt <disk>. So a backend is one class here and one `kind` of export the NC knows how to render:

    files  a directory of sparse raw files on the SC host (files.py); exported as a local path on a one-box,
           later over NBD (qemu-storage-daemon on the SC host, QEMU's own NBD client on the node)
    rbd    (not built) Ceph images: create/delete/grow are `rbd create/rm/resize` (or librbd), export answers
           kind "rbd" with pool/image, the monitors and the cephx user; libvirt's <disk type='network'>
           <source protocol='rbd'> needs nothing else on the node but the secret

Every method blocks (file system, subprocesses, network): the controller calls them in a worker thread.
Every method is idempotent, because the controller redoes interrupted work after a restart.
"""

from __future__ import annotations

import re
from typing import Protocol

from euca.protocol.cluster import VolumeExport

GIB = 1024**3

# Volume ids as the CLC makes them (vol- and 8 or 17 hex digits); anything else never reaches a file name.
VOLUME_ID_RE = re.compile(r"^vol-[0-9a-f]{8}(?:[0-9a-f]{9})?$")


class BackendError(Exception):
    """The backend could not do what was asked; the message says why (for the operator's log and the CLC)."""


def check_volume_id(volume_id: str) -> str:
    if not VOLUME_ID_RE.match(volume_id):
        raise BackendError(f"invalid volume id {volume_id!r}")
    return volume_id


class ChunkReader(Protocol):
    """One volume opened for a snapshot (VolumeBackend.open_chunks); blocking, used from one thread at a time."""

    def size_bytes(self) -> int: ...

    def data_chunks(self, chunk_size: int) -> list[int]:
        """The indices of the chunks that may hold data, ascending; chunks wholly in a hole are left out
        (a backend that cannot tell lists them all)."""
        ...

    def read_chunk(self, index: int, chunk_size: int) -> bytes:
        """Chunk `index`'s bytes (shorter only at the end of the volume)."""
        ...

    def close(self) -> None: ...


class VolumeBackend(Protocol):
    """Where one SC keeps its volumes, and the chunk streams snapshots are made of and restored from."""

    name: str

    def create(self, volume_id: str, size_gb: int) -> None:
        """An empty (zeroed) volume of size_gb GiB. Already there with that size: nothing to do; with
        another size: BackendError."""
        ...

    def delete(self, volume_id: str) -> None:
        """The volume and its bytes gone. Not there: nothing to do."""
        ...

    def grow(self, volume_id: str, size_gb: int) -> None:
        """The volume made size_gb GiB (never smaller; the new space reads as zeros)."""
        ...

    def size_gb(self, volume_id: str) -> int | None:
        """The volume's size, or None if the backend has no such volume."""
        ...

    def export(self, volume_id: str) -> VolumeExport:
        """How a node of this cluster reaches the volume's bytes."""
        ...

    def capacity_gb(self) -> int:
        """GiB this backend can hold in all (0: unknown)."""
        ...

    # Snapshot streams (sc/snapshots.py): a volume is read and written in fixed chunks at fixed offsets
    # (chunk i covers [i * chunk_size, (i + 1) * chunk_size)), so the bytes never pass whole through memory.

    def open_chunks(self, volume_id: str) -> ChunkReader:
        """A reader of the volume's chunks as they are now: it keeps reading this volume even if the volume
        is deleted meanwhile (a snapshot started before a DeleteVolume completes, as on EC2)."""
        ...

    def write_chunk(self, volume_id: str, index: int, chunk_size: int, data: bytes) -> None:
        """Write chunk `index` (into a volume made by create()); durable only after flush()."""
        ...

    def flush(self, volume_id: str) -> None:
        """Every chunk written so far made durable."""
        ...
