"""CORS answers: the preflight OPTIONS request, and the Access-Control-* headers added to every response for
a request that carries an Origin. The rules themselves are bucket configuration (bucket_config.py)."""

from __future__ import annotations

from euca.core.http import Request, Response
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import cors as s3_cors
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.service import WalrusService


async def preflight(svc: WalrusService, call: S3Call, ep: s3.Preflight) -> Response:
    headers = call.request.headers
    origin = headers.get("origin")
    method = headers.get("access-control-request-method")
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.", 400)
    if not method:
        raise S3Error("BadRequest", "Invalid Access-Control-Request-Method: null", 400)
    svc.bucket(ep.bucket)
    rules = svc.cors_rules.get(ep.bucket)
    allowed = None
    if rules:
        requested = s3_cors.request_header_names(headers.get("access-control-request-headers"))
        allowed = s3_cors.match(rules, origin, method.upper(), requested)
    if allowed is None:
        raise S3Error(
            "AccessForbidden",
            "CORSResponse: This CORS request is not allowed. This is usually "
            "because the evalution of Origin, request method / Access-Control-Request-Method or "
            "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
            403,
        )
    return Response(200, allowed, b"")


def decorate(svc: WalrusService, request: Request, bucket: str | None, response: Response) -> None:
    """Add the Access-Control-* headers of the matching rule to an actual (non-preflight) request's response."""
    origin = request.headers.get("origin")
    if not origin or bucket is None or request.method == "OPTIONS":
        return
    rules = svc.cors_rules.get(bucket)
    if not rules:
        return
    method = (request.headers.get("access-control-request-method") or request.method).upper()
    allowed = s3_cors.match(rules, origin, method, [])
    if allowed:
        response.headers.extend(allowed)
