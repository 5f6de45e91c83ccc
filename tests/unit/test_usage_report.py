"""Usage reports, pure (usage/report.py and usage/render.py): events -> intervals -> figures, checked to the
unit, and their CSV, JSON and HTML forms."""

from __future__ import annotations

import csv
import io
import json
from xml.etree import ElementTree

import pytest

from euca.roles.clc.usage import render, report
from euca.roles.clc.usage.records import Event, S3Sample, S3Traffic
from euca.roles.clc.usage.report import Inputs, Interval, ReportError

H = 3600.0
T0 = 1_700_000_000.0  # every time below is relative to it
A, B = "111111111111", "222222222222"
NAMES = {A: "alpha", B: "beta"}

_seq = iter(range(1, 10_000))


def ev(at: float, kind: str, rid: str, event: str, account: str = A, **kw: object) -> Event:
    fields: dict[str, object] = {"user": None, "zone": None, "detail": None, "size_gib": None, **kw}
    return Event(next(_seq), T0 + at, kind, rid, event, account, **fields)  # type: ignore[arg-type]


def inst(at: float, rid: str, state: str, account: str = A, user: str = "admin", zone: str = "z1") -> Event:
    return ev(at, "instance", rid, state, account, user=user, zone=zone, detail="m1.small")


def test_instance_intervals_run_from_running_to_any_end() -> None:
    events = [
        inst(0, "i-1", "pending"),
        inst(0.5 * H, "i-1", "running"),
        inst(3 * H, "i-1", "shutting-down"),
        inst(3.1 * H, "i-1", "terminated"),
        inst(H, "i-2", "pending"),
        inst(2 * H, "i-2", "running"),  # still running
        inst(0, "i-3", "pending"),
        inst(H, "i-3", "terminated"),  # never ran: never cost
    ]
    got = report.instance_intervals(events, T0 + 10 * H)
    assert [(i.resource_id, i.start - T0, i.end - T0) for i in got] == [
        ("i-1", 0.5 * H, 3 * H),
        ("i-2", 2 * H, 10 * H),
    ]


def test_instance_report_clips_to_the_range_and_groups_zone_account_user() -> None:
    events = [
        inst(0, "i-1", "running"),
        inst(4 * H, "i-1", "terminated"),
        inst(0, "i-2", "running", user="bob"),
        inst(2 * H, "i-2", "terminated", user="bob"),
        inst(0, "i-3", "running", account=B, zone="z2"),
    ]
    made = report.build(
        "instance", Inputs(events=events, accounts=NAMES), start=T0 + H, end=T0 + 5 * H, now=T0 + 3 * H
    )
    lines = [(ln.level, ln.zone, ln.account, ln.user, ln.resource_id, ln.values) for ln in made.lines]
    assert lines == [
        ("zone", "z1", "", "", "", {"instances": 2, "type": "m1.small", "time (hours)": 4}),
        ("account", "z1", "alpha", "", "", {"instances": 2, "type": "m1.small", "time (hours)": 4}),
        ("user", "z1", "alpha", "admin", "", {"instances": 1, "type": "m1.small", "time (hours)": 3}),
        ("resource", "z1", "alpha", "admin", "i-1", {"instances": 1, "type": "m1.small", "time (hours)": 3}),
        ("user", "z1", "alpha", "bob", "", {"instances": 1, "type": "m1.small", "time (hours)": 1}),
        ("resource", "z1", "alpha", "bob", "i-2", {"instances": 1, "type": "m1.small", "time (hours)": 1}),
        ("zone", "z2", "", "", "", {"instances": 1, "type": "m1.small", "time (hours)": 2}),
        ("account", "z2", "beta", "", "", {"instances": 1, "type": "m1.small", "time (hours)": 2}),
        ("user", "z2", "beta", "admin", "", {"instances": 1, "type": "m1.small", "time (hours)": 2}),
        ("resource", "z2", "beta", "admin", "i-3", {"instances": 1, "type": "m1.small", "time (hours)": 2}),
    ]
    # Running until `now` (3 h), not to the end of the range: i-3 ran 2 hours of it.
    minutes = report.build(
        "instance",
        Inputs(events=events),
        start=T0 + H,
        end=T0 + 5 * H,
        now=T0 + 3 * H,
        time_unit="minutes",
        account_id=B,
    )
    assert [ln.values["time (minutes)"] for ln in minutes.lines] == [120, 120, 120, 120]


