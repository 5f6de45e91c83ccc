"""S3 REST wire format, sans-I/O.

`parse_request()` turns method + raw path + raw query + headers (+ the virtual-host bucket) into ONE typed
endpoint value (GetObject, PutObject, ListObjectsV2, ...), the way Garage's S3 router does; the role's
handlers take that value and never look at the wire again. Request bodies that carry XML (ACL policies,
DeleteObjects, CompleteMultipartUpload, tagging, versioning) are parsed by the `parse_*_body` functions.
Responses are rendered from plain model values (`render_*`), errors from `S3Error` (code, message, status).
Nothing here touches a socket or a file.
"""

from __future__ import annotations

import base64
import calendar
import email.utils
import functools
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, quote, unquote

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

# -- errors -----------------------------------------------------------------------------------------

ERRORS: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (
        409,
        "The requested bucket name is not available. The bucket namespace is shared by all users of the system. "
        "Please select a different name and try again.",
    ),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IllegalVersioningConfigurationException": (
        400,
        "The Versioning element must be specified",
    ),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header"),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part might not have been uploaded, "
        "or the specified entity tag might not have matched the part's entity tag.",
    ),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
    ),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedACLError": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingRequestBodyError": (400, "Request Body is empty"),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchUpload": (
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed.",
    ),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented"),
    "NotModified": (304, "Not Modified"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "UnresolvableGrantByEmailAddress": (
        400,
        "The email address you provided does not match any account on record.",
    ),
    "XAmzContentSHA256Mismatch": (
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
}


class S3Error(Exception):
    """An S3 error response: code, message, HTTP status, and extra elements for the XML body."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        status: int | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        **extra: str,
    ):
        default_status, default_message = ERRORS.get(code, (400, code))
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.extra = extra
        self.headers = list(headers)
        super().__init__(f"{code}: {self.message}")


def render_error(err: S3Error, resource: str, request_id: str, host_id: str) -> bytes:
    parts = [f"<Code>{_x(err.code)}</Code><Message>{_x(err.message)}</Message>"]
    for name, value in err.extra.items():
        parts.append(f"<{name}>{_x(value)}</{name}>")
    parts.append(f"<Resource>{_x(resource)}</Resource><RequestId>{request_id}</RequestId><HostId>{host_id}</HostId>")
    return _doc("Error", "".join(parts), ns=False)


# -- small wire helpers ------------------------------------------------------------------------------


_XML_SPECIAL = re.compile("[&<>\"'\r]")
_XML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;", "\r": "&#13;"})


def _x(value: object) -> str:
    # One C-level scan for the common case (nothing to escape): a listing calls this twice per key.
    s = value if isinstance(value, str) else str(value)
    if _XML_SPECIAL.search(s) is None:
        return s
    return s.translate(_XML_ESCAPES)


def _doc(root: str, inner: str, ns: bool = True) -> bytes:
    attr = f' xmlns="{S3_NS}"' if ns else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}{attr}>{inner}</{root}>'.encode()


def iso8601(ts: float) -> str:
    ms = int(round((ts - int(ts)) * 1000)) % 1000
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


def _url(value: str, encode: bool) -> str:
    return quote(value, safe="/~-_.") if encode else value


class HeaderMap(Protocol):
    """Request headers by lower-case name (euca.core.http.Headers, or a plain dict in tests)."""

    def get(self, name: str, default: str | None = None) -> str | None: ...
    def __contains__(self, name: str) -> bool: ...
    def items(self) -> Iterable[tuple[str, str]]: ...


# -- bucket naming ---------------------------------------------------------------------------------

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Eucalyptus accepted the looser legacy rules (upper case, underscores); today's tools send DNS names.
_LEGACY_BUCKET_RE = re.compile(r"^[A-Za-z0-9._\-]{3,255}$")


def valid_bucket_name(name: str, strict: bool = True) -> bool:
    if not strict:
        return bool(_LEGACY_BUCKET_RE.match(name))
    if not _BUCKET_RE.match(name) or _IP_RE.match(name):
        return False
    # "foo-.bar" is refused but "foo.-bar" accepted, as Ceph RGW (and s3-tests) do; AWS's current rules
    # forbid neither.
    if ".." in name or "-." in name:
        return False
    return not (name.startswith("xn--") or name.endswith("-s3alias"))


# -- request pieces ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Conditions:
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: float | None = None
    if_unmodified_since: float | None = None

    def __bool__(self) -> bool:
        return any(
            v is not None
            for v in (self.if_match, self.if_none_match, self.if_modified_since, self.if_unmodified_since)
        )


def _etag_matches(header: str, etag: str) -> bool:
    for item in header.split(","):
        item = item.strip()
        if item == "*":
            return True
        if item.startswith("W/"):
            item = item[2:]
        if item.strip('"') == etag:
            return True
    return False


def evaluate_conditions(cond: Conditions, etag: str, last_modified: float, mode: str = "read") -> None:
    """S3's precedence (RFC 9110 13.2.2): If-Match, else If-Unmodified-Since -> 412; then If-None-Match,
    else If-Modified-Since -> 304 for reads, 412 for copies (x-amz-copy-source-if-*). Writes (PUT with
    If-None-Match: *) look at the ETag headers only. Raises S3Error; returns when the request proceeds."""
    lm = float(int(last_modified))
    if cond.if_match is not None:
        if not _etag_matches(cond.if_match, etag):
            raise S3Error("PreconditionFailed", Condition="If-Match")
    elif mode != "write" and cond.if_unmodified_since is not None and lm > cond.if_unmodified_since:
        raise S3Error("PreconditionFailed", Condition="If-Unmodified-Since")
    if cond.if_none_match is not None:
        if _etag_matches(cond.if_none_match, etag):
            if mode == "read":
                raise S3Error("NotModified", headers=[("ETag", quote_etag(etag))])
            raise S3Error("PreconditionFailed", Condition="If-None-Match")
    elif mode != "write" and cond.if_modified_since is not None and lm <= cond.if_modified_since:
        if mode == "read":
            raise S3Error("NotModified", headers=[("ETag", quote_etag(etag))])
        raise S3Error("PreconditionFailed", Condition="If-Modified-Since")


@dataclass(slots=True)
class ByteRange:
    start: int | None
    end: int | None  # inclusive; None = to the end
    suffix: int | None = None

    def resolve(self, size: int) -> tuple[int, int]:
        """(first, last) inclusive within an object of `size` bytes, or InvalidRange."""
        if self.suffix is not None:
            if self.suffix == 0 or size == 0:
                raise S3Error("InvalidRange", ActualObjectSize=str(size), RangeRequested=self.describe())
            return max(0, size - self.suffix), size - 1
        assert self.start is not None
        if self.start >= size:
            raise S3Error("InvalidRange", ActualObjectSize=str(size), RangeRequested=self.describe())
        end = size - 1 if self.end is None else min(self.end, size - 1)
        return self.start, end

    def describe(self) -> str:
        if self.suffix is not None:
            return f"bytes=-{self.suffix}"
        return f"bytes={self.start}-{'' if self.end is None else self.end}"


def parse_range(value: str | None) -> ByteRange | None:
    """A single byte range; anything S3 would ignore (bad syntax, several ranges) yields None: full object."""
    if not value:
        return None
    value = value.strip()
    if not value.startswith("bytes=") or "," in value:
        return None
    spec = value[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    try:
        if not first:
            if not last.isdigit():
                return None
            return ByteRange(None, None, int(last))
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) if last else None
    except ValueError:
        return None
    if end is not None and end < start:
        return None
    return ByteRange(start, end)


@dataclass(slots=True)
class Grant:
    permission: str
    grantee_type: str  # "CanonicalUser" | "Group" | "AmazonCustomerByEmail"
    grantee: str  # canonical id, group URI or email
    display_name: str = ""


@dataclass(slots=True)
class AccessControlPolicy:
    owner_id: str
    owner_name: str
    grants: list[Grant] = field(default_factory=list)


@dataclass(slots=True)
class AclRequest:
    """What a request asks for: a canned ACL (x-amz-acl) or explicit x-amz-grant-* headers, or neither."""

    canned: str | None = None
    grants: list[Grant] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.canned is not None or bool(self.grants)


_GRANT_HEADERS = {
    "x-amz-grant-read": "READ",
    "x-amz-grant-write": "WRITE",
    "x-amz-grant-read-acp": "READ_ACP",
    "x-amz-grant-write-acp": "WRITE_ACP",
    "x-amz-grant-full-control": "FULL_CONTROL",
}


def _parse_acl_headers(headers: HeaderMap) -> AclRequest:
    canned = headers.get("x-amz-acl")
    grants: list[Grant] = []
    for name, permission in _GRANT_HEADERS.items():
        value = headers.get(name)
        if not value:
            continue
        for item in value.split(","):
            kind, sep, who = item.strip().partition("=")
            who = who.strip().strip('"')
            kind = kind.strip().lower()
            if not sep or not who:
                raise S3Error("InvalidArgument", f"Invalid grant header value {item.strip()!r}")
            if kind == "id":
                grants.append(Grant(permission, "CanonicalUser", who))
            elif kind == "uri":
                grants.append(Grant(permission, "Group", who))
            elif kind == "emailaddress":
                grants.append(Grant(permission, "AmazonCustomerByEmail", who))
            else:
                raise S3Error("InvalidArgument", f"Invalid grant header value {item.strip()!r}")
    if canned is not None:
        if canned not in CANNED_ACLS:
            raise S3Error("InvalidArgument", f"Invalid canned ACL {canned!r}", ArgumentName="x-amz-acl")
        if grants:
            raise S3Error("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
    return AclRequest(canned, grants)


@dataclass(slots=True)
class ObjectHeaders:
    """The stored headers of an object: standard ones and x-amz-meta-*."""

    content_type: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    cache_control: str | None = None
    expires: str | None = None
    website_redirect: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {k: getattr(self, k) for k in _STD_FIELDS if getattr(self, k) is not None}
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ObjectHeaders:
        h = cls(**{k: d[k] for k in _STD_FIELDS if k in d})  # type: ignore[arg-type]
        meta = d.get("meta")
        if isinstance(meta, dict):
            h.meta = dict(meta)
        return h


_STD_FIELDS = (
    "content_type",
    "content_encoding",
    "content_disposition",
    "content_language",
    "cache_control",
    "expires",
    "website_redirect",
)
_STD_HEADER_NAMES = {
    "content_type": "Content-Type",
    "content_encoding": "Content-Encoding",
    "content_disposition": "Content-Disposition",
    "content_language": "Content-Language",
    "cache_control": "Cache-Control",
    "expires": "Expires",
    "website_redirect": "x-amz-website-redirect-location",
}


def _parse_object_headers(headers: HeaderMap) -> ObjectHeaders:
    encoding = headers.get("content-encoding")
    if encoding is not None:
        # aws-chunked is transfer framing, not a property of the object (S3 drops it).
        kept = [e.strip() for e in encoding.split(",") if e.strip() and e.strip().lower() != "aws-chunked"]
        encoding = ",".join(kept) or None
    meta = {k[11:]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
    for value in meta.values():
        # Control characters cannot be stored and returned as an HTTP header value intact.
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            raise S3Error("InvalidArgument", "User-defined metadata values must not contain control characters")
    return ObjectHeaders(
        content_type=headers.get("content-type"),
        content_encoding=encoding,
        content_disposition=headers.get("content-disposition"),
        content_language=headers.get("content-language"),
        cache_control=headers.get("cache-control"),
        expires=headers.get("expires"),
        website_redirect=headers.get("x-amz-website-redirect-location"),
        meta=meta,
    )


def object_response_headers(h: ObjectHeaders) -> list[tuple[str, str]]:
    out = [(_STD_HEADER_NAMES[k], str(getattr(h, k))) for k in _STD_FIELDS if getattr(h, k) is not None]
    if h.content_type is None:
        out.append(("Content-Type", "binary/octet-stream"))
    out.extend((f"x-amz-meta-{k}", v) for k, v in h.meta.items())
    return out


@dataclass(slots=True)
class ChecksumRequest:
    """The checksum a client asks for: the algorithm and, if sent as a header, its value (base64).
    `trailer` names a trailing header the value arrives in (aws-chunked)."""

    algorithm: str | None = None
    value: str | None = None
    trailer: str | None = None
    content_md5: str | None = None  # base64, as sent


def _parse_checksum(headers: HeaderMap) -> ChecksumRequest:
    req = ChecksumRequest()
    md5 = headers.get("content-md5")
    if md5 is not None:
        try:
            raw = base64.b64decode(md5, validate=True)
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise S3Error("InvalidDigest")
        req.content_md5 = md5
    for algo in CHECKSUM_ALGORITHMS:
        value = headers.get(f"x-amz-checksum-{algo.lower()}")
        if value is not None:
            if req.algorithm is not None:
                raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
            req.algorithm, req.value = algo, value
    trailer = headers.get("x-amz-trailer")
    if trailer:
        name = trailer.strip().lower()
        if name.startswith("x-amz-checksum-") and name[15:].upper() in CHECKSUM_ALGORITHMS:
            req.algorithm = req.algorithm or name[15:].upper()
            req.trailer = name
    sdk = headers.get("x-amz-sdk-checksum-algorithm")
    if sdk and req.algorithm is None:
        if sdk.upper() not in CHECKSUM_ALGORITHMS:
            raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
        req.algorithm = sdk.upper()
    return req


@dataclass(slots=True)
class CopySource:
    bucket: str
    key: str
    version_id: str | None
    conditions: Conditions


def _parse_copy_source(headers: HeaderMap) -> CopySource:
    raw = headers.get("x-amz-copy-source") or ""
    path, _, q = raw.partition("?")
    version_id = None
    if q:
        params = dict(parse_qsl(q, keep_blank_values=True))
        version_id = params.get("versionId")
    try:
        path = unquote(path, errors="strict")
    except UnicodeDecodeError as e:
        raise S3Error("InvalidArgument", "Invalid copy source encoding") from e
    path = path.lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      ArgumentName="x-amz-copy-source")
    cond = Conditions(
        if_match=headers.get("x-amz-copy-source-if-match"),
        if_none_match=headers.get("x-amz-copy-source-if-none-match"),
        if_modified_since=parse_http_date(headers.get("x-amz-copy-source-if-modified-since")),
        if_unmodified_since=parse_http_date(headers.get("x-amz-copy-source-if-unmodified-since")),
    )
    return CopySource(bucket, key, version_id, cond)


def _parse_tagging_header(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    tags = dict(parse_qsl(value, keep_blank_values=True))
    _validate_tags(tags)
    return tags


def _validate_tags(tags: Mapping[str, str], limit: int = 10) -> None:
    if len(tags) > limit:
        raise S3Error("InvalidTag", "Object tags cannot be greater than 10" if limit == 10 else "Too many tags")
    for k, v in tags.items():
        if not k or len(k) > 128:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
        if len(v) > 256:
            raise S3Error("InvalidTag", "The TagValue you have provided is too long")


# -- endpoints -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class ListBuckets:
    pass


@dataclass(slots=True)
class BucketOp:
    bucket: str


@dataclass(slots=True)
class CreateBucket(BucketOp):
    acl: AclRequest = field(default_factory=AclRequest)


@dataclass(slots=True)
class HeadBucket(BucketOp):
    pass


@dataclass(slots=True)
class DeleteBucket(BucketOp):
    pass


@dataclass(slots=True)
class GetBucketLocation(BucketOp):
    pass


@dataclass(slots=True)
class GetBucketVersioning(BucketOp):
    pass


@dataclass(slots=True)
class PutBucketVersioning(BucketOp):
    pass


@dataclass(slots=True)
class GetBucketAcl(BucketOp):
    pass


@dataclass(slots=True)
class PutBucketAcl(BucketOp):
    acl: AclRequest = field(default_factory=AclRequest)


@dataclass(slots=True)
class GetBucketTagging(BucketOp):
    pass


@dataclass(slots=True)
class PutBucketTagging(BucketOp):
    pass


@dataclass(slots=True)
class DeleteBucketTagging(BucketOp):
    pass


@dataclass(slots=True)
class PostObject(BucketOp):
    """A browser-based upload (an HTML form, multipart/form-data): see euca/protocol/s3_post.py."""

    content_type: str = ""


@dataclass(slots=True)
class ListObjects(BucketOp):
    prefix: str = ""
    delimiter: str = ""
    marker: str = ""
    max_keys: int = 1000
    encoding_type: str | None = None


@dataclass(slots=True)
class ListObjectsV2(BucketOp):
    prefix: str = ""
    delimiter: str = ""
    continuation_token: str | None = None
    start_after: str = ""
    max_keys: int = 1000
    encoding_type: str | None = None
    fetch_owner: bool = False


@dataclass(slots=True)
class ListObjectVersions(BucketOp):
    prefix: str = ""
    delimiter: str = ""
    key_marker: str = ""
    version_id_marker: str = ""
    max_keys: int = 1000
    encoding_type: str | None = None


@dataclass(slots=True)
class ListMultipartUploads(BucketOp):
    prefix: str = ""
    delimiter: str = ""
    key_marker: str = ""
    upload_id_marker: str = ""
    max_uploads: int = 1000
    encoding_type: str | None = None


@dataclass(slots=True)
class DeleteObjects(BucketOp):
    pass


@dataclass(slots=True)
class ObjectOp:
    bucket: str
    key: str


@dataclass(slots=True)
class PutObject(ObjectOp):
    headers: ObjectHeaders = field(default_factory=ObjectHeaders)
    acl: AclRequest = field(default_factory=AclRequest)
    checksum: ChecksumRequest = field(default_factory=ChecksumRequest)
    content_length: int | None = None
    conditions: Conditions = field(default_factory=Conditions)
    tagging: dict[str, str] | None = None


@dataclass(slots=True)
class GetObject(ObjectOp):
    version_id: str | None = None
    range: ByteRange | None = None
    conditions: Conditions = field(default_factory=Conditions)
    overrides: list[tuple[str, str]] = field(default_factory=list)
    checksum_mode: bool = False
    part_number: int | None = None


@dataclass(slots=True)
class HeadObject(GetObject):
    pass


@dataclass(slots=True)
class DeleteObject(ObjectOp):
    version_id: str | None = None
    conditions: Conditions = field(default_factory=Conditions)


@dataclass(slots=True)
class CopyObject(ObjectOp):
    source: CopySource = field(default_factory=lambda: CopySource("", "", None, Conditions()))
    metadata_directive: str = "COPY"
    tagging_directive: str = "COPY"
    headers: ObjectHeaders = field(default_factory=ObjectHeaders)
    acl: AclRequest = field(default_factory=AclRequest)
    tagging: dict[str, str] | None = None
    checksum_algorithm: str | None = None


@dataclass(slots=True)
class CreateMultipartUpload(ObjectOp):
    headers: ObjectHeaders = field(default_factory=ObjectHeaders)
    acl: AclRequest = field(default_factory=AclRequest)
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    tagging: dict[str, str] | None = None


@dataclass(slots=True)
class UploadPart(ObjectOp):
    upload_id: str = ""
    part_number: int = 0
    checksum: ChecksumRequest = field(default_factory=ChecksumRequest)
    content_length: int | None = None


@dataclass(slots=True)
class UploadPartCopy(ObjectOp):
    upload_id: str = ""
    part_number: int = 0
    source: CopySource = field(default_factory=lambda: CopySource("", "", None, Conditions()))
    source_range: str | None = None


@dataclass(slots=True)
class CompleteMultipartUpload(ObjectOp):
    upload_id: str = ""
    conditions: Conditions = field(default_factory=Conditions)


@dataclass(slots=True)
class AbortMultipartUpload(ObjectOp):
    upload_id: str = ""


@dataclass(slots=True)
class ListParts(ObjectOp):
    upload_id: str = ""
    max_parts: int = 1000
    part_number_marker: int = 0


@dataclass(slots=True)
class GetObjectAcl(ObjectOp):
    version_id: str | None = None


@dataclass(slots=True)
class PutObjectAcl(ObjectOp):
    version_id: str | None = None
    acl: AclRequest = field(default_factory=AclRequest)


@dataclass(slots=True)
class GetObjectTagging(ObjectOp):
    version_id: str | None = None


@dataclass(slots=True)
class PutObjectTagging(ObjectOp):
    version_id: str | None = None


@dataclass(slots=True)
class DeleteObjectTagging(ObjectOp):
    version_id: str | None = None


@dataclass(slots=True)
class Unsupported:
    """A request S3 knows but Walrus does not do: answered 501 NotImplemented."""

    what: str
    bucket: str | None = None
    key: str | None = None


Endpoint = (
    ListBuckets
    | BucketOp
    | ObjectOp
    | Unsupported
)

# Sub-resources that select operations Walrus does not implement (answered 501, never treated as listings).
_UNSUPPORTED_SUBRESOURCES = (
    "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory", "lifecycle", "logging",
    "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock",
    "replication", "requestPayment", "website", "legal-hold", "retention", "restore", "select", "torrent",
    "attributes", "renameObject",
)
_UNSUPPORTED_SET = frozenset(_UNSUPPORTED_SUBRESOURCES)


def _int_param(q: Mapping[str, str], name: str, default: int, lo: int = 0, hi: int | None = None) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=raw) from None
    if value < lo:
        raise S3Error("InvalidArgument", f"Argument {name} must be an integer between {lo} and 2147483647",
                      ArgumentName=name, ArgumentValue=raw)
    if hi is not None:
        value = min(value, hi)
    return value


def _encoding(q: Mapping[str, str]) -> str | None:
    enc = q.get("encoding-type")
    if enc is None:
        return None
    if enc.lower() != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", ArgumentName="encoding-type",
                      ArgumentValue=enc)
    return "url"


def split_path(path: str, virtual_bucket: str | None) -> tuple[str | None, str | None]:
    """(bucket, key) from a raw path; the key keeps every byte after the bucket's slash."""
    if virtual_bucket is not None:
        key = path[1:] if path.startswith("/") else path
        return virtual_bucket, (_unquote(key) if key else None)
    p = path[1:] if path.startswith("/") else path
    if not p:
        return None, None
    bucket, sep, key = p.partition("/")
    return _unquote(bucket), (_unquote(key) if sep and key else None)


def _unquote(s: str) -> str:
    try:
        return unquote(s, errors="strict")
    except UnicodeDecodeError as e:
        raise S3Error("InvalidURI") from e


def parse_query(query: str) -> dict[str, str]:
    """The query's parameters decoded as urllib.parse.parse_qsl(keep_blank_values=True) does ('+' is a space;
    a later repeat wins), memoised per `key=value` piece: most repeat from request to request (a presigned
    URL's X-Amz-* fields, a listing's prefix)."""
    try:
        return dict(_query_pair(piece) for piece in query.split("&") if piece)
    except (UnicodeDecodeError, ValueError) as e:
        raise S3Error("InvalidURI") from e


@functools.lru_cache(maxsize=4096)
def _query_pair(piece: str) -> tuple[str, str]:
    name, _, value = piece.partition("=")
    return unquote(name.replace("+", " "), errors="strict"), unquote(value.replace("+", " "), errors="strict")


def parse_request(
    method: str, path: str, query: str, headers: HeaderMap, virtual_bucket: str | None = None
) -> Endpoint:
    """One typed endpoint for a request; S3Error for what cannot be an S3 request at all.

    `headers` must map lower-case names to values (euca.core.http.Headers does)."""
    bucket, key = split_path(path, virtual_bucket)
    q = parse_query(query) if query else {}
    method = method.upper()
    from euca.protocol import s3_cors, s3_policy  # they import this module: resolved at call time

    policy_op = s3_policy.parse_endpoint(method, bucket, key, q) or s3_cors.parse_endpoint(method, bucket, key, q)
    if policy_op is not None:
        return policy_op  # type: ignore[no-any-return]
    if q and not _UNSUPPORTED_SET.isdisjoint(q):
        sub = next(sub for sub in _UNSUPPORTED_SUBRESOURCES if sub in q)
        return Unsupported(f"{method} ?{sub}", bucket, key)
    if bucket is None:
        if method == "GET":
            return ListBuckets()
        return Unsupported(f"{method} /")
    if key is not None and len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(len(key.encode())), MaxSizeAllowed=str(MAX_KEY_BYTES))
    if key is None:
        return _parse_bucket_op(method, bucket, q, headers)
    return _parse_object_op(method, bucket, key, q, headers)


