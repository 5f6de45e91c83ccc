"""Object bytes on disk: temp file -> hash in the same pass -> fsync -> rename into a fan-out layout.

Layout under the objects dir: `ab/cd/<32 hex>` (two levels of 256 directories, so even a hundred million
objects stay at a few thousand files per directory) and `tmp/` for uploads in progress. Every blocking call
runs in trio.to_thread; bytes are gathered into ~1 MiB batches before a thread hop.

A body of known length up to INLINE_MAX is not given a file at all: it is read into memory and hashed on the
way, and the caller commits the bytes in the state store with the object's row (`Written.data`). A file per
small object would cost a create, an fsync, a rename and an unlink each (the fsync alone bounds a disk to a
few hundred objects a second); in the store, concurrent small PUTs share one commit and one WAL sync.

A new file is renamed into place before the metadata commit that refers to it, so its writer holds a flock on
it from its creation until that commit is over (`InFlight`; released by `release` or `remove`): the sweep
(sweep.py), which removes files no metadata refers to, leaves a locked file alone. The lock dies with its
process, so what a killed process left is unlocked and swept.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import trio
from awscrt import checksums as crt

from euca.protocol.s3 import S3Error

log = logging.getLogger("euca.walrus")

BATCH = 1024 * 1024
COPY_CHUNK = 8 * 1024 * 1024
# Bodies up to this size are kept inline in the state store (see the module docstring).
INLINE_MAX = 64 * 1024
# A placed file not committed within this many seconds is given up: its lock is released (so the sweep may
# take it) and a commit that comes later is refused. Only a handler that forgot its file gets there.
INFLIGHT_MAX = 600.0


class Checksum:
    """One running checksum of the x-amz-checksum-* family; `digest()` is the raw big-endian value."""

    def __init__(self, algorithm: str):
        self.algorithm = algorithm
        self._crc = 0
        self._hash: Any = None
        if algorithm == "SHA1":
            self._hash = hashlib.sha1()
        elif algorithm == "SHA256":
            self._hash = hashlib.sha256()
        elif algorithm not in ("CRC32", "CRC32C", "CRC64NVME"):
            raise ValueError(algorithm)

    def update(self, data: bytes | memoryview) -> None:
        a = self.algorithm
        if a == "CRC32":
            self._crc = zlib.crc32(data, self._crc)
        elif a == "CRC32C":
            self._crc = crt.crc32c(data, self._crc)
        elif a == "CRC64NVME":
            self._crc = crt.crc64nvme(data, self._crc)
        else:
            self._hash.update(data)

    def digest(self) -> bytes:
        if self._hash is not None:
            return bytes(self._hash.digest())
        return self._crc.to_bytes(8 if self.algorithm == "CRC64NVME" else 4, "big")

    def b64(self) -> str:
        return base64.b64encode(self.digest()).decode()


def checksum_of(algorithm: str, data: bytes) -> bytes:
    c = Checksum(algorithm)
    c.update(data)
    return c.digest()


def combine_crc(algorithm: str, parts: Iterable[tuple[bytes, int]]) -> bytes:
    """The CRC of a whole object from its parts' CRCs and sizes (FULL_OBJECT multipart checksums)."""
    crc = 0
    for raw, size in parts:
        value = int.from_bytes(raw, "big")
        if algorithm == "CRC32":
            crc = crt.combine_crc32(crc, value, size)
        elif algorithm == "CRC32C":
            crc = crt.combine_crc32c(crc, value, size)
        else:
            crc = crt.combine_crc64nvme(crc, value, size)
    return crc.to_bytes(8 if algorithm == "CRC64NVME" else 4, "big")


class BodyStream(Protocol):
    async def read(self, max_bytes: int = ...) -> bytes: ...


