"""Object lock and server-side encryption as request headers (PUT, copy, multipart, delete), sans-I/O.

Kept apart from object_lock.py (the XML documents) because the endpoints carry these values and the XML
side imports the endpoints."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.wire import HeaderMap

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
_ISO_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True, slots=True)
class ObjectLockRequest:
    """x-amz-object-lock-mode / -retain-until-date / -legal-hold of a write (None: not sent)."""

    mode: str | None = None
    until: float | None = None
    legal_hold: str | None = None

    def __bool__(self) -> bool:
        return self.mode is not None or self.legal_hold is not None


def parse_iso8601(value: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 date-time (as S3 accepts a RetainUntilDate), None if not one."""
    m = _ISO_RE.match(value.strip())
    if m is None:
        return None
    y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
    frac = float(m.group(7)) if m.group(7) else 0.0
    try:
        ts = calendar.timegm((y, mo, d, hh, mi, ss))
    except (ValueError, OverflowError):
        return None
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mi < 60 and ss < 61):
        return None
    zone = m.group(8)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        ts -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return ts + frac


def parse_lock_headers(h: HeaderMap) -> ObjectLockRequest:
    mode = h.get("x-amz-object-lock-mode")
    until_raw = h.get("x-amz-object-lock-retain-until-date")
    hold = h.get("x-amz-object-lock-legal-hold")
    if mode is None and until_raw is None and hold is None:
        return ObjectLockRequest()
    if (mode is None) != (until_raw is None):
        raise S3Error(
            "InvalidArgument",
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
        )
    until = None
    if mode is not None:
        if mode not in LOCK_MODES:
            raise S3Error(
                "InvalidArgument",
                "Unknown wormMode directive.",
                ArgumentName="x-amz-object-lock-mode",
                ArgumentValue=mode[:64],
            )
        until = parse_iso8601(until_raw or "")
        if until is None:
            raise S3Error(
                "InvalidArgument",
                "The retain until date must be provided in ISO 8601 format",
                ArgumentName="x-amz-object-lock-retain-until-date",
                ArgumentValue=(until_raw or "")[:64],
            )
    if hold is not None and hold not in ("ON", "OFF"):
        raise S3Error(
            "InvalidArgument",
            "Legal Hold must be either of 'ON' or 'OFF'",
            ArgumentName="x-amz-object-lock-legal-hold",
            ArgumentValue=hold[:64],
        )
    return ObjectLockRequest(mode, until, hold)


def parse_bypass(h: HeaderMap) -> bool:
    return (h.get("x-amz-bypass-governance-retention") or "").strip().lower() == "true"


# -- server-side encryption ------------------------------------------------------------------------------

SSE_C_HEADERS = (
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
)


def requests_sse_c(h: HeaderMap) -> bool:
    """Whether a request carries SSE-C (customer key) headers."""
    return any(name in h for name in SSE_C_HEADERS)


def refuse_sse_c_in_clear(h: HeaderMap, secure: bool) -> None:
    """S3 refuses a customer-provided key sent over plain HTTP (the key would have crossed the wire in clear)."""
    if not secure and requests_sse_c(h):
        raise S3Error(
            "InvalidRequest",
            "Requests specifying Server Side Encryption with Customer provided keys must be made over a "
            "secure connection.",
        )
