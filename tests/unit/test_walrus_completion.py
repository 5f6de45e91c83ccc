"""CompleteMultipartUpload's pure computations (euca/roles/walrus/completion.py): which parts, the rules they must
meet, the multipart ETag and the checksum of the whole object."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from awscrt import checksums as crt

from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import completion
from euca.roles.walrus.meta import PartRow

MIN = s3.MIN_PART_SIZE


def _part(n: int, data: bytes = b"", size: int | None = None, checksum: str | None = None) -> PartRow:
    return PartRow(
        part_number=n,
        size=len(data) if size is None else size,
        etag=hashlib.md5(data or str(n).encode()).hexdigest(),
        storage_id=f"file{n}",
        checksum=checksum,
        last_modified=0.0,
    )


def _want(p: PartRow, checksums: dict[str, str] | None = None) -> s3.CompletedPart:
    return s3.CompletedPart(p.part_number, p.etag, checksums or {})


def _code(fn: object, *args: object) -> str:
    with pytest.raises(S3Error) as e:
        fn(*args)  # type: ignore[operator]
    return e.value.code


# -- which parts -----------------------------------------------------------------------------------------


def test_the_listed_parts_in_order_skipping_unlisted_ones() -> None:
    stored = [_part(1, size=MIN), _part(2, size=MIN), _part(3, size=10)]
    chosen = completion.chosen_parts([_want(stored[0]), _want(stored[2])], stored, "u", None)
    assert [p.part_number for p in chosen] == [1, 3]


def test_parts_out_of_order_are_refused() -> None:
    stored = [_part(1, size=MIN), _part(2, size=MIN)]
    assert (
        _code(completion.chosen_parts, [_want(stored[1]), _want(stored[0])], stored, "u", None)
        == "InvalidPartOrder"
    )


def test_a_part_listed_twice_in_a_row_counts_once_with_its_last_entry() -> None:
    stored = [_part(1, size=MIN), _part(2, size=10)]
    stale = s3.CompletedPart(1, "0" * 32, {})
    chosen = completion.chosen_parts([stale, _want(stored[0]), _want(stored[1])], stored, "u", None)
    assert [p.part_number for p in chosen] == [1, 2]
    # ...but the last entry must match.
    assert _code(completion.chosen_parts, [_want(stored[0]), stale], stored, "u", None) == "InvalidPart"


def test_a_missing_part_or_another_etag_is_invalid() -> None:
    stored = [_part(1, size=MIN)]
    assert _code(completion.chosen_parts, [_want(_part(2))], stored, "u", None) == "InvalidPart"
    assert (
        _code(completion.chosen_parts, [s3.CompletedPart(1, "f" * 32, {})], stored, "u", None)
        == "InvalidPart"
    )


def test_a_listed_checksum_must_match_the_parts() -> None:
    stored = [_part(1, size=10, checksum="AAAAAA==")]
    ok = completion.chosen_parts([_want(stored[0], {"CRC32": "AAAAAA=="})], stored, "u", "CRC32")
    assert ok == stored
    # Without the upload's algorithm, or for another algorithm, a listed checksum is not compared.
    assert completion.chosen_parts([_want(stored[0], {"CRC32": "BBBBBB=="})], stored, "u", None) == stored
    assert completion.chosen_parts([_want(stored[0], {"SHA1": "x"})], stored, "u", "CRC32") == stored
    wrong = [_want(stored[0], {"CRC32": "BBBBBB=="})]
    assert _code(completion.chosen_parts, wrong, stored, "u", "CRC32") == "InvalidPart"


def test_every_part_but_the_last_must_be_at_least_the_minimum_size() -> None:
    stored = [_part(1, size=MIN - 1), _part(2, size=1)]
    assert _code(completion.chosen_parts, [_want(p) for p in stored], stored, "u", None) == "EntityTooSmall"
    # A small last part (or a single small part) is fine.
    assert completion.chosen_parts([_want(stored[0])], stored, "u", None) == [stored[0]]


# -- the ETag and the checksum -------------------------------------------------------------------------------


def test_multipart_etag_is_the_md5_of_the_part_md5s_and_the_count() -> None:
    parts = [_part(1, b"hello"), _part(2, b"world")]
    expected = hashlib.md5(hashlib.md5(b"hello").digest() + hashlib.md5(b"world").digest()).hexdigest() + "-2"
    assert completion.multipart_etag(parts) == expected
    one = completion.multipart_etag([_part(1, b"a")])
    assert one == hashlib.md5(bytes.fromhex("0cc175b9c0f1b6a831c399e269772661")).hexdigest() + "-1"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_composite_checksum_is_the_checksum_of_the_part_checksums() -> None:
    datas = [b"first part", b"second"]
    raws = [zlib.crc32(d).to_bytes(4, "big") for d in datas]
    parts = [_part(i + 1, d, checksum=_b64(r)) for i, (d, r) in enumerate(zip(datas, raws, strict=True))]
    expected = _b64(zlib.crc32(b"".join(raws)).to_bytes(4, "big")) + "-2"
    assert completion.multipart_checksum("CRC32", "COMPOSITE", parts) == expected
    sha = [hashlib.sha256(d).digest() for d in datas]
    parts = [_part(i + 1, d, checksum=_b64(r)) for i, (d, r) in enumerate(zip(datas, sha, strict=True))]
    assert (
        completion.multipart_checksum("SHA256", "COMPOSITE", parts)
        == _b64(hashlib.sha256(b"".join(sha)).digest()) + "-2"
    )


@pytest.mark.parametrize(
    ("algorithm", "crc", "width"),
    [("CRC32", zlib.crc32, 4), ("CRC32C", crt.crc32c, 4), ("CRC64NVME", crt.crc64nvme, 8)],
)
def test_full_object_checksum_is_the_crc_of_all_the_bytes(algorithm: str, crc: object, width: int) -> None:
    datas = [b"a" * 1000, b"bb" * 777, b"c"]
    parts = [
        _part(i + 1, d, checksum=_b64(crc(d).to_bytes(width, "big")))  # type: ignore[operator]
        for i, d in enumerate(datas)
    ]
    whole = crc(b"".join(datas)).to_bytes(width, "big")  # type: ignore[operator]
    assert completion.multipart_checksum(algorithm, "FULL_OBJECT", parts) == _b64(whole)


def test_no_checksum_without_an_algorithm_or_when_a_part_has_none() -> None:
    parts = [_part(1, b"a", checksum="AAAAAA=="), _part(2, b"b")]
    assert completion.multipart_checksum("CRC32", "COMPOSITE", parts) is None
    assert completion.multipart_checksum(None, None, parts[:1]) is None


def test_up_to_max_segments_parts_the_object_keeps_its_part_files() -> None:
    assert completion.kept_as_parts([_part(i) for i in range(1, completion.MAX_SEGMENTS + 1)])
    assert not completion.kept_as_parts([_part(i) for i in range(1, completion.MAX_SEGMENTS + 2)])
