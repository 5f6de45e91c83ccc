"""The usage log (clc_usage_events): the only module that reads or writes it.

Every event that costs something is one row, written by the resource's own records module in the same store
transaction as the state change it reports, so the log and the state never disagree (a change that rolls
back takes its event with it): instances (pending, running, stopping, stopped, shutting-down, terminated,
with their type, zone, account and launching user), volumes and snapshots (created, resized, deleted, with
their size), elastic IPs (allocated, associated, disassociated, released). The log is only appended to; a
report (report.py, pure) turns events into intervals and figures.

The resources call the functions below, never the table. This module imports no other resource, so any of
them may call it. Events are stamped with `clock()` (wall time): a test sets a fast clock with `set_clock`
to run instances for known hours without touching the clock that signatures and polls use.

S3 usage is Walrus's (walrus/usage.py writes it into walrus_usage_* in Walrus's store); where the CLC
shares that store (one host), `s3_samples`/`s3_traffic` read it for reports, and read nothing otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from euca.core.store import Tx

INSTANCE = "instance"
VOLUME = "volume"
SNAPSHOT = "snapshot"
ADDRESS = "elastic-ip"

_clock: Callable[[], float] = time.time


def clock() -> float:
    return _clock()


def set_clock(fn: Callable[[], float]) -> None:
    """Stamp events with `fn` from now on (tests run the cloud on a fast clock); time.time by default."""
    global _clock
    _clock = fn


@dataclass(frozen=True)
class Event:
    """One row of the log."""

    seq: int
    at: float
    kind: str  # INSTANCE | VOLUME | SNAPSHOT | ADDRESS
    resource_id: str
    event: (
        str  # an instance's new state; created/resized/deleted; allocated/associated/disassociated/released
    )
    account_id: str
    user: str | None
    zone: str | None
    detail: str | None  # instance type; an address's instance
    size_gib: int | None


def _last(tx: Tx, resource_id: str) -> Event | None:
    row = tx.one(
        "SELECT * FROM clc_usage_events WHERE resource_id=? ORDER BY seq DESC LIMIT 1", (resource_id,)
    )
    return None if row is None else Event(**{k: row[k] for k in row.keys()})


def _insert(
    tx: Tx,
    kind: str,
    resource_id: str,
    event: str,
    account_id: str,
    *,
    user: str | None = None,
    zone: str | None = None,
    detail: str | None = None,
    size_gib: int | None = None,
) -> None:
    tx.execute(
        "INSERT INTO clc_usage_events(at, kind, resource_id, event, account_id, user, zone, detail, size_gib) "
        "VALUES(?,?,?,?,?,?,?,?,?)",
        (clock(), kind, resource_id, event, account_id, user, zone, detail, size_gib),
    )


# -- instances -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceFacts:
    """An instance as its records module knows it now."""

    instance_id: str
    state: str
    account_id: str
    requester: str  # the launching caller's ARN
    instance_type: str
    zone: str


def user_of(arn: str) -> str:
    """The user name of an IAM ARN (arn:aws:iam::ACCOUNT:user/NAME); the account's root is "root"."""
    _, sep, name = arn.partition(":user/")
    return name.rsplit("/", 1)[-1] if sep else "root"


def instance_states(tx: Tx, facts: Iterable[InstanceFacts]) -> None:
    """These instances are in these states now: each state not logged last for its instance is logged (the
    callers may say the same state twice; the log holds each change once)."""
    for f in facts:
        last = _last(tx, f.instance_id)
        if last is not None and last.event == f.state:
            continue
        _insert(
            tx,
            INSTANCE,
            f.instance_id,
            f.state,
            f.account_id,
            user=user_of(f.requester),
            zone=f.zone,
            detail=f.instance_type,
        )


# -- volumes and snapshots -------------------------------------------------------------------------------


def volume_created(tx: Tx, volume_id: str, account_id: str, zone: str, size_gib: int) -> None:
    _insert(tx, VOLUME, volume_id, "created", account_id, zone=zone, size_gib=size_gib)


def volume_resized(tx: Tx, volume_id: str, size_gib: int) -> None:
    _follow(tx, volume_id, "resized", size_gib)


def volume_deleted(tx: Tx, volume_id: str) -> None:
    """Asked to go (DeleteVolume) or gone: logged once, whichever comes first."""
    _follow(tx, volume_id, "deleted", None)


