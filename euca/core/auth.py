"""Request authentication for every role: who signed this request, and how its body is protected.

The wire rules (canonical requests, string to sign, aws-chunked framing) live sans-I/O in
euca/protocol/sigv4.py, sigv2.py and awschunked.py; this module joins them to the identity store
and to the streaming request body.

CONTRACT (roles code against this; keep it stable):

    result = await authenticate(request, identity, service="s3", region=cfg.region,
                                body_sha256=None, form=None, virtual_bucket=None)
    -> AuthResult(principal=Principal | None (anonymous), ...)
    raises AuthError(code, message, status) with AWS codes:
        InvalidAccessKeyId (unknown or inactive key), SignatureDoesNotMatch, AccessDenied (expired presigned URL),
        InvalidToken (temporary credentials without their session token, or a token with a long-term key),
        ExpiredToken (temporary credentials past their expiry, by identity.clock),
        RequestTimeTooSkewed, AuthorizationHeaderMalformed, AuthorizationQueryParametersError,
        MissingSecurityHeader, InvalidArgument, IncompleteSignature, InvalidRequest
    (for service="ec2" with SigV2 also MissingParameter, InvalidParameterValue, RequestExpired)

    stream = result.payload(request.body)   # the *decoded* payload (aws-chunked removed)
    chunk = await stream.read(n)            # b"" at the end; at the end the payload has been checked:
                                            # x-amz-content-sha256 hash, chunk signatures, trailer signature
                                            # -> raises AuthError / PayloadError on mismatch
    stream.trailers                         # dict of trailing headers (x-amz-checksum-*) once at the end
                                            # (their values are NOT checked here: the role computes checksums)
    -> PayloadError codes: XAmzContentSHA256Mismatch, SignatureDoesNotMatch (a chunk), IncompleteBody,
       IncompleteSignature, InvalidRequest (bad aws-chunked framing), MalformedTrailerError
    result.decoded_length                   # x-amz-decoded-content-length or Content-Length, if known

`request.context["raw_path"]` holds the path as the client sent it (before a mount prefix was stripped);
signatures are computed over that. An S3 SigV2 signature may also cover the path below the prefix
(request.path): botocore signs its auth_path, the bucket and key without the endpoint's path.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from euca.core.http import Request
from euca.core.identity import Identity, Principal
from euca.protocol import sigv2, sigv4, sigv4_verify
from euca.protocol.awschunked import AwsChunkedDecoder
from euca.protocol.errors import CodedError
from euca.protocol.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    ChunkSignatureChain,
    SignatureError,
)

INVALID_ACCESS_KEY = "The AWS Access Key Id you provided does not exist in our records."
CONTENT_SHA256_MISMATCH = "The provided 'x-amz-content-sha256' header does not match what was computed."
ONE_AUTH_MECHANISM = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
    "parameter or the Authorization header should be specified"
)
# How much to read from the wire per step when decoding aws-chunked (framing is small; chunks are 64 KiB+).
_CHUNKED_READ = 256 * 1024


class AuthError(CodedError):
    """A request that does not authenticate (unknown key, bad signature, expired, ...)."""

    default_status = 403


class PayloadError(AuthError):
    """The body does not match what was signed (XAmzContentSHA256Mismatch, IncompleteBody, ...)."""

    default_status = 400


class BodySource(Protocol):
    async def read(self, max_bytes: int = ...) -> bytes: ...


class PayloadStream(Protocol):
    trailers: dict[str, str]

    async def read(self, max_bytes: int = 262144) -> bytes: ...


@dataclass
class _PassThrough:
    source: BodySource
    trailers: dict[str, str] = field(default_factory=dict)

    async def read(self, max_bytes: int = 262144) -> bytes:
        return await self.source.read(max_bytes)


class _HashCheckedPayload:
    """The body as sent, its SHA-256 compared with the signed x-amz-content-sha256 when it ends.

    A consumer that passes every byte through a thread anyway (the object store's writer) may take the hashing
    over: `defer_hash()` hands it the hasher, and it calls `check_hash()` once it has fed it the whole body
    (read() then no longer hashes or checks). That keeps a large body's SHA-256 off the event loop."""

    def __init__(self, source: BodySource, expected_hex: str):
        self.source = source
        self.expected = expected_hex.lower()
        self.trailers: dict[str, str] = {}
        self._hasher = hashlib.sha256()
        self._checked = False
        self._deferred = False

    def defer_hash(self) -> Any:
        self._deferred = True
        return self._hasher

    def check_hash(self) -> None:
        self._checked = True
        if self._hasher.hexdigest() != self.expected:
            raise PayloadError("XAmzContentSHA256Mismatch", CONTENT_SHA256_MISMATCH, 400)

    async def read(self, max_bytes: int = 262144) -> bytes:
        data = await self.source.read(max_bytes)
        if self._deferred:
            return data
        if data:
            self._hasher.update(data)
        elif not self._checked:
            self.check_hash()
        return data


class _ChunkedPayload:
    """The aws-chunked body decoded: payload bytes out, chunk signatures and trailers checked on the way."""

    def __init__(self, source: BodySource, decoder: AwsChunkedDecoder):
        self.source = source
        self.decoder = decoder
        self.trailers: dict[str, str] = {}
        self._pending: deque[bytes] = deque()
        self._finished = False

    async def read(self, max_bytes: int = 262144) -> bytes:
        while not self._pending:
            if self._finished:
                return b""
            data = await self.source.read(max(max_bytes, _CHUNKED_READ))
            try:
                if data:
                    self._pending.extend(self.decoder.feed(data))
                else:
                    self.decoder.finish()
                    self.trailers.update(self.decoder.trailers)
                    self._finished = True
            except SignatureError as e:
                self._finished = True
                raise PayloadError(e.code, e.message, e.status) from None
        piece = self._pending[0]
        if len(piece) <= max_bytes:
            self._pending.popleft()
            return piece
        self._pending[0] = piece[max_bytes:]
        return piece[:max_bytes]


@dataclass
class _ChainSeed:
    key: bytes
    amz_date: str
    scope: str
    signature: str


@dataclass
class AuthResult:
    principal: Principal | None
    # "anonymous", "sigv4-header", "sigv4-query", "sigv2-header", "sigv2-query"
    method: str = "anonymous"
    # The x-amz-content-sha256 value that was signed (hex, UNSIGNED-PAYLOAD, STREAMING-...), if any.
    content_sha256: str | None = None
    decoded_length: int | None = None
    # Names announced in x-amz-trailer (aws-chunked with trailing checksums).
    trailer_names: list[str] = field(default_factory=list)
    _seed: _ChainSeed | None = field(default=None, repr=False)

    def payload(self, body: BodySource) -> PayloadStream:
        mode = self.content_sha256
        if mode is None or mode == UNSIGNED_PAYLOAD:
            return _PassThrough(body)
        if mode == STREAMING_UNSIGNED_TRAILER:
            return _ChunkedPayload(
                body,
                AwsChunkedDecoder(decoded_length=self.decoded_length, expected_trailers=self.trailer_names),
            )
        if mode in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER):
            # authenticate() never returns this mode without a seed; a hand-made result cannot verify chunks.
            if self._seed is None:
                raise PayloadError(
                    "InvalidRequest", "Streaming payload signatures need a SigV4 Authorization header"
                )
            seed = self._seed
            chain = ChunkSignatureChain(seed.key, seed.amz_date, seed.scope, seed.signature)
            decoder = AwsChunkedDecoder(
                chain=chain,
                signed_trailer=mode == STREAMING_PAYLOAD_TRAILER,
                decoded_length=self.decoded_length,
                expected_trailers=self.trailer_names,
            )
            return _ChunkedPayload(body, decoder)
        return _HashCheckedPayload(body, mode)