def test_volume_gb_time_follows_resizes_and_deletes() -> None:
    events = [
        ev(0, "volume", "vol-1", "created", zone="z1", size_gib=10),
        ev(2 * H, "volume", "vol-1", "resized", zone="z1", size_gib=30),
        ev(3 * H, "volume", "vol-1", "deleted", zone="z1", size_gib=30),
        ev(0, "volume", "vol-2", "created", zone="z1", size_gib=1),
    ]
    made = report.build("volume", Inputs(events=events), start=T0, end=T0 + 4 * H, now=T0 + 100 * H)
    by_id = {ln.resource_id: ln.values for ln in made.lines if ln.level == "resource"}
    assert by_id["vol-1"] == {"volumes": 1, "max size (GB)": 30, "GB-hours": 10 * 2 + 30 * 1}
    assert by_id["vol-2"] == {"volumes": 1, "max size (GB)": 1, "GB-hours": 4}
    zone = made.lines[0].values
    assert zone == {"volumes": 2, "max size (GB)": 30, "GB-hours": 54}
    mb = report.build(
        "volume",
        Inputs(events=events),
        start=T0,
        end=T0 + 4 * H,
        now=T0 + 4 * H,
        size_unit="mb",
        time_unit="days",
    )
    assert mb.lines[0].values == {"volumes": 2, "max size (MB)": 30 * 1024, "MB-days": 54 * 1024 / 24}


def test_snapshots_are_counted_as_volumes_are() -> None:
    events = [ev(0, "snapshot", "snap-1", "created", size_gib=8), ev(6 * H, "snapshot", "snap-1", "deleted")]
    made = report.build("snapshot", Inputs(events=events), start=T0, end=T0 + 24 * H, now=T0 + 24 * H)
    assert made.lines[0].values == {"snapshots": 1, "max size (GB)": 8, "GB-hours": 48}


def test_elastic_ip_allocated_and_associated_time() -> None:
    events = [
        ev(0, "elastic-ip", "10.9.0.1", "allocated"),
        ev(H, "elastic-ip", "10.9.0.1", "associated", detail="i-1"),
        ev(1.5 * H, "elastic-ip", "10.9.0.1", "disassociated"),
        ev(2 * H, "elastic-ip", "10.9.0.1", "associated", detail="i-2"),
        ev(4 * H, "elastic-ip", "10.9.0.1", "released"),
        ev(H, "elastic-ip", "10.9.0.2", "allocated", account=B),
    ]
    made = report.build(
        "elastic-ip", Inputs(events=events, accounts=NAMES), start=T0, end=T0 + 5 * H, now=T0 + 5 * H
    )
    by_id = {ln.resource_id: ln.values for ln in made.lines if ln.level == "resource"}
    assert by_id == {
        "10.9.0.1": {"ips": 1, "allocated (hours)": 4, "associated (hours)": 2.5},
        "10.9.0.2": {"ips": 1, "allocated (hours)": 4, "associated (hours)": 0},
    }


def test_s3_stored_bytes_time_and_traffic() -> None:
    canon_a = "c" * 64
    samples = [
        S3Sample("photos", canon_a, T0, 2 * 1024**3, 2),
        S3Sample("photos", canon_a, T0 + 2 * H, 1024**3, 1),
        S3Sample("photos", canon_a, T0 + 3 * H, 0, -1),  # deleted
    ]
    traffic = [
        S3Traffic("photos", canon_a, T0 + 10, 3, 2048, 1024),
        S3Traffic("photos", canon_a, T0 + 20, 2, 0, 1024),
        S3Traffic("photos", canon_a, T0 + 99 * H, 7, 7, 7),  # after the range
    ]
    inputs = Inputs(samples=samples, traffic=traffic, owners={canon_a: A}, accounts=NAMES)
    made = report.build("s3", inputs, start=T0, end=T0 + 4 * H, now=T0 + 4 * H, size_unit="KB")
    (resource,) = [ln for ln in made.lines if ln.level == "resource"]
    assert (resource.account, resource.resource_id) == ("alpha", "photos")
    assert resource.values == {
        "buckets": 1,
        "max stored (KB)": 2 * 1024**2,
        "KB-hours": (2 * 2 + 1 * 1) * 1024**2,
        "requests": 5,
        "in (KB)": 2,
        "out (KB)": 2,
    }


def test_capacity_per_zone() -> None:
    inputs = Inputs(capacity=[("z1", "cores", 8, 3, False), ("z1", "memory", 4 * 1024**3, 1024**3, True)])
    made = report.build("capacity", inputs, start=T0, end=T0 + 1, now=T0)
    assert [(ln.level, ln.resource_id, ln.values) for ln in made.lines] == [
        ("zone", "", {}),
        ("resource", "cores", {"total": 8, "in use": 3, "free": 5}),
        ("resource", "memory (GB)", {"total": 4, "in use": 1, "free": 3}),
    ]


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ReportError, match="report type"):
        report.build("cpu", Inputs(), start=T0, end=T0 + 1, now=T0)
    with pytest.raises(ReportError, match="time unit"):
        report.build("instance", Inputs(), start=T0, end=T0 + 1, now=T0, time_unit="weeks")
    with pytest.raises(ReportError, match="size unit"):
        report.build("instance", Inputs(), start=T0, end=T0 + 1, now=T0, size_unit="TB")
    with pytest.raises(ReportError, match="after its start"):
        report.build("instance", Inputs(), start=T0, end=T0, now=T0)


