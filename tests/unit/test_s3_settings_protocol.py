"""The pure pieces of issue 11's S3 settings: lifecycle documents and their arithmetic, object lock documents
and rules, lock headers, ownership / logging / encryption documents, the GetObjectAttributes answer."""

from __future__ import annotations

import calendar

import pytest

from euca.protocol import s3
from euca.protocol.s3 import S3Error

lc = s3.lifecycle
ol = s3.object_lock


def doc(inner: str, root: str = "LifecycleConfiguration") -> bytes:
    return f'<{root} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</{root}>'.encode()


def code_of(body: bytes, parse: object = lc.parse_lifecycle_body) -> str:
    with pytest.raises(S3Error) as e:
        parse(body)  # type: ignore[operator]
    return e.value.code


def test_lifecycle_round_trip() -> None:
    body = doc(
        "<Rule><ID>a</ID><Filter><And><Prefix>p/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></And></Filter>"
        "<Status>Enabled</Status><Expiration><Days>3</Days></Expiration>"
        "<NoncurrentVersionExpiration><NoncurrentDays>2</NoncurrentDays><NewerNoncurrentVersions>1"
        "</NewerNoncurrentVersions></NoncurrentVersionExpiration></Rule>"
    )
    rules = lc.parse_lifecycle_body(body)
    assert rules == [
        {
            "id": "a",
            "status": "Enabled",
            "filter": {"prefix": "p/", "tags": {"k": "v"}},
            "expiration": {"days": 3},
            "noncurrent": {"days": 2, "newer": 1},
        }
    ]
    assert lc.parse_lifecycle_body(lc.render_lifecycle(rules)) == rules


@pytest.mark.parametrize(
    ("inner", "code"),
    [
        ("<Rule><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>", "MalformedXML"),
        ("<Rule><Prefix/><Status>On</Status><Expiration><Days>1</Days></Expiration></Rule>", "MalformedXML"),
        ("<Rule><Prefix/><Status>Enabled</Status></Rule>", "InvalidRequest"),
        (
            "<Rule><Prefix/><Status>Enabled</Status><Expiration><Days>-1</Days></Expiration></Rule>",
            "InvalidArgument",
        ),
        (
            "<Rule><Prefix/><Status>Enabled</Status><Expiration><Date>20200101</Date></Expiration></Rule>",
            "MalformedXML",
        ),
        (
            "<Rule><Prefix/><Status>Enabled</Status><Expiration><Date>2020-01-01T10:00:00Z</Date></Expiration></Rule>",
            "InvalidArgument",
        ),
        (
            "<Rule><Prefix/><Filter/><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>",
            "MalformedXML",
        ),
        ("", "MalformedXML"),
    ],
)
def test_lifecycle_refusals(inner: str, code: str) -> None:
    assert code_of(doc(inner)) == code


def test_lifecycle_arithmetic() -> None:
    day = 86400.0
    created = calendar.timegm((2024, 3, 1, 15, 30, 0))
    # One day after 15:30 on the 1st is rounded up to midnight starting the 3rd, as S3 counts.
    assert lc.after_days(created, 1, day) == calendar.timegm((2024, 3, 3, 0, 0, 0))
    rules = [
        {"id": "late", "status": "Enabled", "filter": {"prefix": "", "tags": {}}, "expiration": {"days": 10}},
        {"id": "soon", "status": "Enabled", "filter": {"prefix": "a", "tags": {}}, "expiration": {"days": 2}},
        {"id": "off", "status": "Disabled", "filter": {"prefix": "", "tags": {}}, "expiration": {"days": 1}},
        {
            "id": "big",
            "status": "Enabled",
            "filter": {"prefix": "", "tags": {}, "gt": 100},
            "expiration": {"days": 1},
        },
    ]
    assert lc.current_expiry(rules, "abc", 5, None, created, day) == (
        calendar.timegm((2024, 3, 4, 0, 0, 0)),
        "soon",
    )
    assert lc.current_expiry(rules, "zzz", 5, None, created, day)[1] == "late"  # type: ignore[index]
    assert lc.current_expiry(rules, "zzz", 500, None, created, day)[1] == "big"  # type: ignore[index]
    header = lc.expiration_header((calendar.timegm((2024, 3, 4, 0, 0, 0)), "soon"))
    assert header == [("x-amz-expiration", 'expiry-date="Mon, 04 Mar 2024 00:00:00 GMT", rule-id="soon"')]
    tagged = {"id": "t", "status": "Enabled", "filter": {"prefix": "", "tags": {"k": "v"}}}
    assert lc.matches(tagged, "x", 1, {"k": "v", "o": "1"}) and not lc.matches(tagged, "x", 1, {"k": "w"})


