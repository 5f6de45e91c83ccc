"""The sweep: object files that no metadata refers to are removed, at start and then every SWEEP_INTERVAL.

Object files outlive their references in two ways, and a crash (kill -9, power loss) leaves both behind: a new
file is renamed into place before the commit that refers to it (the commit never came), and an old file is
removed after the commit that stopped referring to it (the removal never came). Rather than recording an
intent in the store for every write (one more row written and deleted per PUT and DELETE), the sweep compares
the files with the metadata, which covers both cases with no cost on the request path.

It must never remove a file a commit in progress may still make visible. Its writer holds a flock on every new
file from its creation until its commit is over (storage.py, `InFlight`), in whichever process serves S3, and
the lock dies with its process. So, per sweep: list the files; read the referenced set; of the files not in
it, keep those whose lock is held (in flight); read the referenced set again (a writer may have committed and
released its lock after the first read); remove what is still not referenced. A file once unreferenced and
unlocked is never referenced again (every write makes a new file), so nothing can slip in after the second
read.

Only one sweep runs at a time over an objects directory (a flock on `sweep.lock` in it): with walrus.workers
only the role's own process sweeps, and two euca processes on one directory take turns.

With the bytes in a backend cluster (walrus.backend = "s3", backend.py) the sweep lists the backend bucket
instead. A backend object has no lock a sweep could probe, so in-flight writes are told apart by age: an
unreferenced object is taken only when it is older than backend.SWEEP_MIN_AGE (a write not committed within
storage.INFLIGHT_MAX of its placing is refused, so an older one can never become referenced) and not in
this process's in-flight registry; the references are read twice as on disk.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass

import trio

from euca.core.store import Store
from euca.roles.walrus import meta
from euca.roles.walrus.backend import SWEEP_MIN_AGE, S3Backend
from euca.roles.walrus.storage import ByteStore, Storage, locked_by_other

log = logging.getLogger("euca.walrus")

# Seconds between sweeps (the first runs at start).
SWEEP_INTERVAL = 3600.0
LOCK_NAME = "sweep.lock"
_HEX = frozenset("0123456789abcdef")


@dataclass(slots=True)
class SweepResult:
    checked: int = 0  # object files found
    in_flight: int = 0  # unreferenced but locked by a writer: left alone
    files: int = 0  # removed
    bytes: int = 0  # their size


def _is_hex(name: str, length: int) -> bool:
    return len(name) == length and all(c in _HEX for c in name)


def object_files(storage: Storage) -> dict[str, int]:
    """Every object file in the fan-out layout (`ab/cd/abcd...`): storage id -> size. Temp files, the lock
    file and anything not named like a storage id are not object files."""
    found: dict[str, int] = {}
    try:
        top = list(os.scandir(storage.root))
    except FileNotFoundError:
        return found
    for first in top:
        if not (_is_hex(first.name, 2) and first.is_dir(follow_symlinks=False)):
            continue
        for second in os.scandir(first.path):
            if not (_is_hex(second.name, 2) and second.is_dir(follow_symlinks=False)):
                continue
            prefix = first.name + second.name
            for entry in os.scandir(second.path):
                if _is_hex(entry.name, 32) and entry.name.startswith(prefix):
                    try:
                        if entry.is_file(follow_symlinks=False):
                            found[entry.name] = entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        pass
    return found


def _idle(storage: Storage, storage_ids: list[str]) -> tuple[list[str], int]:
    """The files no writer holds a lock on, and how many are held."""
    idle = [s for s in storage_ids if not locked_by_other(storage.path(s))]
    return idle, len(storage_ids) - len(idle)


def _remove(storage: Storage, files: dict[str, int]) -> tuple[int, int]:
    count = size = 0
    for storage_id, length in files.items():
        try:
            os.unlink(storage.path(storage_id))
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("sweep: cannot remove object file %s: %s", storage_id, e)
            continue
        count += 1
        size += length
    return count, size


def _try_lock(storage: Storage) -> int | None:
    """The sweep lock of this objects directory, or None if another sweep holds it."""
    fd = os.open(storage.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


async def sweep_backend(backend: S3Backend, store: Store, min_age: float = SWEEP_MIN_AGE) -> SweepResult:
    """One sweep of a backend bucket (see the module docstring)."""
    result = SweepResult()
    listed = await backend.listed()
    result.checked = len(listed)
    refs = await store.read(meta.referenced_files)
    cutoff = time.time() - min_age
    flying = backend.in_flight_ids()
    candidates = [s for s in listed if s not in refs]
    old = [s for s in candidates if listed[s][1] <= cutoff and s not in flying]
    result.in_flight = len(candidates) - len(old)
    if old:
        refs = await store.read(meta.referenced_files)
        for storage_id in old:
            if storage_id in refs:
                continue
            await backend.delete_quietly(storage_id)
            result.files += 1
            result.bytes += listed[storage_id][0]
    return result


async def sweep(storage: ByteStore, store: Store) -> SweepResult | None:
    """One sweep (see the module docstring); None if another one holds the lock."""
    if isinstance(storage, S3Backend):
        result = await sweep_backend(storage, store)
        log.info(
            "walrus sweep reclaimed backend objects=%d bytes=%d checked=%d in_flight=%d",
            result.files,
            result.bytes,
            result.checked,
            result.in_flight,
        )
        return result
    assert isinstance(storage, Storage)
    lock = await trio.to_thread.run_sync(_try_lock, storage)
    if lock is None:
        log.info("walrus sweep skipped: another process is sweeping %s", storage.root)
        return None
    try:
        result = SweepResult()
        files = await trio.to_thread.run_sync(object_files, storage)
        result.checked = len(files)
        refs = await store.read(meta.referenced_files)
        candidates = [s for s in files if s not in refs]
        if candidates:
            idle, result.in_flight = await trio.to_thread.run_sync(_idle, storage, candidates)
            if idle:
                # Read again: a writer that committed after the first read released its lock since.
                refs = await store.read(meta.referenced_files)
                gone = {s: files[s] for s in idle if s not in refs}
                result.files, result.bytes = await trio.to_thread.run_sync(_remove, storage, gone)
    finally:
        os.close(lock)
    log.info(
        "walrus sweep reclaimed files=%d bytes=%d checked=%d in_flight=%d",
        result.files,
        result.bytes,
        result.checked,
        result.in_flight,
    )
    return result


async def run(storage: ByteStore, store: Store, interval: float = SWEEP_INTERVAL) -> None:
    """Sweep now, then every `interval` seconds, for as long as the role runs. A failed sweep is logged and
    tried again at the next interval."""
    while True:
        try:
            await sweep(storage, store)
        except Exception:
            log.exception("walrus sweep failed")
        await trio.sleep(interval)