def _parse_bucket_op(method: str, bucket: str, q: Mapping[str, str], h: HeaderMap) -> Endpoint:
    if method == "PUT":
        if "versioning" in q:
            return PutBucketVersioning(bucket)
        if "acl" in q:
            return PutBucketAcl(bucket, _parse_acl_headers(h))
        if "tagging" in q:
            return PutBucketTagging(bucket)
        if q.keys() - {"x-id"}:
            return Unsupported("PUT bucket ?" + ",".join(sorted(q)), bucket)
        return CreateBucket(bucket, _parse_acl_headers(h))
    if method in ("GET", "HEAD"):
        if method == "HEAD":
            return HeadBucket(bucket)
        if "location" in q:
            return GetBucketLocation(bucket)
        if "versioning" in q:
            return GetBucketVersioning(bucket)
        if "acl" in q:
            return GetBucketAcl(bucket)
        if "tagging" in q:
            return GetBucketTagging(bucket)
        if "uploads" in q:
            return ListMultipartUploads(
                bucket,
                prefix=q.get("prefix", ""),
                delimiter=q.get("delimiter", ""),
                key_marker=q.get("key-marker", ""),
                upload_id_marker=q.get("upload-id-marker", ""),
                max_uploads=_int_param(q, "max-uploads", 1000, 0, 1000),
                encoding_type=_encoding(q),
            )
        if "versions" in q:
            return ListObjectVersions(
                bucket,
                prefix=q.get("prefix", ""),
                delimiter=q.get("delimiter", ""),
                key_marker=q.get("key-marker", ""),
                version_id_marker=q.get("version-id-marker", ""),
                max_keys=_int_param(q, "max-keys", 1000, 0, 1000),
                encoding_type=_encoding(q),
            )
        if q.get("list-type") == "2":
            return ListObjectsV2(
                bucket,
                prefix=q.get("prefix", ""),
                delimiter=q.get("delimiter", ""),
                continuation_token=q.get("continuation-token"),
                start_after=q.get("start-after", ""),
                max_keys=_int_param(q, "max-keys", 1000, 0, 1000),
                encoding_type=_encoding(q),
                fetch_owner=q.get("fetch-owner", "").lower() == "true",
            )
        return ListObjects(
            bucket,
            prefix=q.get("prefix", ""),
            delimiter=q.get("delimiter", ""),
            marker=q.get("marker", ""),
            max_keys=_int_param(q, "max-keys", 1000, 0, 1000),
            encoding_type=_encoding(q),
        )
    if method == "DELETE":
        if "tagging" in q:
            return DeleteBucketTagging(bucket)
        if q.keys() - {"x-id"}:
            return Unsupported("DELETE bucket ?" + ",".join(sorted(q)), bucket)
        return DeleteBucket(bucket)
    if method == "POST":
        if "delete" in q:
            return DeleteObjects(bucket)
        content_type = h.get("content-type") or ""
        if not q.keys() - {"x-id"} and content_type.lower().startswith("multipart/form-data"):
            return PostObject(bucket, content_type)
        return Unsupported("POST bucket (browser-based upload)", bucket)
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="BUCKET")


