"""S3 usage: requests, bytes in and out per bucket, and the bytes each bucket holds over time.

Counting is in memory and per process (each of walrus.workers counts its own requests): the request path adds
to a dict and never writes the store. Every `walrus.usage_flush_interval` seconds a process writes what it
counted since its last flush as one row per bucket (one transaction), and once more when it stops; a process
killed outright loses at most that interval's counts. The role's own process also samples what each bucket
holds every `walrus.usage_sample_interval` seconds and writes a row only for a bucket whose bytes or object
count changed (or that is gone), so the table grows with changes, not with time. The SQL is meta/usage.py's;
the CLC's usage reports read the rows (report.py makes intervals of the samples).

Rows are stamped with `clock()` (wall time), which a test may replace (set_clock) to run on a fast clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from euca.core.http import Request, Response
from euca.core.http_messages import FileBody, FileSegments
from euca.core.store import Store
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus.meta import usage as usage_meta

log = logging.getLogger("euca.walrus")

_clock: Callable[[], float] = time.time


def clock() -> float:
    return _clock()


def set_clock(fn: Callable[[], float]) -> None:
    """Stamp rows with `fn` from now on (tests); time.time by default."""
    global _clock
    _clock = fn


def body_length(response: Response) -> int:
    """Bytes of the response body (a streamed one: its Content-Length, if it says)."""
    if response.head_length is not None:
        return 0
    body = response.body
    if isinstance(body, bytes | FileBody | FileSegments):
        return len(body)
    for name, value in response.headers:
        if name.lower() == "content-length" and value.isdigit():
            return int(value)
    return 0


class UsageCounters:
    """One process's counts since its last flush: (bucket, owner canonical id) -> [requests, in, out]."""

    def __init__(self, process: int, owner_of: Callable[[str], str | None]):
        self.process = process
        self.owner_of = owner_of  # bucket -> its owner's canonical id (the service's bucket cache)
        self.counts: dict[tuple[str, str], list[int]] = {}

    def count(self, request: Request, vbucket: str | None, response: Response) -> None:
        """One request answered (its bucket's owner pays, as S3 bills requests to the bucket owner)."""
        try:
            bucket = s3.split_path(request.path, vbucket)[0]
        except S3Error:
            return
        owner = self.owner_of(bucket) if bucket else None
        if bucket is None or owner is None:
            return  # no bucket (ListBuckets), or none by that name: nobody's usage
        length = request.headers.get("content-length")
        bytes_in = int(length) if length and length.isdigit() else 0
        counted = self.counts.get((bucket, owner))
        if counted is None:
            counted = self.counts[(bucket, owner)] = [0, 0, 0]
        counted[0] += 1
        counted[1] += bytes_in
        counted[2] += body_length(response)

    def take(self) -> list[tuple[str, str, int, int, int]]:
        taken, self.counts = self.counts, {}
        return [(bucket, owner, n, i, o) for (bucket, owner), (n, i, o) in taken.items()]

    async def flush(self, store: Store) -> int:
        """Write what was counted (one row per bucket); the number of rows. Counts stay for the next flush
        if the write fails."""
        rows = self.take()
        if not rows:
            return 0
        at = clock()
        try:
            await store.write(lambda tx: usage_meta.add_traffic(tx, at, self.process, rows))
        except Exception:
            log.exception("walrus usage flush failed; kept for the next one")
            for bucket, owner, n, i, o in rows:
                counted = self.counts.setdefault((bucket, owner), [0, 0, 0])
                counted[0] += n
                counted[1] += i
                counted[2] += o
            return 0
        return len(rows)


class StoredSampler:
    """What each bucket holds, written when it changed since the last sample."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, int, int]] | None = None

    async def sample(self, store: Store) -> int:
        if self.last is None:
            self.last = await store.read(usage_meta.last_samples)
        now_held = await store.read(usage_meta.stored_now)
        rows = [(b, *held) for b, held in now_held.items() if self.last.get(b) != held]
        rows += [
            (b, owner, 0, -1)
            for b, (owner, _, objects) in self.last.items()
            if b not in now_held and objects >= 0
        ]
        if rows:
            at = clock()
            await store.write(lambda tx: usage_meta.add_samples(tx, at, rows))
            for bucket, owner, size, objects in rows:
                self.last[bucket] = (owner, size, objects)
        return len(rows)


async def run(
    store: Store,
    counters: UsageCounters,
    flush_interval: float,
    sample_interval: float | None,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Flush the counters (and sample the buckets, if `sample_interval`) until cancelled, then flush once more.
    Started with nursery.start, it hands back its cancel scope, so the caller may stop it alone."""
    sampler = StoredSampler() if sample_interval is not None else None
    next_sample = 0.0
    try:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            while True:
                await counters.flush(store)
                if sampler is not None and sample_interval is not None and trio.current_time() >= next_sample:
                    try:
                        await sampler.sample(store)
                    except Exception:
                        log.exception("walrus usage sample failed")
                    next_sample = trio.current_time() + sample_interval
                await trio.sleep(flush_interval)
    finally:
        with trio.CancelScope(shield=True):
            await counters.flush(store)
