"""The S3 router, sans-I/O: `parse_request()` turns method + raw path + raw query + headers (+ the virtual-host
bucket) into ONE typed endpoint value (GetObject, PutObject, ListObjectsV2, ...), the way Garage's S3 router does.
Also the path and query codecs it uses, and the bucket naming rules."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from urllib.parse import unquote

from euca.protocol.s3.bucket_settings import OWNERSHIP, parse_object_attributes
from euca.protocol.s3.endpoints import (
    AbortMultipartUpload,
    CompleteMultipartUpload,
    CopyObject,
    CreateBucket,
    CreateMultipartUpload,
    DeleteBucket,
    DeleteBucketCors,
    DeleteBucketEncryption,
    DeleteBucketLifecycle,
    DeleteBucketOwnershipControls,
    DeleteBucketPolicy,
    DeleteBucketTagging,
    DeleteObject,
    DeleteObjects,
    DeleteObjectTagging,
    DeletePublicAccessBlock,
    Endpoint,
    GetBucketAcl,
    GetBucketCors,
    GetBucketEncryption,
    GetBucketLifecycleConfiguration,
    GetBucketLocation,
    GetBucketLogging,
    GetBucketOwnershipControls,
    GetBucketPolicy,
    GetBucketPolicyStatus,
    GetBucketTagging,
    GetBucketVersioning,
    GetObject,
    GetObjectAcl,
    GetObjectAttributes,
    GetObjectLegalHold,
    GetObjectLockConfiguration,
    GetObjectRetention,
    GetObjectTagging,
    GetPublicAccessBlock,
    HeadBucket,
    HeadObject,
    ListBuckets,
    ListMultipartUploads,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListParts,
    PostObject,
    Preflight,
    PutBucketAcl,
    PutBucketCors,
    PutBucketEncryption,
    PutBucketLifecycleConfiguration,
    PutBucketLogging,
    PutBucketOwnershipControls,
    PutBucketPolicy,
    PutBucketTagging,
    PutBucketVersioning,
    PutObject,
    PutObjectAcl,
    PutObjectLegalHold,
    PutObjectLockConfiguration,
    PutObjectRetention,
    PutObjectTagging,
    PutPublicAccessBlock,
    Unsupported,
    UploadPart,
    UploadPartCopy,
)
from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.headers import (
    check_storage_and_encryption,
    check_upload_size,
    has_integrity_header,
    parse_acl_headers,
    parse_checksum,
    parse_conditions,
    parse_content_length,
    parse_copy_source,
    parse_object_headers,
    parse_range,
    parse_tagging_header,
)
from euca.protocol.s3.lock_headers import parse_bypass, parse_lock_headers
from euca.protocol.s3.wire import CHECKSUM_ALGORITHMS, MAX_KEY_BYTES, MAX_PART_NUMBER, HeaderMap

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


# Sub-resources that select operations Walrus does not implement (answered 501, never treated as listings).
_UNSUPPORTED_SUBRESOURCES = (
    "accelerate",
    "analytics",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "website",
    "legal-hold",
    "retention",
    "restore",
    "select",
    "torrent",
    "attributes",
    "renameObject",
)
_UNSUPPORTED_SET = frozenset(_UNSUPPORTED_SUBRESOURCES)


def _int_param(q: Mapping[str, str], name: str, default: int, lo: int = 0, hi: int | None = None) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise S3Error(
            "InvalidArgument",
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=raw,
        ) from None
    if value < lo:
        raise S3Error(
            "InvalidArgument",
            f"Argument {name} must be an integer between {lo} and 2147483647",
            ArgumentName=name,
            ArgumentValue=raw,
        )
    if hi is not None:
        value = min(value, hi)
    return value


def _list_buckets(q: Mapping[str, str]) -> ListBuckets:
    raw = q.get("max-buckets")
    max_buckets = None
    if raw is not None:
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 10000):
            raise S3Error(
                "InvalidArgument",
                "Argument max-buckets must be an integer between 1 and 10000",
                ArgumentName="max-buckets",
                ArgumentValue=raw,
            )
        max_buckets = int(raw)
    return ListBuckets(max_buckets, q.get("continuation-token"), q.get("prefix"), q.get("bucket-region"))


def _encoding(q: Mapping[str, str]) -> str | None:
    enc = q.get("encoding-type")
    if enc is None:
        return None
    if enc.lower() != "url":
        raise S3Error(
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            ArgumentName="encoding-type",
            ArgumentValue=enc,
        )
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
    if bucket is not None:
        config = _parse_bucket_config(method, bucket, key, q, headers)
        if config is not None:
            return config
    if q and not _UNSUPPORTED_SET.isdisjoint(q):
        sub = next(sub for sub in _UNSUPPORTED_SUBRESOURCES if sub in q)
        return Unsupported(f"{method} ?{sub}", bucket, key)
    if bucket is None:
        if method == "GET":
            return _list_buckets(q) if q else ListBuckets()
        return Unsupported(f"{method} /")
    if key is not None and len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", Size=str(len(key.encode())), MaxSizeAllowed=str(MAX_KEY_BYTES))
    if key is None:
        return _parse_bucket_op(method, bucket, q, headers)
    return _parse_object_op(method, bucket, key, q, headers)


# Bucket configuration sub-resources (?policyStatus before ?policy: the first present decides).
_POLICY_SUBRESOURCES = ("policyStatus", "publicAccessBlock", "policy")
_BUCKET_CONFIG: dict[tuple[str, str], Callable[[str], Endpoint]] = {
    ("PUT", "policy"): PutBucketPolicy,
    ("GET", "policy"): GetBucketPolicy,
    ("DELETE", "policy"): DeleteBucketPolicy,
    ("GET", "policyStatus"): GetBucketPolicyStatus,
    ("PUT", "publicAccessBlock"): PutPublicAccessBlock,
    ("GET", "publicAccessBlock"): GetPublicAccessBlock,
    ("DELETE", "publicAccessBlock"): DeletePublicAccessBlock,
    ("PUT", "cors"): PutBucketCors,
    ("GET", "cors"): GetBucketCors,
    ("DELETE", "cors"): DeleteBucketCors,
}
# Bucket settings added with issue 11, and the object settings beside them (the first present decides).
_SETTINGS_SUBRESOURCES = ("lifecycle", "ownershipControls", "object-lock", "logging", "encryption")
_BUCKET_SETTINGS: dict[tuple[str, str], Callable[[str], Endpoint]] = {
    ("PUT", "lifecycle"): PutBucketLifecycleConfiguration,
    ("GET", "lifecycle"): GetBucketLifecycleConfiguration,
    ("DELETE", "lifecycle"): DeleteBucketLifecycle,
    ("PUT", "ownershipControls"): PutBucketOwnershipControls,
    ("GET", "ownershipControls"): GetBucketOwnershipControls,
    ("DELETE", "ownershipControls"): DeleteBucketOwnershipControls,
    ("PUT", "object-lock"): PutObjectLockConfiguration,
    ("GET", "object-lock"): GetObjectLockConfiguration,
    ("PUT", "logging"): PutBucketLogging,
    ("GET", "logging"): GetBucketLogging,
    ("PUT", "encryption"): PutBucketEncryption,
    ("GET", "encryption"): GetBucketEncryption,
    ("DELETE", "encryption"): DeleteBucketEncryption,
}


def _parse_bucket_config(
    method: str, bucket: str, key: str | None, q: Mapping[str, str], h: HeaderMap
) -> Endpoint | None:
    """A policy, public access block or CORS endpoint, or a CORS preflight (OPTIONS, on a bucket or an object);
    None for anything else (a sub-resource with a method it has no endpoint for is Unsupported later)."""
    if q and key is None:
        for sub in _POLICY_SUBRESOURCES:
            if sub in q:
                make = _BUCKET_CONFIG.get((method, sub))
                if make is not None:
                    return make(bucket)
                break
    if q and key is None:
        for sub in _SETTINGS_SUBRESOURCES:
            if sub in q:
                make = _BUCKET_SETTINGS.get((method, sub))
                return make(bucket) if make is not None else None
    if q and key is not None:
        setting = _object_setting(method, bucket, key, q, h)
        if setting is not None:
            return setting
    if method == "OPTIONS":
        return Preflight(bucket, key)
    if q and key is None and "cors" in q:
        make = _BUCKET_CONFIG.get((method, "cors"))
        if make is not None:
            return make(bucket)
    return None


def _object_setting(
    method: str, bucket: str, key: str, q: Mapping[str, str], h: HeaderMap
) -> Endpoint | None:
    """An object's retention, legal hold or attributes endpoint; None for anything else."""
    if "retention" in q:
        if method == "PUT":
            return PutObjectRetention(bucket, key, _version(q), parse_bypass(h))
        if method == "GET":
            return GetObjectRetention(bucket, key, _version(q))
    elif "legal-hold" in q:
        if method == "PUT":
            return PutObjectLegalHold(bucket, key, _version(q))
        if method == "GET":
            return GetObjectLegalHold(bucket, key, _version(q))
    elif "attributes" in q and method == "GET":
        return GetObjectAttributes(
            bucket,
            key,
            _version(q),
            parse_object_attributes(h.get("x-amz-object-attributes")),
            _int_header(h, "x-amz-max-parts", 1000, 0, 1000),
            _int_header(h, "x-amz-part-number-marker", 0, 0),
        )
    return None