def _version(q: Mapping[str, str]) -> str | None:
    v = q.get("versionId")
    if v is None:
        return None
    if v == "":
        raise S3Error("InvalidArgument", "Version id cannot be the empty string", ArgumentName="versionId",
                      ArgumentValue="")
    return v


def _conditions(h: HeaderMap) -> Conditions:
    return Conditions(
        if_match=h.get("if-match"),
        if_none_match=h.get("if-none-match"),
        if_modified_since=parse_http_date(h.get("if-modified-since")),
        if_unmodified_since=parse_http_date(h.get("if-unmodified-since")),
    )


def _content_length(h: HeaderMap) -> int | None:
    raw = h.get("x-amz-decoded-content-length") or h.get("content-length")
    if raw is None:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise S3Error("InvalidArgument", "Invalid Content-Length") from None
    if n < 0:
        raise S3Error("InvalidArgument", "Invalid Content-Length")
    return n


def _part_number(q: Mapping[str, str]) -> int:
    raw = q.get("partNumber", "")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PART_NUMBER:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw)
    return n


_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def _parse_object_op(method: str, bucket: str, key: str, q: Mapping[str, str], h: HeaderMap) -> Endpoint:
    if method == "PUT":
        if "uploadId" in q:
            if "x-amz-copy-source" in h:
                return UploadPartCopy(bucket, key, q["uploadId"], _part_number(q), _parse_copy_source(h),
                                      h.get("x-amz-copy-source-range"))
            return UploadPart(bucket, key, q["uploadId"], _part_number(q), _parse_checksum(h), _content_length(h))
        if "acl" in q:
            return PutObjectAcl(bucket, key, _version(q), _parse_acl_headers(h))
        if "tagging" in q:
            return PutObjectTagging(bucket, key, _version(q))
        if "x-amz-copy-source" in h:
            directive = (h.get("x-amz-metadata-directive") or "COPY").upper()
            if directive not in ("COPY", "REPLACE"):
                raise S3Error("InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive",
                              ArgumentValue=directive)
            tdirective = (h.get("x-amz-tagging-directive") or "COPY").upper()
            if tdirective not in ("COPY", "REPLACE"):
                raise S3Error("InvalidArgument", "Unknown tagging directive.", ArgumentName="x-amz-tagging-directive")
            algo = h.get("x-amz-checksum-algorithm")
            return CopyObject(
                bucket, key, _parse_copy_source(h), directive, tdirective, _parse_object_headers(h),
                _parse_acl_headers(h), _parse_tagging_header(h.get("x-amz-tagging")),
                algo.upper() if algo else None,
            )
        return PutObject(bucket, key, _parse_object_headers(h), _parse_acl_headers(h), _parse_checksum(h),
                         _content_length(h), _conditions(h), _parse_tagging_header(h.get("x-amz-tagging")))
    if method in ("GET", "HEAD"):
        if method == "GET":
            if "uploadId" in q:
                return ListParts(bucket, key, q["uploadId"], _int_param(q, "max-parts", 1000, 0, 1000),
                                 _int_param(q, "part-number-marker", 0, 0))
            if "acl" in q:
                return GetObjectAcl(bucket, key, _version(q))
            if "tagging" in q:
                return GetObjectTagging(bucket, key, _version(q))
        cls = GetObject if method == "GET" else HeadObject
        part_number = None
        if "partNumber" in q:
            part_number = _part_number(q)
        overrides = [(hdr, q[p]) for p, hdr in _OVERRIDES.items() if p in q]
        return cls(bucket, key, _version(q), parse_range(h.get("range")), _conditions(h), overrides,
                   (h.get("x-amz-checksum-mode") or "").upper() == "ENABLED", part_number)
    if method == "DELETE":
        if "uploadId" in q:
            return AbortMultipartUpload(bucket, key, q["uploadId"])
        if "tagging" in q:
            return DeleteObjectTagging(bucket, key, _version(q))
        return DeleteObject(bucket, key, _version(q), _conditions(h))
    if method == "POST":
        if "uploads" in q:
            algo = h.get("x-amz-checksum-algorithm")
            if algo and algo.upper() not in CHECKSUM_ALGORITHMS:
                raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported.")
            ctype = h.get("x-amz-checksum-type")
            if ctype and ctype.upper() not in ("COMPOSITE", "FULL_OBJECT"):
                raise S3Error("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
            return CreateMultipartUpload(bucket, key, _parse_object_headers(h), _parse_acl_headers(h),
                                         algo.upper() if algo else None, ctype.upper() if ctype else None,
                                         _parse_tagging_header(h.get("x-amz-tagging")))
        if "uploadId" in q:
            return CompleteMultipartUpload(bucket, key, q["uploadId"], _conditions(h))
        return Unsupported("POST object", bucket, key)
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")


def needs_body(endpoint: object) -> bool:
    """Whether a handler reads an XML body for this endpoint."""
    return isinstance(
        endpoint,
        CreateBucket | PutBucketVersioning | PutBucketAcl | PutBucketTagging | DeleteObjects
        | CompleteMultipartUpload | PutObjectAcl | PutObjectTagging,
    )


# -- request bodies (XML) ------------------------------------------------------------------------------


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml(body: bytes, code: str = "MalformedXML") -> ET.Element:
    if not body.strip():
        raise S3Error(code)
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise S3Error(code) from e
    for el in root.iter():
        el.tag = _strip_ns(el.tag)
    return root


def _text(el: ET.Element | None) -> str:
    return "" if el is None or el.text is None else el.text


def parse_create_bucket_body(body: bytes) -> str | None:
    """The LocationConstraint, if any."""
    if not body.strip():
        return None
    root = _xml(body)
    if root.tag != "CreateBucketConfiguration":
        raise S3Error("MalformedXML")
    loc = root.find("LocationConstraint")
    return _text(loc) if loc is not None else None


def parse_versioning_body(body: bytes) -> str:
    root = _xml(body)
    status = _text(root.find("Status"))
    if root.tag != "VersioningConfiguration" or status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML")
    return status


def parse_tagging_body(body: bytes, limit: int = 10) -> dict[str, str]:
    root = _xml(body)
    if root.tag != "Tagging":
        raise S3Error("MalformedXML")
    tags: dict[str, str] = {}
    for tag in root.iter("Tag"):
        k, v = _text(tag.find("Key")), _text(tag.find("Value"))
        if k in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[k] = v
    _validate_tags(tags, limit)
    return tags


@dataclass(slots=True)
class ObjectIdentifier:
    key: str
    version_id: str | None = None


def parse_delete_objects_body(body: bytes) -> tuple[list[ObjectIdentifier], bool]:
    root = _xml(body)
    if root.tag != "Delete":
        raise S3Error("MalformedXML")
    quiet = _text(root.find("Quiet")).strip().lower() == "true"
    items = []
    for obj in root.findall("Object"):
        key_el = obj.find("Key")
        if key_el is None:
            raise S3Error("MalformedXML")
        vid = obj.find("VersionId")
        items.append(ObjectIdentifier(_text(key_el), _text(vid) if vid is not None else None))
    if not items or len(items) > 1000:
        raise S3Error("MalformedXML")
    return items, quiet


@dataclass(slots=True)
class CompletedPart:
    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)


