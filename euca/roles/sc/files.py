"""The default volume backend: one sparse raw file per volume in a directory of the SC host.

Raw rather than qcow2: a raw file is the disk itself, so the NBD export (qemu-storage-daemon or qemu-nbd on
the SC host, QEMU's own NBD client on the node) needs no format layer and a one-box can hand QEMU the path;
creating one is a truncate (instant, whatever the size, no qemu-img), growing one is a truncate; and the
snapshot slice reads it in fixed chunks at their own offsets, skipping holes with SEEK_DATA/SEEK_HOLE, to
hash and upload only what changed. qcow2's own features (internal snapshots, backing chains, compression)
go unused when snapshots live in Walrus. Sparse: a volume takes the space its guest wrote, not its size.

A volume is made as `<id>.raw.tmp`, sized, fsynced and renamed into place, so a crash never leaves a
half-made `<id>.raw` (a stale .tmp is replaced on the retry).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from euca.core.files import fsync_directory
from euca.protocol.cluster import VolumeExport
from euca.roles.sc.backend import GIB, BackendError, check_volume_id


class FileBackend:
    name = "files"

    def __init__(self, directory: Path, capacity_gb: int = 0):
        self.dir = directory
        self._capacity_gb = capacity_gb
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, volume_id: str) -> Path:
        return self.dir / f"{check_volume_id(volume_id)}.raw"

    def create(self, volume_id: str, size_gb: int) -> None:
        if size_gb < 1:
            raise BackendError(f"volume size {size_gb} GiB: at least 1")
        final = self.path(volume_id)
        have = self.size_gb(volume_id)
        if have is not None:
            if have != size_gb:
                raise BackendError(f"{volume_id} exists with {have} GiB, not {size_gb}")
            return
        tmp = final.with_name(final.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.truncate(size_gb * GIB)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            fsync_directory(self.dir)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise BackendError(f"cannot make {final}: {e.strerror}") from e

    def delete(self, volume_id: str) -> None:
        path = self.path(volume_id)
        try:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
            fsync_directory(self.dir)
        except OSError as e:
            raise BackendError(f"cannot remove {path}: {e.strerror}") from e

    def grow(self, volume_id: str, size_gb: int) -> None:
        path = self.path(volume_id)
        have = self.size_gb(volume_id)
        if have is None:
            raise BackendError(f"no volume {volume_id}")
        if size_gb < have:
            raise BackendError(f"{volume_id} has {have} GiB: a volume only grows")
        try:
            os.truncate(path, size_gb * GIB)
        except OSError as e:
            raise BackendError(f"cannot grow {path}: {e.strerror}") from e

    def size_gb(self, volume_id: str) -> int | None:
        try:
            return self.path(volume_id).stat().st_size // GIB
        except FileNotFoundError:
            return None

    def export(self, volume_id: str) -> VolumeExport:
        # A node on this host opens the file itself; the NBD export for other hosts comes with attachment.
        path = self.path(volume_id)
        if not path.exists():
            raise BackendError(f"no volume {volume_id}")
        return VolumeExport(kind="file", path=str(path))

    def capacity_gb(self) -> int:
        if self._capacity_gb:
            return self._capacity_gb
        return shutil.disk_usage(self.dir).total // GIB

    # -- snapshot streams: fixed chunks at fixed offsets, holes skipped ------------------------------------

    def open_chunks(self, volume_id: str) -> FileChunkReader:
        path = self.path(volume_id)
        try:
            return FileChunkReader(path, os.open(path, os.O_RDONLY))
        except OSError as e:
            raise BackendError(f"cannot read {path}: {e.strerror}") from e

    def write_chunk(self, volume_id: str, index: int, chunk_size: int, data: bytes) -> None:
        path = self.path(volume_id)
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                view = memoryview(data)
                offset = index * chunk_size
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
            finally:
                os.close(fd)
        except OSError as e:
            raise BackendError(f"cannot write {path}: {e.strerror}") from e

    def flush(self, volume_id: str) -> None:
        path = self.path(volume_id)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise BackendError(f"cannot flush {path}: {e.strerror}") from e


class FileChunkReader:
    """A volume file held open: an unlinked file stays readable through its descriptor."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    def size_bytes(self) -> int:
        return os.fstat(self.fd).st_size

    def data_chunks(self, chunk_size: int) -> list[int]:
        """The chunks overlapping the file's data extents (SEEK_DATA/SEEK_HOLE): a sparse volume's holes are
        never read. A file system without hole reporting answers one extent, the whole file."""
        fd = self.fd
        try:
            size = os.fstat(fd).st_size
            indices: list[int] = []
            position = 0
            while position < size:
                try:
                    start = os.lseek(fd, position, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # no data past `position`
                        break
                    raise
                end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
                first = start // chunk_size
                if indices and indices[-1] >= first:
                    first = indices[-1] + 1
                indices.extend(range(first, -(-end // chunk_size)))
                position = end
            return indices
        except OSError as e:
            raise BackendError(f"cannot read {self.path}: {e.strerror}") from e

    def read_chunk(self, index: int, chunk_size: int) -> bytes:
        try:
            return os.pread(self.fd, chunk_size, index * chunk_size)
        except OSError as e:
            raise BackendError(f"cannot read {self.path}: {e.strerror}") from e

    def close(self) -> None:
        os.close(self.fd)