def _wire_headers(request: Request) -> list[tuple[str, str]]:
    return list(request.headers.pairs)


def _utf8_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """The headers with values re-read as UTF-8, or None when that reads nothing differently."""
    changed = False
    out = []
    for name, value in headers:
        if not value.isascii():
            try:
                value = value.encode("latin-1").decode("utf-8")
                changed = True
            except UnicodeDecodeError:
                pass
        out.append((name, value))
    return out if changed else None


def _payload_fields(
    request: Request, service: str, signed_hash: str | None
) -> tuple[str | None, int | None, list[str]]:
    """(content_sha256 the body must match, decoded length, trailer names) for the request's body."""
    declared = request.headers.get("x-amz-content-sha256")
    content_sha256 = declared.strip() if declared is not None else None
    if content_sha256 is None and service == "s3":
        content_sha256 = signed_hash if signed_hash not in (None, EMPTY_SHA256) else None
    streaming = content_sha256 is not None and content_sha256.startswith("STREAMING-")
    length_header = request.headers.get("x-amz-decoded-content-length") if streaming else None
    if length_header is None and not streaming:
        length_header = request.headers.get("content-length")
    decoded_length: int | None = None
    if length_header is not None:
        try:
            decoded_length = int(length_header.strip())
        except ValueError:
            raise AuthError("InvalidArgument", "x-amz-decoded-content-length is not a number", 400) from None
        if decoded_length < 0:
            raise AuthError("InvalidArgument", "x-amz-decoded-content-length is negative", 400)
    trailer = request.headers.get("x-amz-trailer") or ""
    names = [n.strip().lower() for n in trailer.split(",") if n.strip()] if streaming else []
    return content_sha256, decoded_length, names