def parse_complete_body(body: bytes) -> list[CompletedPart]:
    root = _xml(body)
    if root.tag != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    parts = []
    for p in root.findall("Part"):
        try:
            n = int(_text(p.find("PartNumber")))
        except ValueError:
            raise S3Error("MalformedXML") from None
        checksums = {}
        for algo in CHECKSUM_ALGORITHMS:
            el = p.find("Checksum" + algo)
            if el is not None:
                checksums[algo] = _text(el)
        parts.append(CompletedPart(n, _text(p.find("ETag")).strip().strip('"'), checksums))
    if not parts:
        raise S3Error("MalformedXML")
    return parts


def parse_acl_body(body: bytes) -> AccessControlPolicy:
    root = _xml(body, "MalformedACLError")
    if root.tag != "AccessControlPolicy":
        raise S3Error("MalformedACLError")
    owner = root.find("Owner")
    policy = AccessControlPolicy(_text(owner.find("ID")) if owner is not None else "",
                                 _text(owner.find("DisplayName")) if owner is not None else "")
    acl = root.find("AccessControlList")
    for g in acl.findall("Grant") if acl is not None else []:
        grantee = g.find("Grantee")
        permission = _text(g.find("Permission"))
        if grantee is None or permission not in PERMISSIONS:
            raise S3Error("MalformedACLError")
        gtype = grantee.get(f"{{{XSI_NS}}}type") or grantee.get("type") or ""
        if grantee.find("ID") is not None:
            policy.grants.append(Grant(permission, "CanonicalUser", _text(grantee.find("ID")),
                                       _text(grantee.find("DisplayName"))))
        elif grantee.find("URI") is not None:
            policy.grants.append(Grant(permission, "Group", _text(grantee.find("URI"))))
        elif grantee.find("EmailAddress") is not None:
            policy.grants.append(Grant(permission, "AmazonCustomerByEmail", _text(grantee.find("EmailAddress"))))
        else:
            raise S3Error("MalformedACLError", f"Unsupported grantee type {gtype!r}")
    return policy


