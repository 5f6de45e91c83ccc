"""Server-side encryption at rest: which data key a write seals its bytes with, what the version records,
and the data key a read (or a copy's source) opens again, with the errors S3 gives.

SSE-S3 (x-amz-server-side-encryption: AES256, or the bucket's default encryption) wraps each object's data
key by the cloud key, a 256-bit key Walrus creates once in its data directory (`CLOUD_KEY_FILE`, mode 0600).
SSE-C (only over HTTPS: the app refuses it in clear) wraps it by the customer's key, which is never stored:
a salted HMAC of it recognises the key again (a wrong key is AccessDenied, none InvalidRequest).

Stored with the version (its headers): `sse_key` = {"by": "cloud" | "customer", "wrapped": the data key
wrapped, "kid": which cloud key, "salt"/"check": the customer key's HMAC, "nonces": one per piece (the
object, or each part)}, and for SSE-C `sse_c` = the key's MD5 (echoed in answers). A multipart upload keeps
the record (without nonces) in its headers, and each part its nonce (walrus_parts.sse). A version without
`sse_key` is plaintext (every object written before this existed)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from euca.core.store import Store
from euca.protocol.s3 import S3Error, sse_c
from euca.protocol.s3.sse_c import CustomerKey
from euca.roles.walrus import cipher, meta
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.encrypted_io import Piece, PieceCipher
from euca.roles.walrus.meta import ObjectRow

log = logging.getLogger("euca.walrus")

CLOUD_KEY_FILE = "walrus-sse.key"
SSE = "sse"  # the algorithm a version records (write_extras.py)
SSE_KEY = "sse_key"
SSE_C = "sse_c"
STORED = (SSE, SSE_KEY, SSE_C)

STORED_ENCRYPTED = (
    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided "
    "to retrieve the object."
)
NOT_APPLICABLE = "The encryption parameters are not applicable to this object."
UPLOAD_MISMATCH = "The provided encryption parameters did not match the ones used originally."


def load_cloud_key(path: Path) -> bytes:
    """The cloud key, created (random, mode 0600) on first use. Another process creating it at the same time
    is safe: each writes its own temp file and links it into place; the first link wins, the others read it."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, cipher.new_key())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        log.info("walrus: created the server-side encryption key %s", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


async def cloud_key_of_the_cloud(store: Store, cloud_key: bytes) -> bytes:
    """This host's cloud key if it is the cloud's, else b"" (nothing is encrypted or opened with it). The
    first Walrus to start records its key's id in the store; another Walrus host sharing the database must
    hold the same file (copied from the first): one that made its own would write objects no other host can
    read, so it is told so in the log, and SSE-S3 through it answers ServiceUnavailable until it has the key."""
    kid = key_id(cloud_key)
    recorded = await store.write(lambda tx: meta.claim_cloud_key(tx, kid, time.time()))
    if recorded == kid:
        return cloud_key
    log.error(
        "walrus: this host's %s (key %s) is not the cloud's (key %s): copy %s from the first Walrus host "
        "(mode 0600) and restart; until then SSE-S3 writes and reads through this host are refused",
        CLOUD_KEY_FILE,
        kid,
        recorded,
        CLOUD_KEY_FILE,
    )
    return b""


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != cipher.KEY_BYTES:
        raise RuntimeError(f"{path}: not a {cipher.KEY_BYTES}-byte key")
    return key


def customer_key(call: S3Call) -> CustomerKey | None:
    """The request's SSE-C key (x-amz-server-side-encryption-customer-*), checked as S3 checks it."""
    return sse_c.parse_customer_key(call.request.headers)


def source_customer_key(call: S3Call) -> CustomerKey | None:
    """A copy's key for its source (x-amz-copy-source-server-side-encryption-customer-*)."""
    return sse_c.parse_customer_key(call.request.headers, sse_c.SOURCE_PREFIX)


class Sealing:
    """A new data key and the record that keeps it (wrapped), for one object or multipart upload."""

    def __init__(self, cloud_key: bytes, customer: CustomerKey | None):
        self.key = cipher.new_key()
        self.customer = customer is not None
        if customer is None:
            self.record: dict[str, Any] = {
                "by": "cloud",
                "wrapped": cipher.b64(cipher.wrap(cloud_key, self.key)),
                "kid": key_id(cloud_key),
            }
        else:
            salt = os.urandom(16)
            self.record = {
                "by": "customer",
                "wrapped": cipher.b64(cipher.wrap(customer.key, self.key)),
                "salt": cipher.b64(salt),
                "check": cipher.b64(cipher.key_check(customer.key, salt)),
            }

    def piece(self) -> PieceCipher:
        """The cipher of a new piece under this key (its own nonce)."""
        return PieceCipher(self.key, cipher.new_nonce(), self.customer)