class Written:
    """What a finished write produced: a file (storage_id) or, for a small body, the bytes (data)."""

    __slots__ = ("storage_id", "size", "md5", "checksum", "data")

    def __init__(
        self,
        storage_id: str | None,
        size: int,
        md5: str,
        checksum: Checksum | None,
        data: bytes | None = None,
    ):
        self.storage_id = storage_id
        self.size = size
        self.md5 = md5
        self.checksum = checksum
        self.data = data

    @property
    def files(self) -> list[str]:
        """The files this write created (to remove if it is not committed)."""
        return [self.storage_id] if self.storage_id else []


# A copy source: (storage id, offset, length) of a file, or (the bytes of an inline object, offset, length).
Source = tuple[str | bytes, int, int]


class InFlight:
    """A placed file whose commit is not over: its open, flocked descriptor and when it was placed."""

    __slots__ = ("fd", "placed", "committing")

    def __init__(self, fd: int, placed: float):
        self.fd = fd
        self.placed = placed
        self.committing = False


def locked_by_other(path: str) -> bool:
    """Whether some open file description holds a flock on `path` (a writer whose commit is not over).
    False for a file that is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our lock
    return False


class Storage:
    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"
        self._root_str = str(root)
        self._tmp_str = str(self.tmp)
        # Placed files whose commit is not over, oldest first (placement runs in worker threads: a lock).
        self._inflight: dict[str, InFlight] = {}
        self._inflight_lock = threading.Lock()

    # -- start-up ---------------------------------------------------------------------------------

    def prepare(self) -> int:
        """Create the layout and remove temp files of uploads that never finished. Returns how many.

        A temp file still locked is being written by another live process serving S3 (a worker finishing
        its requests while the role restarts): it is left to its writer."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = 0
        if self.tmp.exists():
            for entry in os.scandir(self.tmp):
                if entry.is_file(follow_symlinks=False) and locked_by_other(entry.path):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    removed += 1
                except OSError as e:
                    log.warning("cannot remove leftover %s: %s", entry.path, e)
        self.tmp.mkdir(exist_ok=True)
        return removed

    # -- paths ------------------------------------------------------------------------------------

    def path(self, storage_id: str) -> str:
        # Plain string joins: this runs for every GET and PUT, and pathlib costs several times as much.
        return f"{self._root_str}/{storage_id[:2]}/{storage_id[2:4]}/{storage_id}"

    def _final(self, tmp_path: str, fd: int) -> str:
        """Rename a synced temp file into place; its descriptor (and so its lock) stays open, in flight,
        until the commit is over (`release`, `remove`)."""
        storage_id = os.path.basename(tmp_path)
        final = self.path(storage_id)
        try:
            os.rename(tmp_path, final)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(tmp_path, final)
        now = time.time()
        with self._inflight_lock:
            self._inflight[storage_id] = InFlight(fd, now)
            stale = self._expire(now)
        for fd_ in stale:
            os.close(fd_)
        return storage_id

    def _new_tmp(self) -> tuple[str, int]:
        """A new temp file, locked (see the module docstring) before anyone can see it in place."""
        path = f"{self._tmp_str}/{uuid.uuid4().hex}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            self._discard_tmp(fd, path)
            raise
        return path, fd

    # -- files in flight ---------------------------------------------------------------------------

    def _expire(self, now: float) -> list[int]:
        """Under _inflight_lock: forget placed files older than INFLIGHT_MAX (not in a commit); their fds."""
        stale: list[int] = []
        for storage_id, entry in list(self._inflight.items()):
            if now - entry.placed <= INFLIGHT_MAX:
                break
            if not entry.committing:
                del self._inflight[storage_id]
                stale.append(entry.fd)
        if stale:
            log.warning("%d written file(s) never committed; left to the sweep", len(stale))
        return stale

    def claim(self, storage_ids: Iterable[str]) -> bool:
        """Before the commit that refers to these new files: mark them committing (never given up while
        it runs). False if one was given up already (too old, perhaps swept): that commit must not run."""
        with self._inflight_lock:
            entries = [self._inflight.get(s) for s in storage_ids]
            if any(e is None for e in entries):
                return False
            for e in entries:
                assert e is not None
                e.committing = True
        return True

    def release(self, storage_ids: Iterable[str | None]) -> None:
        """The commit that refers to these files is over (or they are about to be removed): drop their locks."""
        fds = []
        with self._inflight_lock:
            for storage_id in storage_ids:
                entry = self._inflight.pop(storage_id, None) if storage_id else None
                if entry is not None:
                    fds.append(entry.fd)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def in_flight(self) -> int:
        with self._inflight_lock:
            return len(self._inflight)

    # -- writing ----------------------------------------------------------------------------------

    async def write_stream(
        self,
        stream: BodyStream,
        algorithm: str | None,
        *,
        expected_size: int | None = None,
        max_size: int | None = None,
        inline: bool = False,
    ) -> Written:
        """Stream a body to a new file, hashing MD5 (+ `algorithm`) on the way; fsync; rename into place.

        With `inline`, a body announced at up to INLINE_MAX bytes is kept in memory instead (Written.data).
        A client that goes away leaves only a temp file (removed here, or at the next start if killed)."""
        md5 = hashlib.md5()
        checksum = Checksum(algorithm) if algorithm else None
        if inline and expected_size is not None and expected_size <= INLINE_MAX:
            return await self._read_inline(stream, md5, checksum, expected_size)
        state: dict[str, Any] = {"fd": -1, "path": None, "size": 0}
        # A payload checked against a signed SHA-256 lets us feed its hash here, in the same thread pass as the
        # MD5 and the write (one pass over each byte, off the event loop), and check it before the rename.
        defer = getattr(stream, "defer_hash", None)
        sha256 = defer() if defer is not None else None
        check = getattr(stream, "check_hash", None) if sha256 is not None else None

        def flush(chunks: list[bytes], final: bool) -> str | None:
            if state["fd"] < 0:
                state["path"], state["fd"] = self._new_tmp()
            fd = state["fd"]
            for chunk in chunks:
                md5.update(chunk)
                if checksum is not None:
                    checksum.update(chunk)
                if sha256 is not None:
                    sha256.update(chunk)
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            if not final:
                return None
            if check is not None:
                check()  # raises when the body is not what was signed: nothing is renamed into place
            os.fsync(fd)
            storage_id = self._final(state["path"], fd)
            state["fd"] = -1
            return storage_id

        # Chunks are gathered as they came (no copy into one buffer) and handed to a thread ~1 MiB at a time.
        chunks: list[bytes] = []
        pending = 0
        size = 0
        try:
            while True:
                chunk = await stream.read(BATCH)
                if chunk:
                    size += len(chunk)
                    if max_size is not None and size > max_size:
                        raise S3Error("EntityTooLarge", ProposedSize=str(size), MaxSizeAllowed=str(max_size))
                    chunks.append(chunk)
                    pending += len(chunk)
                    if pending < BATCH:
                        continue
                    batch, chunks, pending = chunks, [], 0
                    await trio.to_thread.run_sync(flush, batch, False)
                    continue
                if expected_size is not None and size != expected_size:
                    raise S3Error("IncompleteBody")
                storage_id = await trio.to_thread.run_sync(flush, chunks, True)
                assert storage_id is not None
                return Written(storage_id, size, md5.hexdigest(), checksum)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._discard_tmp, state["fd"], state["path"])
            raise

    @staticmethod
    async def _read_inline(
        stream: BodyStream, md5: Any, checksum: Checksum | None, expected_size: int
    ) -> Written:
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await stream.read(BATCH)
            if not chunk:
                break
            size += len(chunk)
            if size > expected_size:
                # More than announced (only a decoded aws-chunked body can say one thing and carry another).
                raise S3Error("IncompleteBody")
            parts.append(chunk)
        if size != expected_size:
            raise S3Error("IncompleteBody")
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        md5.update(data)
        if checksum is not None:
            checksum.update(data)
        return Written(None, size, md5.hexdigest(), checksum, data)

    @staticmethod
    def _discard_tmp(fd: int, path: str | None) -> None:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass

    def copy_sync(
        self, sources: list[Source], algorithm: str | None, hash_md5: bool = True, inline: bool = False
    ) -> Written:
        """A new file from byte ranges (storage_id, offset, length) of existing files (or of inline bytes),
        hashed on the way; with `inline` and at most INLINE_MAX bytes, the bytes themselves (Written.data).

        With hash_md5=False and no algorithm the bytes move with copy_file_range and never enter Python."""
        md5 = hashlib.md5()
        checksum = Checksum(algorithm) if algorithm else None
        total = sum(length for _, _, length in sources)
        if inline and total <= INLINE_MAX:
            data = b"".join(self._read_range(src, offset, length) for src, offset, length in sources)
            md5.update(data)
            if checksum is not None:
                checksum.update(data)
            return Written(None, len(data), md5.hexdigest(), checksum, data)
        path, fd = self._new_tmp()
        size = 0

        def absorb(data: bytes) -> None:
            """Hash `data` and append it to the new file."""
            md5.update(data)
            if checksum is not None:
                checksum.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        try:
            for storage_id, offset, length in sources:
                if isinstance(storage_id, bytes):
                    data = storage_id[offset : offset + length]
                    if len(data) != length:
                        raise OSError("source shorter than recorded")
                    absorb(data)
                    size += length
                    continue
                with open(self.path(storage_id), "rb", buffering=0) as src:
                    if not hash_md5 and checksum is None:
                        remaining = length
                        off = offset
                        while remaining > 0:
                            n = os.copy_file_range(src.fileno(), fd, min(remaining, 1 << 30), off)
                            if n <= 0:
                                raise OSError("source shorter than recorded")
                            off += n
                            remaining -= n
                    else:
                        src.seek(offset)
                        remaining = length
                        while remaining > 0:
                            data = src.read(min(COPY_CHUNK, remaining))
                            if not data:
                                raise OSError("source shorter than recorded")
                            remaining -= len(data)
                            absorb(data)
                size += length
            os.fsync(fd)
            storage_id = self._final(path, fd)
            fd = -1
            return Written(storage_id, size, md5.hexdigest(), checksum)
        except BaseException:
            self._discard_tmp(fd, path)
            raise

    def _read_range(self, source: str | bytes, offset: int, length: int) -> bytes:
        if isinstance(source, bytes):
            data = source[offset : offset + length]
        else:
            fd = self.open(source)
            try:
                data = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        if len(data) != length:
            raise OSError("source shorter than recorded")
        return data

    async def copy(
        self, sources: list[Source], algorithm: str | None, hash_md5: bool = True, inline: bool = False
    ) -> Written:
        written: Written = await trio.to_thread.run_sync(self.copy_sync, sources, algorithm, hash_md5, inline)
        return written

    # -- reading and removing -----------------------------------------------------------------------

    def open(self, storage_id: str) -> int:
        return os.open(self.path(storage_id), os.O_RDONLY | os.O_CLOEXEC)

    def open_all(self, storage_ids: list[str]) -> list[int] | None:
        """Open every file, or none: None when one is gone (its object was replaced since it was read)."""
        fds: list[int] = []
        try:
            for storage_id in storage_ids:
                fds.append(self.open(storage_id))
        except FileNotFoundError:
            for fd in fds:
                os.close(fd)
            return None
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    @staticmethod
    def advise_range(fd: int, offset: int, length: int) -> None:
        """Ask the kernel to read [offset, offset+length) of an open file ahead, at once. A range that starts
        inside a file (a ranged GET within a part) otherwise begins with the small readahead window the
        kernel gives a read it cannot tell is sequential, and a cold range is read in small pieces."""
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # advice only

    def remove_sync(self, storage_ids: Iterable[str | None]) -> None:
        storage_ids = list(storage_ids)
        self.release(storage_ids)
        for storage_id in storage_ids:
            if not storage_id:
                continue
            try:
                os.unlink(self.path(storage_id))
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove object file %s: %s", storage_id, e)

    async def remove(self, storage_ids: list[str]) -> None:
        if any(storage_ids):
            await trio.to_thread.run_sync(self.remove_sync, storage_ids)