# -- models and responses ----------------------------------------------------------------------------


@dataclass(slots=True)
class Owner:
    id: str
    display_name: str


def _owner(tag: str, owner: Owner) -> str:
    return f"<{tag}><ID>{_x(owner.id)}</ID><DisplayName>{_x(owner.display_name)}</DisplayName></{tag}>"


@dataclass(slots=True)
class BucketEntry:
    name: str
    created: float
    region: str = ""


def render_list_buckets(owner: Owner, buckets: list[BucketEntry]) -> bytes:
    items = "".join(
        f"<Bucket><Name>{_x(b.name)}</Name><CreationDate>{iso8601(b.created)}</CreationDate>"
        + (f"<BucketRegion>{_x(b.region)}</BucketRegion>" if b.region else "")
        + "</Bucket>"
        for b in buckets
    )
    return _doc("ListAllMyBucketsResult", _owner("Owner", owner) + f"<Buckets>{items}</Buckets>")


def render_location(location: str) -> bytes:
    return _doc("LocationConstraint", _x(location))


def render_versioning(status: str) -> bytes:
    return _doc("VersioningConfiguration", f"<Status>{status}</Status>" if status else "")


def render_tagging(tags: Mapping[str, str]) -> bytes:
    items = "".join(f"<Tag><Key>{_x(k)}</Key><Value>{_x(v)}</Value></Tag>" for k, v in tags.items())
    return _doc("Tagging", f"<TagSet>{items}</TagSet>")