INVALID_TOKEN = "The provided token is malformed or otherwise invalid."
EXPIRED_TOKEN = "The provided token has expired."


def _security_token(request: Request, form: dict[str, str] | None) -> str | None:
    """The session token sent with temporary credentials: a header, the presigned query's
    X-Amz-Security-Token (or x-amz-security-token, SigV2), or SecurityToken in a Query API form."""
    token = request.headers.get("x-amz-security-token")
    if token is not None:
        return token.strip()
    for name, value in sigv4.parse_query(request.query):
        if name in ("X-Amz-Security-Token", "x-amz-security-token", "SecurityToken"):
            return value
    if form is not None:
        return form.get("SecurityToken")
    return None


async def _principal(identity: Identity, access_key_id: str, token: str | None) -> tuple[Principal, str]:
    key = await identity.access_key(access_key_id)
    # A disabled key answers like an unknown one, as AWS does.
    if key is None or not key.active:
        raise AuthError("InvalidAccessKeyId", INVALID_ACCESS_KEY, 403)
    if key.session_token is None:
        if token:  # a session token with a long-term key: the caller holds something else than it thinks
            raise AuthError("InvalidToken", INVALID_TOKEN, 400)
    else:
        if token is None or not hmac.compare_digest(token.encode(), key.session_token.encode()):
            raise AuthError("InvalidToken", INVALID_TOKEN, 400)
        if key.expires is not None and identity.clock() >= key.expires:
            raise AuthError("ExpiredToken", EXPIRED_TOKEN, 400)
    return key.principal, key.secret_key


async def authenticate(
    request: Request,
    identity: Identity,
    *,
    service: str,
    region: str,
    body_sha256: str | None = None,
    form: dict[str, str] | None = None,
    virtual_bucket: str | None = None,
    now: float | None = None,
) -> AuthResult:
    """Who signed `request`, checked. `region` is the cloud's; a credential scope naming another is accepted
    and computed with its own region (Eucalyptus never enforced it, and clients default to us-east-1)."""
    del region  # accepted in any credential scope, see above
    now = time.time() if now is None else now
    try:
        return await _authenticate(request, identity, service, body_sha256, form, virtual_bucket, now)
    except AuthError:
        raise
    except SignatureError as e:
        raise AuthError(e.code, e.message, e.status) from None


# A Query protocol's form parser: (query string, body, Content-Type) -> the parameters; raises its own coded
# error on a malformed form (euca.protocol.ec2.wire.parse_form, euca.protocol.query.wire.parse_form).
FormParser = Callable[[str, bytes, str | None], dict[str, str]]


class BodyTooLarge(Exception):
    """A Query request's body past the size its service reads (each service answers it with its own code)."""


async def authenticate_query(
    request: Request,
    identity: Identity,
    *,
    service: str,
    region: str,
    max_body: int,
    parse_form: FormParser,
) -> tuple[dict[str, str], AuthResult]:
    """A Query request's parameters (the query string, and a POST's form body) and who signed it.

    Raises BodyTooLarge past `max_body` bytes, what `parse_form` raises on a malformed form (before the
    signature is looked at), and AuthError as authenticate() does."""
    try:
        body = await request.body.read_all(max_body)
    except ValueError:
        raise BodyTooLarge(max_body) from None
    ctype = request.headers.get("content-type")
    form = parse_form("", body, ctype) if request.method == "POST" else None
    params = parse_form(request.query, body if request.method == "POST" else b"", ctype)
    result = await authenticate(
        request,
        identity,
        service=service,
        region=region,
        body_sha256=hashlib.sha256(body).hexdigest(),
        form=form,
    )
    return params, result


