"""AWS Signature Version 4: canonical request, string to sign, signing key, dates, chunk chains, and the
client side (signing requests, presigning URLs). Parsing a signed request to verify it is
euca.protocol.sigv4_verify (`parse_*`; the caller looks the secret key up before `SigV4Request.verify`).

Sans-I/O: everything here takes strings (the request line and headers as they came off the wire, decoded
as latin-1 the way euca.core.http hands them over) and returns values or raises `SignatureError`.

Rules that matter for compatibility (see the AWS SigV4 spec and botocore.auth):
- S3 signs the path exactly as sent (no normalisation, no second encoding); every other service signs the
  normalised path (dot segments and empty segments removed) URI-encoded once more ("double encoding").
- The canonical query string is every parameter, decoded then RFC 3986 encoded, sorted by key then value.
- Header values are trimmed and inner runs of whitespace collapsed; repeated headers join with ",".
- The credential scope's region and service are used as given (clients configured with us-east-1 must work
  against a cloud whose region is called something else; Eucalyptus did not enforce it either).
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_tz
from urllib.parse import quote, unquote_to_bytes, urlsplit

from euca.protocol.errors import CodedError

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
PAYLOAD_MODES = (UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER)

MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600

SIGNATURE_MISMATCH_S3 = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
SIGNATURE_MISMATCH_QUERY_API = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_SIGNATURE_HEX = re.compile(r"^[0-9a-f]{64}$")


class SignatureError(CodedError):
    """A request that does not authenticate, with the AWS error code, message and HTTP status to answer."""

    default_status = 403


def signature_mismatch(service: str) -> SignatureError:
    return SignatureError(
        "SignatureDoesNotMatch", SIGNATURE_MISMATCH_S3 if service == "s3" else SIGNATURE_MISMATCH_QUERY_API
    )


# -- encoding helpers -----------------------------------------------------------------------------


def wire_bytes(text: str) -> bytes:
    """The bytes a wire string stood for. euca.core.http decodes as latin-1; tests may pass real Unicode."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def uri_encode(value: bytes | str, *, keep_slash: bool = False) -> str:
    """RFC 3986 percent-encoding as SigV4 wants it: only A-Z a-z 0-9 - _ . ~ stay literal, hex in upper case."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return quote(value, safe="/" if keep_slash else "")


def canonical_uri(raw_path: str, *, service: str) -> str:
    """The CanonicalURI for a raw (still percent-encoded) request path."""
    if not raw_path:
        return "/"
    if service == "s3":
        return raw_path
    return uri_encode(wire_bytes(_remove_dot_segments(raw_path)), keep_slash=True)


# A path of unreserved characters and slashes only: decoding and encoding it again gives it back unchanged.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~/]+")


def s3_reencoded_uri(raw_path: str) -> str:
    """The path decoded and encoded again by the RFC 3986 rules, for clients that left reserved characters raw
    or encoded unreserved ones: S3 signs its own encoding of the key, which then differs from the bytes sent."""
    if _PLAIN_PATH.fullmatch(raw_path):
        return raw_path  # most paths: nothing to decode, nothing to encode
    return uri_encode(unquote_to_bytes(wire_bytes(raw_path or "/")), keep_slash=True)


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, plus what AWS services do on top: empty segments ("//") are dropped.
    out: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    result = "/" + "/".join(out)
    if path.endswith("/") and out:
        result += "/"
    return result


# Query pieces repeat from request to request (a presigned URL's credential, date, expiry and signed headers;
# a listing's prefix and max-keys), so their decoding and re-encoding is memoised per piece.


@functools.lru_cache(maxsize=4096)
def _decoded_pair(piece: str) -> tuple[str, str]:
    key, _, value = piece.partition("=")
    return (
        unquote_to_bytes(wire_bytes(key)).decode("utf-8", "surrogateescape"),
        unquote_to_bytes(wire_bytes(value)).decode("utf-8", "surrogateescape"),
    )


@functools.lru_cache(maxsize=4096)
def _canonical_pair(piece: str) -> tuple[str, str, str]:
    """(decoded key for exclusion, encoded key, encoded value) of one raw `key=value` piece."""
    key, _, value = piece.partition("=")
    key_bytes = unquote_to_bytes(wire_bytes(key))
    return (
        key_bytes.decode("utf-8", "replace"),
        uri_encode(key_bytes),
        uri_encode(unquote_to_bytes(wire_bytes(value))),
    )


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (key, value) pairs of a raw query string, in order; '+' is kept literal as AWS does in SigV4."""
    return [_decoded_pair(piece) for piece in raw_query.split("&") if piece]


