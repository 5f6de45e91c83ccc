"""The response shapes handlers answer with (their headers come from the builders in euca.protocol.s3.headers)."""

from __future__ import annotations

from euca.core.http import Response

XML = "application/xml"


def xml(body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", XML), *(headers or [])], body)


def empty(status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, list(headers or []), b"")
