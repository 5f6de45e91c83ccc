"""What every S3 wire module shares: the namespaces and limits, XML text escaping, the date formats, ETag
quoting, and the header map the parsers read. It imports nothing of the package (the bottom of its graph)."""

from __future__ import annotations

import calendar
import email.utils
import functools
import re
import time
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import quote

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")
CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
)
CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
MAX_KEY_BYTES = 1024
MAX_PART_NUMBER = 10000
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_OBJECT_SIZE = 5 * 1024**4
MAX_PUT_SIZE = 5 * 1024**3


class HeaderMap(Protocol):
    """Request headers by lower-case name (euca.core.http.Headers, or a plain dict in tests)."""

    def get(self, name: str, /) -> str | None: ...
    def __contains__(self, name: str) -> bool: ...
    def items(self) -> Iterable[tuple[str, str]]: ...


# -- XML text ------------------------------------------------------------------------------------------

_XML_SPECIAL = re.compile("[&<>\"'\r]")
_XML_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;", "\r": "&#13;"}
)


def escape(value: object) -> str:
    """`value` as XML character data (or an attribute value)."""
    # One C-level scan for the common case (nothing to escape): a listing calls this twice per key.
    s = value if isinstance(value, str) else str(value)
    if _XML_SPECIAL.search(s) is None:
        return s
    return s.translate(_XML_ESCAPES)


def document(root: str, inner: str, ns: bool = True) -> bytes:
    """An XML response document: the declaration and `<root>` (in the S3 namespace unless ns=False)."""
    attr = f' xmlns="{S3_NS}"' if ns else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}{attr}>{inner}</{root}>'.encode()


def url_encode(value: str, encode: bool) -> str:
    """A key or prefix as a listing with encoding-type=url sends it."""
    return quote(value, safe="/~-_.") if encode else value


# -- dates and ETags -----------------------------------------------------------------------------------


def iso8601(ts: float) -> str:
    # Milliseconds truncated, never rounded: rounding 12.9996 gave "12.000" (the `% 1000` wrap), a time
    # almost a second before the write, so `aws s3 sync` took a file written that second as newer.
    ms = int((ts - int(ts)) * 1000)
    return f"{_iso_seconds(int(ts))}.{ms:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    # Memoised: a listing renders one per key, and keys written together share their second.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def http_date(ts: float) -> str:
    return _http_date(int(ts))


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    # Memoised: a hot object's Last-Modified is rendered on every GET.
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError):
        return None
    if parsed is None:
        return None
    return float(calendar.timegm(parsed[:9]) - (parsed[9] or 0))


def quote_etag(etag: str) -> str:
    return f'"{etag}"'
