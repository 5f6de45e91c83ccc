"""A usage report as CSV, JSON or one self-contained HTML page (pure: a Report in, text out).

The HTML page has no script and fetches nothing: its styles are inline and its charts are SVG drawn here,
one line per account of the report's main figure over the range (instance time, size x time, allocated
time), so a person can read it from a file or a mail.
"""

from __future__ import annotations

import csv
import html
import io
import json
from datetime import UTC, datetime
from typing import Any

from euca.roles.clc.usage.report import Line, Report

FORMATS = ("csv", "json", "html")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(line: Line) -> str:
    return line.account or line.account_id


def to_csv(report: Report) -> str:
    """One header row, then one row per line; `level` says which (zone, account, user: cumulative)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["type", "start", "end", "level", "zone", "account_id", "account", "user", "resource"]
        + [c.name for c in report.columns]
    )
    for line in report.lines:
        writer.writerow(
            [report.type, iso(report.start), iso(report.end), line.level, line.zone, line.account_id]
            + [line.account, line.user, line.resource_id]
            + [line.values.get(c.name, "") for c in report.columns]
        )
    return out.getvalue()


def to_json_value(report: Report) -> dict[str, Any]:
    """Nested as the report groups: zones -> accounts -> users -> resources, each with its totals."""
    zones: list[dict[str, Any]] = []
    for line in report.lines:
        if line.level == "zone":
            zones.append({"zone": line.zone, "totals": line.values, "accounts": [], "resources": []})
        elif line.level == "account":
            zones[-1]["accounts"].append(
                {"account_id": line.account_id, "account": line.account, "totals": line.values, "users": []}
            )
        elif line.level == "user":
            zones[-1]["accounts"][-1]["users"].append(
                {"user": line.user, "totals": line.values, "resources": []}
            )
        elif zones[-1]["accounts"]:
            zones[-1]["accounts"][-1]["users"][-1]["resources"].append(
                {"id": line.resource_id, **line.values}
            )
        else:  # capacity: resources of the zone itself
            zones[-1]["resources"].append({"id": line.resource_id, **line.values})
    return {
        "type": report.type,
        "start": iso(report.start),
        "end": iso(report.end),
        "units": {"time": report.time_unit, "size": report.size_unit},
        "columns": [c.name for c in report.columns],
        "zones": zones,
        "series": {
            "label": report.chart_label,
            "bins": [iso(b) for b in report.bins],
            "accounts": {report.accounts.get(a, a): v for a, v in report.series.items()},
        },
    }


def to_json(report: Report) -> str:
    return json.dumps(to_json_value(report), indent=2, sort_keys=False) + "\n"


# -- HTML ------------------------------------------------------------------------------------------------

# Colours for up to eight accounts, then again (distinct in print and for most colour vision).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
STYLE = """
body { font-family: DejaVu Sans, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eee; } td.t { text-align: left; }
tr.zone td { background: #dde6f3; font-weight: bold; } tr.account td { background: #eef2f8; font-weight: bold; }
tr.user td { background: #f7f7f7; font-style: italic; }
.legend span { display: inline-block; margin-right: 16px; font-size: 13px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle; }
"""


def svg_chart(report: Report, width: int = 760, height: int = 300) -> str:
    """A line per account of what it held in each bin, with axes and ticks (inline SVG)."""
    left, right, top, bottom = 70, 20, 20, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    series = report.series
    peak = max((v for vs in series.values() for v in vs), default=0.0) or 1.0
    bins = report.bins or [report.start]
    step = plot_w / max(1, len(bins))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(report.chart_label)} over time">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>',
    ]
    for n in range(5):  # horizontal grid and the value axis
        value = peak * n / 4
        y = top + plot_h - plot_h * n / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{_short(value)}</text>'
        )
    every = max(1, len(bins) // 6)
    for n in range(0, len(bins), every):  # time ticks
        x = left + step * n
        parts.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" stroke="#555"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 18}" font-size="10" text-anchor="middle">'
            f"{iso(bins[n])[5:16].replace('T', ' ')}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="12" text-anchor="middle">'
        f"{html.escape(report.chart_label)}, on average in each of {len(bins)} spans of the range (UTC)</text>"
    )
    for k, (account, values) in enumerate(
        sorted(series.items(), key=lambda kv: report.accounts.get(kv[0], kv[0]))
    ):
        colour = PALETTE[k % len(PALETTE)]
        # Steps, not slopes: each span's value holds across the span.
        points = " ".join(
            f"{left + step * (n + edge):.1f},{top + plot_h - plot_h * v / peak:.1f}"
            for n, v in enumerate(values)
            for edge in (0, 1)
        )
        name = html.escape(report.accounts.get(account, account))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="{points}"><title>{name}</title>'
            "</polyline>"
        )
        for n, v in enumerate(values):
            x, y = left + step * (n + 0.5), top + plot_h - plot_h * v / peak
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _short(value: float) -> str:
    return f"{value:.3g}"


def to_html(report: Report) -> str:
    title = f"Usage report: {report.type}, {iso(report.start)} to {iso(report.end)}"
    rows: list[str] = []
    for line in report.lines:
        label = {
            "zone": f"zone {line.zone}",
            "account": f"account {_label(line)} ({line.account_id})",
            "user": f"user {line.user}",
            "resource": line.resource_id,
        }[line.level]
        cells = "".join(
            f"<td{' class=t' if c.how == 'text' else ''}>{html.escape(str(line.values.get(c.name, '')))}</td>"
            for c in report.columns
        )
        rows.append(f'<tr class="{line.level}"><td class="t">{html.escape(label)}</td>{cells}</tr>')
    header = "".join(f"<th>{html.escape(c.name)}</th>" for c in report.columns)
    chart = ""
    if report.type != "capacity":
        legend = "".join(
            f'<span><i style="background:{PALETTE[k % len(PALETTE)]}"></i>'
            f"{html.escape(report.accounts.get(a, a))}</span>"
            for k, a in enumerate(sorted(report.series, key=lambda a: report.accounts.get(a, a)))
        )
        chart = (
            f"<h2>Usage over time per account: {html.escape(report.chart_label)}</h2>"
            f'<div class="legend">{legend or "no usage in this range"}</div>{svg_chart(report)}'
        )
    empty = (
        ""
        if rows
        else f'<tr><td class="t" colspan="{len(report.columns) + 1}">no usage in this range</td></tr>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Units: time in {html.escape(report.time_unit)}, sizes in {html.escape(report.size_unit)}. "
        "Grouped zone, account, user; each group's line is its total.</p>"
        f"{chart}<h2>Figures</h2>"
        f'<table><tr><th class="t">zone / account / user / resource</th>{header}</tr>{"".join(rows)}{empty}'
        "</table></body></html>\n"
    )


def render(report: Report, fmt: str) -> str:
    if fmt == "csv":
        return to_csv(report)
    if fmt == "json":
        return to_json(report)
    if fmt == "html":
        return to_html(report)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