def test_lock_configuration_documents() -> None:
    body = doc(
        "<ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode>"
        "<Years>2</Years></DefaultRetention></Rule>",
        "ObjectLockConfiguration",
    )
    conf = ol.parse_lock_configuration(body)
    assert conf == ol.LockConfiguration("COMPLIANCE", years=2)
    assert ol.parse_lock_configuration(ol.render_lock_configuration(conf)) == conf
    assert conf.default_until(0.0) == 730 * 86400
    bad = doc("<ObjectLockEnabled>Disabled</ObjectLockEnabled>", "ObjectLockConfiguration")
    assert code_of(bad, ol.parse_lock_configuration) == "MalformedXML"
    zero = doc(
        "<ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode>"
        "<Days>0</Days></DefaultRetention></Rule>",
        "ObjectLockConfiguration",
    )
    assert code_of(zero, ol.parse_lock_configuration) == "InvalidRetentionPeriod"


def test_retention_and_hold_documents() -> None:
    body = doc("<Mode>GOVERNANCE</Mode><RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate>", "Retention")
    mode, until = ol.parse_retention(body)
    assert mode == "GOVERNANCE" and until == calendar.timegm((2030, 1, 1, 0, 0, 0))
    assert ol.parse_retention(ol.render_retention("GOVERNANCE", until)) == (mode, until)
    assert (
        code_of(
            doc("<Mode>WHATEVER</Mode><RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate>", "Retention"),
            ol.parse_retention,
        )
        == "MalformedXML"
    )
    assert ol.parse_legal_hold(doc("<Status>ON</Status>", "LegalHold")) == "ON"
    assert code_of(doc("<Status>on</Status>", "LegalHold"), ol.parse_legal_hold) == "MalformedXML"


def test_lock_rules() -> None:
    now = 1000.0
    assert not ol.may_remove(None, None, "ON", True, now)
    assert not ol.may_remove("COMPLIANCE", 2000.0, None, True, now)
    assert not ol.may_remove("GOVERNANCE", 2000.0, None, False, now)
    assert ol.may_remove("GOVERNANCE", 2000.0, None, True, now)
    assert ol.may_remove("COMPLIANCE", 500.0, None, False, now)  # expired
    assert ol.may_change_retention("COMPLIANCE", 2000.0, "COMPLIANCE", 3000.0, False, now)
    assert not ol.may_change_retention("COMPLIANCE", 2000.0, "COMPLIANCE", 1500.0, True, now)
    assert not ol.may_change_retention("GOVERNANCE", 2000.0, "COMPLIANCE", 2000.0, False, now)
    assert ol.may_change_retention("GOVERNANCE", 2000.0, "COMPLIANCE", 2000.0, True, now)


