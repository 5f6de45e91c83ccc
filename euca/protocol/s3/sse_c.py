"""SSE-C (server-side encryption with a customer-provided key) as request and response headers, sans-I/O.

A request names its key with x-amz-server-side-encryption-customer-algorithm / -key / -key-MD5 (and a copy
its source's key with the same names under x-amz-copy-source-); S3 checks the three together and answers
InvalidArgument (or InvalidEncryptionAlgorithmError) for what does not fit, before anything is read."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.wire import HeaderMap

PREFIX = "x-amz-server-side-encryption-customer-"
SOURCE_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"
_NEEDS = "Requests specifying Server Side Encryption with Customer provided keys must provide "


@dataclass(frozen=True, slots=True)
class CustomerKey:
    """A customer's AES-256 key as sent (kept only for the request) and its MD5 (base64, as S3 echoes it)."""

    key: bytes
    md5: str


def parse_customer_key(h: HeaderMap, prefix: str = PREFIX) -> CustomerKey | None:
    """The customer key a request carries under `prefix` (None: no such headers), or the error S3 gives."""
    algorithm = h.get(prefix + "algorithm")
    encoded = h.get(prefix + "key")
    md5 = h.get(prefix + "key-md5")
    if algorithm is None and encoded is None and md5 is None:
        return None
    if algorithm is None:
        raise _invalid(prefix + "algorithm", _NEEDS + "a valid encryption algorithm.")
    if algorithm != "AES256":
        raise S3Error(
            "InvalidEncryptionAlgorithmError",
            "The encryption request you specified is not valid. The valid value is AES256.",
            ArgumentName=prefix + "algorithm",
            ArgumentValue=algorithm[:64],
        )
    if encoded is None:
        raise _invalid(prefix + "key", _NEEDS + "an appropriate secret key.")
    if md5 is None:
        raise _invalid(prefix + "key-MD5", _NEEDS + "the client calculated MD5 of the secret key.")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise _invalid(prefix + "key", "The secret key was invalid for the specified algorithm.")
    if base64.b64encode(hashlib.md5(key).digest()).decode() != md5.strip():
        raise _invalid(
            prefix + "key-MD5", "The calculated MD5 hash of the key did not match the hash that was provided."
        )
    return CustomerKey(key, md5.strip())


def _invalid(header: str, message: str) -> S3Error:
    return S3Error("InvalidArgument", message, ArgumentName=header)


def response_headers(md5: str) -> list[tuple[str, str]]:
    """What a response about an SSE-C object echoes: the algorithm and the key's MD5 (never the key)."""
    return [
        ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
        ("x-amz-server-side-encryption-customer-key-MD5", md5),
    ]


def refuse_with_sse(h: HeaderMap, customer: CustomerKey | None) -> None:
    """A customer key and x-amz-server-side-encryption in one request: S3 refuses the mix."""
    if customer is not None and "x-amz-server-side-encryption" in h:
        raise S3Error(
            "InvalidArgument",
            "Server Side Encryption with Customer provided key is incompatible with the encryption method "
            "specified",
            ArgumentName="x-amz-server-side-encryption",
        )
