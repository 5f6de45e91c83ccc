"""The response shapes handlers answer with, and the response headers that depend on the stored object."""

from __future__ import annotations

from euca.core.http import Response
from euca.roles.walrus.meta import BucketRow, ObjectRow

XML = "application/xml"


def xml(body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", XML), *(headers or [])], body)


def empty(status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, list(headers or []), b"")


def version_headers(b: BucketRow, o: ObjectRow) -> list[tuple[str, str]]:
    """x-amz-version-id, for a version of a bucket that has (or had) versioning."""
    if b.versioning or o.version_id != "null":
        return [("x-amz-version-id", o.version_id)]
    return []


def checksum_header(algorithm: str, value: str) -> tuple[str, str]:
    return (f"x-amz-checksum-{algorithm.lower()}", value)