def _create_bucket(bucket: str, h: HeaderMap) -> CreateBucket:
    ownership = h.get("x-amz-object-ownership")
    if ownership is not None and ownership not in OWNERSHIP:
        raise S3Error(
            "InvalidArgument",
            "Invalid x-amz-object-ownership header",
            ArgumentName="x-amz-object-ownership",
            ArgumentValue=ownership[:64],
        )
    lock = (h.get("x-amz-bucket-object-lock-enabled") or "").strip().lower() == "true"
    return CreateBucket(bucket, parse_acl_headers(h), lock, ownership)


def _int_header(h: HeaderMap, name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = h.get(name)
    return _int_param({name: raw} if raw is not None else {}, name, default, lo, hi)


def _parse_bucket_op(method: str, bucket: str, q: Mapping[str, str], h: HeaderMap) -> Endpoint:
    if method == "PUT":
        if "versioning" in q:
            return PutBucketVersioning(bucket)
        if "acl" in q:
            return PutBucketAcl(bucket, parse_acl_headers(h))
        if "tagging" in q:
            return PutBucketTagging(bucket)
        if q.keys() - {"x-id"}:
            return Unsupported("PUT bucket ?" + ",".join(sorted(q)), bucket)
        return _create_bucket(bucket, h)
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
            if not has_integrity_header(h):
                raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
            return DeleteObjects(bucket, parse_bypass(h))
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
        raise S3Error(
            "InvalidArgument",
            "Version id cannot be the empty string",
            ArgumentName="versionId",
            ArgumentValue="",
        )
    return v


def _part_number(q: Mapping[str, str]) -> int:
    raw = q.get("partNumber", "")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_PART_NUMBER:
        raise S3Error(
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=raw,
        )
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
                return UploadPartCopy(
                    bucket,
                    key,
                    q["uploadId"],
                    _part_number(q),
                    parse_copy_source(h),
                    h.get("x-amz-copy-source-range"),
                )
            length = parse_content_length(h)
            check_upload_size(length)
            return UploadPart(bucket, key, q["uploadId"], _part_number(q), parse_checksum(h), length)
        if "acl" in q:
            return PutObjectAcl(bucket, key, _version(q), parse_acl_headers(h))
        if "tagging" in q:
            return PutObjectTagging(bucket, key, _version(q))
        if "x-amz-copy-source" in h:
            directive = (h.get("x-amz-metadata-directive") or "COPY").upper()
            if directive not in ("COPY", "REPLACE"):
                raise S3Error(
                    "InvalidArgument",
                    "Unknown metadata directive.",
                    ArgumentName="x-amz-metadata-directive",
                    ArgumentValue=directive,
                )
            tdirective = (h.get("x-amz-tagging-directive") or "COPY").upper()
            if tdirective not in ("COPY", "REPLACE"):
                raise S3Error(
                    "InvalidArgument", "Unknown tagging directive.", ArgumentName="x-amz-tagging-directive"
                )
            check_storage_and_encryption(h)
            algo = h.get("x-amz-checksum-algorithm")
            return CopyObject(
                bucket,
                key,
                parse_copy_source(h),
                directive,
                tdirective,
                parse_object_headers(h),
                parse_acl_headers(h),
                parse_tagging_header(h.get("x-amz-tagging")),
                algo.upper() if algo else None,
                parse_lock_headers(h),
                h.get("x-amz-server-side-encryption"),
            )
        check_storage_and_encryption(h)
        length = parse_content_length(h)
        check_upload_size(length)
        return PutObject(
            bucket,
            key,
            parse_object_headers(h),
            parse_acl_headers(h),
            parse_checksum(h),
            length,
            parse_conditions(h),
            parse_tagging_header(h.get("x-amz-tagging")),
            parse_lock_headers(h),
            h.get("x-amz-server-side-encryption"),
        )
    if method in ("GET", "HEAD"):
        if method == "GET":
            if "uploadId" in q:
                return ListParts(
                    bucket,
                    key,
                    q["uploadId"],
                    _int_param(q, "max-parts", 1000, 0, 1000),
                    _int_param(q, "part-number-marker", 0, 0),
                )
            if "acl" in q:
                return GetObjectAcl(bucket, key, _version(q))
            if "tagging" in q:
                return GetObjectTagging(bucket, key, _version(q))
        cls = GetObject if method == "GET" else HeadObject
        part_number = None
        if "partNumber" in q:
            part_number = _part_number(q)
        overrides = [(hdr, q[p]) for p, hdr in _OVERRIDES.items() if p in q]
        return cls(
            bucket,
            key,
            _version(q),
            parse_range(h.get("range")),
            parse_conditions(h),
            overrides,
            (h.get("x-amz-checksum-mode") or "").upper() == "ENABLED",
            part_number,
        )
    if method == "DELETE":
        if "uploadId" in q:
            return AbortMultipartUpload(bucket, key, q["uploadId"])
        if "tagging" in q:
            return DeleteObjectTagging(bucket, key, _version(q))
        return DeleteObject(bucket, key, _version(q), parse_conditions(h), parse_bypass(h))
    if method == "POST":
        if "uploads" in q:
            check_storage_and_encryption(h)
            algo = h.get("x-amz-checksum-algorithm")
            if algo and algo.upper() not in CHECKSUM_ALGORITHMS:
                raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported.")
            ctype = h.get("x-amz-checksum-type")
            if ctype and ctype.upper() not in ("COMPOSITE", "FULL_OBJECT"):
                raise S3Error("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
            return CreateMultipartUpload(
                bucket,
                key,
                parse_object_headers(h),
                parse_acl_headers(h),
                algo.upper() if algo else None,
                ctype.upper() if ctype else None,
                parse_tagging_header(h.get("x-amz-tagging")),
                parse_lock_headers(h),
                h.get("x-amz-server-side-encryption"),
            )
        if "uploadId" in q:
            return CompleteMultipartUpload(bucket, key, q["uploadId"], parse_conditions(h))
        return Unsupported("POST object", bucket, key)
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")