def sealing_for_write(
    cloud_key: bytes, extras: dict[str, Any], customer: CustomerKey | None
) -> Sealing | None:
    """The data key a new version (or upload) is sealed with: the customer's (SSE-C, over any bucket default)
    or the cloud's when `extras` (stored_extras: the request's header or the bucket default) ask for AES256;
    None: plaintext. Records SSE-C's key MD5 in `extras`."""
    if customer is not None:
        extras.pop(SSE, None)
        extras[SSE_C] = customer.md5
        return Sealing(cloud_key, customer)
    if extras.get(SSE):
        _require(cloud_key)
        return Sealing(cloud_key, None)
    return None


def sealed_record(sealing: Sealing, nonces: list[bytes]) -> dict[str, Any]:
    return {**sealing.record, "nonces": [cipher.b64(n) for n in nonces]}


def open_record(
    cloud_key: bytes,
    record: dict[str, Any],
    customer: CustomerKey | None,
    *,
    missing: str = STORED_ENCRYPTED,
    wrong: S3Error | None = None,
) -> bytes:
    """The data key of a stored record, opened with the cloud key or the request's customer key: a customer
    record without a key in the request is InvalidRequest, with another key AccessDenied (or `wrong`); a
    customer key for a cloud record is InvalidRequest."""
    if record.get("by") == "customer":
        if customer is None:
            raise S3Error("InvalidRequest", missing)
        if not cipher.same_key(customer.key, cipher.unb64(record["salt"]), cipher.unb64(record["check"])):
            raise wrong or S3Error("AccessDenied")
        key = cipher.unwrap(customer.key, cipher.unb64(record["wrapped"]))
    else:
        if customer is not None:
            raise S3Error("InvalidRequest", NOT_APPLICABLE)
        _require(cloud_key)
        key = cipher.unwrap(cloud_key, cipher.unb64(record["wrapped"]))
    if key is None:
        log.error(
            "walrus: a stored data key does not unwrap: wrapped by cloud key %s, this host's %s is %s "
            "(was the key file replaced?)",
            record.get("kid", "?"),
            CLOUD_KEY_FILE,
            key_id(cloud_key),
        )
        raise S3Error("InternalError", "the object's data key cannot be opened")
    return key


def _require(cloud_key: bytes) -> None:
    if not cloud_key:
        raise S3Error(
            "ServiceUnavailable", "This Walrus host does not hold the cloud's encryption key (see its log)."
        )


def key_id(cloud_key: bytes) -> str:
    """A short public name of the cloud key (which key wrapped a record, for the log when one does not open)."""
    return hashlib.sha256(b"walrus-sse-key-id" + cloud_key).hexdigest()[:16]


def object_key(
    cloud_key: bytes, o: ObjectRow, customer: CustomerKey | None
) -> tuple[bytes, list[bytes]] | None:
    """The data key and the pieces' nonces of a version (None: stored plaintext, where a customer key in the
    request is InvalidRequest, as S3 answers)."""
    record = o.headers.get(SSE_KEY)
    if record is None:
        if customer is not None:
            raise S3Error("InvalidRequest", NOT_APPLICABLE)
        return None
    key = open_record(cloud_key, record, customer)
    return key, [cipher.unb64(n) for n in record["nonces"]]


def pieces(o: ObjectRow, first: int, length: int, nonces: list[bytes] | None) -> list[Piece]:
    """The pieces of the byte range [first, first+length) of a version: a whole file or its inline bytes, or the
    part files a multipart object is kept as, each with its nonce (None: plaintext)."""
    if o.segments is not None:
        out: list[Piece] = []
        start = 0
        sizes = o.parts or []
        for i, (segment, size) in enumerate(zip(o.segments, sizes, strict=True)):
            lo, hi = max(first, start), min(first + length, start + size)
            if lo < hi:
                out.append((segment, lo - start, hi - lo, nonces[i] if nonces is not None else None))
            start += size
        return out
    source: str | bytes | None = o.storage_id if o.storage_id is not None else o.data
    if source is None:
        raise S3Error("InternalError", "inline object read without its bytes")
    return [(source, first, length, nonces[0] if nonces is not None else None)]
