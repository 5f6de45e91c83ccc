"""Server access logging (PutBucketLogging): every request to a bucket with logging on becomes one record in
S3's server access log format, delivered as log objects into the target bucket under its prefix, named
`<prefix>YYYY-mm-dd-HH-MM-SS-<16 hex>` and owned by the target bucket's owner, as S3 delivers them.

Records are kept in memory by the process that served the request and delivered every
walrus.log_delivery_interval seconds: by the role's delivery task, and by any process whose oldest record
has waited that long when it records another (so a worker process delivers too). Like S3's, delivery is best
effort: records not yet delivered when a process stops are lost.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import trio

from euca.core.http import FileBody, FileSegments, Request, Response
from euca.protocol import s3
from euca.roles.walrus import acl as acls
from euca.roles.walrus import encryption
from euca.roles.walrus.encrypted_io import copy_plain
from euca.roles.walrus.objects import store_object
from euca.roles.walrus.service import WalrusService
from euca.roles.walrus.write_extras import encryption_for_write

log = logging.getLogger("euca.walrus")


@dataclass(slots=True)
class AccessLogs:
    interval: float = 300.0
    pending: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    oldest: float = 0.0
    _lock: trio.Lock = field(default_factory=trio.Lock)

    async def record(
        self,
        svc: WalrusService,
        request: Request,
        response: Response,
        bucket: str,
        principal_id: str | None,
        auth_method: str,
        request_id: str,
        host_id: str,
        error_code: str | None,
        started: float,
    ) -> None:
        conf = svc.setting(bucket, "logging")
        b = svc.buckets.get(bucket)
        if conf is None or b is None:
            return
        key = s3.split_path(request.path, None)[1] if "mount" not in request.context else None
        now = time.time()
        line = s3.bucket_settings.access_log_line(
            bucket_owner=b.owner_id,
            bucket=bucket,
            when=now,
            remote_ip=request.client[0] if request.client else "-",
            requester=principal_id,
            request_id=request_id,
            operation=operation_of(request, key),
            key=key,
            request_uri=f"{request.method} {request.target[:2048]} HTTP/1.1",
            status=response.status,
            error_code=error_code,
            bytes_sent=_length(response),
            object_size=None,
            total_ms=int((time.monotonic() - started) * 1000),
            referer=request.headers.get("referer"),
            user_agent=request.headers.get("user-agent"),
            version_id=None,
            host_id=host_id,
            signature_version={"sigv4": "SigV4", "sigv2": "SigV2"}.get(auth_method.split("-")[0]),
            auth_type={"header": "AuthHeader", "query": "QueryString"}.get(auth_method.rsplit("-", 1)[-1]),
            host_header=request.headers.get("host"),
        )
        self.pending.setdefault((conf["bucket"], conf["prefix"]), []).append(line)
        if not self.oldest:
            self.oldest = now
        elif now - self.oldest >= self.interval:
            await self.deliver(svc)

    async def deliver(self, svc: WalrusService) -> int:
        """Write what is pending as one log object per target; returns how many objects were written."""
        if not self.pending or self._lock.locked():
            return 0
        async with self._lock:
            pending, self.pending, self.oldest = self.pending, {}, 0.0
            written = 0
            for (target, prefix), lines in pending.items():
                if await _write_log_object(svc, target, prefix, lines):
                    written += 1
            return written


async def run(svc: WalrusService, logs: AccessLogs) -> None:
    while True:
        await trio.sleep(logs.interval)
        try:
            await logs.deliver(svc)
        except Exception:
            log.exception("access log delivery failed")


async def _write_log_object(svc: WalrusService, target: str, prefix: str, lines: list[str]) -> bool:
    tb = svc.buckets.get(target)
    if tb is None:
        log.warning("access log target bucket=%s is gone: %d record(s) dropped", target, len(lines))
        return False
    data = ("\n".join(lines) + "\n").encode()
    # A target bucket with default encryption gets its log objects encrypted, as S3 delivers them.
    sse = encryption_for_write(svc, tb, None)
    extras: dict[str, object] = {encryption.SSE: sse} if sse else {}
    sealing = encryption.sealing_for_write(svc.cloud_key, extras, None)
    if sealing is not None:
        piece = sealing.piece()
        written = await copy_plain(svc.storage, [(data, 0, len(data), None)], None, piece, None, inline=True)
        extras[encryption.SSE_KEY] = encryption.sealed_record(sealing, [piece.nonce])
    else:
        written = await svc.storage.copy([(data, 0, len(data))], None, hash_md5=True, inline=True)
    key = prefix + time.strftime("%Y-%m-%d-%H-%M-%S-", time.gmtime()) + os.urandom(8).hex().upper()
    owner = (tb.owner_id, tb.owner_name)
    acl = acls.canned("private", *owner)
    await store_object(
        svc, tb, key, written, owner, s3.ObjectHeaders(content_type="text/plain"), None, acl, None, extras
    )
    return True


_SUBRESOURCES = {
    "acl", "tagging", "versioning", "uploads", "uploadId", "policy", "cors", "lifecycle", "logging", "encryption",
    "object-lock", "retention", "legal-hold", "attributes", "location", "delete", "ownershipControls",
    "publicAccessBlock", "policyStatus", "versions",
}  # fmt: skip


def operation_of(request: Request, key: str | None) -> str:
    """S3's name of the operation in a log record: REST.<METHOD>.<OBJECT | BUCKET | sub-resource>."""
    names = [p.split("=", 1)[0] for p in request.query.split("&") if p]
    sub = next((n for n in names if n in _SUBRESOURCES), None)
    if sub == "uploadId":
        kind = "PART" if request.method == "PUT" else "UPLOAD"
    elif sub is not None:
        kind = sub.upper().replace("-", "_")
    else:
        kind = "OBJECT" if key else "BUCKET"
    return f"REST.{request.method}.{kind}"


def _length(response: Response) -> int | None:
    if response.head_length is not None:
        return 0
    body = response.body
    if isinstance(body, bytes | bytearray | FileBody | FileSegments):
        return len(body)
    return None
