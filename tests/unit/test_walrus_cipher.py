"""The pure arithmetic of server-side encryption (walrus/cipher.py, encryption.pieces) and SSE-C's header
rules (protocol/s3/sse_c.py)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from euca.core.store import Store, open_store
from euca.protocol.s3 import S3Error, sse_c
from euca.roles.walrus import cipher, encryption, meta
from euca.roles.walrus.meta import ObjectRow


def test_ctr_at_any_offset_matches_the_stream_from_the_start() -> None:
    key, nonce = cipher.new_key(), cipher.new_nonce()
    data = os.urandom(5000)
    whole = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor().update(data)
    assert cipher.crypt(key, nonce, 0, data) == whole
    for first in (0, 1, 15, 16, 17, 31, 32, 1000, 4999):
        assert cipher.crypt(key, nonce, first, data[first:]) == whole[first:], first
        assert cipher.crypt(key, nonce, first, whole[first : first + 7]) == data[first : first + 7]


def test_keystream_in_chunks_equals_one_pass() -> None:
    key, nonce = cipher.new_key(), cipher.new_nonce()
    data = os.urandom(3000)
    ks = cipher.Keystream(key, nonce, 5)
    chunks = [ks.apply(data[i : i + 333]) for i in range(0, len(data), 333)]
    assert b"".join(chunks) == cipher.crypt(key, nonce, 5, data)


def test_counter_wraps_at_2_128() -> None:
    top = b"\xff" * 16
    assert cipher.counter_block(top, 16) == bytes(16)
    assert cipher.counter_block(bytes(16), 16 * 5 + 3) == (5).to_bytes(16, "big")


def test_wrapped_key_opens_only_with_its_key() -> None:
    kek, other, data_key = cipher.new_key(), cipher.new_key(), cipher.new_key()
    wrapped = cipher.wrap(kek, data_key)
    assert wrapped != data_key and len(wrapped) == 40
    assert cipher.unwrap(kek, wrapped) == data_key
    assert cipher.unwrap(other, wrapped) is None


def test_key_check_is_salted() -> None:
    key, salt = os.urandom(32), os.urandom(16)
    check = cipher.key_check(key, salt)
    assert cipher.same_key(key, salt, check)
    assert not cipher.same_key(os.urandom(32), salt, check)
    assert cipher.key_check(key, os.urandom(16)) != check


def _row(**kw: object) -> ObjectRow:
    fields: dict[str, object] = dict(
        key="k",
        version_id="v",
        size=0,
        etag="e",
        last_modified=0.0,
        storage_id=None,
        owner_id="o",
        owner_name="o",
        headers={},
        checksum_algorithm=None,
        checksum_type=None,
        checksum=None,
        parts=None,
        acl=None,
        tags=None,
    )
    fields.update(kw)
    return ObjectRow(**fields)  # type: ignore[arg-type]


def test_pieces_of_a_range_across_parts_carry_each_parts_nonce() -> None:
    o = _row(size=30, segments=["a", "b", "c"], parts=[10, 10, 10])
    nonces = [b"1" * 16, b"2" * 16, b"3" * 16]
    assert encryption.pieces(o, 5, 20, nonces) == [
        ("a", 5, 5, nonces[0]),
        ("b", 0, 10, nonces[1]),
        ("c", 0, 5, nonces[2]),
    ]
    assert encryption.pieces(o, 10, 10, None) == [("b", 0, 10, None)]
    one = _row(size=10, storage_id="s")
    assert encryption.pieces(one, 3, 4, [nonces[0]]) == [("s", 3, 4, nonces[0])]
    inline = _row(size=3, data=b"abc")
    assert encryption.pieces(inline, 1, 2, None) == [(b"abc", 1, 2, None)]


def _headers(key: bytes, md5: str | None = None, algorithm: str = "AES256") -> dict[str, str]:
    h = {
        "x-amz-server-side-encryption-customer-algorithm": algorithm,
        "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
    }
    h["x-amz-server-side-encryption-customer-key-md5"] = (
        md5 or base64.b64encode(hashlib.md5(key).digest()).decode()
    )
    return h


def test_customer_key_headers() -> None:
    key = os.urandom(32)
    parsed = sse_c.parse_customer_key(_headers(key))
    assert parsed is not None and parsed.key == key
    assert sse_c.parse_customer_key({}) is None
    source = {k.replace("x-amz-", "x-amz-copy-source-"): v for k, v in _headers(key).items()}
    assert sse_c.parse_customer_key(source, sse_c.SOURCE_PREFIX) == parsed


@pytest.mark.parametrize(
    "headers, code",
    [
        (_headers(os.urandom(32), md5="AAAAAAAAAAAAAAAAAAAAAA=="), "InvalidArgument"),
        (_headers(os.urandom(16)), "InvalidArgument"),
        (_headers(os.urandom(32), algorithm="AES128"), "InvalidEncryptionAlgorithmError"),
        ({"x-amz-server-side-encryption-customer-algorithm": "AES256"}, "InvalidArgument"),
        ({"x-amz-server-side-encryption-customer-key": "AAAA"}, "InvalidArgument"),
        (
            {
                "x-amz-server-side-encryption-customer-algorithm": "AES256",
                "x-amz-server-side-encryption-customer-key": base64.b64encode(os.urandom(32)).decode(),
            },
            "InvalidArgument",
        ),
    ],
)
def test_customer_key_refusals(headers: dict[str, str], code: str) -> None:
    with pytest.raises(S3Error) as e:
        sse_c.parse_customer_key(headers)
    assert e.value.code == code and e.value.status == 400


def test_customer_key_with_sse_header_is_refused() -> None:
    key = os.urandom(32)
    h = {**_headers(key), "x-amz-server-side-encryption": "AES256"}
    with pytest.raises(S3Error) as e:
        sse_c.refuse_with_sse(h, sse_c.parse_customer_key(h))
    assert e.value.code == "InvalidArgument"


def test_a_record_under_another_cloud_key_is_an_internal_error_naming_both_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new = cipher.new_key(), cipher.new_key()
    sealing = encryption.Sealing(old, None)
    record = encryption.sealed_record(sealing, [cipher.new_nonce()])
    assert encryption.open_record(old, record, None) == sealing.key
    with pytest.raises(S3Error) as e:
        encryption.open_record(new, record, None)
    assert e.value.code == "InternalError"
    assert encryption.key_id(old) in caplog.text and encryption.key_id(new) in caplog.text


def test_customer_records_open_only_with_their_key() -> None:
    key = os.urandom(32)
    customer = sse_c.CustomerKey(key, base64.b64encode(hashlib.md5(key).digest()).decode())
    sealing = encryption.Sealing(cipher.new_key(), customer)
    assert base64.b64encode(key).decode() not in str(sealing.record)  # the customer key is never kept
    assert encryption.open_record(b"", sealing.record, customer) == sealing.key
    other = sse_c.CustomerKey(os.urandom(32), "x")
    for who, code in ((other, "AccessDenied"), (None, "InvalidRequest")):
        with pytest.raises(S3Error) as e:
            encryption.open_record(b"", sealing.record, who)
        assert e.value.code == code


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store("sqlite:state.db", tmp_path)
    s.migrate("walrus", meta.SCHEMA)
    yield s
    s.close()


async def test_the_first_hosts_cloud_key_is_the_clouds(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A second Walrus host with a key of its own would write what the others cannot read: it encrypts and
    opens nothing with it (ServiceUnavailable), and the log says which file to copy."""
    first, other = cipher.new_key(), cipher.new_key()
    assert await encryption.cloud_key_of_the_cloud(store, first) == first
    assert await encryption.cloud_key_of_the_cloud(store, other) == b""
    assert encryption.key_id(first) in caplog.text and encryption.CLOUD_KEY_FILE in caplog.text
    assert await encryption.cloud_key_of_the_cloud(store, first) == first  # a restart of the first host
    with pytest.raises(S3Error) as e:
        encryption.sealing_for_write(b"", {encryption.SSE: "AES256"}, None)
    assert e.value.code == "ServiceUnavailable" and e.value.status == 503
    record = encryption.sealed_record(encryption.Sealing(first, None), [cipher.new_nonce()])
    with pytest.raises(S3Error) as e:
        encryption.open_record(b"", record, None)
    assert e.value.code == "ServiceUnavailable"
    assert encryption.sealing_for_write(b"", {}, None) is None  # plaintext writes go on
