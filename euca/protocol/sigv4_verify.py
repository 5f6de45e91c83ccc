"""AWS Signature Version 4, the verifier's side: the Authorization header or the presigned query of a request
parsed and canonicalised into a `SigV4Request` (every string to sign a client may have signed), which the
caller verifies once it has looked up the secret key. The canonical forms, keys and the client side are in
euca.protocol.sigv4. Sans-I/O, like it; failures raise its `SignatureError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from euca.protocol.sigv4 import (
    ALGORITHM,
    EMPTY_SHA256,
    MAX_PRESIGN_EXPIRES,
    MAX_SKEW_SECONDS,
    PAYLOAD_MODES,
    UNSIGNED_PAYLOAD,
    SignatureError,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri,
    format_amz_date,
    is_sha256_hex,
    parse_amz_date,
    parse_http_date,
    parse_query,
    s3_reencoded_uri,
    sign,
    signature_mismatch,
    signatures_equal,
    signing_key,
    string_to_sign,
)


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass
class SigV4Request:
    """A SigV4-signed request, parsed and canonicalised, waiting for its secret key."""

    credential: Credential
    amz_date: str
    signed_headers: list[str]
    signature: str
    # The x-amz-content-sha256 value that was signed (or the payload hash used), e.g. a hex hash or a mode.
    payload_hash: str
    presigned: bool
    service: str
    # Strings to sign to try, in order: normally one; for S3 also the re-encoded path form (see s3_reencoded_uri).
    strings_to_sign: list[str]

    def verify(self, secret: str) -> bytes:
        """Check the signature; returns the signing key (streaming payloads chain chunk signatures from it)."""
        key = signing_key(secret, self.credential.date, self.credential.region, self.credential.service)
        matched = False
        for candidate in self.strings_to_sign:
            # Every candidate is computed and compared (no early exit) so timing says nothing about which failed.
            matched |= signatures_equal(sign(key, candidate), self.signature)
        if not matched:
            raise signature_mismatch(self.service)
        return key


def _malformed_header(service: str, detail: str) -> SignatureError:
    if service == "s3":
        return SignatureError(
            "AuthorizationHeaderMalformed", f"The authorization header is malformed; {detail}", 400
        )
    return SignatureError("IncompleteSignature", detail, 400)


_CREDENTIAL_DATE = re.compile(r"^\d{8}$")


def _parse_credential(value: str) -> Credential | None:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        return None
    if not _CREDENTIAL_DATE.match(parts[1]) or not parts[2] or not parts[3]:
        return None
    return Credential(parts[0], parts[1], parts[2], parts[3])


def _signed_header_list(value: str) -> list[str] | None:
    names = [n.strip().lower() for n in value.split(";")]
    if not names or any(not n for n in names):
        return None
    return names


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    found = [v for k, v in headers if k.lower() == name]
    return ",".join(found) if found else None


def _payload_hash(
    headers: Sequence[tuple[str, str]], *, service: str, presigned: bool, body_sha256: str | None
) -> str:
    declared = _header(headers, "x-amz-content-sha256")
    if declared is not None:
        declared = declared.strip()
        if service == "s3" and declared not in PAYLOAD_MODES and not is_sha256_hex(declared):
            raise SignatureError(
                "InvalidArgument",
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, "
                "or a valid sha256 value.",
                400,
            )
        return declared
    if service == "s3":
        if presigned:
            return UNSIGNED_PAYLOAD
        raise SignatureError(
            "InvalidRequest", "Missing required header for this request: x-amz-content-sha256", 400
        )
    return body_sha256 or EMPTY_SHA256


def _strings_to_sign(
    method: str,
    raw_path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    signed: list[str],
    payload_hash: str,
    amz_date: str,
    scope: str,
    service: str,
) -> list[str]:
    block = canonical_headers(signed, headers)
    uris = [canonical_uri(raw_path, service=service)]
    if service == "s3":
        alternative = s3_reencoded_uri(raw_path)
        if alternative != uris[0]:
            uris.append(alternative)
    return [
        string_to_sign(amz_date, scope, canonical_request(method, uri, query, block, signed, payload_hash))
        for uri in uris
    ]


def parse_header_auth(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    *,
    service: str,
    now: float,
    body_sha256: str | None = None,
) -> SigV4Request:
    """A request carrying `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`."""
    authorization = (_header(headers, "authorization") or "").strip()
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("InvalidArgument", "Unsupported Authorization Type", 400)
    fields: dict[str, str] = {}
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise _malformed_header(service, f'the authorization component "{item}" is malformed.')
        fields[name.strip()] = value.strip()
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if name not in fields]
    if missing:
        if service == "s3":
            raise _malformed_header(
                service,
                "the authorization header requires three components: Credential, SignedHeaders, and Signature.",
            )
        raise _malformed_header(
            service, " ".join(f"Authorization header requires '{m}' parameter." for m in missing)
        )
    credential = _parse_credential(fields["Credential"])
    if credential is None:
        raise _malformed_header(
            service,
            'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
        )
    signed = _signed_header_list(fields["SignedHeaders"])
    if signed is None:
        raise _malformed_header(service, "the SignedHeaders component is malformed.")
    signature = fields["Signature"].lower()

    amz_date_header = _header(headers, "x-amz-date")
    when: float | None
    if amz_date_header is not None:
        amz_date = amz_date_header.strip()
        when = parse_amz_date(amz_date)
    else:
        date_header = _header(headers, "date")
        when = parse_http_date(date_header) if date_header else None
        amz_date = format_amz_date(when) if when is not None else ""
    if when is None:
        raise SignatureError(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403
        )
    if credential.date != amz_date[:8]:
        raise _malformed_header(service, "Invalid credential date. Date is not the same as X-Amz-Date.")
    if abs(now - when) > MAX_SKEW_SECONDS:
        raise SignatureError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            403,
        )
    payload = _payload_hash(headers, service=service, presigned=False, body_sha256=body_sha256)
    query = canonical_query(raw_query)
    return SigV4Request(
        credential=credential,
        amz_date=amz_date,
        signed_headers=signed,
        signature=signature,
        payload_hash=payload,
        presigned=False,
        service=service,
        strings_to_sign=_strings_to_sign(
            method, raw_path, query, headers, signed, payload, amz_date, credential.scope, service
        ),
    )


_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
_PRESIGN_PARAM_SET = frozenset(_PRESIGN_PARAMS)


def _query_error(message: str) -> SignatureError:
    return SignatureError("AuthorizationQueryParametersError", message, 400)


def parse_query_auth(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    *,
    service: str,
    now: float,
    body_sha256: str | None = None,
) -> SigV4Request:
    """A presigned URL: X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders, -Signature in the query."""
    params: dict[str, str] = {}
    for key, value in parse_query(raw_query):
        params.setdefault(key, value)
    if not params.keys() >= _PRESIGN_PARAM_SET:
        raise _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    credential = _parse_credential(params["X-Amz-Credential"])
    if credential is None:
        raise _query_error(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    amz_date = params["X-Amz-Date"]
    when = parse_amz_date(amz_date)
    if when is None:
        raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise _query_error("X-Amz-Expires should be a number") from None
    if expires < 0:
        raise _query_error("X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGN_EXPIRES:
        raise _query_error("X-Amz-Expires must be less than a week (in seconds) that is 604800")
    if credential.date != amz_date[:8]:
        raise _query_error(
            "Error parsing the X-Amz-Credential parameter; Invalid credential date. Date is not the same as X-Amz-Date."
        )
    signed = _signed_header_list(params["X-Amz-SignedHeaders"])
    if signed is None:
        raise _query_error("Error parsing the X-Amz-SignedHeaders parameter.")
    if when - now > MAX_SKEW_SECONDS:
        raise SignatureError("AccessDenied", "Request is not valid yet", 403)
    if now > when + expires:
        raise SignatureError("AccessDenied", "Request has expired", 403)
    payload = _payload_hash(headers, service=service, presigned=True, body_sha256=body_sha256)
    query = canonical_query(raw_query, exclude=("X-Amz-Signature",))
    return SigV4Request(
        credential=credential,
        amz_date=amz_date,
        signed_headers=signed,
        signature=params["X-Amz-Signature"].lower(),
        payload_hash=payload,
        presigned=True,
        service=service,
        strings_to_sign=_strings_to_sign(
            method, raw_path, query, headers, signed, payload, amz_date, credential.scope, service
        ),
    )
