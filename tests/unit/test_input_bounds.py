"""Parsers of request input, bounded (issue 13 items 3-6): size and nesting limits in every JSON and XML parser,
document digests, S3 header checks, EC2 integer ranges and versions, tag keys. No sockets."""

from __future__ import annotations

import base64
import hashlib
import json
import xml.etree.ElementTree as ET
import zlib

import pytest

from euca.protocol import bounded, bundle, cluster, s3
from euca.protocol.ec2 import wire
from euca.protocol.ec2.wire import Ec2Error
from euca.protocol.s3 import S3Error, cors, post
from euca.protocol.s3 import policy as s3_policy
from euca.protocol.s3.headers import check_document_digest, checksum_of

DEEP_JSON = "[" * 1500 + "]" * 1500
DEEP_XML = b"<Tagging>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</Tagging>"


# -- the bounded parsers ------------------------------------------------------------------------------------


def test_json_depth_counts_brackets_outside_strings_only():
    assert bounded.json_depth('{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert bounded.json_depth(r'{"a": "\"[[[", "b": []}') == 2
    assert bounded.json_depth("[]") == 1 and bounded.json_depth('"x"') == 0


def test_loads_json_refuses_deep_and_large_documents():
    assert bounded.loads_json(b'{"a": [[1]]}', max_bytes=100) == {"a": [[1]]}
    with pytest.raises(bounded.BoundsError):
        bounded.loads_json(DEEP_JSON, max_bytes=10**6)
    with pytest.raises(bounded.BoundsError):
        bounded.loads_json("[" * 5 + "]" * 5, max_bytes=100, max_depth=4)
    with pytest.raises(bounded.BoundsError):
        bounded.loads_json(b"[" + b"1," * 100 + b"1]", max_bytes=100)
    with pytest.raises(ValueError):
        bounded.loads_json(b"{nope", max_bytes=100)
    with pytest.raises(ValueError):
        bounded.loads_json(b"\xff\xfe", max_bytes=100)


def test_parse_xml_refuses_deep_large_and_doctype():
    assert bounded.parse_xml(b"<a><b>x</b></a>", max_bytes=100).find("b") is not None
    with pytest.raises(bounded.BoundsError):
        bounded.parse_xml(DEEP_XML, max_bytes=10**6)
    with pytest.raises(bounded.BoundsError):
        bounded.parse_xml(b"<a>" + b" " * 200 + b"</a>", max_bytes=100)
    with pytest.raises(bounded.BoundsError):
        bounded.parse_xml(b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', max_bytes=1000)
    with pytest.raises(ET.ParseError):
        bounded.parse_xml(b"<a>", max_bytes=100)


@pytest.mark.parametrize(
    "parse",
    [
        s3.parse_tagging_body,
        s3.parse_versioning_body,
        s3.parse_delete_objects_body,
        s3.parse_complete_body,
        s3.parse_acl_body,
        s3.parse_create_bucket_body,
        cors.parse_cors_body,
        s3_policy.parse_public_access_block,
    ],
)
def test_every_s3_document_parser_refuses_deep_xml_and_doctype(parse):
    with pytest.raises(S3Error) as e:
        parse(DEEP_XML)
    assert e.value.code in ("MalformedXML", "MalformedACLError")
    billion = b'<!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><Tagging>&b;</Tagging>'
    with pytest.raises(S3Error):
        parse(billion)


# -- bucket policies ----------------------------------------------------------------------------------------


def _policy(**statement: object) -> dict[str, object]:
    base: dict[str, object] = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/*",
    }
    base.update(statement)
    return {"Version": "2012-10-17", "Statement": [base]}


def _code(text: str | bytes) -> str:
    with pytest.raises(S3Error) as e:
        s3_policy.parse_policy(text, "b")
    return e.value.code


def test_deep_policy_is_malformed_not_a_recursion_error():
    assert _code(DEEP_JSON) == "MalformedPolicy"
    assert _code('{"Statement": ' + DEEP_JSON + "}") == "MalformedPolicy"


def test_policy_size_is_counted_without_whitespace():
    resources = [f"arn:aws:s3:::b/{'p' * 90}{i}" for i in range(220)]
    big = _policy(Resource=resources)
    assert len(json.dumps(big, separators=(",", ":"))) > s3_policy.MAX_POLICY_BYTES
    assert _code(json.dumps(big)) == "PolicyTooLarge"
    small = _policy(Resource=resources[:150])
    pretty = json.dumps(small, indent=40)
    assert len(pretty) > s3_policy.MAX_POLICY_BYTES
    assert len(s3_policy.parse_policy(pretty, "b").statements) == 1
    assert _code(" " * (s3_policy.MAX_POLICY_BODY_BYTES + 1)) == "PolicyTooLarge"


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("IpAddress", "999.1.1.1"),
        ("NotIpAddress", "garbage"),
        ("IpAddress", "10.0.0.0/33"),
        ("NumericEquals", "1O"),
        ("NumericGreaterThanIfExists", "x"),
        ("Bool", "yes"),
        ("Null", "1"),
        ("DateLessThan", "tomorrow"),
        ("ForAnyValue:IpAddress", "::g"),
    ],
)
def test_condition_values_the_operator_cannot_compare_are_malformed(operator, value):
    doc = _policy(Condition={operator: {"aws:SourceIp": value}})
    assert _code(json.dumps(doc)) == "MalformedPolicy"


@pytest.mark.parametrize(
    ("operator", "value"),
    [
        ("IpAddress", "10.0.0.0/8"),
        ("NotIpAddress", "2001:db8::/32"),
        ("IpAddress", "192.0.2.7"),
        ("NumericLessThan", "10"),
        ("NumericEquals", "-1.5"),
        ("NumericEquals", 3),
        ("Bool", True),
        ("Bool", "false"),
        ("Null", "true"),
        ("DateGreaterThan", "2024-01-01T00:00:00Z"),
        ("DateGreaterThan", "2024-01-01"),
        ("DateLessThan", "1700000000"),
        ("StringLike", "anything at all [*"),
    ],
)
def test_valid_condition_values_are_accepted(operator, value):
    doc = _policy(Condition={operator: {"aws:SourceIp": value}})
    assert len(s3_policy.parse_policy(json.dumps(doc), "b").statements[0].conditions) == 1


def test_allow_with_not_principal_is_malformed_deny_is_not():
    doc = _policy()
    statement = doc["Statement"][0]  # type: ignore[index]
    del statement["Principal"]
    statement["NotPrincipal"] = {"AWS": "123456789012"}
    assert _code(json.dumps(doc)) == "MalformedPolicy"
    statement["Effect"] = "Deny"
    assert s3_policy.parse_policy(json.dumps(doc), "b").statements[0].not_principals == ["123456789012"]


# -- POST forms ---------------------------------------------------------------------------------------------


def test_post_policy_nested_deep_is_an_invalid_policy_document():
    deep = base64.b64encode(b'{"conditions": ' + DEEP_JSON.encode() + b"}").decode()
    with pytest.raises(S3Error) as e:
        post.parse_policy(deep)
    assert e.value.code == "InvalidPolicyDocument"


# -- cluster messages and bundle manifests ------------------------------------------------------------------


def test_cluster_message_nested_deep_is_a_bad_message():
    body = b'{"unknown": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    with pytest.raises(cluster.BadMessage):
        cluster.decode_request("/cluster/DescribeResources", body)
    with pytest.raises(cluster.ClusterFault):
        cluster.decode_reply(cluster.DescribeResources, 200, body)
    with pytest.raises(cluster.ClusterFault):
        cluster.decode_reply(cluster.DescribeResources, 500, body)


def test_bundle_manifest_nested_deep_is_refused():
    body = b"<manifest>" + b"<a>" * 100 + b"</a>" * 100 + b"</manifest>"
    with pytest.raises(bundle.ManifestError, match="nested deeper"):
        bundle.parse_manifest(body)


# -- document digests ---------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_document_digest_content_md5():
    body = b"<Tagging/>"
    check_document_digest({"content-md5": _b64(hashlib.md5(body).digest())}, body)
    check_document_digest({}, body)
    with pytest.raises(S3Error) as e:
        check_document_digest({"content-md5": _b64(hashlib.md5(b"other").digest())}, body)
    assert e.value.code == "BadDigest" and e.value.status == 400
    with pytest.raises(S3Error) as e:
        check_document_digest({"content-md5": "nope"}, body)
    assert e.value.code == "InvalidDigest"


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_document_digest_checksums(algorithm):
    body = b"<Delete><Object><Key>k</Key></Object></Delete>"
    name = f"x-amz-checksum-{algorithm.lower()}"
    check_document_digest({name: _b64(checksum_of(algorithm, body))}, body)
    with pytest.raises(S3Error) as e:
        check_document_digest({name: _b64(checksum_of(algorithm, b"x"))}, body)
    assert e.value.code == "BadDigest"
    # The value may come as a trailer of an aws-chunked body.
    headers = {"x-amz-trailer": name}
    check_document_digest(headers, body, {name: _b64(checksum_of(algorithm, body))})
    with pytest.raises(S3Error):
        check_document_digest(headers, body, {name: _b64(checksum_of(algorithm, b"x"))})


def test_checksum_of_matches_known_values():
    assert checksum_of("CRC32", b"abc") == zlib.crc32(b"abc").to_bytes(4, "big")
    assert checksum_of("SHA256", b"abc") == hashlib.sha256(b"abc").digest()
    assert checksum_of("CRC32C", b"123456789").hex() == "e3069283"


# -- S3 headers ---------------------------------------------------------------------------------------------


def parse(method: str, target: str, headers: dict[str, str] | None = None) -> object:
    path, _, query = target.partition("?")
    return s3.parse_request(method, path, query, {k.lower(): v for k, v in (headers or {}).items()})


def _router_code(method: str, target: str, headers: dict[str, str]) -> str:
    with pytest.raises(S3Error) as e:
        parse(method, target, headers)
    return e.value.code


def test_delete_objects_needs_content_md5_or_a_checksum():
    with pytest.raises(S3Error) as e:
        parse("POST", "/b?delete")
    assert (e.value.code, e.value.message) == (
        "InvalidRequest",
        "Missing required header for this request: Content-MD5",
    )
    for headers in (
        {"content-md5": _b64(hashlib.md5(b"").digest())},
        {"x-amz-checksum-crc32": "AAAAAA=="},
        {"x-amz-checksum-sha256": _b64(hashlib.sha256(b"").digest())},
        {"x-amz-trailer": "x-amz-checksum-crc32c"},
    ):
        assert isinstance(parse("POST", "/b?delete", headers), s3.DeleteObjects)


def test_declared_size_over_5_gib_is_entity_too_large():
    limit = 5 * 1024**3
    assert isinstance(parse("PUT", "/b/k", {"content-length": str(limit)}), s3.PutObject)
    assert _router_code("PUT", "/b/k", {"content-length": str(limit + 1)}) == "EntityTooLarge"
    # aws-chunked: the decoded length is the object's.
    chunked = {"content-length": "100", "x-amz-decoded-content-length": str(limit + 1)}
    assert _router_code("PUT", "/b/k", chunked) == "EntityTooLarge"
    target = "/b/k?partNumber=1&uploadId=u"
    assert _router_code("PUT", target, {"content-length": str(limit + 1)}) == "EntityTooLarge"
    assert isinstance(parse("PUT", target, {"content-length": str(limit)}), s3.UploadPart)


def test_storage_class_and_encryption_values():
    assert isinstance(parse("PUT", "/b/k", {"x-amz-storage-class": "STANDARD_IA"}), s3.PutObject)
    assert _router_code("PUT", "/b/k", {"x-amz-storage-class": "standard"}) == "InvalidStorageClass"
    assert _router_code("POST", "/b/k?uploads", {"x-amz-storage-class": "GOLD"}) == "InvalidStorageClass"
    copy = {"x-amz-copy-source": "/s/k", "x-amz-storage-class": "GOLD"}
    assert _router_code("PUT", "/b/k", copy) == "InvalidStorageClass"
    assert isinstance(parse("PUT", "/b/k", {"x-amz-server-side-encryption": "AES256"}), s3.PutObject)
    assert _router_code("PUT", "/b/k", {"x-amz-server-side-encryption": "AES512"}) == "InvalidArgument"


def test_user_metadata_is_at_most_2_kb():
    fits = {"x-amz-meta-ab": "v" * 2046}
    assert isinstance(parse("PUT", "/b/k", fits), s3.PutObject)
    over = {"x-amz-meta-ab": "v" * 2047}
    assert _router_code("PUT", "/b/k", over) == "MetadataTooLarge"
    # Bytes of UTF-8, not characters.
    assert _router_code("PUT", "/b/k", {"x-amz-meta-a": "é" * 1024}) == "MetadataTooLarge"


def test_aws_prefixed_tag_keys_are_invalid():
    body = b"<Tagging><TagSet><Tag><Key>aws:x</Key><Value>v</Value></Tag></TagSet></Tagging>"
    with pytest.raises(S3Error) as e:
        s3.parse_tagging_body(body, limit=50)
    assert e.value.code == "InvalidTag"
    assert _router_code("PUT", "/b/k", {"x-amz-tagging": "aws%3Ax=1"}) == "InvalidTag"


def test_location_constraint_must_look_like_a_region():
    def body(location: str) -> bytes:
        return (
            b"<CreateBucketConfiguration><LocationConstraint>"
            + location.encode()
            + b"</LocationConstraint></CreateBucketConfiguration>"
        )

    assert s3.parse_create_bucket_body(body("us-west-2")) == "us-west-2"
    assert s3.parse_create_bucket_body(body("EU")) == "EU"
    for bad in ("x" * 5000, "a b", "<>", "-x"):
        with pytest.raises(S3Error) as e:
            s3.parse_create_bucket_body(body(bad.replace("<", "&lt;").replace(">", "&gt;")))
        assert e.value.code == "InvalidLocationConstraint"


# -- EC2 integers and versions ------------------------------------------------------------------------------


def _ec2_code(action: str, params: dict[str, str]) -> str:
    with pytest.raises(Ec2Error) as e:
        wire.decode_input(action, params)
    return e.value.code


@pytest.mark.parametrize(
    "value", ["9223372036854775807", "2147483648", "-2147483649", "1" * 5000, "1_0", "0x10"]
)
def test_integer_outside_32_bits_or_not_decimal_is_invalid(value):
    assert _ec2_code("DescribeInstances", {"MaxResults": value}) == "InvalidParameterValue"


def test_integer_within_range_is_decoded():
    assert wire.decode_input("DescribeInstances", {"MaxResults": "2147483647"}) == {"MaxResults": 2147483647}
    assert wire.decode_input("DescribeInstances", {"MaxResults": " 7 "}) == {"MaxResults": 7}


def test_model_min_max_are_enforced():
    assert _ec2_code("DescribeInstanceTypes", {"MaxResults": "4"}) == "InvalidParameterValue"
    assert _ec2_code("DescribeInstanceTypes", {"MaxResults": "101"}) == "InvalidParameterValue"
    assert wire.decode_input("DescribeInstanceTypes", {"MaxResults": "100"}) == {"MaxResults": 100}


def test_every_integer_shape_of_the_model_is_bounded():
    m = wire.model()
    for name, shape in m.shapes.items():
        if shape["type"] in ("integer", "long"):
            lo, hi = wire._INTEGER_RANGE[shape["type"]]
            with pytest.raises(Ec2Error):
                wire.decode_integer(shape, str(hi + 1), name)
            with pytest.raises(Ec2Error):
                wire.decode_integer(shape, str(lo - 1), name)


@pytest.mark.parametrize("version", ["2016-11-15", "2014-06-15", "2006-06-26", ""])
def test_known_versions(version):
    env = wire.envelope({"Action": "DescribeRegions", "Version": version})
    assert env.version == (version or wire.API_VERSION)


@pytest.mark.parametrize(
    "version", ["2016-11-16", "2006-06-25", "2016-02-30", "latest", "2016-11-15x", "x" * 1000]
)
def test_unknown_versions_are_no_such_version(version):
    with pytest.raises(Ec2Error) as e:
        wire.envelope({"Action": "DescribeRegions", "Version": version})
    assert e.value.code == "NoSuchVersion" and e.value.status == 400


# -- EC2 tag keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["aws:x", "AWS:x", "a\x00b", "a\nb", "\x7f", "", "k" * 129])
def test_tag_keys_ec2_refuses(key):
    from euca.roles.clc.tags import records

    with pytest.raises(Ec2Error) as e:
        records.check_key(key)
    assert e.value.code == "InvalidParameterValue"


def test_tag_values_with_control_characters_are_refused():
    from euca.roles.clc.tags import records

    records.check_value("tab\tis fine")
    with pytest.raises(Ec2Error):
        records.check_value("nul\x00")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999", "x"])
def test_floats_must_be_finite_numbers(value):
    with pytest.raises(Ec2Error) as e:
        wire.decode_scalar("double", value, "SpotPrice")
    assert e.value.code == "InvalidParameterValue"
    assert wire.decode_scalar("double", "0.25", "SpotPrice") == 0.25


def test_a_stored_policy_is_read_leniently():
    """Policies accepted before these checks keep their meaning (strict=False): dropping one would lift its Deny
    statements."""
    doc = _policy(Effect="Deny", Condition={"NotIpAddress": {"aws:SourceIp": "garbage"}})
    assert _code(json.dumps(doc)) == "MalformedPolicy"
    assert len(s3_policy.parse_policy(json.dumps(doc), "b", strict=False).statements) == 1
    with pytest.raises(S3Error):
        s3_policy.parse_policy(DEEP_JSON, "b", strict=False)
