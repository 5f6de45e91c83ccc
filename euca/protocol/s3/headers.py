"""S3 request and response headers, sans-I/O: conditions (If-*), byte ranges, ACL headers (x-amz-acl,
x-amz-grant-*), an object's stored headers (Content-*, x-amz-meta-*), checksums, the copy source, the tagging
header; and pure builders of the response headers a handler sends (ETag, version id, Last-Modified,
Content-Range, checksums, delete markers)."""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote

from awscrt import checksums as crt

from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.wire import (
    CANNED_ACLS,
    CHECKSUM_ALGORITHMS,
    MAX_PUT_SIZE,
    HeaderMap,
    http_date,
    parse_http_date,
    quote_etag,
)

Header = tuple[str, str]

# -- conditions and ranges -----------------------------------------------------------------------------


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


def parse_conditions(h: HeaderMap) -> Conditions:
    return Conditions(
        if_match=h.get("if-match"),
        if_none_match=h.get("if-none-match"),
        if_modified_since=parse_http_date(h.get("if-modified-since")),
        if_unmodified_since=parse_http_date(h.get("if-unmodified-since")),
    )


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


def parse_copy_range(value: str | None, size: int) -> tuple[int, int] | None:
    """x-amz-copy-source-range "bytes=first-last" (both required), checked against the source size."""
    if value is None:
        return None
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", value.strip())
    if not m:
        raise S3Error(
            "InvalidArgument",
            "The x-amz-copy-source-range value must be of the form bytes=first-last "
            "where first and last are the zero-based offsets of the first and last bytes to copy",
        )
    first, last = int(m.group(1)), int(m.group(2))
    if last < first or last >= size:
        raise S3Error("InvalidRange", ActualObjectSize=str(size), RangeRequested=value)
    return first, last


# -- ACL headers ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Grant:
    permission: str
    grantee_type: str  # "CanonicalUser" | "Group" | "AmazonCustomerByEmail"
    grantee: str  # canonical id, group URI or email
    display_name: str = ""


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


def parse_acl_headers(headers: HeaderMap) -> AclRequest:
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


# -- an object's stored headers -------------------------------------------------------------------------


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


# User metadata: at most 2 KB, counted as S3 counts it (the UTF-8 bytes of each name without its x-amz-meta-
# prefix, and of each value).
MAX_METADATA_BYTES = 2048

STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "OUTPOSTS",
        "GLACIER_IR",
        "SNOW",
        "EXPRESS_ONEZONE",
        "FSX_OPENZFS",
    }
)
SERVER_SIDE_ENCRYPTION = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})


def check_metadata_size(meta: Mapping[str, str]) -> None:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
    if size > MAX_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge",
            "Your metadata headers exceed the maximum allowed metadata size.",
            Size=str(size),
            MaxSizeAllowed=str(MAX_METADATA_BYTES),
        )


def check_storage_and_encryption(headers: HeaderMap) -> None:
    """InvalidStorageClass / InvalidArgument for an x-amz-storage-class or x-amz-server-side-encryption value
    S3 does not know (Walrus keeps one class and no encryption, but it refuses what S3 refuses)."""
    storage_class = headers.get("x-amz-storage-class")
    if storage_class is not None and storage_class not in STORAGE_CLASSES:
        raise S3Error("InvalidStorageClass", "The storage class you specified is not valid")
    sse = headers.get("x-amz-server-side-encryption")
    if sse is not None and sse not in SERVER_SIDE_ENCRYPTION:
        raise S3Error(
            "InvalidArgument",
            "The encryption method specified is not supported",
            ArgumentName="x-amz-server-side-encryption",
            ArgumentValue=sse[:256],
        )


