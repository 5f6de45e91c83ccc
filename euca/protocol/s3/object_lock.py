"""Object lock documents, sans-I/O: ObjectLockConfiguration (a bucket's default retention), Retention and
LegalHold (one object version's), parsed as S3 validates them and rendered back; and the rule of whether a
locked version may be deleted or its retention changed."""

from __future__ import annotations

import time
from dataclasses import dataclass

from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.lock_headers import LOCK_MODES, parse_iso8601
from euca.protocol.s3.wire import document, iso8601
from euca.protocol.s3.xml import parse_root, text_of

DAY = 86400


@dataclass(frozen=True, slots=True)
class LockConfiguration:
    """A bucket's object lock configuration: enabled, and its default retention (mode None: none)."""

    mode: str | None = None
    days: int | None = None
    years: int | None = None

    def default_until(self, now: float) -> float | None:
        if self.mode is None:
            return None
        days = self.days if self.days is not None else 365 * (self.years or 0)
        return now + days * DAY

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "days": self.days, "years": self.years}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> LockConfiguration:
        mode, days, years = d.get("mode"), d.get("days"), d.get("years")
        return cls(
            mode if isinstance(mode, str) else None,
            days if isinstance(days, int) else None,
            years if isinstance(years, int) else None,
        )


def _period(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise S3Error("MalformedXML") from None
    if value <= 0 or (what == "Days" and value > 36500) or (what == "Years" and value > 100):
        raise S3Error("InvalidRetentionPeriod", "Default retention period must be a positive integer value.")
    return value


def parse_lock_configuration(body: bytes) -> LockConfiguration:
    root = parse_root(body)
    if root.tag != "ObjectLockConfiguration" or text_of(root.find("ObjectLockEnabled")) != "Enabled":
        raise S3Error("MalformedXML")
    rule = root.find("Rule")
    if rule is None:
        return LockConfiguration()
    dr = rule.find("DefaultRetention")
    if dr is None:
        raise S3Error("MalformedXML")
    mode = text_of(dr.find("Mode"))
    if mode not in LOCK_MODES:
        raise S3Error("MalformedXML")
    days, years = dr.find("Days"), dr.find("Years")
    if (days is None) == (years is None):
        raise S3Error("MalformedXML")
    if days is not None:
        return LockConfiguration(mode, days=_period(text_of(days), "Days"))
    return LockConfiguration(mode, years=_period(text_of(years), "Years"))


def render_lock_configuration(conf: LockConfiguration) -> bytes:
    inner = "<ObjectLockEnabled>Enabled</ObjectLockEnabled>"
    if conf.mode is not None:
        period = f"<Days>{conf.days}</Days>" if conf.days is not None else f"<Years>{conf.years}</Years>"
        inner += f"<Rule><DefaultRetention><Mode>{conf.mode}</Mode>{period}</DefaultRetention></Rule>"
    return document("ObjectLockConfiguration", inner)


def parse_retention(body: bytes) -> tuple[str | None, float | None]:
    """(mode, retain-until) of a Retention document; (None, None) removes the retention."""
    root = parse_root(body)
    if root.tag != "Retention":
        raise S3Error("MalformedXML")
    mode_el, until_el = root.find("Mode"), root.find("RetainUntilDate")
    if mode_el is None and until_el is None:
        return None, None
    if mode_el is None or until_el is None or text_of(mode_el) not in LOCK_MODES:
        raise S3Error("MalformedXML")
    until = parse_iso8601(text_of(until_el))
    if until is None:
        raise S3Error("MalformedXML")
    return text_of(mode_el), until


def render_retention(mode: str, until: float) -> bytes:
    return document("Retention", f"<Mode>{mode}</Mode><RetainUntilDate>{iso8601(until)}</RetainUntilDate>")


def parse_legal_hold(body: bytes) -> str:
    root = parse_root(body)
    status = text_of(root.find("Status"))
    if root.tag != "LegalHold" or status not in ("ON", "OFF"):
        raise S3Error("MalformedXML")
    return status


def render_legal_hold(status: str) -> bytes:
    return document("LegalHold", f"<Status>{status}</Status>")


def check_future(until: float, now: float | None = None) -> None:
    if until <= (time.time() if now is None else now):
        raise S3Error("InvalidArgument", "The retain until date must be in the future!")


def may_remove(
    mode: str | None, until: float | None, legal_hold: str | None, bypass: bool, now: float
) -> bool:
    """Whether a version under this lock may be deleted (or its retention shortened or removed): never under a
    legal hold or an unexpired COMPLIANCE retention; under an unexpired GOVERNANCE retention only with
    x-amz-bypass-governance-retention (and the right to use it)."""
    if legal_hold == "ON":
        return False
    if mode is None or until is None or until <= now:
        return True
    return mode == "GOVERNANCE" and bypass


def may_change_retention(
    old_mode: str | None,
    old_until: float | None,
    mode: str | None,
    until: float | None,
    bypass: bool,
    now: float,
) -> bool:
    """Whether a version's retention may go from (old_mode, old_until) to (mode, until): extending it in the
    same mode always; anything else (shorter, another mode, none) only as may_remove allows."""
    if old_mode is None or old_until is None or old_until <= now:
        return True
    if mode == old_mode and until is not None and until >= old_until:
        return True
    return may_remove(old_mode, old_until, None, bypass, now)
