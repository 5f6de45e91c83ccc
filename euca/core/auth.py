"""Request authentication for every role: who signed this request, and how its body is protected.

The wire rules (canonical requests, string to sign, aws-chunked framing) live sans-I/O in
euca/protocol/sigv4.py, sigv2.py and awschunked.py; this module joins them to the identity store
and to the streaming request body.

CONTRACT (roles code against this; keep it stable):

    result = await authenticate(request, identity, service="s3", region=cfg.region,
                                body_sha256=None, form=None, virtual_bucket=None)
    -> AuthResult(principal=Principal | None (anonymous), ...)
    raises AuthError(code, message, status) with AWS codes:
        InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied (expired presigned URL, inactive key),
        RequestTimeTooSkewed, AuthorizationHeaderMalformed, AuthorizationQueryParametersError,
        MissingSecurityHeader, InvalidArgument, IncompleteSignature

    stream = result.payload(request.body)   # the *decoded* payload (aws-chunked removed)
    chunk = await stream.read(n)            # b"" at the end; at the end the payload has been checked:
                                            # x-amz-content-sha256 hash, chunk signatures, trailer signature
                                            # -> raises AuthError / PayloadError on mismatch
    stream.trailers                         # dict of trailing headers (x-amz-checksum-*) once at the end
    result.decoded_length                   # x-amz-decoded-content-length or Content-Length, if known

`request.context["raw_path"]` holds the path as the client sent it (before a mount prefix was stripped);
signatures are computed over that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from euca.core.http import Request
from euca.core.identity import Identity, Principal


class AuthError(Exception):
    def __init__(self, code: str, message: str, status: int = 403):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class PayloadError(AuthError):
    """The body does not match what was signed (XAmzContentSHA256Mismatch, IncompleteBody, ...)."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(code, message, status)


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


@dataclass
class AuthResult:
    principal: Principal | None
    # "anonymous", "sigv4-header", "sigv4-query", "sigv2-header", "sigv2-query"
    method: str = "anonymous"
    # The x-amz-content-sha256 value that was signed (hex, UNSIGNED-PAYLOAD, STREAMING-...), if any.
    content_sha256: str | None = None
    decoded_length: int | None = None

    def payload(self, body: BodySource) -> PayloadStream:
        return _PassThrough(body)


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
    """PLACEHOLDER until the protocol modules land: trusts the access key named, verifies nothing."""
    auth = request.headers.get("authorization") or ""
    akid = None
    if "Credential=" in auth:
        akid = auth.split("Credential=", 1)[1].split("/", 1)[0]
    elif auth.startswith("AWS "):
        akid = auth[4:].split(":", 1)[0]
    if akid is None:
        return AuthResult(principal=None)
    key = await identity.access_key(akid)
    if key is None:
        raise AuthError("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    return AuthResult(principal=key.principal, method="sigv4-header")