def canonical_query(raw_query: str, *, exclude: Iterable[str] = ()) -> str:
    excluded = set(exclude)
    encoded = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        if excluded and piece.partition("=")[0] in excluded:
            continue  # a plain key (no escapes) is its own decoding: no need to decode the (unique) value
        decoded_key, key, value = _canonical_pair(piece)
        if excluded and decoded_key in excluded:
            continue
        encoded.append((key, value))
    encoded.sort()
    return "&".join(f"{k}={v}" for k, v in encoded)


def _trim(value: str) -> str:
    return " ".join(value.split())


def canonical_headers(signed_headers: Sequence[str], headers: Iterable[tuple[str, str]]) -> str:
    """`headers`: (name, value) pairs as received, repeated names allowed; names compared case-insensitively."""
    wanted = set(signed_headers)
    values: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in wanted:
            values.setdefault(lname, []).append(_trim(value))
    # A signed header that is absent canonicalises as empty: the signature then cannot match unless the client
    # really signed an empty value.
    return "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed_headers)


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers_block: str,
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    return "\n".join([method.upper(), uri, query, headers_block, ";".join(signed_headers), payload_hash])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def chunk_string_to_sign(amz_date: str, scope: str, previous_signature: str, chunk_sha256: str) -> str:
    return f"{ALGORITHM}-PAYLOAD\n{amz_date}\n{scope}\n{previous_signature}\n{EMPTY_SHA256}\n{chunk_sha256}"


def trailer_string_to_sign(amz_date: str, scope: str, previous_signature: str, trailer_sha256: str) -> str:
    return f"{ALGORITHM}-TRAILER\n{amz_date}\n{scope}\n{previous_signature}\n{trailer_sha256}"


_key_cache: dict[tuple[str, str, str, str], bytes] = {}


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"), cached:
    it only changes daily, and four HMACs per request add up on small-object workloads."""
    cache_key = (secret, date, region, service)
    key = _key_cache.get(cache_key)
    if key is None:
        key = _hmac(("AWS4" + secret).encode("utf-8"), date)
        key = _hmac(key, region)
        key = _hmac(key, service)
        key = _hmac(key, "aws4_request")
        if len(_key_cache) >= 4096:
            _key_cache.clear()
        _key_cache[cache_key] = key
    return key


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode("utf-8"), "sha256")


def sign(key: bytes, to_sign: str) -> str:
    # hmac.digest is OpenSSL's one-shot HMAC: a fraction of the cost of an hmac.HMAC object.
    return hmac.digest(key, to_sign.encode("utf-8"), "sha256").hex()


def signatures_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("latin-1", "replace"), b.encode("latin-1", "replace"))


# -- dates ----------------------------------------------------------------------------------------


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@functools.lru_cache(maxsize=256)
def parse_amz_date(value: str) -> float | None:
    """Seconds since the epoch for an ISO 8601 basic timestamp (20150830T123600Z), None when malformed.

    Fields are checked as time.strptime would (which costs ~5 us a call, on every signed request); and a
    request's timestamp is shared by many requests (a presigned URL set, a second's worth of clients), so
    results are memoised."""
    if not _AMZ_DATE.match(value):
        return None
    year, month, day = int(value[0:4]), int(value[4:6]), int(value[6:8])
    hour, minute, second = int(value[9:11]), int(value[11:13]), int(value[13:15])
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 61:
        return None
    if not 1 <= day <= _DAYS_IN_MONTH[month - 1] or (month == 2 and day == 29 and not calendar.isleap(year)):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def parse_http_date(value: str) -> float | None:
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return float(calendar.timegm(parsed[:9]) - (parsed[9] or 0))
    except (OverflowError, ValueError):
        return None


def format_amz_date(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


# -- chunk signature chains (aws-chunked with STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) ------------


class ChunkSignatureChain:
    """Each chunk's signature signs its data and the previous signature, starting from the request's (the seed)."""

    def __init__(self, key: bytes, amz_date: str, scope: str, seed_signature: str, service: str = "s3"):
        self.key = key
        self.amz_date = amz_date
        self.scope = scope
        self.previous = seed_signature
        self.service = service

    def expected_chunk(self, chunk_sha256: str) -> str:
        return sign(self.key, chunk_string_to_sign(self.amz_date, self.scope, self.previous, chunk_sha256))

    def check_chunk(self, provided: str, chunk_sha256: str) -> None:
        expected = self.expected_chunk(chunk_sha256)
        if not signatures_equal(expected, provided.lower()):
            raise signature_mismatch(self.service)
        self.previous = expected

    def expected_trailer(self, trailer_sha256: str) -> str:
        return sign(
            self.key, trailer_string_to_sign(self.amz_date, self.scope, self.previous, trailer_sha256)
        )

    def check_trailer(self, provided: str, trailer_sha256: str) -> None:
        if not signatures_equal(self.expected_trailer(trailer_sha256), provided.lower()):
            raise signature_mismatch(self.service)


def is_signature_hex(value: str) -> bool:
    return bool(_SIGNATURE_HEX.match(value))


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.match(value))


# -- the client side: signing requests and presigning URLs -----------------------------------------
#
# Used where euca itself is the client (the CLC reading a manifest from Walrus as the caller, presigned part
# URLs for nodes, the `euca upload-bundle` and `euca register` commands). Same rules as botocore's SigV4Auth
# and S3SigV4QueryAuth, checked against the verifier above and against botocore in tests/unit/test_sigv4_client.py.


@dataclass(frozen=True)
class SigningKey:
    """Who signs, and the credential scope's region and service."""

    access_key_id: str
    secret_key: str
    region: str
    service: str

    def scope(self, date: str) -> str:
        return f"{date}/{self.region}/{self.service}/aws4_request"


