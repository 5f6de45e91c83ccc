"""Server-side encryption's arithmetic, pure (no I/O): data keys wrapped by a key-encryption key, AES-256-CTR
at any byte offset, and the salted check of a customer key.

Each object (or multipart upload) has its own random 256-bit data key, kept only wrapped (AES key wrap, RFC
3394) by the cloud key (SSE-S3) or by the customer's key (SSE-C, never stored). Each piece of bytes (a whole
object, or one part of a multipart object) is encrypted with AES-256-CTR from its own random 128-bit initial
counter block (its nonce): the block at byte offset `o` is nonce + o // 16, so a range is decrypted from where
it starts, without reading what comes before it, and two pieces under one key never share a keystream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

KEY_BYTES = 32
NONCE_BYTES = 16
BLOCK = 16
_COUNTER_SPACE = 1 << 128


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def wrap(kek: bytes, data_key: bytes) -> bytes:
    """The data key wrapped by a key-encryption key (the cloud key or a customer key)."""
    return aes_key_wrap(kek, data_key)


def unwrap(kek: bytes, wrapped: bytes) -> bytes | None:
    """The data key, or None when `kek` is not the key it was wrapped with (RFC 3394's integrity check)."""
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        return None


def counter_block(nonce: bytes, offset: int) -> bytes:
    """The CTR counter block that encrypts the 16-byte block holding byte `offset` of a piece."""
    value = (int.from_bytes(nonce, "big") + offset // BLOCK) % _COUNTER_SPACE
    return value.to_bytes(NONCE_BYTES, "big")


class Keystream:
    """AES-256-CTR over one piece from byte `offset` on: `apply` encrypts or decrypts (the same operation) the
    next bytes, chunk after chunk, never holding more than the chunk it is given."""

    __slots__ = ("_ctx",)

    def __init__(self, key: bytes, nonce: bytes, offset: int = 0):
        self._ctx: Any = Cipher(algorithms.AES(key), modes.CTR(counter_block(nonce, offset))).encryptor()
        skip = offset % BLOCK
        if skip:
            self._ctx.update(bytes(skip))  # the bytes of the first block before `offset`

    def apply(self, data: bytes | memoryview) -> bytes:
        return bytes(self._ctx.update(data))


def crypt(key: bytes, nonce: bytes, offset: int, data: bytes) -> bytes:
    """Encrypt or decrypt `data`, which sits at byte `offset` of its piece."""
    return Keystream(key, nonce, offset).apply(data)


def key_check(customer_key: bytes, salt: bytes) -> bytes:
    """A salted HMAC of a customer key: what is stored to recognise the key again (the key never is)."""
    return hmac.new(salt, customer_key, hashlib.sha256).digest()


def same_key(customer_key: bytes, salt: bytes, check: bytes) -> bool:
    return hmac.compare_digest(key_check(customer_key, salt), check)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)
