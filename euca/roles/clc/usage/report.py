"""Usage reports, pure: events -> intervals -> figures (no store, no clock: everything is handed in).

An interval is a stretch of time a resource cost something at a steady rate: an instance running (rate 1), a
volume or snapshot existing (rate: its size), an elastic IP allocated (rate 1; its associated stretches are
a second figure), a bucket holding bytes (rate: the bytes, from one sample to the next). A report clips the
intervals to its time range and integrates them, so an instance running from 10:30 to 13:00 is 2 hours of a
report from 11:00 to 13:00. Intervals still open (an instance running now) end at the report's end or at
`now`, whichever is first. S3 requests and bytes in and out are counts flushed by Walrus at known times: a
report sums those flushed inside its range.

Figures are grouped zone -> account -> user -> resource, as Eucalyptus's eureport grouped them, with a
cumulative line for each group; columns follow eureport's (instance: count, type, time; volume and snapshot:
count, largest size, size x time; elastic-ip: count, allocated and associated time; s3: buckets, largest
stored, stored size x time, requests, bytes in and out; capacity: per zone, total / in use / free). Units:
time in seconds, minutes, hours or days; sizes in B, KB, MB or GB (powers of 1024, as Eucalyptus).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from euca.roles.clc.usage.records import ADDRESS, INSTANCE, SNAPSHOT, VOLUME, Event, S3Sample, S3Traffic

TIME_UNITS: dict[str, int] = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
SIZE_UNITS: dict[str, int] = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
TYPES = ("instance", "volume", "snapshot", "elastic-ip", "s3", "capacity")
GIB = 1024**3

# An instance costs while it runs (EC2 bills from running to stopping or shutting-down).
RUNNING = "running"
NO_ZONE = "-"  # S3 is the region's, not a zone's
NO_USER = "-"  # volumes, addresses and buckets belong to the account


class ReportError(ValueError):
    """A report asked for wrongly (unknown type or unit, an end before its start)."""


@dataclass(frozen=True)
class Interval:
    """A resource costing `rate` (per second) from start to end."""

    zone: str
    account_id: str
    user: str
    resource_id: str
    detail: str  # an instance's type
    start: float
    end: float
    rate: float = 1.0
    figure: str = "main"  # which figure it adds to (an elastic IP's "associated" stretches are a second one)


def _close(open_: dict[str, Interval], resource_id: str, at: float, out: list[Interval]) -> None:
    current = open_.pop(resource_id, None)
    if current is not None and at > current.start:
        out.append(_with_end(current, at))


def _with_end(i: Interval, end: float) -> Interval:
    return Interval(i.zone, i.account_id, i.user, i.resource_id, i.detail, i.start, end, i.rate, i.figure)


def instance_intervals(events: Iterable[Event], until: float) -> list[Interval]:
    """Running stretches of each instance, from its state changes."""
    out: list[Interval] = []
    running: dict[str, Interval] = {}
    for e in events:
        if e.event == RUNNING:
            if e.resource_id not in running:
                running[e.resource_id] = Interval(
                    e.zone or NO_ZONE,
                    e.account_id,
                    e.user or NO_USER,
                    e.resource_id,
                    e.detail or "",
                    e.at,
                    until,
                )
        else:
            _close(running, e.resource_id, e.at, out)
    out.extend(_with_end(i, until) for i in running.values() if until > i.start)
    return out


def storage_intervals(events: Iterable[Event], until: float) -> list[Interval]:
    """Volumes' or snapshots' stretches at one size (rate: GiB), from created/resized/deleted."""
    out: list[Interval] = []
    alive: dict[str, Interval] = {}
    for e in events:
        _close(alive, e.resource_id, e.at, out)
        if e.event in ("created", "resized"):
            alive[e.resource_id] = Interval(
                e.zone or NO_ZONE,
                e.account_id,
                e.user or NO_USER,
                e.resource_id,
                "",
                e.at,
                until,
                float(e.size_gib or 0),
            )
    out.extend(_with_end(i, until) for i in alive.values() if until > i.start)
    return out


def address_intervals(events: Iterable[Event], until: float) -> list[Interval]:
    """Elastic IPs: allocated stretches (figure main) and associated ones (figure associated)."""
    out: list[Interval] = []
    allocated: dict[str, Interval] = {}
    associated: dict[str, Interval] = {}
    for e in events:
        ip = e.resource_id
        if e.event == "allocated":
            _close(allocated, ip, e.at, out)
            _close(associated, ip, e.at, out)
            allocated[ip] = Interval(NO_ZONE, e.account_id, NO_USER, ip, "", e.at, until)
        elif e.event == "associated":
            if ip not in associated:
                associated[ip] = Interval(
                    NO_ZONE, e.account_id, NO_USER, ip, "", e.at, until, figure="associated"
                )
        elif e.event == "disassociated":
            _close(associated, ip, e.at, out)
        elif e.event == "released":
            _close(associated, ip, e.at, out)
            _close(allocated, ip, e.at, out)
    for still in (allocated, associated):
        out.extend(_with_end(i, until) for i in still.values() if until > i.start)
    return out


def s3_intervals(samples: Iterable[S3Sample], until: float, owners: Mapping[str, str]) -> list[Interval]:
    """Each bucket's bytes held from one sample to the next (rate: bytes). `owners`: canonical id ->
    account id."""
    out: list[Interval] = []
    held: dict[str, Interval] = {}
    for s in samples:
        _close(held, s.bucket, s.at, out)
        if s.objects >= 0:  # a negative count: the bucket is gone (an empty one still counts, for nothing)
            account = owners.get(s.owner_id, s.owner_id)
            held[s.bucket] = Interval(NO_ZONE, account, NO_USER, s.bucket, "", s.at, until, float(s.bytes))
    out.extend(_with_end(i, until) for i in held.values() if until > i.start)
    return out


# -- figures ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    how: str  # sum | max | count | text (how a group's line combines its members')


@dataclass
class Line:
    """One line of a report: a resource (level "resource") or a group's cumulative line."""

    level: str  # zone | account | user | resource
    zone: str
    account_id: str
    account: str  # the account's name
    user: str
    resource_id: str
    values: dict[str, float | int | str]


