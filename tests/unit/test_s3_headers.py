"""The response header builders of euca/protocol/s3/headers.py: each gives what Walrus's handlers build by hand."""

from __future__ import annotations

import pytest

from euca.protocol import s3
from euca.protocol.s3 import S3Error

LAST_MODIFIED = 1_700_000_000.75  # Tue, 14 Nov 2023 22:13:20 GMT


def test_etag_and_last_modified() -> None:
    assert s3.etag_header("abc") == ("ETag", '"abc"')
    assert s3.etag_header("abc-3") == ("ETag", '"abc-3"')
    assert s3.last_modified_header(LAST_MODIFIED) == ("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")


@pytest.mark.parametrize(
    ("versioning", "version_id", "expected"),
    [
        ("", "null", []),
        ("Enabled", "null", [("x-amz-version-id", "null")]),
        ("Suspended", "null", [("x-amz-version-id", "null")]),
        ("", "0123abcd", [("x-amz-version-id", "0123abcd")]),
        ("Enabled", "0123abcd", [("x-amz-version-id", "0123abcd")]),
    ],
)
def test_version_id_headers(versioning: str, version_id: str, expected: list[tuple[str, str]]) -> None:
    assert s3.version_id_headers(versioning, version_id) == expected
    copy = [("x-amz-copy-source-version-id", v) for _, v in expected]
    assert s3.copy_source_version_headers(versioning, version_id) == copy


def test_stored_object_headers() -> None:
    stored = s3.ObjectHeaders(content_type="text/plain", cache_control="no-cache", meta={"color": "blue"})
    assert s3.stored_object_headers("e", LAST_MODIFIED, stored, 2) == [
        ("ETag", '"e"'),
        ("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("Accept-Ranges", "bytes"),
        ("Content-Type", "text/plain"),
        ("Cache-Control", "no-cache"),
        ("x-amz-meta-color", "blue"),
        ("x-amz-tagging-count", "2"),
    ]
    # No stored Content-Type: S3's default; no tags: no count.
    assert s3.stored_object_headers("e", LAST_MODIFIED, s3.ObjectHeaders(), 0) == [
        ("ETag", '"e"'),
        ("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("Accept-Ranges", "bytes"),
        ("Content-Type", "binary/octet-stream"),
    ]


def test_checksum_headers() -> None:
    assert s3.checksum_headers("CRC32", "AAAA") == [("x-amz-checksum-crc32", "AAAA")]
    assert s3.checksum_headers("CRC64NVME", "AAAA", "FULL_OBJECT") == [
        ("x-amz-checksum-crc64nvme", "AAAA"),
        ("x-amz-checksum-type", "FULL_OBJECT"),
    ]
    assert s3.checksum_headers(None, "AAAA") == []
    assert s3.checksum_headers("CRC32", None, "COMPOSITE") == []
    headers = [("ETag", '"e"'), ("x-amz-checksum-crc32", "AAAA"), ("x-amz-checksum-type", "COMPOSITE")]
    assert s3.without_checksum_headers(headers) == [("ETag", '"e"')]
    assert s3.upload_checksum_headers("SHA256", "COMPOSITE") == [
        ("x-amz-checksum-algorithm", "SHA256"),
        ("x-amz-checksum-type", "COMPOSITE"),
    ]
    assert s3.upload_checksum_headers("SHA256", None) == [
        ("x-amz-checksum-algorithm", "SHA256"),
        ("x-amz-checksum-type", ""),
    ]
    assert s3.upload_checksum_headers(None, "COMPOSITE") == []


def test_delete_headers() -> None:
    assert s3.delete_marker_headers("v1") == [("x-amz-delete-marker", "true"), ("x-amz-version-id", "v1")]
    assert s3.delete_headers(None, False) == []
    assert s3.delete_headers("v1", False) == [("x-amz-version-id", "v1")]
    assert s3.delete_headers("v2", True) == [("x-amz-version-id", "v2"), ("x-amz-delete-marker", "true")]


def test_select_span_whole_and_range() -> None:
    assert s3.select_span(10, None, None, None) == s3.Span(200, 0, 10, [])
    assert s3.select_span(10, None, None, s3.ByteRange(2, 4)) == s3.Span(
        206, 2, 3, [("Content-Range", "bytes 2-4/10")]
    )
    assert s3.select_span(10, None, None, s3.ByteRange(None, None, 3)) == s3.Span(
        206, 7, 3, [("Content-Range", "bytes 7-9/10")]
    )
    assert s3.select_span(10, None, None, s3.ByteRange(5, None)).headers == [
        ("Content-Range", "bytes 5-9/10")
    ]
    with pytest.raises(S3Error) as e:
        s3.select_span(10, None, None, s3.ByteRange(10, None))
    assert e.value.code == "InvalidRange" and e.value.status == 416
    assert s3.content_range_header(0, 0, 1) == ("Content-Range", "bytes 0-0/1")


def test_select_span_part_number() -> None:
    parts = [5, 5, 2]
    assert s3.select_span(12, parts, 2, None) == s3.Span(
        206, 5, 5, [("x-amz-mp-parts-count", "3"), ("Content-Range", "bytes 5-9/12")]
    )
    assert s3.select_span(12, parts, 3, None).headers[-1] == ("Content-Range", "bytes 10-11/12")
    # A part number wins over a Range, as in the handler.
    assert s3.select_span(12, parts, 1, s3.ByteRange(0, 0)).length == 5
    # A single-part object is its own part 1, answered whole (200, no Content-Range).
    assert s3.select_span(7, None, 1, None) == s3.Span(200, 0, 7, [("x-amz-mp-parts-count", "1")])
    for bad in ((12, parts, 4), (7, None, 2)):
        with pytest.raises(S3Error) as e:
            s3.select_span(bad[0], bad[1], bad[2], None)
        assert (e.value.code, e.value.status) == ("InvalidPartNumber", 416)


def test_apply_overrides() -> None:
    headers = [("ETag", '"e"'), ("Content-Type", "text/plain"), ("Cache-Control", "no-cache")]
    out = s3.apply_overrides(headers, [("Content-Type", "a/b"), ("Expires", "never")])
    assert out == [
        ("ETag", '"e"'),
        ("Cache-Control", "no-cache"),
        ("Content-Type", "a/b"),
        ("Expires", "never"),
    ]
    assert headers[1] == ("Content-Type", "text/plain")  # the input is not changed (it may be a cached list)
    assert s3.apply_overrides(headers, []) is headers
    lower = s3.apply_overrides([("content-type", "x")], [("Content-Type", "y")])
    assert lower == [("Content-Type", "y")]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("gzip", "gzip"),
        ("deflate, gzip", "deflate, gzip"),
        ("deflate,gzip", "deflate,gzip"),
        ("aws-chunked", None),
        ("gzip,aws-chunked", "gzip"),
        ("aws-chunked, deflate, gzip", "deflate, gzip"),
        ("", None),
    ],
)
def test_content_encoding_kept_as_sent_without_aws_chunked(sent: str, stored: str | None) -> None:
    headers = s3.parse_object_headers({"content-encoding": sent})
    assert headers.content_encoding == stored