async def _authenticate(
    request: Request,
    identity: Identity,
    service: str,
    body_sha256: str | None,
    form: dict[str, str] | None,
    virtual_bucket: str | None,
    now: float,
) -> AuthResult:
    if service == "s3" and request.method == "OPTIONS":
        # A CORS preflight is never signed: browsers send it without credentials, and the query parameters
        # of the presigned URL it precedes sign the request to come (its method), not this one.
        return AuthResult(principal=None)
    raw_path = request.context.get("raw_path", request.path)
    # Below a service prefix (/services/objectstorage): SigV2 clients may sign the path below it (see sigv2).
    mounted_path = request.path if "mount" in request.context else None
    headers = _wire_headers(request)
    query_keys = {k for k, _ in sigv4.parse_query(request.query)}
    authorization = (request.headers.get("authorization") or "").strip()
    v4_query = (
        "X-Amz-Algorithm" in query_keys or "X-Amz-Credential" in query_keys or "X-Amz-Signature" in query_keys
    )
    v2_query_s3 = service == "s3" and ("AWSAccessKeyId" in query_keys or "Signature" in query_keys)
    if sum(map(bool, (authorization, v4_query, v2_query_s3))) > 1:
        raise AuthError("InvalidArgument", ONE_AUTH_MECHANISM, 400)

    if authorization.startswith(sigv4.ALGORITHM + " ") or authorization == sigv4.ALGORITHM:
        parsed4 = sigv4_verify.parse_header_auth(
            request.method,
            raw_path,
            request.query,
            headers,
            service=service,
            now=now,
            body_sha256=body_sha256,
        )
        utf8 = _utf8_headers(headers)
        if utf8 is not None:
            # urllib3 2 sends non-ASCII header values (e.g. x-amz-meta-*) as UTF-8, and botocore signed the
            # text: the UTF-8 reading of the wire bytes is the one it signed.
            alt = sigv4_verify.parse_header_auth(
                request.method,
                raw_path,
                request.query,
                utf8,
                service=service,
                now=now,
                body_sha256=body_sha256,
            )
            parsed4.strings_to_sign.extend(c for c in alt.strings_to_sign if c not in parsed4.strings_to_sign)
        return await _finish_v4(request, identity, service, parsed4, "sigv4-header", form)
    if authorization.startswith("AWS ") and service == "s3":
        parsed2 = sigv2.parse_s3_header_auth(
            request.method,
            raw_path,
            request.query,
            headers,
            now=now,
            virtual_bucket=virtual_bucket,
            mounted_path=mounted_path,
        )
        return await _finish_v2(request, identity, service, parsed2)
    if authorization:
        raise AuthError("InvalidArgument", "Unsupported Authorization Type", 400)
    if v4_query:
        parsed4 = sigv4_verify.parse_query_auth(
            request.method,
            raw_path,
            request.query,
            headers,
            service=service,
            now=now,
            body_sha256=body_sha256,
        )
        return await _finish_v4(request, identity, service, parsed4, "sigv4-query", form)
    if v2_query_s3:
        parsed2 = sigv2.parse_s3_query_auth(
            request.method,
            raw_path,
            request.query,
            headers,
            now=now,
            virtual_bucket=virtual_bucket,
            mounted_path=mounted_path,
        )
        return await _finish_v2(request, identity, service, parsed2)
    if service != "s3":
        params = form if form is not None else dict(sigv4.parse_query(request.query))
        if "Signature" in params or "AWSAccessKeyId" in params:
            parsed2 = sigv2.parse_query_api_auth(
                request.method, raw_path, headers, params, service=service, now=now
            )
            return await _finish_v2(request, identity, service, parsed2, params)

    content_sha256, decoded_length, trailer_names = _payload_fields(request, service, None)
    if content_sha256 in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER):
        raise AuthError("AccessDenied", "Anonymous requests cannot carry signed streaming payloads", 403)
    return AuthResult(
        principal=None,
        method="anonymous",
        content_sha256=content_sha256,
        decoded_length=decoded_length,
        trailer_names=trailer_names,
    )


async def _finish_v4(
    request: Request,
    identity: Identity,
    service: str,
    parsed: sigv4_verify.SigV4Request,
    method: str,
    form: dict[str, str] | None = None,
) -> AuthResult:
    principal, secret = await _principal(
        identity, parsed.credential.access_key_id, _security_token(request, form)
    )
    key = parsed.verify(secret)
    await identity.note_used(principal, service, parsed.credential.region)
    content_sha256, decoded_length, trailer_names = _payload_fields(request, service, parsed.payload_hash)
    seed = None
    if content_sha256 in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER):
        if parsed.presigned:
            raise AuthError(
                "InvalidRequest", "Streaming payload signatures need a SigV4 Authorization header", 400
            )
        seed = _ChainSeed(key, parsed.amz_date, parsed.credential.scope, parsed.signature)
    return AuthResult(
        principal=principal,
        method=method,
        content_sha256=content_sha256,
        decoded_length=decoded_length,
        trailer_names=trailer_names,
        _seed=seed,
    )


async def _finish_v2(
    request: Request,
    identity: Identity,
    service: str,
    parsed: sigv2.SigV2Request,
    form: dict[str, str] | None = None,
) -> AuthResult:
    principal, secret = await _principal(identity, parsed.access_key_id, _security_token(request, form))
    parsed.verify(secret)
    await identity.note_used(principal, service, "")
    content_sha256, decoded_length, trailer_names = _payload_fields(request, service, None)
    if content_sha256 in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER):
        raise AuthError(
            "InvalidRequest", "Streaming payload signatures need a SigV4 Authorization header", 400
        )
    return AuthResult(
        principal=principal,
        method=parsed.method,
        content_sha256=content_sha256,
        decoded_length=decoded_length,
        trailer_names=trailer_names,
    )
