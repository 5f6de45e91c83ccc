"""The endpoint union is closed and complete: every endpoint class has a route (a sample request parse_request maps
to it), every route yields a member of the union, and every class carries its action, permission and body kind."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from euca.protocol import s3
from euca.protocol.s3 import endpoints

# (method, target, headers) -> the endpoint class parse_request must answer with.
ROUTES: list[tuple[str, str, dict[str, str], type]] = [
    ("GET", "/", {}, s3.ListBuckets),
    ("PUT", "/b", {}, s3.CreateBucket),
    ("HEAD", "/b", {}, s3.HeadBucket),
    ("DELETE", "/b", {}, s3.DeleteBucket),
    ("GET", "/b?location", {}, s3.GetBucketLocation),
    ("GET", "/b?versioning", {}, s3.GetBucketVersioning),
    ("PUT", "/b?versioning", {}, s3.PutBucketVersioning),
    ("GET", "/b?acl", {}, s3.GetBucketAcl),
    ("PUT", "/b?acl", {"x-amz-acl": "private"}, s3.PutBucketAcl),
    ("GET", "/b?tagging", {}, s3.GetBucketTagging),
    ("PUT", "/b?tagging", {}, s3.PutBucketTagging),
    ("DELETE", "/b?tagging", {}, s3.DeleteBucketTagging),
    ("POST", "/b", {"content-type": "multipart/form-data; boundary=x"}, s3.PostObject),
    ("GET", "/b", {}, s3.ListObjects),
    ("GET", "/b?list-type=2", {}, s3.ListObjectsV2),
    ("GET", "/b?versions", {}, s3.ListObjectVersions),
    ("GET", "/b?uploads", {}, s3.ListMultipartUploads),
    ("PUT", "/b/k", {}, s3.PutObject),
    ("GET", "/b/k", {}, s3.GetObject),
    ("HEAD", "/b/k", {}, s3.HeadObject),
    ("DELETE", "/b/k", {}, s3.DeleteObject),
    ("POST", "/b?delete", {"content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}, s3.DeleteObjects),
    ("PUT", "/b/k", {"x-amz-copy-source": "/src/a"}, s3.CopyObject),
    ("GET", "/b/k?acl", {}, s3.GetObjectAcl),
    ("PUT", "/b/k?acl", {}, s3.PutObjectAcl),
    ("GET", "/b/k?tagging", {}, s3.GetObjectTagging),
    ("PUT", "/b/k?tagging", {}, s3.PutObjectTagging),
    ("DELETE", "/b/k?tagging", {}, s3.DeleteObjectTagging),
    ("POST", "/b/k?uploads", {}, s3.CreateMultipartUpload),
    ("PUT", "/b/k?partNumber=1&uploadId=u", {}, s3.UploadPart),
    ("PUT", "/b/k?partNumber=1&uploadId=u", {"x-amz-copy-source": "/src/a"}, s3.UploadPartCopy),
    ("POST", "/b/k?uploadId=u", {}, s3.CompleteMultipartUpload),
    ("DELETE", "/b/k?uploadId=u", {}, s3.AbortMultipartUpload),
    ("GET", "/b/k?uploadId=u", {}, s3.ListParts),
    ("PUT", "/b?policy", {}, s3.PutBucketPolicy),
    ("GET", "/b?policy", {}, s3.GetBucketPolicy),
    ("DELETE", "/b?policy", {}, s3.DeleteBucketPolicy),
    ("GET", "/b?policyStatus", {}, s3.GetBucketPolicyStatus),
    ("PUT", "/b?publicAccessBlock", {}, s3.PutPublicAccessBlock),
    ("GET", "/b?publicAccessBlock", {}, s3.GetPublicAccessBlock),
    ("DELETE", "/b?publicAccessBlock", {}, s3.DeletePublicAccessBlock),
    ("PUT", "/b?cors", {}, s3.PutBucketCors),
    ("GET", "/b?cors", {}, s3.GetBucketCors),
    ("DELETE", "/b?cors", {}, s3.DeleteBucketCors),
    ("OPTIONS", "/b/k", {}, s3.Preflight),
    ("OPTIONS", "/b", {}, s3.Preflight),
    ("PUT", "/b?lifecycle", {}, s3.PutBucketLifecycleConfiguration),
    ("GET", "/b?lifecycle", {}, s3.GetBucketLifecycleConfiguration),
    ("DELETE", "/b?lifecycle", {}, s3.DeleteBucketLifecycle),
    ("PUT", "/b?ownershipControls", {}, s3.PutBucketOwnershipControls),
    ("GET", "/b?ownershipControls", {}, s3.GetBucketOwnershipControls),
    ("DELETE", "/b?ownershipControls", {}, s3.DeleteBucketOwnershipControls),
    ("PUT", "/b?object-lock", {}, s3.PutObjectLockConfiguration),
    ("GET", "/b?object-lock", {}, s3.GetObjectLockConfiguration),
    ("PUT", "/b?logging", {}, s3.PutBucketLogging),
    ("GET", "/b?logging", {}, s3.GetBucketLogging),
    ("PUT", "/b?encryption", {}, s3.PutBucketEncryption),
    ("GET", "/b?encryption", {}, s3.GetBucketEncryption),
    ("DELETE", "/b?encryption", {}, s3.DeleteBucketEncryption),
    ("PUT", "/b/k?retention", {}, s3.PutObjectRetention),
    ("GET", "/b/k?retention", {}, s3.GetObjectRetention),
    ("PUT", "/b/k?legal-hold", {}, s3.PutObjectLegalHold),
    ("GET", "/b/k?legal-hold", {}, s3.GetObjectLegalHold),
    ("GET", "/b/k?attributes", {"x-amz-object-attributes": "ETag,ObjectSize"}, s3.GetObjectAttributes),
    ("DELETE", "/b/k?retention", {}, s3.Unsupported),
    ("POST", "/b?lifecycle", {}, s3.Unsupported),
    ("PUT", "/b?replication", {}, s3.Unsupported),
    # Sub-resources with a method they have no endpoint for, or on an object: answered 501 as before.
    ("POST", "/b?policy", {}, s3.Unsupported),
    ("PUT", "/b/k?policy", {}, s3.Unsupported),
    ("POST", "/b?cors", {}, s3.Unsupported),
    ("PUT", "/", {}, s3.Unsupported),
    ("POST", "/b/k", {}, s3.Unsupported),
    # The first of ?policyStatus, ?publicAccessBlock, ?policy present decides.
    ("GET", "/b?policy&policyStatus", {}, s3.GetBucketPolicyStatus),
    ("GET", "/b?policy&cors", {}, s3.GetBucketPolicy),
    ("OPTIONS", "/b?policy", {}, s3.Preflight),
]

# What euca/protocol/s3_policy.py's ACTIONS table said before the actions moved onto the classes.
FORMER_ACTIONS = {
    "ListBuckets": "s3:ListAllMyBuckets", "CreateBucket": "s3:CreateBucket", "DeleteBucket": "s3:DeleteBucket",
    "HeadBucket": "s3:ListBucket", "GetBucketLocation": "s3:GetBucketLocation",
    "GetBucketVersioning": "s3:GetBucketVersioning", "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetBucketAcl": "s3:GetBucketAcl", "PutBucketAcl": "s3:PutBucketAcl",
    "GetBucketTagging": "s3:GetBucketTagging", "PutBucketTagging": "s3:PutBucketTagging",
    "DeleteBucketTagging": "s3:PutBucketTagging", "ListObjects": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions", "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "DeleteObjects": "s3:DeleteObject", "PutObject": "s3:PutObject", "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject", "DeleteObject": "s3:DeleteObject", "CopyObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject", "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts", "GetObjectAcl": "s3:GetObjectAcl", "PutObjectAcl": "s3:PutObjectAcl",
    "GetObjectTagging": "s3:GetObjectTagging", "PutObjectTagging": "s3:PutObjectTagging",
    "DeleteObjectTagging": "s3:DeleteObjectTagging",
    "PutBucketPolicy": "s3:PutBucketPolicy", "GetBucketPolicy": "s3:GetBucketPolicy",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy", "GetBucketPolicyStatus": "s3:GetBucketPolicyStatus",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock", "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
}  # fmt: skip

# The endpoints the former needs_body() named (it predates the policy and CORS endpoints in the union).
FORMER_NEEDS_BODY = {
    "CreateBucket", "PutBucketVersioning", "PutBucketAcl", "PutBucketTagging", "DeleteObjects",
    "CompleteMultipartUpload", "PutObjectAcl", "PutObjectTagging",
}  # fmt: skip

# The actions of the bucket and object settings added with issue 11 (as S3's policy language names them).
FORMER_ACTIONS |= {
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "PutBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "GetBucketOwnershipControls": "s3:GetBucketOwnershipControls",
    "DeleteBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "PutObjectRetention": "s3:PutObjectRetention",
    "GetObjectRetention": "s3:GetObjectRetention",
    "PutObjectLegalHold": "s3:PutObjectLegalHold",
    "GetObjectLegalHold": "s3:GetObjectLegalHold",
    "GetObjectAttributes": "s3:GetObjectAttributes",
    "PutBucketLogging": "s3:PutBucketLogging",
    "GetBucketLogging": "s3:GetBucketLogging",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    # CORS configuration is judged by a bucket policy too (it was not before issue 11).
    "PutBucketCors": "s3:PutBucketCORS",
    "GetBucketCors": "s3:GetBucketCORS",
    "DeleteBucketCors": "s3:PutBucketCORS",
}
ISSUE_11_DOCUMENTS = {
    "PutBucketLifecycleConfiguration", "PutBucketOwnershipControls", "PutObjectLockConfiguration",
    "PutObjectRetention", "PutObjectLegalHold", "PutBucketLogging", "PutBucketEncryption",
}  # fmt: skip


def parse(method: str, target: str, headers: dict[str, str]) -> object:
    path, _, query = target.partition("?")
    return s3.parse_request(method, path, query, headers)


def test_the_union_is_the_endpoint_tuple() -> None:
    assert s3.ENDPOINTS == typing.get_args(s3.Endpoint)
    assert len(set(s3.ENDPOINTS)) == len(s3.ENDPOINTS)
    # Every endpoint class the package defines is in the union (none left outside it).
    defined = {
        obj
        for obj in vars(endpoints).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == endpoints.__name__
    } - {s3.Permission}
    assert defined == set(s3.ENDPOINTS)


@pytest.mark.parametrize(("method", "target", "headers", "expected"), ROUTES)
def test_route(method: str, target: str, headers: dict[str, str], expected: type) -> None:
    endpoint = parse(method, target, headers)
    assert type(endpoint) is expected
    assert type(endpoint) in s3.ENDPOINTS


def test_every_endpoint_has_a_route() -> None:
    routed = {expected for _, _, _, expected in ROUTES}
    assert set(s3.ENDPOINTS) - routed == set()


@pytest.mark.parametrize("cls", s3.ENDPOINTS, ids=lambda c: c.__name__)
def test_endpoint_class_attributes(cls: type) -> None:
    # Declared on the class itself (no base class supplies a default), and not instance fields.
    for name in ("action", "permission", "body"):
        assert name in vars(cls), f"{cls.__name__} lacks {name}"
    assert not {"action", "version_action", "permission", "body"} & {f.name for f in dataclasses.fields(cls)}
    assert getattr(cls, "__final__", False), f"{cls.__name__} is not @final"
    assert "__slots__" in vars(cls)
    action = vars(cls)["action"]
    assert action is None or (isinstance(action, str) and action.startswith("s3:"))
    assert action == FORMER_ACTIONS.get(cls.__name__)
    permission = vars(cls)["permission"]
    assert isinstance(permission, s3.Permission)
    assert permission.name in typing.get_args(typing.get_type_hints(s3.Permission)["name"])
    assert permission.of in typing.get_args(typing.get_type_hints(s3.Permission)["of"])
    if permission.name in ("AUTHENTICATED", "ANYONE"):
        assert permission.of == "service"
    else:
        assert permission.of in ("bucket", "object")
    assert vars(cls)["body"] in typing.get_args(s3.Body)
    if cls.__name__ in FORMER_NEEDS_BODY:
        assert vars(cls)["body"] == "document"
    versioned = "version_id" in {f.name for f in dataclasses.fields(cls)}
    assert ("version_action" in vars(cls)) == versioned


def test_body_kinds() -> None:
    streamed = {cls.__name__ for cls in s3.ENDPOINTS if cls.body == "stream"}
    assert streamed == {"PutObject", "UploadPart", "PostObject"}
    documents = {cls.__name__ for cls in s3.ENDPOINTS if cls.body == "document"}
    assert documents == FORMER_NEEDS_BODY | {"PutBucketPolicy", "PutPublicAccessBlock", "PutBucketCors"} | (
        ISSUE_11_DOCUMENTS
    )
    assert s3.needs_body(s3.PutBucketAcl("b")) and not s3.needs_body(s3.PutObject("b", "k"))


def test_action_of_a_version() -> None:
    # The names the former action_of() built from class names when a versionId was given.
    expected = {
        s3.GetObject: "s3:GetObjectVersion",
        s3.HeadObject: "s3:GetObjectVersion",
        s3.DeleteObject: "s3:DeleteObjectVersion",
        s3.GetObjectAcl: "s3:GetObjectAclVersion",
        s3.PutObjectAcl: "s3:PutObjectAclVersion",
        s3.GetObjectTagging: "s3:GetObjectVersionTagging",
        s3.PutObjectTagging: "s3:PutObjectVersionTagging",
        s3.DeleteObjectTagging: "s3:DeleteObjectVersionTagging",
    }
    for cls, action in expected.items():
        assert s3.action_of(cls("b", "k")) == vars(cls)["action"]
        assert s3.action_of(cls("b", "k", version_id="v")) == action
        assert s3.policy.action_of(cls("b", "k", version_id="v")) == action
    assert s3.action_of(s3.ListObjects("b")) == "s3:ListBucket"
    assert s3.action_of(s3.PostObject("b")) is None
    assert s3.action_of(s3.Unsupported("PUT ?lifecycle", "b")) is None


def test_permissions_follow_the_handlers() -> None:
    perm = {cls.__name__: (cls.permission.name, cls.permission.of) for cls in s3.ENDPOINTS}
    assert perm["GetObject"] == perm["HeadObject"] == perm["GetObjectTagging"] == ("READ", "object")
    assert perm["PutObject"] == perm["DeleteObject"] == perm["ListParts"] == ("WRITE", "bucket")
    assert perm["GetObjectAcl"] == ("READ_ACP", "object") and perm["PutObjectAcl"] == ("WRITE_ACP", "object")
    assert perm["GetBucketAcl"] == ("READ_ACP", "bucket") and perm["PutBucketAcl"] == ("WRITE_ACP", "bucket")
    assert perm["ListObjectsV2"] == perm["HeadBucket"] == ("READ", "bucket")
    assert perm["DeleteBucket"] == perm["PutBucketPolicy"] == perm["GetBucketCors"] == ("OWNER", "bucket")
    assert perm["CreateBucket"] == ("AUTHENTICATED", "service")
    assert perm["ListBuckets"] == perm["Preflight"] == ("ANYONE", "service")
