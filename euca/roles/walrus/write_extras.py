"""What a write stores beside an object's headers, and the response headers that come of it: object lock
fields (object_lock.py), server-side encryption, and the lifecycle expiration a version is due for.

Server-side encryption: x-amz-server-side-encryption AES256 (SSE-S3), asked for by the request or by the
bucket's default encryption, is recorded with the version and answered on PUT, GET, HEAD, copy and
completion, as S3 answers it (SSE-C: the algorithm and the customer key's MD5); the bytes are encrypted at
rest (encryption.py). KMS algorithms are refused (no key management service), SSE-C is refused over plain
HTTP as S3 refuses it (app: WalrusApp.handle).
"""

from __future__ import annotations

import time
from typing import Any

from euca.protocol import s3
from euca.protocol.s3 import S3Error, sse_c
from euca.roles.walrus.encryption import SSE, SSE_C
from euca.roles.walrus.meta import BucketRow, ObjectRow
from euca.roles.walrus.object_lock import lock_for_write
from euca.roles.walrus.service import WalrusService


def encryption_for_write(svc: WalrusService, b: BucketRow, requested: str | None) -> str | None:
    if requested is not None:
        if requested != "AES256":
            raise S3Error("NotImplemented", "Walrus has no key management service: only AES256 (SSE-S3)")
        return requested
    default = svc.setting(b.name, "encryption")
    return str(default["algorithm"]) if default else None


def stored_extras(
    svc: WalrusService, b: BucketRow, lock: s3.lock_headers.ObjectLockRequest, sse: str | None
) -> dict[str, Any]:
    """The lock fields and encryption a new version of bucket `b` records (raises what S3 refuses)."""
    extras = lock_for_write(svc, b, lock, time.time())
    algorithm = encryption_for_write(svc, b, sse)
    if algorithm is not None:
        extras[SSE] = algorithm
    return extras


def sse_headers(stored: dict[str, Any]) -> list[tuple[str, str]]:
    algorithm = stored.get(SSE)
    if algorithm:
        return [("x-amz-server-side-encryption", str(algorithm))]
    customer = stored.get(SSE_C)
    return sse_c.response_headers(str(customer)) if customer else []


def expiration_headers(svc: WalrusService, b: BucketRow, o: ObjectRow) -> list[tuple[str, str]]:
    """x-amz-expiration: when the bucket's lifecycle rules expire this (current) version, and by which rule."""
    rules = svc.setting(b.name, "lifecycle")
    if not rules or not o.is_latest:
        return []
    expiry = s3.lifecycle.current_expiry(rules, o.key, o.size, o.tags, o.last_modified, svc.lifecycle_day)
    return s3.lifecycle.expiration_header(expiry)