def parse_object_headers(headers: HeaderMap) -> ObjectHeaders:
    encoding = headers.get("content-encoding")
    if encoding is not None:
        # aws-chunked is transfer framing, not a property of the object (S3 drops it); the rest is kept as
        # sent ("deflate, gzip" comes back with its space).
        items = encoding.split(",")
        if any(e.strip().lower() == "aws-chunked" for e in items):
            items = [e for e in items if e.strip() and e.strip().lower() != "aws-chunked"]
        encoding = ",".join(items).strip() or None
    meta = {k[11:]: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
    for value in meta.values():
        # Control characters cannot be stored and returned as an HTTP header value intact.
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            raise S3Error(
                "InvalidArgument", "User-defined metadata values must not contain control characters"
            )
    check_metadata_size(meta)
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


# -- body: length and checksums --------------------------------------------------------------------------


def parse_content_length(h: HeaderMap) -> int | None:
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


@dataclass(slots=True)
class ChecksumRequest:
    """The checksum a client asks for: the algorithm and, if sent as a header, its value (base64).
    `trailer` names a trailing header the value arrives in (aws-chunked)."""

    algorithm: str | None = None
    value: str | None = None
    trailer: str | None = None
    content_md5: str | None = None  # base64, as sent


def parse_checksum(headers: HeaderMap) -> ChecksumRequest:
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
                raise S3Error(
                    "InvalidRequest",
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                )
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


def checksum_of(algorithm: str, data: bytes) -> bytes:
    """The raw (big-endian) x-amz-checksum-<algorithm> value of `data`."""
    if algorithm == "CRC32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "CRC32C":
        return int(crt.crc32c(data)).to_bytes(4, "big")
    if algorithm == "CRC64NVME":
        return int(crt.crc64nvme(data)).to_bytes(8, "big")
    if algorithm == "SHA1":
        return hashlib.sha1(data).digest()
    if algorithm == "SHA256":
        return hashlib.sha256(data).digest()
    raise ValueError(algorithm)


def check_document_digest(
    headers: HeaderMap, body: bytes, trailers: Mapping[str, str] | None = None, *, checksum: bool = True
) -> None:
    """A request document (tagging, policy, versioning, DeleteObjects, ...) against the Content-MD5 and the
    x-amz-checksum-* value (header or trailer) its client sent: InvalidDigest for a Content-MD5 that is no MD5,
    BadDigest when either does not match the body, as S3 answers. `checksum` False: the x-amz-checksum-*
    header is not the document's (CompleteMultipartUpload's is the whole object's)."""
    cs = parse_checksum(headers)
    if cs.content_md5 is not None:
        md5 = hashlib.md5(body).digest()
        if base64.b64decode(cs.content_md5) != md5:
            raise S3Error(
                "BadDigest", ExpectedDigest=cs.content_md5, CalculatedDigest=base64.b64encode(md5).decode()
            )
    expected = cs.value
    if expected is None and cs.trailer is not None and trailers is not None:
        expected = trailers.get(cs.trailer)
    if checksum and expected is not None and cs.algorithm is not None:
        if expected != base64.b64encode(checksum_of(cs.algorithm, body)).decode():
            raise S3Error(
                "BadDigest", f"The {cs.algorithm} you specified did not match the calculated checksum."
            )


def has_integrity_header(headers: HeaderMap) -> bool:
    """Whether the request carries Content-MD5 or an x-amz-checksum-* value (header or announced trailer):
    S3 requires one on DeleteObjects."""
    if headers.get("content-md5") is not None or headers.get("x-amz-trailer"):
        return True
    return any(headers.get(f"x-amz-checksum-{algo.lower()}") is not None for algo in CHECKSUM_ALGORITHMS)


def check_upload_size(content_length: int | None) -> None:
    """EntityTooLarge for a single PUT (or part) declared larger than S3 takes, decided from the headers before
    any body is read (so before `100 Continue`)."""
    if content_length is not None and content_length > MAX_PUT_SIZE:
        raise S3Error("EntityTooLarge", ProposedSize=str(content_length), MaxSizeAllowed=str(MAX_PUT_SIZE))


# -- copy source and tagging -----------------------------------------------------------------------------


@dataclass(slots=True)
class CopySource:
    bucket: str
    key: str
    version_id: str | None
    conditions: Conditions


def parse_copy_source(headers: HeaderMap) -> CopySource:
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
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            ArgumentName="x-amz-copy-source",
        )
    cond = Conditions(
        if_match=headers.get("x-amz-copy-source-if-match"),
        if_none_match=headers.get("x-amz-copy-source-if-none-match"),
        if_modified_since=parse_http_date(headers.get("x-amz-copy-source-if-modified-since")),
        if_unmodified_since=parse_http_date(headers.get("x-amz-copy-source-if-unmodified-since")),
    )
    return CopySource(bucket, key, version_id, cond)


