"""AWS Signature Version 2, as a verifier: S3's HMAC-SHA1 form (header and query) and the EC2 Query form.

S3 ("AWS AKID:signature", or AWSAccessKeyId/Expires/Signature in the query), the string to sign is

    METHOD \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n <x-amz-* headers, "name:value\\n" each> <resource>

where the resource is /bucket/key as sent (with /bucket prepended for virtual-host addressing) plus the
sub-resources in the query (acl, uploadId=..., response-* overrides, ...) sorted by name, values decoded.

EC2 Query (SignatureVersion=2): HMAC-SHA256 or HMAC-SHA1 over "METHOD\\nhost\\npath\\nsorted-encoded-params".

Sans-I/O like sigv4: parse, let the caller look the key up, then verify(secret).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from euca.protocol.sigv4 import (
    MAX_SKEW_SECONDS,
    SignatureError,
    parse_http_date,
    parse_query,
    signature_mismatch,
)

# The sub-resources S3 documents for SigV2, and the ones botocore's HmacV1Auth adds on top.
S3_SUBRESOURCES = frozenset(
    {
        "acl",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
    }
)
BOTOCORE_EXTRA_SUBRESOURCES = frozenset(
    {
        "accelerate",
        "defaultObjectAcl",
        "restore",
        "storageClass",
        "replication",
        "analytics",
        "metrics",
        "inventory",
        "select",
        "select-type",
        "object-lock",
    }
)


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    found = [v for k, v in headers if k.lower() == name]
    return ",".join(found) if found else None


def _hmac_b64(secret: str, to_sign: str, digest: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), to_sign.encode("utf-8"), getattr(hashlib, digest))
    return base64.b64encode(mac.digest()).decode("ascii")


def _b64_equal(expected: str, provided: str) -> bool:
    return hmac.compare_digest(expected.encode("ascii"), provided.encode("latin-1", "replace"))


@dataclass
class SigV2Request:
    access_key_id: str
    signature: str
    strings_to_sign: list[str]
    digest: str  # "sha1" or "sha256"
    service: str
    method: str  # "sigv2-header" or "sigv2-query"

    def verify(self, secret: str) -> None:
        matched = False
        for candidate in self.strings_to_sign:
            matched |= _b64_equal(_hmac_b64(secret, candidate, self.digest), self.signature)
        if not matched:
            raise signature_mismatch(self.service)


# -- S3 -------------------------------------------------------------------------------------------


def canonical_amz_headers(headers: Sequence[tuple[str, str]], extra: Sequence[tuple[str, str]] = ()) -> str:
    values: dict[str, list[str]] = {}
    for name, value in list(headers) + list(extra):
        lname = name.lower().strip()
        if lname.startswith("x-amz-"):
            # Trimmed only: SigV2 (unlike SigV4) keeps inner runs of spaces.
            values.setdefault(lname, []).append(value.strip())
    return "".join(f"{name}:{','.join(values[name])}\n" for name in sorted(values))


def canonical_resource(
    raw_path: str,
    raw_query: str,
    *,
    virtual_bucket: str | None = None,
    subresources: frozenset[str] = S3_SUBRESOURCES,
) -> str:
    path = raw_path or "/"
    if virtual_bucket:
        path = f"/{virtual_bucket}{path}"
    chosen = [(k, v, "=" in piece) for piece, (k, v) in _query_pieces(raw_query) if k in subresources]
    if not chosen:
        return path
    chosen.sort(key=lambda item: item[0])
    return path + "?" + "&".join(f"{k}={v}" if has_value else k for k, v, has_value in chosen)


def _query_pieces(raw_query: str) -> list[tuple[str, tuple[str, str]]]:
    pieces = [p for p in raw_query.split("&") if p]
    return list(zip(pieces, parse_query("&".join(pieces)), strict=True))


def _s3_strings(
    method: str,
    paths: Sequence[str],
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    date_lines: list[str],
    virtual_bucket: str | None,
    extra_amz: Sequence[tuple[str, str]] = (),
    content_md5: str | None = None,
    content_type: str | None = None,
) -> list[str]:
    md5 = (content_md5 if content_md5 is not None else _header(headers, "content-md5") or "").strip()
    ctype = (content_type if content_type is not None else _header(headers, "content-type") or "").strip()
    amz = canonical_amz_headers(headers, extra_amz)
    resources: list[str] = []
    for path in paths:
        for subresources in (S3_SUBRESOURCES, S3_SUBRESOURCES | BOTOCORE_EXTRA_SUBRESOURCES):
            res = canonical_resource(
                path, raw_query, virtual_bucket=virtual_bucket, subresources=subresources
            )
            if res not in resources:
                resources.append(res)
    # botocore's HmacV1Auth signs a bucket-level path-style request as "/bucket/" (its auth_path, taken
    # before the trailing slash is dropped from the URL), so accept the other spelling of a bare bucket.
    for res in list(resources):
        path, sep, query = res.partition("?")
        if path.count("/") == 1 and len(path) > 1:
            resources.append(f"{path}/{sep}{query}")
        elif path.count("/") == 2 and path.endswith("/") and len(path) > 2:
            resources.append(f"{path[:-1]}{sep}{query}")
    return [
        f"{method.upper()}\n{md5}\n{ctype}\n{date}\n{amz}{res}" for date in date_lines for res in resources
    ]


def _paths(raw_path: str, mounted_path: str | None) -> list[str]:
    return [raw_path] if mounted_path is None or mounted_path == raw_path else [raw_path, mounted_path]


def parse_s3_header_auth(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    *,
    now: float,
    virtual_bucket: str | None = None,
    mounted_path: str | None = None,
) -> SigV2Request:
    """`mounted_path`: the path below the service prefix the request came in through (/services/objectstorage),
    when it did: a client given that prefix in its endpoint may sign either (botocore signs the path below it,
    its auth_path); both name the same resource."""
    authorization = (_header(headers, "authorization") or "").strip()
    scheme, _, credentials = authorization.partition(" ")
    akid, sep, signature = credentials.strip().rpartition(":")
    if scheme != "AWS" or not sep or not akid or not signature:
        raise SignatureError(
            "InvalidArgument", "Authorization header is invalid -- one and only one ' ' (space) required", 400
        )
    amz_date = _header(headers, "x-amz-date")
    date = _header(headers, "date")
    # An x-amz-date that is present overrides Date even when empty (S3 then refuses it as invalid);
    # a date before the epoch is refused as invalid too, not as skewed.
    when = parse_http_date(amz_date) if amz_date is not None else (parse_http_date(date) if date else None)
    if when is None or when < 0:
        raise SignatureError(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403
        )
    if abs(now - when) > MAX_SKEW_SECONDS:
        raise SignatureError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            403,
        )
    # With x-amz-date present the Date line is empty (S3's rule); some clients sign the Date header anyway.
    date_lines = ["", (date or "").strip()] if amz_date else [(date or "").strip()]
    return SigV2Request(
        access_key_id=akid,
        signature=signature.strip(),
        strings_to_sign=_s3_strings(
            method, _paths(raw_path, mounted_path), raw_query, headers, date_lines, virtual_bucket
        ),
        digest="sha1",
        service="s3",
        method="sigv2-header",
    )


def parse_s3_query_auth(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    *,
    now: float,
    virtual_bucket: str | None = None,
    mounted_path: str | None = None,
) -> SigV2Request:
    """`mounted_path`: the path below the service prefix the request came in through (/services/objectstorage),
    when it did: a client given that prefix in its endpoint may sign either (botocore signs the path below it,
    its auth_path); both name the same resource."""
    params: dict[str, str] = {}
    for key, value in parse_query(raw_query):
        params.setdefault(key, value)
    akid = params.get("AWSAccessKeyId")
    signature = params.get("Signature")
    expires = params.get("Expires")
    if not akid or not signature or expires is None:
        raise SignatureError(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
            403,
        )
    try:
        expires_at = int(expires)
    except ValueError:
        raise SignatureError(
            "AccessDenied", "Invalid date (should be seconds since epoch): " + expires, 403
        ) from None
    if now > expires_at:
        raise SignatureError("AccessDenied", "Request has expired", 403)
    # botocore's HmacV1QueryAuth moves the signed x-amz-*, Content-Type and Content-MD5 headers into the query.
    header_names = {k.lower() for k, _ in headers}
    extra_amz = [
        (k.lower(), v)
        for k, v in params.items()
        if k.lower().startswith("x-amz-") and k.lower() not in header_names
    ]
    content_md5 = None if "content-md5" in header_names else params.get("content-md5")
    content_type = None if "content-type" in header_names else params.get("content-type")
    # A '+' in an unencoded base64 signature arrives as a space once decoded.
    signature = signature.replace(" ", "+")
    return SigV2Request(
        access_key_id=akid,
        signature=signature,
        strings_to_sign=_s3_strings(
            method,
            _paths(raw_path, mounted_path),
            raw_query,
            headers,
            [expires],
            virtual_bucket,
            extra_amz,
            content_md5,
            content_type,
        ),
        digest="sha1",
        service="s3",
        method="sigv2-query",
    )


# -- EC2 Query API ----------------------------------------------------------------------------------


def _v2_encode(value: str) -> str:
    return quote(value.encode("utf-8"), safe="-_.~")


def query_api_string_to_sign(method: str, host: str, raw_path: str, params: dict[str, str]) -> str:
    pairs = [f"{_v2_encode(k)}={_v2_encode(v)}" for k, v in sorted(params.items()) if k != "Signature"]
    return f"{method.upper()}\n{host}\n{raw_path or '/'}\n" + "&".join(pairs)


def parse_query_api_auth(
    method: str,
    raw_path: str,
    headers: Sequence[tuple[str, str]],
    params: dict[str, str],
    *,
    service: str,
    now: float,
) -> SigV2Request:
    """EC2-style SignatureVersion=2; `params` are the decoded query (GET) or form (POST) parameters."""
    akid = params.get("AWSAccessKeyId")
    signature = params.get("Signature")
    if not akid or not signature:
        missing = "AWSAccessKeyId" if not akid else "Signature"
        raise SignatureError("MissingParameter", f"The request must contain the parameter {missing}", 400)
    version = params.get("SignatureVersion", "2")
    if version != "2":
        raise SignatureError(
            "InvalidParameterValue", f"Value ({version}) for parameter SignatureVersion is invalid.", 400
        )
    signature_method = params.get("SignatureMethod", "HmacSHA256")
    digest = {"HmacSHA256": "sha256", "HmacSHA1": "sha1"}.get(signature_method)
    if digest is None:
        raise SignatureError(
            "InvalidParameterValue",
            f"Value ({signature_method}) for parameter SignatureMethod is invalid.",
            400,
        )
    timestamp = params.get("Timestamp")
    expires = params.get("Expires")
    if timestamp is None and expires is None:
        raise SignatureError(
            "MissingParameter", "The request must contain the parameter Timestamp or Expires", 400
        )
    if expires is not None:
        when = _parse_iso8601(expires)
        if when is None:
            raise SignatureError(
                "InvalidParameterValue", f"Value ({expires}) for parameter Expires is invalid.", 400
            )
        if now > when:
            raise SignatureError("RequestExpired", f"Request has expired. Expires date is {expires}", 400)
    if timestamp is not None:
        when = _parse_iso8601(timestamp)
        if when is None:
            raise SignatureError(
                "InvalidParameterValue", f"Value ({timestamp}) for parameter Timestamp is invalid.", 400
            )
        if abs(now - when) > MAX_SKEW_SECONDS:
            raise SignatureError(
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                403,
            )
    host = (_header(headers, "host") or "").strip()
    candidates = [query_api_string_to_sign(method, host, raw_path, params)]
    if host.lower() != host:
        candidates.append(query_api_string_to_sign(method, host.lower(), raw_path, params))
    return SigV2Request(
        access_key_id=akid,
        signature=signature.replace(" ", "+"),
        strings_to_sign=candidates,
        digest=digest,
        service=service,
        method="sigv2-query",
    )


def _parse_iso8601(value: str) -> float | None:
    text = value.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    # Offsets such as +00:00 (some older tools).
    if len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        base = _parse_iso8601(text[:-6])
        if base is not None:
            sign = 1 if text[-6] == "+" else -1
            return base - sign * (int(text[-5:-3]) * 3600 + int(text[-2:]) * 60)
    return None
