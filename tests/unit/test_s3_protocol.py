"""euca/protocol/s3/ without sockets: endpoint parsing, conditions, ranges, XML bodies and rendering."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from euca.protocol import s3
from euca.protocol.s3 import S3Error


def parse(
    method: str, target: str, headers: dict[str, str] | None = None, vbucket: str | None = None
) -> object:
    path, _, query = target.partition("?")
    return s3.parse_request(method, path, query, {k.lower(): v for k, v in (headers or {}).items()}, vbucket)


def test_list_buckets_pages():
    assert parse("GET", "/") == s3.ListBuckets()
    ep = parse("GET", "/?max-buckets=2&continuation-token=abc&prefix=p-&bucket-region=r1")
    assert ep == s3.ListBuckets(2, "abc", "p-", "r1")
    for bad in ("0", "10001", "-1", "x", ""):
        with pytest.raises(S3Error) as e:
            parse("GET", f"/?max-buckets={bad}")
        assert e.value.code == "InvalidArgument"
    body = s3.render_list_buckets(s3.Owner("id", "name"), [], "tok", "p-")
    root = ET.fromstring(body)
    ns = {"s3": root.tag[1:].split("}")[0]} if root.tag.startswith("{") else {}
    find = (lambda name: root.find(f"s3:{name}", ns)) if ns else root.find
    assert find("ContinuationToken").text == "tok" and find("Prefix").text == "p-"
    plain = ET.fromstring(s3.render_list_buckets(s3.Owner("id", "name"), []))
    assert len(plain) == 2  # Owner and Buckets only


def test_service_and_bucket_endpoints():
    assert isinstance(parse("GET", "/"), s3.ListBuckets)
    assert isinstance(parse("PUT", "/b"), s3.CreateBucket)
    assert isinstance(parse("HEAD", "/b"), s3.HeadBucket)
    assert isinstance(parse("DELETE", "/b"), s3.DeleteBucket)
    assert isinstance(parse("GET", "/b?location"), s3.GetBucketLocation)
    assert isinstance(parse("PUT", "/b?versioning"), s3.PutBucketVersioning)
    assert isinstance(parse("GET", "/b?acl"), s3.GetBucketAcl)
    assert isinstance(
        parse("POST", "/b?delete", {"content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}), s3.DeleteObjects
    )
    assert isinstance(parse("GET", "/b?uploads"), s3.ListMultipartUploads)
    ep = parse("GET", "/b?versions&prefix=p&key-marker=k&max-keys=5")
    assert isinstance(ep, s3.ListObjectVersions) and ep.prefix == "p" and ep.max_keys == 5
    ep = parse("GET", "/b?list-type=2&continuation-token=t&start-after=s&fetch-owner=true&encoding-type=url")
    assert isinstance(ep, s3.ListObjectsV2)
    assert (ep.continuation_token, ep.start_after, ep.fetch_owner, ep.encoding_type) == (
        "t",
        "s",
        True,
        "url",
    )
    ep = parse("GET", "/b?marker=m&delimiter=%2F&max-keys=5000")
    assert isinstance(ep, s3.ListObjects) and ep.delimiter == "/" and ep.max_keys == 1000


def test_object_endpoints():
    ep = parse(
        "GET",
        "/b/dir/a%20b?versionId=v1",
        {"Range": "bytes=1-2", "If-Match": '"e"', "x-amz-checksum-mode": "ENABLED"},
    )
    assert isinstance(ep, s3.GetObject) and ep.key == "dir/a b" and ep.version_id == "v1"
    assert ep.range == s3.ByteRange(1, 2) and ep.conditions.if_match == '"e"' and ep.checksum_mode
    assert isinstance(parse("HEAD", "/b/k"), s3.HeadObject)
    ep = parse(
        "PUT",
        "/b/k",
        {
            "Content-Type": "text/plain",
            "x-amz-meta-Color": "blue",
            "x-amz-acl": "public-read",
            "Content-Encoding": "gzip,aws-chunked",
            "x-amz-decoded-content-length": "5",
        },
    )
    assert isinstance(ep, s3.PutObject)
    assert ep.headers.meta == {"color": "blue"} and ep.headers.content_encoding == "gzip"
    assert ep.acl.canned == "public-read" and ep.content_length == 5
    ep = parse(
        "PUT", "/b/k", {"x-amz-copy-source": "/src/a%2Fb?versionId=x", "x-amz-metadata-directive": "REPLACE"}
    )
    assert isinstance(ep, s3.CopyObject) and (ep.source.bucket, ep.source.key, ep.source.version_id) == (
        "src",
        "a/b",
        "x",
    )
    assert ep.metadata_directive == "REPLACE"
    assert isinstance(parse("POST", "/b/k?uploads"), s3.CreateMultipartUpload)
    ep = parse("PUT", "/b/k?partNumber=3&uploadId=u")
    assert isinstance(ep, s3.UploadPart) and ep.part_number == 3 and ep.upload_id == "u"
    assert isinstance(
        parse("PUT", "/b/k?partNumber=3&uploadId=u", {"x-amz-copy-source": "s/k"}), s3.UploadPartCopy
    )
    assert isinstance(parse("POST", "/b/k?uploadId=u"), s3.CompleteMultipartUpload)
    assert isinstance(parse("DELETE", "/b/k?uploadId=u"), s3.AbortMultipartUpload)
    assert isinstance(parse("GET", "/b/k?uploadId=u"), s3.ListParts)
    assert isinstance(parse("PUT", "/b/k?tagging"), s3.PutObjectTagging)
    assert isinstance(parse("GET", "/b/k?acl"), s3.GetObjectAcl)


def test_virtual_host_bucket():
    ep = parse("GET", "/some/key", vbucket="vb")
    assert isinstance(ep, s3.GetObject) and (ep.bucket, ep.key) == ("vb", "some/key")
    assert isinstance(parse("GET", "/", vbucket="vb"), s3.ListObjects)


def test_unsupported_and_bad_input():
    assert isinstance(parse("GET", "/b?replication"), s3.Unsupported)
    assert isinstance(parse("DELETE", "/b/k?retention"), s3.Unsupported)
    with pytest.raises(S3Error) as e:
        parse("PUT", "/b/k?partNumber=0&uploadId=u")
    assert e.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as e:
        parse("PUT", "/b/k", {"Content-MD5": "short"})
    assert e.value.code == "InvalidDigest"
    with pytest.raises(S3Error) as e:
        parse("PUT", "/b/k", {"x-amz-acl": "weird"})
    assert e.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as e:
        parse("GET", "/b/" + "k" * 1025)
    assert e.value.code == "KeyTooLongError"
    with pytest.raises(S3Error) as e:
        parse("GET", "/b?encoding-type=base64")
    assert e.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as e:
        parse("PATCH", "/b/k")
    assert e.value.status == 405


def test_ranges():
    assert s3.parse_range("bytes=0-9").resolve(100) == (0, 9)  # type: ignore[union-attr]
    assert s3.parse_range("bytes=90-").resolve(100) == (90, 99)  # type: ignore[union-attr]
    assert s3.parse_range("bytes=-10").resolve(100) == (90, 99)  # type: ignore[union-attr]
    assert s3.parse_range("bytes=-200").resolve(100) == (0, 99)  # type: ignore[union-attr]
    assert s3.parse_range("bytes=50-500").resolve(100) == (50, 99)  # type: ignore[union-attr]
    for ignored in ("bytes=5-1", "bytes=a-b", "items=0-1", "bytes=0-1,3-4", ""):
        assert s3.parse_range(ignored) is None
    with pytest.raises(S3Error) as e:
        s3.parse_range("bytes=100-").resolve(100)  # type: ignore[union-attr]
    assert e.value.status == 416


def test_condition_precedence():
    lm = 1_000_000.0
    c = s3.Conditions
    s3.evaluate_conditions(c(if_match='"e"', if_unmodified_since=lm - 10), "e", lm)
    with pytest.raises(S3Error) as e:
        s3.evaluate_conditions(c(if_match='"x"'), "e", lm)
    assert e.value.status == 412
    with pytest.raises(S3Error) as e:
        s3.evaluate_conditions(c(if_unmodified_since=lm - 10), "e", lm)
    assert e.value.status == 412
    with pytest.raises(S3Error) as e:
        s3.evaluate_conditions(c(if_none_match='"e"'), "e", lm)
    assert e.value.status == 304
    s3.evaluate_conditions(c(if_none_match='"x"', if_modified_since=lm + 10), "e", lm)
    with pytest.raises(S3Error) as e:
        s3.evaluate_conditions(c(if_modified_since=lm + 10), "e", lm)
    assert e.value.status == 304
    with pytest.raises(S3Error) as e:
        s3.evaluate_conditions(c(if_modified_since=lm + 10), "e", lm, mode="copy")
    assert e.value.status == 412
    with pytest.raises(S3Error) as e:
        s3.evaluate_conditions(c(if_none_match="*"), "e", lm, mode="write")
    assert e.value.status == 412


def test_bucket_names():
    assert s3.valid_bucket_name("my-bucket.1")
    for bad in ("ab", "Ab-c", "a_b", "-ab", "ab-", "a..b", "1.2.3.4", "x" * 64, "xn--abc"):
        assert not s3.valid_bucket_name(bad)


def test_xml_bodies():
    parts = s3.parse_complete_body(
        b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><PartNumber>1</PartNumber>'
        b'<ETag>"abc"</ETag><ChecksumCRC32>AAAA</ChecksumCRC32></Part></CompleteMultipartUpload>'
    )
    assert parts == [s3.CompletedPart(1, "abc", {"CRC32": "AAAA"})]
    items, quiet = s3.parse_delete_objects_body(
        b"<Delete><Quiet>true</Quiet><Object><Key>a</Key><VersionId>v</VersionId></Object></Delete>"
    )
    assert quiet and items == [s3.ObjectIdentifier("a", "v")]
    assert (
        s3.parse_versioning_body(
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
        )
        == "Enabled"
    )
    assert s3.parse_tagging_body(
        b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>"
    ) == {"k": "v"}
    assert (
        s3.parse_create_bucket_body(
            b"<CreateBucketConfiguration><LocationConstraint>r</LocationConstraint>"
            b"</CreateBucketConfiguration>"
        )
        == "r"
    )
    for bad in (b"", b"<nope", b"<Other/>"):
        with pytest.raises(S3Error):
            s3.parse_complete_body(bad)
    policy = s3.parse_acl_body(
        b"<AccessControlPolicy><Owner><ID>o</ID></Owner><AccessControlList><Grant>"
        b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">'
        b"<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant>"
        b"</AccessControlList></AccessControlPolicy>"
    )
    assert policy.owner_id == "o" and policy.grants == [s3.Grant("READ", "Group", s3.ALL_USERS)]


def test_rendering():
    err = S3Error("NoSuchKey", Key="a&b")
    root = ET.fromstring(s3.render_error(err, "/b/a&b", "RID", "HID"))
    assert root.findtext("Code") == "NoSuchKey" and root.findtext("Key") == "a&b"
    assert root.findtext("RequestId") == "RID" and root.findtext("Resource") == "/b/a&b"
    assert err.status == 404
    listing = s3.Listing([s3.ObjectEntry("a b", 0.0, "e", 1)], ["p/"], True, "a b")
    body = s3.render_list_objects_v2(s3.ListObjectsV2("bk", encoding_type="url"), listing, "tok")
    root = ET.fromstring(body)
    ns = {"s": s3.S3_NS}
    assert root.findtext("s:Contents/s:Key", namespaces=ns) == "a%20b"
    assert root.findtext("s:KeyCount", namespaces=ns) == "2"
    assert root.findtext("s:NextContinuationToken", namespaces=ns) == "tok"
    acl = s3.render_acl(s3.AccessControlPolicy("o", "n", [s3.Grant("READ", "Group", s3.ALL_USERS)]))
    assert b'xsi:type="Group"' in acl and b"<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI>" in acl