def render_acl(policy: AccessControlPolicy) -> bytes:
    grants = []
    for g in policy.grants:
        if g.grantee_type == "Group":
            who = f'<Grantee xmlns:xsi="{XSI_NS}" xsi:type="Group"><URI>{_x(g.grantee)}</URI></Grantee>'
        elif g.grantee_type == "AmazonCustomerByEmail":
            who = (f'<Grantee xmlns:xsi="{XSI_NS}" xsi:type="AmazonCustomerByEmail">'
                   f"<EmailAddress>{_x(g.grantee)}</EmailAddress></Grantee>")
        else:
            who = (f'<Grantee xmlns:xsi="{XSI_NS}" xsi:type="CanonicalUser"><ID>{_x(g.grantee)}</ID>'
                   f"<DisplayName>{_x(g.display_name)}</DisplayName></Grantee>")
        grants.append(f"<Grant>{who}<Permission>{g.permission}</Permission></Grant>")
    owner = _owner("Owner", Owner(policy.owner_id, policy.owner_name))
    return _doc("AccessControlPolicy", owner + f"<AccessControlList>{''.join(grants)}</AccessControlList>")


@dataclass(slots=True)
class ObjectEntry:
    key: str
    last_modified: float
    etag: str
    size: int
    owner: Owner | None = None
    version_id: str | None = None
    is_latest: bool = True
    delete_marker: bool = False
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