def test_lock_headers() -> None:
    h = s3.lock_headers
    req = h.parse_lock_headers(
        {
            "x-amz-object-lock-mode": "GOVERNANCE",
            "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00.000Z",
        }
    )
    assert req.mode == "GOVERNANCE" and req.until == calendar.timegm((2030, 1, 1, 0, 0, 0)) and req
    assert not h.parse_lock_headers({})
    for bad in (
        {"x-amz-object-lock-mode": "GOVERNANCE"},
        {"x-amz-object-lock-mode": "NOPE", "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00Z"},
        {"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "tomorrow"},
        {"x-amz-object-lock-legal-hold": "yes"},
    ):
        with pytest.raises(S3Error) as e:
            h.parse_lock_headers(bad)
        assert e.value.code == "InvalidArgument"
    assert h.parse_iso8601("2030-01-01T01:00:00+01:00") == calendar.timegm((2030, 1, 1, 0, 0, 0))
    with pytest.raises(S3Error) as e:
        h.refuse_sse_c_in_clear({"x-amz-server-side-encryption-customer-key": "k"}, secure=False)
    assert e.value.code == "InvalidRequest"


def test_bucket_setting_documents() -> None:
    bs = s3.bucket_settings
    own = doc("<Rule><ObjectOwnership>ObjectWriter</ObjectOwnership></Rule>", "OwnershipControls")
    assert bs.parse_ownership_controls(own) == "ObjectWriter"
    assert (
        bs.parse_ownership_controls(bs.render_ownership_controls("BucketOwnerEnforced"))
        == "BucketOwnerEnforced"
    )
    log = doc(
        "<LoggingEnabled><TargetBucket>t</TargetBucket><TargetPrefix>p/</TargetPrefix></LoggingEnabled>",
        "BucketLoggingStatus",
    )
    assert bs.parse_logging(log) == {"bucket": "t", "prefix": "p/"}
    assert bs.parse_logging(bs.render_logging(None)) is None
    enc = doc(
        "<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
        "</ApplyServerSideEncryptionByDefault></Rule>",
        "ServerSideEncryptionConfiguration",
    )
    assert bs.parse_encryption(enc) == {"algorithm": "AES256", "bucket_key": False}
    assert bs.parse_encryption(bs.render_encryption({"algorithm": "AES256"}))["algorithm"] == "AES256"
    with pytest.raises(S3Error) as e:
        bs.parse_object_attributes("ETag,Colour")
    assert e.value.code == "InvalidArgument"
    attrs = bs.ObjectAttributes(
        "e", 7, "CRC32", "AAAA", "FULL_OBJECT", [(1, 4, "x"), (2, 3, "y")], wanted=("ObjectParts", "Checksum")
    )
    out = bs.render_object_attributes(attrs, max_parts=1).decode()
    assert "<ChecksumCRC32>AAAA</ChecksumCRC32>" in out and "<IsTruncated>true</IsTruncated>" in out
    assert "<PartNumber>1</PartNumber>" in out and "<PartNumber>2</PartNumber>" not in out
    plain = bs.ObjectAttributes("e", 7, parts=[(1, 4, None), (2, 3, None)], wanted=("ObjectParts",))
    out = bs.render_object_attributes(plain).decode()
    assert "<PartsCount>2</PartsCount>" in out and "<Part>" not in out


def test_access_log_line() -> None:
    line = s3.bucket_settings.access_log_line(
        bucket_owner="owner",
        bucket="b",
        when=calendar.timegm((2024, 3, 1, 15, 30, 0)),
        remote_ip="10.0.0.1",
        requester=None,
        request_id="RID",
        operation="REST.GET.OBJECT",
        key="a b",
        request_uri='GET /b/a%20b?x="y" HTTP/1.1',
        status=404,
        error_code="NoSuchKey",
        bytes_sent=120,
        object_size=None,
        total_ms=3,
        referer=None,
        user_agent="curl/8",
        version_id=None,
        host_id="HID",
        signature_version=None,
        auth_type=None,
        host_header="h",
    )
    assert line.startswith("owner b [01/Mar/2024:15:30:00 +0000] 10.0.0.1 - RID REST.GET.OBJECT a%20b ")
    assert '"GET /b/a%20b?x=%22y%22 HTTP/1.1" 404 NoSuchKey 120 - 3 - "-" "curl/8" - HID' in line


def test_iso8601_truncates_to_the_millisecond_and_never_goes_back() -> None:
    from euca.protocol.s3.wire import iso8601

    second = calendar.timegm((2030, 1, 1, 0, 0, 12))
    assert iso8601(second + 0.9996) == "2030-01-01T00:00:12.999Z"  # was "...12.000Z", a second early
    assert iso8601(second + 0.5) == "2030-01-01T00:00:12.500Z"
    assert iso8601(second) == "2030-01-01T00:00:12.000Z"