@dataclass
class Report:
    type: str
    start: float
    end: float
    time_unit: str
    size_unit: str
    columns: list[Column]
    lines: list[Line]
    # account id -> how much it held on average in each bin of the range (instances running, GB of volumes,
    # addresses allocated, bytes stored): the HTML page's charts. Bins are equal spans.
    series: dict[str, list[float]] = field(default_factory=dict)
    bins: list[float] = field(default_factory=list)  # each bin's start
    accounts: dict[str, str] = field(default_factory=dict)  # account id -> name
    chart_label: str = ""


def columns_for(kind: str, time_unit: str, size_unit: str) -> list[Column]:
    t, s = time_unit, size_unit
    if kind == "instance":
        return [Column("instances", "count"), Column("type", "text"), Column(f"time ({t})", "sum")]
    if kind in ("volume", "snapshot"):
        return [
            Column(f"{kind}s", "count"),
            Column(f"max size ({s})", "max"),
            Column(f"{s}-{t}", "sum"),
        ]
    if kind == "elastic-ip":
        return [Column("ips", "count"), Column(f"allocated ({t})", "sum"), Column(f"associated ({t})", "sum")]
    if kind == "s3":
        return [
            Column("buckets", "count"),
            Column(f"max stored ({s})", "max"),
            Column(f"{s}-{t}", "sum"),
            Column("requests", "sum"),
            Column(f"in ({s})", "sum"),
            Column(f"out ({s})", "sum"),
        ]
    if kind == "capacity":
        return [Column("total", "sum"), Column("in use", "sum"), Column("free", "sum")]
    raise ReportError(f"unknown report type {kind!r} (one of {', '.join(TYPES)})")


def check_units(time_unit: str, size_unit: str) -> tuple[str, str]:
    if time_unit not in TIME_UNITS:
        raise ReportError(f"unknown time unit {time_unit!r} (one of {', '.join(TIME_UNITS)})")
    size = size_unit.upper() if size_unit.lower() != "b" else "B"
    if size not in SIZE_UNITS:
        raise ReportError(f"unknown size unit {size_unit!r} (one of {', '.join(SIZE_UNITS)})")
    return time_unit, size


def overlap(i: Interval, start: float, end: float) -> float:
    """Seconds of the interval inside [start, end)."""
    return max(0.0, min(i.end, end) - max(i.start, start))


def figure(value: float) -> float | int:
    """A figure as reported: integral ones as integers, others to 6 decimals (no float noise)."""
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) else rounded