@dataclass(slots=True)
class Listing:
    entries: list[ObjectEntry] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    # The last key (or common prefix) returned: the next marker.
    next_marker: str | None = None
    next_version_id_marker: str | None = None


def _contents(e: ObjectEntry, enc: bool, owner: bool, tag: str = "Contents") -> str:
    s = f"<{tag}><Key>{_x(_url(e.key, enc))}</Key>"
    if tag != "Contents":
        s += f"<VersionId>{_x(e.version_id or 'null')}</VersionId><IsLatest>{'true' if e.is_latest else 'false'}</IsLatest>"
    s += f"<LastModified>{iso8601(e.last_modified)}</LastModified>"
    if not e.delete_marker:
        s += f"<ETag>&quot;{_x(e.etag)}&quot;</ETag><Size>{e.size}</Size>"
        if e.checksum_algorithm:
            s += f"<ChecksumAlgorithm>{e.checksum_algorithm}</ChecksumAlgorithm>"
            if e.checksum_type:
                s += f"<ChecksumType>{e.checksum_type}</ChecksumType>"
    if owner and e.owner is not None:
        s += _owner("Owner", e.owner)
    if not e.delete_marker:
        s += "<StorageClass>STANDARD</StorageClass>"
    return s + f"</{tag}>"


def _prefixes(prefixes: list[str], enc: bool) -> str:
    return "".join(f"<CommonPrefixes><Prefix>{_x(_url(p, enc))}</Prefix></CommonPrefixes>" for p in prefixes)


def _opt(tag: str, value: str | None, enc: bool = False) -> str:
    if value is None:
        return f"<{tag}></{tag}>"
    return f"<{tag}>{_x(_url(value, enc))}</{tag}>"


def render_list_objects(req: ListObjects, listing: Listing) -> bytes:
    enc = req.encoding_type == "url"
    # The V1 Prefix goes back as sent, as Ceph RGW does: botocore url-decodes Marker, NextMarker, Delimiter,
    # keys and common prefixes of a ListObjects answer, but not its Prefix.
    s = f"<Name>{_x(req.bucket)}</Name>{_opt('Prefix', req.prefix)}{_opt('Marker', req.marker, enc)}"
    s += f"<MaxKeys>{req.max_keys}</MaxKeys>"
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>"
    if listing.truncated and req.delimiter and listing.next_marker is not None:
        s += _opt("NextMarker", listing.next_marker, enc)
    s += "".join(_contents(e, enc, True) for e in listing.entries)
    s += _prefixes(listing.prefixes, enc)
    return _doc("ListBucketResult", s)


def render_list_objects_v2(req: ListObjectsV2, listing: Listing, next_token: str | None) -> bytes:
    enc = req.encoding_type == "url"
    s = f"<Name>{_x(req.bucket)}</Name>{_opt('Prefix', req.prefix, enc)}"
    if req.start_after:
        s += _opt("StartAfter", req.start_after, enc)
    if req.continuation_token is not None:
        s += _opt("ContinuationToken", req.continuation_token)
    s += f"<KeyCount>{len(listing.entries) + len(listing.prefixes)}</KeyCount><MaxKeys>{req.max_keys}</MaxKeys>"
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>"
    if next_token is not None:
        s += f"<NextContinuationToken>{_x(next_token)}</NextContinuationToken>"
    s += "".join(_contents(e, enc, req.fetch_owner) for e in listing.entries)
    s += _prefixes(listing.prefixes, enc)
    return _doc("ListBucketResult", s)


def render_list_versions(req: ListObjectVersions, listing: Listing) -> bytes:
    enc = req.encoding_type == "url"
    s = f"<Name>{_x(req.bucket)}</Name>{_opt('Prefix', req.prefix, enc)}{_opt('KeyMarker', req.key_marker, enc)}"
    s += _opt("VersionIdMarker", req.version_id_marker)
    s += f"<MaxKeys>{req.max_keys}</MaxKeys>"
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>"
    if listing.truncated:
        s += _opt("NextKeyMarker", listing.next_marker, enc)
        if listing.next_version_id_marker is not None:
            s += _opt("NextVersionIdMarker", listing.next_version_id_marker)
    for e in listing.entries:
        s += _contents(e, enc, True, "DeleteMarker" if e.delete_marker else "Version")
    s += _prefixes(listing.prefixes, enc)
    return _doc("ListVersionsResult", s)