def snapshot_created(
    tx: Tx, snapshot_id: str, account_id: str, zone: str | None, size_gib: int, user: str | None = None
) -> None:
    """A snapshot began to cost (call it in the transaction that records the snapshot; its size in GiB is the
    volume's, as EC2 reports VolumeSize)."""
    _insert(tx, SNAPSHOT, snapshot_id, "created", account_id, user=user, zone=zone, size_gib=size_gib)


def snapshot_deleted(tx: Tx, snapshot_id: str) -> None:
    """The snapshot stopped costing (DeleteSnapshot, or it failed): logged once."""
    _follow(tx, snapshot_id, "deleted", None)


def _follow(tx: Tx, resource_id: str, event: str, size_gib: int | None) -> None:
    """An event after the resource's first: its owner, zone and (unless given) size as logged last."""
    last = _last(tx, resource_id)
    if last is None or last.event == "deleted" or (event == "resized" and last.size_gib == size_gib):
        return
    _insert(
        tx,
        last.kind,
        resource_id,
        event,
        last.account_id,
        user=last.user,
        zone=last.zone,
        size_gib=last.size_gib if size_gib is None else size_gib,
    )


# -- elastic IPs -----------------------------------------------------------------------------------------


def address_event(
    tx: Tx, event: str, public_ip: str, account_id: str | None, instance_id: str | None = None
) -> None:
    """allocated | associated (with instance_id) | disassociated | released, of an elastic IP."""
    if account_id is None:
        return
    last = _last(tx, public_ip)
    if event == "disassociated" and (last is None or last.event != "associated"):
        return
    _insert(tx, ADDRESS, public_ip, event, account_id, detail=instance_id)


def addresses_let_go(tx: Tx, instance_id: str) -> None:
    """The instance ended or took another address: the elastic IP associated with it (if any) is not."""
    for row in tx.all(
        "SELECT resource_id FROM clc_usage_events WHERE kind='elastic-ip' AND event='associated' AND detail=?",
        (instance_id,),
    ):
        last = _last(tx, row["resource_id"])
        if last is not None and last.event == "associated" and last.detail == instance_id:
            _insert(tx, ADDRESS, last.resource_id, "disassociated", last.account_id)


# -- what reports read -----------------------------------------------------------------------------------


def events(tx: Tx, kind: str, until: float, account_id: str | None = None) -> list[Event]:
    """The log of one kind up to `until`, in order (an account's alone if given). Earlier events than a
    report's start are read too: a volume made last month still costs this month."""
    sql = "SELECT * FROM clc_usage_events WHERE kind=? AND at<?"
    args: list[object] = [kind, until]
    if account_id is not None:
        sql += " AND account_id=?"
        args.append(account_id)
    rows = tx.all(sql + " ORDER BY seq", args)
    return [Event(**{k: r[k] for k in r.keys()}) for r in rows]


def _has_table(tx: Tx, name: str) -> bool:
    return tx.table_exists(name)


@dataclass(frozen=True)
class S3Sample:
    """What one bucket held from `at` on (Walrus samples it when it changed)."""

    bucket: str
    owner_id: str  # canonical id of the bucket's owner
    at: float
    bytes: int
    objects: int  # -1: the bucket was deleted


@dataclass(frozen=True)
class S3Traffic:
    """Requests to one bucket counted by one Walrus process, flushed at `at`."""

    bucket: str
    owner_id: str
    at: float
    requests: int
    bytes_in: int
    bytes_out: int


def s3_samples(tx: Tx, until: float) -> list[S3Sample]:
    if not _has_table(tx, "walrus_usage_stored"):
        return []
    return [
        S3Sample(r["bucket"], r["owner_id"], r["at"], r["bytes"], r["objects"])
        for r in tx.all(
            "SELECT bucket, owner_id, at, bytes, objects FROM walrus_usage_stored WHERE at<? ORDER BY seq",
            (until,),
        )
    ]


def s3_traffic(tx: Tx, start: float, until: float) -> list[S3Traffic]:
    if not _has_table(tx, "walrus_usage_requests"):
        return []
    return [
        S3Traffic(r["bucket"], r["owner_id"], r["at"], r["requests"], r["bytes_in"], r["bytes_out"])
        for r in tx.all(
            "SELECT bucket, owner_id, at, requests, bytes_in, bytes_out FROM walrus_usage_requests "
            "WHERE at>=? AND at<? ORDER BY seq",
            (start, until),
        )
    ]