def parse_tagging_header(value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    tags = dict(parse_qsl(value, keep_blank_values=True))
    validate_tags(tags)
    return tags


def validate_tags(tags: Mapping[str, str], limit: int = 10) -> None:
    if len(tags) > limit:
        raise S3Error(
            "InvalidTag", "Object tags cannot be greater than 10" if limit == 10 else "Too many tags"
        )
    for k, v in tags.items():
        if not k or len(k) > 128:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
        if k.startswith("aws:"):
            # The aws: prefix is reserved for the tags S3's own services set.
            raise S3Error("InvalidTag", "Your TagKey cannot be prefixed with aws:")
        if len(v) > 256:
            raise S3Error("InvalidTag", "The TagValue you have provided is too long")


# -- response headers --------------------------------------------------------------------------------------
# Pure builders of what handlers send back; each returns exactly what Walrus sends today, in the same order.


def etag_header(etag: str) -> Header:
    return ("ETag", quote_etag(etag))


def last_modified_header(last_modified: float) -> Header:
    return ("Last-Modified", http_date(last_modified))


def version_id_headers(bucket_versioning: str, version_id: str) -> list[Header]:
    """x-amz-version-id of an object version: sent once its bucket has versioning (Enabled or Suspended), or
    for any version other than "null"."""
    if bucket_versioning or version_id != "null":
        return [("x-amz-version-id", version_id)]
    return []


def copy_source_version_headers(source_bucket_versioning: str, source_version_id: str) -> list[Header]:
    """x-amz-copy-source-version-id of a copy's source, by the same rule as version_id_headers."""
    if source_bucket_versioning or source_version_id != "null":
        return [("x-amz-copy-source-version-id", source_version_id)]
    return []


def stored_object_headers(
    etag: str, last_modified: float, headers: ObjectHeaders, tag_count: int
) -> list[Header]:
    """The headers of a GET or HEAD that depend on the object version alone (a cache may keep them with it):
    ETag, Last-Modified, Accept-Ranges, the stored Content-* and x-amz-meta-*, x-amz-tagging-count."""
    out = [
        etag_header(etag),
        last_modified_header(last_modified),
        ("Accept-Ranges", "bytes"),
        *object_response_headers(headers),
    ]
    if tag_count:
        out.append(("x-amz-tagging-count", str(tag_count)))
    return out


def checksum_headers(
    algorithm: str | None, value: str | None, checksum_type: str | None = None
) -> list[Header]:
    """x-amz-checksum-<algorithm> (and x-amz-checksum-type when given) of a stored checksum; none without one."""
    if not algorithm or not value:
        return []
    out = [(f"x-amz-checksum-{algorithm.lower()}", value)]
    if checksum_type:
        out.append(("x-amz-checksum-type", checksum_type))
    return out


def without_checksum_headers(headers: list[Header]) -> list[Header]:
    """A partial answer (206) carries no whole-object checksum."""
    return [h for h in headers if not h[0].startswith("x-amz-checksum-")]


def upload_checksum_headers(algorithm: str | None, checksum_type: str | None) -> list[Header]:
    """CreateMultipartUpload's answer: the upload's checksum algorithm and type, when it has one."""
    if not algorithm:
        return []
    return [("x-amz-checksum-algorithm", algorithm), ("x-amz-checksum-type", checksum_type or "")]


def delete_marker_headers(version_id: str) -> list[Header]:
    """The error answer of a GET or HEAD that found a delete marker."""
    return [("x-amz-delete-marker", "true"), ("x-amz-version-id", version_id)]


def delete_headers(version_id: str | None, delete_marker: bool) -> list[Header]:
    """DeleteObject's answer: the version removed or created, and whether it is a delete marker."""
    out = []
    if version_id is not None:
        out.append(("x-amz-version-id", version_id))
    if delete_marker:
        out.append(("x-amz-delete-marker", "true"))
    return out


def content_range_header(first: int, last: int, size: int) -> Header:
    """Content-Range of a 206 answer: bytes first..last (inclusive) of `size`."""
    return ("Content-Range", f"bytes {first}-{last}/{size}")


class Span(NamedTuple):
    """What part of an object a GET or HEAD answers with: status 200 or 206, the byte span, and the headers
    that describe it (x-amz-mp-parts-count, Content-Range)."""

    status: int
    first: int
    length: int
    headers: list[Header]


def select_span(
    size: int, parts: list[int] | None, part_number: int | None, byte_range: ByteRange | None
) -> Span:
    """The span of a GET or HEAD: the part asked for (?partNumber=, counted in the object's part sizes; a
    single-part object is one part), else the Range, else the whole object. InvalidPartNumber or InvalidRange
    when it is not satisfiable."""
    if part_number is not None:
        sizes = parts or [size]
        if part_number > len(sizes):
            raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
        first = sum(sizes[: part_number - 1])
        length = sizes[part_number - 1]
        headers = [("x-amz-mp-parts-count", str(len(sizes)))]
        if not parts:
            return Span(200, first, length, headers)
        headers.append(content_range_header(first, first + length - 1, size))
        return Span(206, first, length, headers)
    if byte_range is not None:
        lo, hi = byte_range.resolve(size)
        return Span(206, lo, hi - lo + 1, [content_range_header(lo, hi, size)])
    return Span(200, 0, size, [])


def apply_overrides(headers: list[Header], overrides: list[Header]) -> list[Header]:
    """The response-* query parameters of a GET (response-content-type, ...): each replaces the header of
    that name (case-insensitively), appended at the end."""
    for name, value in overrides:
        lowered = name.lower()
        headers = [h for h in headers if h[0].lower() != lowered]
        headers.append((name, value))
    return headers