@dataclass(slots=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: float
    owner: Owner
    checksum_algorithm: str | None = None


def render_list_uploads(req: ListMultipartUploads, uploads: list[UploadEntry], prefixes: list[str],
                        truncated: bool) -> bytes:
    enc = req.encoding_type == "url"
    s = f"<Bucket>{_x(req.bucket)}</Bucket>{_opt('KeyMarker', req.key_marker, enc)}"
    s += _opt("UploadIdMarker", req.upload_id_marker)
    last = uploads[-1] if uploads else None
    s += _opt("NextKeyMarker", last.key if last else "", enc)
    s += _opt("NextUploadIdMarker", last.upload_id if last else "")
    s += _opt("Prefix", req.prefix, enc)
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<MaxUploads>{req.max_uploads}</MaxUploads><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
    for u in uploads:
        s += (f"<Upload><Key>{_x(_url(u.key, enc))}</Key><UploadId>{_x(u.upload_id)}</UploadId>"
              + _owner("Initiator", u.owner) + _owner("Owner", u.owner)
              + "<StorageClass>STANDARD</StorageClass>"
              + (f"<ChecksumAlgorithm>{u.checksum_algorithm}</ChecksumAlgorithm>" if u.checksum_algorithm else "")
              + f"<Initiated>{iso8601(u.initiated)}</Initiated></Upload>")
    s += _prefixes(prefixes, enc)
    return _doc("ListMultipartUploadsResult", s)


@dataclass(slots=True)
class PartEntry:
    part_number: int
    last_modified: float
    etag: str
    size: int
    checksums: dict[str, str] = field(default_factory=dict)


def render_list_parts(req: ListParts, owner: Owner, parts: list[PartEntry], truncated: bool,
                      checksum_algorithm: str | None, checksum_type: str | None) -> bytes:
    s = f"<Bucket>{_x(req.bucket)}</Bucket><Key>{_x(req.key)}</Key><UploadId>{_x(req.upload_id)}</UploadId>"
    s += _owner("Initiator", owner) + _owner("Owner", owner) + "<StorageClass>STANDARD</StorageClass>"
    s += f"<PartNumberMarker>{req.part_number_marker}</PartNumberMarker>"
    s += f"<NextPartNumberMarker>{parts[-1].part_number if parts else 0}</NextPartNumberMarker>"
    s += f"<MaxParts>{req.max_parts}</MaxParts><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
    if checksum_algorithm:
        s += f"<ChecksumAlgorithm>{checksum_algorithm}</ChecksumAlgorithm>"
        if checksum_type:
            s += f"<ChecksumType>{checksum_type}</ChecksumType>"
    for p in parts:
        s += (f"<Part><PartNumber>{p.part_number}</PartNumber><LastModified>{iso8601(p.last_modified)}</LastModified>"
              f"<ETag>&quot;{_x(p.etag)}&quot;</ETag><Size>{p.size}</Size>"
              + "".join(f"<Checksum{a}>{_x(v)}</Checksum{a}>" for a, v in p.checksums.items())
              + "</Part>")
    return _doc("ListPartsResult", s)


def render_initiate_multipart(bucket: str, key: str, upload_id: str) -> bytes:
    return _doc("InitiateMultipartUploadResult",
                f"<Bucket>{_x(bucket)}</Bucket><Key>{_x(key)}</Key><UploadId>{_x(upload_id)}</UploadId>")


def render_complete_multipart(location: str, bucket: str, key: str, etag: str,
                              checksums: Mapping[str, str], checksum_type: str | None) -> bytes:
    s = (f"<Location>{_x(location)}</Location><Bucket>{_x(bucket)}</Bucket><Key>{_x(key)}</Key>"
         f"<ETag>&quot;{_x(etag)}&quot;</ETag>")
    s += "".join(f"<Checksum{a}>{_x(v)}</Checksum{a}>" for a, v in checksums.items())
    if checksum_type and checksums:
        s += f"<ChecksumType>{checksum_type}</ChecksumType>"
    return _doc("CompleteMultipartUploadResult", s)


def render_copy_result(root: str, etag: str, last_modified: float, checksums: Mapping[str, str]) -> bytes:
    s = f"<LastModified>{iso8601(last_modified)}</LastModified><ETag>&quot;{_x(etag)}&quot;</ETag>"
    s += "".join(f"<Checksum{a}>{_x(v)}</Checksum{a}>" for a, v in checksums.items())
    return _doc(root, s)


@dataclass(slots=True)
class DeleteResult:
    key: str
    version_id: str | None = None
    delete_marker: bool = False
    delete_marker_version_id: str | None = None
    error: S3Error | None = None


def render_delete_result(results: list[DeleteResult], quiet: bool) -> bytes:
    s = []
    for r in results:
        if r.error is not None:
            s.append(f"<Error><Key>{_x(r.key)}</Key>"
                     + (f"<VersionId>{_x(r.version_id)}</VersionId>" if r.version_id else "")
                     + f"<Code>{r.error.code}</Code><Message>{_x(r.error.message)}</Message></Error>")
        elif not quiet:
            d = f"<Deleted><Key>{_x(r.key)}</Key>"
            if r.version_id:
                d += f"<VersionId>{_x(r.version_id)}</VersionId>"
            if r.delete_marker:
                d += "<DeleteMarker>true</DeleteMarker>"
                if r.delete_marker_version_id:
                    d += f"<DeleteMarkerVersionId>{_x(r.delete_marker_version_id)}</DeleteMarkerVersionId>"
            s.append(d + "</Deleted>")
    return _doc("DeleteResult", "".join(s))


def parse_copy_range(value: str | None, size: int) -> tuple[int, int] | None:
    """x-amz-copy-source-range "bytes=first-last" (both required), checked against the source size."""
    if value is None:
        return None
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", value.strip())
    if not m:
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last "
                      "where first and last are the zero-based offsets of the first and last bytes to copy")
    first, last = int(m.group(1)), int(m.group(2))
    if last < first or last >= size:
        raise S3Error("InvalidRange", ActualObjectSize=str(size), RangeRequested=value)
    return first, last
