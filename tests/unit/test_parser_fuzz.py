"""Property-based fuzzing of the protocol parsers (issue 13's standing matrix): whatever bytes a client sends,
each parser answers with a value or its protocol's error (S3Error, Ec2Error, SignatureError, BadMessage,
BundleError), never another exception (which the server would turn into a 500)."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from euca.protocol import bundle, cluster, sigv2, sigv4_verify
from euca.protocol import s3 as s3p
from euca.protocol.ec2 import messages, wire
from euca.protocol.ec2.wire import Ec2Error
from euca.protocol.s3 import S3Error, cors, post
from euca.protocol.s3 import policy as s3_policy
from euca.protocol.s3.headers import check_document_digest
from euca.protocol.sigv4 import SignatureError

# A small count in the test command; EUCA_FUZZ_EXAMPLES=5000 for a longer hunt. No example database: nothing
# is written into the tree.
FUZZ = settings(
    max_examples=int(os.environ.get("EUCA_FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

text = st.text(max_size=200)
header_names = st.sampled_from(
    [
        "content-md5",
        "content-length",
        "x-amz-decoded-content-length",
        "x-amz-checksum-crc32",
        "x-amz-checksum-sha256",
        "x-amz-trailer",
        "x-amz-sdk-checksum-algorithm",
        "x-amz-copy-source",
        "x-amz-copy-source-range",
        "x-amz-acl",
        "x-amz-grant-read",
        "x-amz-tagging",
        "x-amz-storage-class",
        "x-amz-server-side-encryption",
        "x-amz-meta-a",
        "x-amz-metadata-directive",
        "x-amz-checksum-algorithm",
        "x-amz-checksum-type",
        "range",
        "if-match",
        "if-modified-since",
        "content-type",
        "content-encoding",
        "authorization",
        "x-amz-date",
        "date",
    ]
)
headers = st.dictionaries(header_names, text, max_size=6)
query_words = st.sampled_from(
    [
        "acl",
        "tagging",
        "versioning",
        "delete",
        "uploads",
        "uploadId=u",
        "partNumber=1",
        "partNumber=x",
        "versionId=",
        "versions",
        "list-type=2",
        "max-keys=99999999999999999999",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "cors",
        "location",
        "lifecycle",
        "encoding-type=url",
        "%ff",
        "a=%zz",
    ]
)
queries = st.lists(st.one_of(query_words, text), max_size=4).map("&".join)
paths = st.one_of(
    st.just("/"),
    st.lists(st.one_of(st.sampled_from(["b", "bucket", "k", "%2F", "%ff", "..", ""]), text), max_size=4).map(
        lambda parts: "/" + "/".join(parts)
    ),
)
methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "get"])

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(text, st.sampled_from(["Statement"])), children, max_size=4),
    ),
    max_leaves=30,
)


@st.composite
def policy_documents(draw: Any) -> str:
    """Policies near the real shape, with any values in any element."""
    statement = {
        key: draw(
            st.one_of(
                json_values, st.sampled_from(["Allow", "Deny", "*", "s3:GetObject", "arn:aws:s3:::b/*"])
            )
        )
        for key in draw(
            st.lists(
                st.sampled_from(
                    [
                        "Effect",
                        "Principal",
                        "NotPrincipal",
                        "Action",
                        "NotAction",
                        "Resource",
                        "NotResource",
                        "Condition",
                    ]
                ),
                unique=True,
            )
        )
    }
    if draw(st.booleans()):
        statement["Condition"] = {
            draw(
                st.sampled_from(
                    ["IpAddress", "NotIpAddress", "NumericLessThan", "Bool", "DateLessThan", "Null", "Foo"]
                )
            ): {"aws:SourceIp": draw(json_values)}
        }
    return json.dumps({"Version": draw(st.sampled_from(["2012-10-17", "x"])), "Statement": [statement]})


xml_tags = st.sampled_from(
    [
        "Tagging",
        "TagSet",
        "Tag",
        "Key",
        "Value",
        "Delete",
        "Object",
        "Quiet",
        "VersionId",
        "CompleteMultipartUpload",
        "Part",
        "PartNumber",
        "ETag",
        "VersioningConfiguration",
        "Status",
        "CORSConfiguration",
        "CORSRule",
        "AllowedMethod",
        "AllowedOrigin",
        "MaxAgeSeconds",
        "AccessControlPolicy",
        "Owner",
        "ID",
        "AccessControlList",
        "Grant",
        "Grantee",
        "Permission",
        "CreateBucketConfiguration",
        "LocationConstraint",
        "PublicAccessBlockConfiguration",
        "BlockPublicAcls",
    ]
)
xml_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="<>&\x00"), max_size=40
)


def _xml_tree(tag: str, children: list[str]) -> str:
    return f"<{tag}>{''.join(children)}</{tag}>"


xml_elements = st.recursive(
    st.builds(lambda tag, body: f"<{tag}>{body}</{tag}>", xml_tags, xml_text),
    lambda children: st.builds(_xml_tree, xml_tags, st.lists(children, max_size=4)),
    max_leaves=20,
)
xml_bodies = st.one_of(xml_elements.map(str.encode), st.binary(max_size=300))

XML_PARSERS = [
    s3p.parse_tagging_body,
    s3p.parse_versioning_body,
    s3p.parse_delete_objects_body,
    s3p.parse_complete_body,
    s3p.parse_acl_body,
    s3p.parse_create_bucket_body,
    cors.parse_cors_body,
    s3_policy.parse_public_access_block,
]


# -- S3 ------------------------------------------------------------------------------------------------------


@FUZZ
@given(methods, paths, queries, headers, st.one_of(st.none(), st.sampled_from(["vb", "v.b"])))
def test_s3_router(method: str, path: str, query: str, hdrs: dict[str, str], vbucket: str | None) -> None:
    try:
        s3p.parse_request(method, path, query, hdrs, vbucket)
    except S3Error:
        pass


@FUZZ
@given(xml_bodies, st.sampled_from(range(len(XML_PARSERS))))
def test_s3_xml_bodies(body: bytes, which: int) -> None:
    try:
        XML_PARSERS[which](body)
    except S3Error:
        pass


@FUZZ
@given(st.one_of(policy_documents(), json_values.map(json.dumps), text))
def test_bucket_policies(doc: str) -> None:
    try:
        s3_policy.parse_policy(doc, "b")
    except S3Error:
        pass


@FUZZ
@given(st.one_of(json_values.map(json.dumps), text))
def test_post_policies(doc: str) -> None:
    try:
        post.parse_policy(base64.b64encode(doc.encode()).decode())
    except S3Error:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=6), st.sampled_from([b"xyz", b"----b", b"a"]))
def test_post_multipart_form(chunks: list[bytes], boundary: bytes) -> None:
    parser = post.MultipartParser(boundary)
    prefix = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n'
    try:
        for chunk in [prefix, *chunks]:
            parser.feed(chunk)
        parser.finish()
    except S3Error:
        pass


@FUZZ
@given(headers, st.binary(max_size=200))
def test_document_digests(hdrs: dict[str, str], body: bytes) -> None:
    try:
        check_document_digest(hdrs, body, {})
    except S3Error:
        pass


# -- signatures ----------------------------------------------------------------------------------------------


@FUZZ
@given(
    methods,
    paths,
    queries,
    st.lists(st.tuples(header_names, text), max_size=6),
    st.sampled_from(["s3", "ec2"]),
)
def test_sigv4_parsing(method: str, path: str, query: str, hdrs: list[tuple[str, str]], service: str) -> None:
    hdrs = [
        *hdrs,
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AK/20240101/r/s3/aws4_request, SignedHeaders=host, Signature=00",
        ),
    ]
    for parse in (sigv4_verify.parse_header_auth, sigv4_verify.parse_query_auth):
        try:
            parse(method, path, query, hdrs, service=service, now=time.time())
        except SignatureError:
            pass


@FUZZ
@given(methods, paths, queries, st.lists(st.tuples(header_names, text), max_size=6))
def test_sigv2_parsing(method: str, path: str, query: str, hdrs: list[tuple[str, str]]) -> None:
    for parse in (sigv2.parse_s3_header_auth, sigv2.parse_s3_query_auth):
        try:
            parse(method, path, query, hdrs, now=time.time())
        except SignatureError:
            pass


# -- EC2 -----------------------------------------------------------------------------------------------------

ACTIONS = sorted(messages.REQUEST_TYPES)
param_names = st.sampled_from(
    [
        "MaxResults",
        "NextToken",
        "InstanceId.1",
        "InstanceId",
        "ImageId",
        "MinCount",
        "MaxCount",
        "Filter.1.Name",
        "Filter.1.Value.1",
        "Filter.x.Name",
        "Tag.1.Key",
        "Tag.1.Value",
        "ResourceId.1",
        "DryRun",
        "UserData",
        "BlockDeviceMapping.1.Ebs.VolumeSize",
        "Placement.AvailabilityZone",
        "Version",
        "Action",
        "KeyName",
        "PublicKeyMaterial",
    ]
)


@FUZZ
@given(st.sampled_from(ACTIONS), st.dictionaries(st.one_of(param_names, text), text, max_size=6))
def test_ec2_query_decoding(action: str, params: dict[str, str]) -> None:
    try:
        env = wire.envelope({**params, "Action": action})
        wire.parse_request(env.action, env.params, messages.REQUEST_TYPES[env.action])
    except Ec2Error:
        pass


@FUZZ
@given(
    text, st.binary(max_size=300), st.sampled_from([None, "application/x-www-form-urlencoded", "text/plain"])
)
def test_ec2_form_parsing(query: str, body: bytes, content_type: str | None) -> None:
    try:
        wire.envelope(wire.parse_form(query, body, content_type))
    except Ec2Error:
        pass


# -- cluster messages and bundle manifests -------------------------------------------------------------------


@FUZZ
@given(
    st.sampled_from(sorted(cluster.MESSAGES)),
    st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=300)),
)
def test_cluster_messages(name: str, body: bytes) -> None:
    try:
        cluster.decode_request("/cluster/" + name, body)
    except cluster.BadMessage:
        pass


manifest_tags = st.sampled_from(
    [
        "manifest",
        "version",
        "bundler",
        "machine_configuration",
        "image",
        "name",
        "size",
        "parts",
        "part",
        "filename",
        "digest",
        "signature",
        "ec2_encrypted_key",
        "user_encrypted_key",
        "ec2_encrypted_iv",
    ]
)
manifest_elements = st.recursive(
    st.builds(lambda tag, body: f"<{tag}>{body}</{tag}>", manifest_tags, xml_text),
    lambda children: st.builds(_xml_tree, manifest_tags, st.lists(children, max_size=4)),
    max_leaves=20,
)


@FUZZ
@given(
    st.one_of(manifest_elements.map(lambda x: f"<manifest>{x}</manifest>".encode()), st.binary(max_size=300))
)
def test_bundle_manifests(body: bytes) -> None:
    for parse in (bundle.parse_manifest, bundle.parse_download_manifest):
        try:
            parse(body)
        except bundle.BundleError:
            pass


@pytest.mark.parametrize("depth", [10, 100, 10000])
def test_nesting_never_escapes(depth: int) -> None:
    """The one input the random strategies rarely reach: nesting at every depth, in every parser."""
    deep_json = "[" * depth + "]" * depth
    deep_xml = b"<Tagging>" + b"<Tag>" * depth + b"</Tag>" * depth + b"</Tagging>"
    for parse in XML_PARSERS:
        try:
            parse(deep_xml)
        except S3Error:
            pass
    with pytest.raises(S3Error):
        s3_policy.parse_policy(deep_json, "b")
    with pytest.raises(S3Error):
        post.parse_policy(base64.b64encode(deep_json.encode()).decode())
    with pytest.raises(cluster.BadMessage):
        cluster.decode_request("/cluster/DescribeResources", deep_json.encode())
    with pytest.raises(bundle.BundleError):
        bundle.parse_manifest(b"<manifest>" + b"<a>" * depth + b"</a>" * depth + b"</manifest>")