@dataclass(frozen=True)
class Inputs:
    """What a report is made of, read from the store by the caller."""

    events: Sequence[Event] = ()
    samples: Sequence[S3Sample] = ()
    traffic: Sequence[S3Traffic] = ()
    owners: Mapping[str, str] = field(default_factory=dict)  # canonical id -> account id
    accounts: Mapping[str, str] = field(default_factory=dict)  # account id -> name
    # zone, resource, total, in use, whether in bytes (shown in the size unit) or a count (cores, addresses)
    capacity: Sequence[tuple[str, str, float, float, bool]] = ()


def build(
    kind: str,
    inputs: Inputs,
    *,
    start: float,
    end: float,
    now: float,
    time_unit: str = "hours",
    size_unit: str = "GB",
    account_id: str | None = None,
    bins: int = 24,
) -> Report:
    """The report of `kind` over [start, end), as of `now` (one account's alone if `account_id`)."""
    time_unit, size_unit = check_units(time_unit, size_unit)
    columns = columns_for(kind, time_unit, size_unit)
    if end <= start:
        raise ReportError("the report's end must be after its start")
    report = Report(kind, start, end, time_unit, size_unit, columns, [], accounts=dict(inputs.accounts))
    if kind == "capacity":
        report.lines = _capacity_lines(inputs.capacity, size_unit)
        return report
    until = min(end, now)
    tdiv, sdiv = TIME_UNITS[time_unit], SIZE_UNITS[size_unit]
    events = [e for e in inputs.events if e.kind == _EVENT_KIND[kind]]
    if kind == "instance":
        intervals = instance_intervals(events, until)
    elif kind in ("volume", "snapshot"):
        intervals = storage_intervals(events, until)
    elif kind == "elastic-ip":
        intervals = address_intervals(events, until)
    else:
        intervals = s3_intervals(inputs.samples, until, inputs.owners)
    if account_id is not None:
        intervals = [i for i in intervals if i.account_id == account_id]
    intervals = [i for i in intervals if i.start < end and i.end > start]
    resources: dict[tuple[str, str, str, str], dict[str, float | int | str]] = {}

    def line(i: Interval) -> dict[str, float | int | str]:
        key = (i.zone, i.account_id, i.user, i.resource_id)
        if key not in resources:
            resources[key] = {
                c.name: ("" if c.how == "text" else (1 if c.how == "count" else 0)) for c in columns
            }
        return resources[key]

    names = [c.name for c in columns]
    for i in intervals:
        seconds = overlap(i, start, end)
        values = line(i)
        if kind == "instance":
            values[names[1]] = i.detail
            values[names[2]] = float(values[names[2]]) + seconds / tdiv
        elif kind in ("volume", "snapshot"):
            size = i.rate * GIB / sdiv
            values[names[1]] = max(float(values[names[1]]), size)
            values[names[2]] = float(values[names[2]]) + size * seconds / tdiv
        elif kind == "elastic-ip":
            target = names[1] if i.figure == "main" else names[2]
            values[target] = float(values[target]) + seconds / tdiv
        else:
            size = i.rate / sdiv
            if seconds > 0:
                values[names[1]] = max(float(values[names[1]]), size)
            values[names[2]] = float(values[names[2]]) + size * seconds / tdiv
    if kind == "s3":
        wanted = None if account_id is None else account_id
        for t in inputs.traffic:
            account = inputs.owners.get(t.owner_id, t.owner_id)
            if wanted is not None and account != wanted:
                continue
            if not start <= t.at < end:
                continue
            key = (NO_ZONE, account, NO_USER, t.bucket)
            if key not in resources:
                resources[key] = {
                    c.name: ("" if c.how == "text" else (1 if c.how == "count" else 0)) for c in columns
                }
            values = resources[key]
            values["requests"] = int(values["requests"]) + t.requests
            values[names[4]] = float(values[names[4]]) + t.bytes_in / sdiv
            values[names[5]] = float(values[names[5]]) + t.bytes_out / sdiv
    report.lines = _grouped(resources, columns, inputs.accounts)
    report.bins, report.series = _series(kind, intervals, start, end, bins, sdiv)
    report.chart_label = {
        "instance": "instances running",
        "volume": f"volumes held ({size_unit})",
        "snapshot": f"snapshots held ({size_unit})",
        "elastic-ip": "elastic IPs allocated",
        "s3": f"bytes stored ({size_unit})",
    }[kind]
    return report


