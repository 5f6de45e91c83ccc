"""Bucket lifecycle configuration, sans-I/O: the LifecycleConfiguration document parsed and validated as S3
validates it, rendered back, and the pure rules of what expires when (the executor in Walrus applies them).

A rule is kept as a plain dict (JSON in the store): {"id", "status", "filter": {"prefix", "tags": {k: v},
"gt", "lt"}, "legacy_prefix": bool, "expiration": {"days" | "date" | "delete_marker"}, "noncurrent":
{"days", "newer"}, "abort_days", "transitions": [...], "noncurrent_transitions": [...]} (absent keys: not set).
Transitions are stored and returned but do nothing: Walrus keeps one storage class.
"""

from __future__ import annotations

import calendar
import datetime
import os
import re
from collections.abc import Mapping
from typing import Any

from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.headers import STORAGE_CLASSES
from euca.protocol.s3.wire import document, escape, http_date
from euca.protocol.s3.xml import parse_root as _xml
from euca.protocol.s3.xml import text_of as _text

Rule = dict[str, Any]

MAX_RULES = 1000
MAX_ID = 255
DAY = 86400.0

_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]00:?00)?)?$")


def _bad(message: str, code: str = "InvalidArgument") -> S3Error:
    return S3Error(code, message)


def _int(el: Any, what: str, *, positive: bool = True) -> int:
    raw = _text(el).strip()
    try:
        value = int(raw)
    except ValueError:
        raise S3Error("MalformedXML") from None
    if value < (1 if positive else 0) or value > 2147483647:
        raise _bad(f"'{what}' must be a positive integer" if positive else f"'{what}' must not be negative")
    return value


def _date(el: Any, what: str) -> str:
    """An ISO 8601 date at midnight UTC, kept as S3 returns it ("2017-09-27T00:00:00.000Z")."""
    m = _DATE_RE.match(_text(el).strip())
    if m is None:
        raise S3Error("MalformedXML")
    y, mo, d, hh, mm, ss = (int(g) if g else 0 for g in m.groups()[:6])
    try:
        datetime.date(y, mo, d)
    except ValueError:
        raise S3Error("MalformedXML") from None
    if (hh, mm, ss) != (0, 0, 0):
        raise _bad(f"'{what}' must be at midnight GMT")
    return f"{y:04d}-{mo:02d}-{d:02d}T00:00:00.000Z"


def date_ts(date: str) -> float:
    return float(calendar.timegm(time_tuple(date)))


def time_tuple(date: str) -> tuple[int, int, int, int, int, int]:
    return int(date[0:4]), int(date[5:7]), int(date[8:10]), 0, 0, 0


def _tag(el: Any) -> tuple[str, str]:
    key, value = el.find("Key"), el.find("Value")
    if key is None:
        raise S3Error("MalformedXML")
    k = _text(key)
    if not 1 <= len(k) <= 128 or len(_text(value)) > 256:
        raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
    return k, _text(value)


def _filter(el: Any) -> dict[str, Any]:
    """The Filter element: at most one of Prefix, Tag, ObjectSizeGreaterThan/LessThan, or And of them."""
    children = list(el)
    if len(children) > 1:
        raise S3Error("MalformedXML")
    f: dict[str, Any] = {"prefix": "", "tags": {}}
    if not children:
        return f
    c = children[0]
    if c.tag == "Prefix":
        f["prefix"] = _text(c)
    elif c.tag == "Tag":
        k, v = _tag(c)
        f["tags"] = {k: v}
    elif c.tag == "ObjectSizeGreaterThan":
        f["gt"] = _int(c, "ObjectSizeGreaterThan", positive=False)
    elif c.tag == "ObjectSizeLessThan":
        f["lt"] = _int(c, "ObjectSizeLessThan")
    elif c.tag == "And":
        for part in c:
            if part.tag == "Prefix":
                f["prefix"] = _text(part)
            elif part.tag == "Tag":
                k, v = _tag(part)
                if k in f["tags"]:
                    raise _bad("Duplicate Tag Keys are not allowed.")
                f["tags"][k] = v
            elif part.tag == "ObjectSizeGreaterThan":
                f["gt"] = _int(part, "ObjectSizeGreaterThan", positive=False)
            elif part.tag == "ObjectSizeLessThan":
                f["lt"] = _int(part, "ObjectSizeLessThan")
            else:
                raise S3Error("MalformedXML")
    else:
        raise S3Error("MalformedXML")
    if "gt" in f and "lt" in f and f["gt"] >= f["lt"]:
        raise _bad("ObjectSizeLessThan must be greater than ObjectSizeGreaterThan")
    return f