def test_series_per_account_over_bins() -> None:
    events = [
        inst(0, "i-1", "running"),
        inst(2 * H, "i-1", "terminated"),
        inst(H, "i-2", "running", account=B),
    ]
    made = report.build("instance", Inputs(events=events), start=T0, end=T0 + 4 * H, now=T0 + 4 * H, bins=4)
    assert made.series == {A: [1, 1, 0, 0], B: [0, 1, 1, 1]}  # instances running in each hour
    half = report.build("instance", Inputs(events=events), start=T0, end=T0 + 4 * H, now=T0 + 4 * H, bins=8)
    assert half.series == {A: [1, 1, 1, 1, 0, 0, 0, 0], B: [0, 0, 1, 1, 1, 1, 1, 1]}
    assert [b - T0 for b in made.bins] == [0, H, 2 * H, 3 * H]


def _sample_report() -> report.Report:
    events = [
        inst(0, "i-1", "running"),
        inst(2 * H, "i-1", "terminated"),
        inst(H, "i-2", "running", account=B),
    ]
    return report.build(
        "instance", Inputs(events=events, accounts=NAMES), start=T0, end=T0 + 4 * H, now=T0 + 4 * H, bins=8
    )


def test_csv_has_one_row_per_line() -> None:
    rows = list(csv.DictReader(io.StringIO(render.to_csv(_sample_report()))))
    assert [(r["level"], r["account"], r["resource"], r["time (hours)"]) for r in rows] == [
        ("zone", "", "", "5"),
        ("account", "alpha", "", "2"),
        ("user", "alpha", "", "2"),
        ("resource", "alpha", "i-1", "2"),
        ("account", "beta", "", "3"),
        ("user", "beta", "", "3"),
        ("resource", "beta", "i-2", "3"),
    ]


def test_json_nests_zones_accounts_users_resources() -> None:
    doc = json.loads(render.to_json(_sample_report()))
    (zone,) = doc["zones"]
    assert zone["totals"]["time (hours)"] == 5
    assert [(a["account"], a["totals"]["time (hours)"]) for a in zone["accounts"]] == [
        ("alpha", 2),
        ("beta", 3),
    ]
    assert zone["accounts"][1]["users"][0]["resources"] == [
        {"id": "i-2", "instances": 1, "type": "m1.small", "time (hours)": 3}
    ]
    assert doc["units"] == {"time": "hours", "size": "GB"} and len(doc["series"]["bins"]) == 8
    assert doc["series"]["accounts"]["beta"] == [0, 0, 1, 1, 1, 1, 1, 1]
    assert doc["series"]["label"] == "instances running"


def test_html_is_self_contained_with_an_svg_chart() -> None:
    page = render.to_html(_sample_report())
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<link" not in page and "src=" not in page
    start, end = page.index("<svg"), page.index("</svg>") + len("</svg>")
    svg = ElementTree.fromstring(page[start:end])
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert [ln.find("{http://www.w3.org/2000/svg}title").text for ln in lines] == ["alpha", "beta"]  # type: ignore[union-attr]
    assert ">i-2<" in page and "account beta" in page


def test_interval_overlap() -> None:
    i = Interval("z", A, "u", "r", "", T0, T0 + 10)
    assert report.overlap(i, T0 + 5, T0 + 20) == 5 and report.overlap(i, T0 + 10, T0 + 20) == 0


def test_report_times_and_requests_are_checked() -> None:
    from euca.roles.clc import reporting

    assert reporting.parse_time("2026-01-01") == 1_767_225_600.0
    assert reporting.parse_time("2026-01-01T01:00:00Z") == 1_767_225_600.0 + H
    assert reporting.parse_time("2026-01-01T02:00:00+01:00") == 1_767_225_600.0 + H
    assert reporting.parse_time("1767225600.5") == 1_767_225_600.5
    with pytest.raises(ReportError, match="not a date"):
        reporting.parse_time("yesterday")
    reporting.check(reporting.ReportRequest("s3", T0, T0 + 1, "days", "kb", "html"))
    with pytest.raises(ReportError, match="format"):
        reporting.check(reporting.ReportRequest("s3", T0, T0 + 1, fmt="xml"))
    with pytest.raises(ReportError, match="after its start"):
        reporting.check(reporting.ReportRequest("s3", T0, T0))