_EVENT_KIND = {"instance": INSTANCE, "volume": VOLUME, "snapshot": SNAPSHOT, "elastic-ip": ADDRESS, "s3": ""}


def _combine(
    columns: Sequence[Column], members: Sequence[dict[str, float | int | str]]
) -> dict[str, float | int | str]:
    out: dict[str, float | int | str] = {}
    for c in columns:
        got = [m[c.name] for m in members]
        if c.how == "text":
            kinds = {str(v) for v in got if v != ""}
            out[c.name] = kinds.pop() if len(kinds) == 1 else ""
        elif c.how == "max":
            out[c.name] = figure(max((float(v) for v in got), default=0.0))
        else:  # sum and count: a group's count is its members' counts summed
            out[c.name] = figure(sum(float(v) for v in got))
    return out


def _grouped(
    resources: Mapping[tuple[str, str, str, str], dict[str, float | int | str]],
    columns: Sequence[Column],
    accounts: Mapping[str, str],
) -> list[Line]:
    """Lines zone -> account -> user -> resource, each group's cumulative line before its members."""
    lines: list[Line] = []
    keys = sorted(resources, key=lambda k: (k[0], accounts.get(k[1], k[1]), k[2], k[3]))
    for zone in dict.fromkeys(k[0] for k in keys):
        in_zone = [k for k in keys if k[0] == zone]
        lines.append(Line("zone", zone, "", "", "", "", _combine(columns, [resources[k] for k in in_zone])))
        for account in dict.fromkeys(k[1] for k in in_zone):
            in_account = [k for k in in_zone if k[1] == account]
            name = accounts.get(account, account)
            lines.append(
                Line(
                    "account",
                    zone,
                    account,
                    name,
                    "",
                    "",
                    _combine(columns, [resources[k] for k in in_account]),
                )
            )
            for user in dict.fromkeys(k[2] for k in in_account):
                in_user = [k for k in in_account if k[2] == user]
                lines.append(
                    Line(
                        "user",
                        zone,
                        account,
                        name,
                        user,
                        "",
                        _combine(columns, [resources[k] for k in in_user]),
                    )
                )
                for k in in_user:
                    values = {
                        c.name: (
                            resources[k][c.name] if c.how == "text" else figure(float(resources[k][c.name]))
                        )
                        for c in columns
                    }
                    lines.append(Line("resource", zone, account, name, user, k[3], values))
    return lines


def _series(
    kind: str, intervals: Sequence[Interval], start: float, end: float, bins: int, sdiv: int
) -> tuple[list[float], dict[str, list[float]]]:
    """Per account, what it held on average in each of `bins` equal spans of the range (the charts of usage
    over time): instances running, size of volumes or snapshots, addresses allocated, bytes stored."""
    span = (end - start) / bins
    starts = [start + n * span for n in range(bins)]
    series: dict[str, list[float]] = {}
    for i in intervals:
        if i.figure != "main":
            continue
        if kind in ("volume", "snapshot"):
            rate = i.rate * GIB / sdiv
        elif kind == "s3":
            rate = i.rate / sdiv
        else:
            rate = 1.0
        values = series.setdefault(i.account_id, [0.0] * bins)
        for n, b in enumerate(starts):
            seconds = max(0.0, min(i.end, b + span) - max(i.start, b))
            values[n] += rate * seconds / span
    return starts, {a: [figure(v) for v in vs] for a, vs in series.items()}


def _capacity_lines(capacity: Sequence[tuple[str, str, float, float, bool]], size_unit: str) -> list[Line]:
    lines: list[Line] = []
    for zone in dict.fromkeys(z for z, *_ in capacity):
        lines.append(Line("zone", zone, "", "", "", "", {}))
        for z, resource, total, used, in_bytes in capacity:
            if z == zone:
                if in_bytes:
                    resource = f"{resource} ({size_unit})"
                    total, used = total / SIZE_UNITS[size_unit], used / SIZE_UNITS[size_unit]
                values: dict[str, float | int | str] = {
                    "total": figure(total),
                    "in use": figure(used),
                    "free": figure(max(0.0, total - used)),
                }
                lines.append(Line("resource", zone, "", "", "", resource, values))
    return lines