def _transition(el: Any, noncurrent: bool) -> dict[str, Any]:
    t: dict[str, Any] = {}
    cls = _text(el.find("StorageClass"))
    if cls not in STORAGE_CLASSES or cls == "STANDARD":
        raise S3Error("InvalidStorageClass", "The storage class you specified is not valid")
    t["storage_class"] = cls
    if noncurrent:
        if el.find("NoncurrentDays") is None:
            raise S3Error("MalformedXML")
        t["days"] = _int(el.find("NoncurrentDays"), "NoncurrentDays", positive=False)
        if el.find("NewerNoncurrentVersions") is not None:
            t["newer"] = _int(el.find("NewerNoncurrentVersions"), "NewerNoncurrentVersions")
        return t
    days, date = el.find("Days"), el.find("Date")
    if (days is None) == (date is None):
        raise S3Error("MalformedXML")
    if days is not None:
        t["days"] = _int(days, "Days", positive=False)
    else:
        t["date"] = _date(date, "Date")
    return t


def _rule(el: Any) -> Rule:
    r: Rule = {}
    rid = el.find("ID")
    r["id"] = _text(rid) if rid is not None and _text(rid) else os.urandom(24).hex()
    if len(r["id"]) > MAX_ID:
        raise _bad("ID length should not exceed allowed limit of 255")
    status = _text(el.find("Status"))
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    r["status"] = status
    flt, prefix = el.find("Filter"), el.find("Prefix")
    if (flt is None) == (prefix is None):
        raise S3Error("MalformedXML")
    if flt is not None:
        r["filter"] = _filter(flt)
    else:
        r["filter"] = {"prefix": _text(prefix), "tags": {}}
        r["legacy_prefix"] = True
    exp = el.find("Expiration")
    if exp is not None:
        days, date, marker = exp.find("Days"), exp.find("Date"), exp.find("ExpiredObjectDeleteMarker")
        if sum(x is not None for x in (days, date, marker)) != 1:
            raise S3Error("MalformedXML")
        if days is not None:
            r["expiration"] = {"days": _int(days, "Days")}
        elif date is not None:
            r["expiration"] = {"date": _date(date, "Date")}
        else:
            value = _text(marker).strip().lower()
            if value not in ("true", "false"):
                raise S3Error("MalformedXML")
            r["expiration"] = {"delete_marker": value == "true"}
    nve = el.find("NoncurrentVersionExpiration")
    if nve is not None:
        if nve.find("NoncurrentDays") is None:
            raise S3Error("MalformedXML")
        r["noncurrent"] = {"days": _int(nve.find("NoncurrentDays"), "NoncurrentDays")}
        if nve.find("NewerNoncurrentVersions") is not None:
            newer = _int(nve.find("NewerNoncurrentVersions"), "NewerNoncurrentVersions")
            if newer > 100:
                raise _bad("NewerNoncurrentVersions must be between 1 and 100")
            r["noncurrent"]["newer"] = newer
    abort = el.find("AbortIncompleteMultipartUpload")
    if abort is not None:
        if abort.find("DaysAfterInitiation") is None:
            raise S3Error("MalformedXML")
        r["abort_days"] = _int(abort.find("DaysAfterInitiation"), "DaysAfterInitiation")
    transitions = [_transition(t, False) for t in el.findall("Transition")]
    if transitions:
        r["transitions"] = transitions
    nc_transitions = [_transition(t, True) for t in el.findall("NoncurrentVersionTransition")]
    if nc_transitions:
        r["noncurrent_transitions"] = nc_transitions
    if not any(
        k in r for k in ("expiration", "noncurrent", "abort_days", "transitions", "noncurrent_transitions")
    ):
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    tagged = bool(r["filter"]["tags"]) or "gt" in r["filter"] or "lt" in r["filter"]
    if tagged and "abort_days" in r:
        raise S3Error(
            "InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Tags or object size."
        )
    if r["filter"]["tags"] and r.get("expiration", {}).get("delete_marker") is not None:
        raise S3Error("InvalidRequest", "ExpiredObjectDeleteMarker cannot be specified with Tags.")
    return r


def parse_lifecycle_body(body: bytes) -> list[Rule]:
    """The rules of a PutBucketLifecycleConfiguration document, validated as S3 does (MalformedXML for what
    does not follow the schema, InvalidArgument / InvalidRequest for values it refuses)."""
    root = _xml(body)
    if root.tag != "LifecycleConfiguration":
        raise S3Error("MalformedXML")
    rules = [_rule(el) for el in root.findall("Rule")]
    if not rules or len(rules) > MAX_RULES or len(rules) != len(list(root)):
        raise S3Error("MalformedXML")
    ids = [r["id"] for r in rules]
    if len(set(ids)) != len(ids):
        raise _bad("Rule ID must be unique. Found same ID for more than one rule")
    return rules