def _url_parts(url: str) -> tuple[str, str, str]:
    """(host header value, raw path, raw query) of an absolute http(s) URL; default ports are left out of the
    host, as HTTP clients send it."""
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    host = split.netloc.rpartition("@")[2]
    default = ":80" if split.scheme == "http" else ":443"
    if host.endswith(default):
        host = host[: -len(default)]
    return host, split.path or "/", split.query


def sign_request(
    method: str,
    url: str,
    key: SigningKey,
    *,
    headers: Sequence[tuple[str, str]] = (),
    payload_hash: str = EMPTY_SHA256,
    now: float,
) -> list[tuple[str, str]]:
    """The headers to send for a SigV4-signed request: `headers`, plus Host, X-Amz-Date,
    X-Amz-Content-SHA256 (S3) and Authorization. Every header given is signed. `url`'s path must already be
    percent-encoded as it will be sent."""
    host, raw_path, raw_query = _url_parts(url)
    amz_date = format_amz_date(now)
    out = [(k, v) for k, v in headers if k.lower() not in ("host", "x-amz-date", "authorization")]
    out += [("Host", host), ("X-Amz-Date", amz_date)]
    if key.service == "s3" and not any(k.lower() == "x-amz-content-sha256" for k, _ in out):
        out.append(("X-Amz-Content-SHA256", payload_hash))
    signed = sorted({k.lower() for k, _ in out})
    canonical = canonical_request(
        method,
        canonical_uri(raw_path, service=key.service),
        canonical_query(raw_query),
        canonical_headers(signed, out),
        signed,
        payload_hash,
    )
    scope = key.scope(amz_date[:8])
    signature = sign(
        signing_key(key.secret_key, amz_date[:8], key.region, key.service),
        string_to_sign(amz_date, scope, canonical),
    )
    out.append(
        (
            "Authorization",
            f"{ALGORITHM} Credential={key.access_key_id}/{scope}, SignedHeaders={';'.join(signed)}, "
            f"Signature={signature}",
        )
    )
    return out


def presign_url(method: str, url: str, key: SigningKey, *, expires: int, now: float) -> str:
    """`url` with X-Amz-* query parameters that let anyone holding it make this one kind of request until
    `now + expires` (at most a week), signing only the Host header and an unsigned payload (S3's presign)."""
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
        raise ValueError(f"expires must be 1..{MAX_PRESIGN_EXPIRES} seconds")
    host, raw_path, raw_query = _url_parts(url)
    amz_date = format_amz_date(now)
    scope = key.scope(amz_date[:8])
    auth_params = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{key.access_key_id}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    query = "&".join(filter(None, [raw_query, *(f"{k}={uri_encode(v)}" for k, v in auth_params)]))
    canonical = canonical_request(
        method,
        canonical_uri(raw_path, service=key.service),
        canonical_query(query),
        canonical_headers(["host"], [("host", host)]),
        ["host"],
        UNSIGNED_PAYLOAD if key.service == "s3" else EMPTY_SHA256,
    )
    signature = sign(
        signing_key(key.secret_key, amz_date[:8], key.region, key.service),
        string_to_sign(amz_date, scope, canonical),
    )
    base = url.split("?", 1)[0].split("#", 1)[0]
    return f"{base}?{query}&X-Amz-Signature={signature}"