def _render_filter(r: Rule) -> str:
    f = r["filter"]
    if r.get("legacy_prefix"):
        return f"<Prefix>{escape(f['prefix'])}</Prefix>"
    parts = []
    if f["prefix"]:
        parts.append(f"<Prefix>{escape(f['prefix'])}</Prefix>")
    parts += [f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>" for k, v in f["tags"].items()]
    if "gt" in f:
        parts.append(f"<ObjectSizeGreaterThan>{f['gt']}</ObjectSizeGreaterThan>")
    if "lt" in f:
        parts.append(f"<ObjectSizeLessThan>{f['lt']}</ObjectSizeLessThan>")
    if len(parts) > 1:
        return f"<Filter><And>{''.join(parts)}</And></Filter>"
    if not parts:
        return "<Filter><Prefix></Prefix></Filter>"
    return f"<Filter>{parts[0]}</Filter>"


def _render_transition(tag: str, t: Mapping[str, Any], noncurrent: bool) -> str:
    inner = ""
    if noncurrent:
        inner += f"<NoncurrentDays>{t['days']}</NoncurrentDays>"
        if "newer" in t:
            inner += f"<NewerNoncurrentVersions>{t['newer']}</NewerNoncurrentVersions>"
    elif "days" in t:
        inner += f"<Days>{t['days']}</Days>"
    else:
        inner += f"<Date>{t['date']}</Date>"
    return f"<{tag}>{inner}<StorageClass>{t['storage_class']}</StorageClass></{tag}>"


def render_lifecycle(rules: list[Rule]) -> bytes:
    out = []
    for r in rules:
        inner = f"<ID>{escape(r['id'])}</ID>{_render_filter(r)}<Status>{r['status']}</Status>"
        e = r.get("expiration")
        if e is not None:
            if "days" in e:
                inner += f"<Expiration><Days>{e['days']}</Days></Expiration>"
            elif "date" in e:
                inner += f"<Expiration><Date>{e['date']}</Date></Expiration>"
            else:
                flag = "true" if e["delete_marker"] else "false"
                inner += (
                    f"<Expiration><ExpiredObjectDeleteMarker>{flag}</ExpiredObjectDeleteMarker></Expiration>"
                )
        inner += "".join(_render_transition("Transition", t, False) for t in r.get("transitions", []))
        inner += "".join(
            _render_transition("NoncurrentVersionTransition", t, True)
            for t in r.get("noncurrent_transitions", [])
        )
        n = r.get("noncurrent")
        if n is not None:
            newer = f"<NewerNoncurrentVersions>{n['newer']}</NewerNoncurrentVersions>" if "newer" in n else ""
            inner += (
                f"<NoncurrentVersionExpiration><NoncurrentDays>{n['days']}</NoncurrentDays>{newer}"
                "</NoncurrentVersionExpiration>"
            )
        if "abort_days" in r:
            inner += (
                "<AbortIncompleteMultipartUpload><DaysAfterInitiation>"
                f"{r['abort_days']}</DaysAfterInitiation></AbortIncompleteMultipartUpload>"
            )
        out.append(f"<Rule>{inner}</Rule>")
    return document("LifecycleConfiguration", "".join(out))


# -- what the rules select, and when ---------------------------------------------------------------------


def matches(r: Rule, key: str, size: int, tags: Mapping[str, str] | None) -> bool:
    """Whether an enabled rule's filter selects an object version (its key, size and tags)."""
    if r["status"] != "Enabled":
        return False
    f = r["filter"]
    if not key.startswith(f["prefix"]):
        return False
    if "gt" in f and not size > f["gt"]:
        return False
    if "lt" in f and not size < f["lt"]:
        return False
    have = tags or {}
    return all(have.get(k) == v for k, v in f["tags"].items())


def after_days(start: float, days: int, day: float = DAY) -> float:
    """S3's clock for "N days after": the start plus N days, rounded up to the next midnight UTC. With a
    shorter `day` (tests), rounded up to the next multiple of it."""
    t = start + days * day
    return -(-t // day) * day


def current_expiry(
    rules: list[Rule], key: str, size: int, tags: Mapping[str, str] | None, created: float, day: float = DAY
) -> tuple[float, str] | None:
    """(when, rule id) the current version of `key` expires by the earliest rule that expires it, or None."""
    best: tuple[float, str] | None = None
    for r in rules:
        e = r.get("expiration")
        if e is None or "delete_marker" in e or not matches(r, key, size, tags):
            continue
        when = after_days(created, e["days"], day) if "days" in e else date_ts(e["date"])
        if best is None or when < best[0]:
            best = (when, r["id"])
    return best


def expiration_header(expiry: tuple[float, str] | None) -> list[tuple[str, str]]:
    """x-amz-expiration of a GET, HEAD or PUT answer: when the object expires and by which rule."""
    if expiry is None:
        return []
    return [("x-amz-expiration", f'expiry-date="{http_date(expiry[0])}", rule-id="{expiry[1]}"')]
