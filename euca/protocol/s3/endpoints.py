"""The S3 operations Walrus knows: one final class per endpoint, and `Endpoint`, the closed union of them all.

`router.parse_request()` turns a request into exactly one of these values; a handler takes it and never looks at
the wire again. Besides its fields (what the request asked for), each class carries as class attributes what
every layer needs to know of the operation, kept here so that no table elsewhere has to stay in step with it:

- `action`: the S3 action a bucket policy authorises it as ("s3:GetObject"), None when no policy is consulted;
  classes with a `version_id` field also have `version_action`, used when a version is named (see action_of);
- `permission`: what the caller must hold (a Permission: an ACL grant on the bucket or on the object, the
  bucket's ownership, a signature, or nothing), as Walrus checks it;
- `body`: what the handler reads of the request body: "none", "document" (a small XML or JSON document,
  read whole) or "stream" (the object's bytes, streamed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, final, get_args

from euca.protocol.s3.headers import (
    AclRequest,
    ByteRange,
    ChecksumRequest,
    Conditions,
    CopySource,
    ObjectHeaders,
)
from euca.protocol.s3.lock_headers import ObjectLockRequest

Body = Literal["none", "document", "stream"]


@dataclass(frozen=True, slots=True)
class Permission:
    """What a request must hold. `name`: an ACL permission (READ, WRITE, READ_ACP, WRITE_ACP: held through a
    grant, FULL_CONTROL implying each), OWNER (the bucket's owner), AUTHENTICATED (any signed request) or ANYONE
    (no check: the handler scopes its answer to the caller). `of`: whose ACL or ownership: "bucket", "object",
    or "service" for AUTHENTICATED and ANYONE."""

    name: Literal["READ", "WRITE", "READ_ACP", "WRITE_ACP", "OWNER", "AUTHENTICATED", "ANYONE"]
    of: Literal["service", "bucket", "object"]


ANYONE = Permission("ANYONE", "service")
AUTHENTICATED = Permission("AUTHENTICATED", "service")
BUCKET_OWNER = Permission("OWNER", "bucket")
BUCKET_READ = Permission("READ", "bucket")
BUCKET_WRITE = Permission("WRITE", "bucket")
BUCKET_READ_ACP = Permission("READ_ACP", "bucket")
BUCKET_WRITE_ACP = Permission("WRITE_ACP", "bucket")
# Object permissions: the object's own ACL (its bucket's READ decides AccessDenied vs NoSuchKey for a key
# that does not exist).
OBJECT_READ = Permission("READ", "object")
OBJECT_READ_ACP = Permission("READ_ACP", "object")
OBJECT_WRITE_ACP = Permission("WRITE_ACP", "object")


# -- the service and buckets ---------------------------------------------------------------------------


@final
@dataclass(slots=True)
class ListBuckets:
    """GET /: the caller's own buckets (an anonymous caller has none), by name; a page of `max_buckets` after
    `continuation_token` (None: all of them), those whose name starts with `prefix`, in `bucket_region`."""

    action: ClassVar[str | None] = "s3:ListAllMyBuckets"
    permission: ClassVar[Permission] = ANYONE
    body: ClassVar[Body] = "none"
    max_buckets: int | None = None
    continuation_token: str | None = None
    prefix: str | None = None
    bucket_region: str | None = None


@final
@dataclass(slots=True)
class CreateBucket:
    """PUT /bucket, with an optional CreateBucketConfiguration body."""

    action: ClassVar[str | None] = "s3:CreateBucket"
    permission: ClassVar[Permission] = AUTHENTICATED
    body: ClassVar[Body] = "document"
    bucket: str
    acl: AclRequest = field(default_factory=AclRequest)
    object_lock: bool = False  # x-amz-bucket-object-lock-enabled
    object_ownership: str | None = None  # x-amz-object-ownership


@final
@dataclass(slots=True)
class HeadBucket:
    action: ClassVar[str | None] = "s3:ListBucket"
    permission: ClassVar[Permission] = BUCKET_READ
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class DeleteBucket:
    action: ClassVar[str | None] = "s3:DeleteBucket"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketLocation:
    action: ClassVar[str | None] = "s3:GetBucketLocation"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketVersioning:
    action: ClassVar[str | None] = "s3:GetBucketVersioning"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutBucketVersioning:
    action: ClassVar[str | None] = "s3:PutBucketVersioning"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketAcl:
    action: ClassVar[str | None] = "s3:GetBucketAcl"
    permission: ClassVar[Permission] = BUCKET_READ_ACP
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutBucketAcl:
    """The ACL comes in headers (`acl`) or, when there are none, as an AccessControlPolicy body."""

    action: ClassVar[str | None] = "s3:PutBucketAcl"
    permission: ClassVar[Permission] = BUCKET_WRITE_ACP
    body: ClassVar[Body] = "document"
    bucket: str
    acl: AclRequest = field(default_factory=AclRequest)


@final
@dataclass(slots=True)
class GetBucketTagging:
    action: ClassVar[str | None] = "s3:GetBucketTagging"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutBucketTagging:
    action: ClassVar[str | None] = "s3:PutBucketTagging"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class DeleteBucketTagging:
    action: ClassVar[str | None] = "s3:PutBucketTagging"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PostObject:
    """A browser-based upload (an HTML form, multipart/form-data): see euca/protocol/s3/post.py. WRITE is checked
    for the principal that signed the form, once its fields are read; no bucket policy is consulted."""

    action: ClassVar[str | None] = None
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "stream"
    bucket: str
    content_type: str = ""


# -- listings ------------------------------------------------------------------------------------------


@final
@dataclass(slots=True)
class ListObjects:
    action: ClassVar[str | None] = "s3:ListBucket"
    permission: ClassVar[Permission] = BUCKET_READ
    body: ClassVar[Body] = "none"
    bucket: str
    prefix: str = ""
    delimiter: str = ""
    marker: str = ""
    max_keys: int = 1000
    encoding_type: str | None = None


@final
@dataclass(slots=True)
class ListObjectsV2:
    action: ClassVar[str | None] = "s3:ListBucket"
    permission: ClassVar[Permission] = BUCKET_READ
    body: ClassVar[Body] = "none"
    bucket: str
    prefix: str = ""
    delimiter: str = ""
    continuation_token: str | None = None
    start_after: str = ""
    max_keys: int = 1000
    encoding_type: str | None = None
    fetch_owner: bool = False


@final
@dataclass(slots=True)
class ListObjectVersions:
    action: ClassVar[str | None] = "s3:ListBucketVersions"
    permission: ClassVar[Permission] = BUCKET_READ
    body: ClassVar[Body] = "none"
    bucket: str
    prefix: str = ""
    delimiter: str = ""
    key_marker: str = ""
    version_id_marker: str = ""
    max_keys: int = 1000
    encoding_type: str | None = None


@final
@dataclass(slots=True)
class ListMultipartUploads:
    action: ClassVar[str | None] = "s3:ListBucketMultipartUploads"
    permission: ClassVar[Permission] = BUCKET_READ
    body: ClassVar[Body] = "none"
    bucket: str
    prefix: str = ""
    delimiter: str = ""
    key_marker: str = ""
    upload_id_marker: str = ""
    max_uploads: int = 1000
    encoding_type: str | None = None


# -- objects -------------------------------------------------------------------------------------------


@final
@dataclass(slots=True)
class PutObject:
    action: ClassVar[str | None] = "s3:PutObject"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "stream"
    bucket: str
    key: str
    headers: ObjectHeaders = field(default_factory=ObjectHeaders)
    acl: AclRequest = field(default_factory=AclRequest)
    checksum: ChecksumRequest = field(default_factory=ChecksumRequest)
    content_length: int | None = None
    conditions: Conditions = field(default_factory=Conditions)
    tagging: dict[str, str] | None = None
    lock: ObjectLockRequest = field(default_factory=ObjectLockRequest)
    sse: str | None = None  # x-amz-server-side-encryption


@final
@dataclass(slots=True)
class GetObject:
    action: ClassVar[str | None] = "s3:GetObject"
    version_action: ClassVar[str] = "s3:GetObjectVersion"
    permission: ClassVar[Permission] = OBJECT_READ
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None
    range: ByteRange | None = None
    conditions: Conditions = field(default_factory=Conditions)
    overrides: list[tuple[str, str]] = field(default_factory=list)  # response-* query parameters
    checksum_mode: bool = False
    part_number: int | None = None


@final
@dataclass(slots=True)
class HeadObject:
    """GetObject without the body: the same fields, the same handler."""

    action: ClassVar[str | None] = "s3:GetObject"
    version_action: ClassVar[str] = "s3:GetObjectVersion"
    permission: ClassVar[Permission] = OBJECT_READ
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None
    range: ByteRange | None = None
    conditions: Conditions = field(default_factory=Conditions)
    overrides: list[tuple[str, str]] = field(default_factory=list)  # response-* query parameters
    checksum_mode: bool = False
    part_number: int | None = None


@final
@dataclass(slots=True)
class DeleteObject:
    action: ClassVar[str | None] = "s3:DeleteObject"
    version_action: ClassVar[str] = "s3:DeleteObjectVersion"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None
    conditions: Conditions = field(default_factory=Conditions)
    bypass_governance: bool = False  # x-amz-bypass-governance-retention


@final
@dataclass(slots=True)
class DeleteObjects:
    action: ClassVar[str | None] = "s3:DeleteObject"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "document"
    bucket: str
    bypass_governance: bool = False


@final
@dataclass(slots=True)
class CopyObject:
    """Also needs READ on the source object (its ACL)."""

    action: ClassVar[str | None] = "s3:PutObject"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    source: CopySource = field(default_factory=lambda: CopySource("", "", None, Conditions()))
    metadata_directive: str = "COPY"
    tagging_directive: str = "COPY"
    headers: ObjectHeaders = field(default_factory=ObjectHeaders)
    acl: AclRequest = field(default_factory=AclRequest)
    tagging: dict[str, str] | None = None
    checksum_algorithm: str | None = None
    lock: ObjectLockRequest = field(default_factory=ObjectLockRequest)
    sse: str | None = None


@final
@dataclass(slots=True)
class GetObjectAcl:
    action: ClassVar[str | None] = "s3:GetObjectAcl"
    # AWS names it s3:GetObjectVersionAcl; this is the name Walrus has always evaluated policies with.
    version_action: ClassVar[str] = "s3:GetObjectAclVersion"
    permission: ClassVar[Permission] = OBJECT_READ_ACP
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None


@final
@dataclass(slots=True)
class PutObjectAcl:
    """The ACL comes in headers (`acl`) or, when there are none, as an AccessControlPolicy body."""

    action: ClassVar[str | None] = "s3:PutObjectAcl"
    # AWS names it s3:PutObjectVersionAcl; this is the name Walrus has always evaluated policies with.
    version_action: ClassVar[str] = "s3:PutObjectAclVersion"
    permission: ClassVar[Permission] = OBJECT_WRITE_ACP
    body: ClassVar[Body] = "document"
    bucket: str
    key: str
    version_id: str | None = None
    acl: AclRequest = field(default_factory=AclRequest)


@final
@dataclass(slots=True)
class GetObjectTagging:
    action: ClassVar[str | None] = "s3:GetObjectTagging"
    version_action: ClassVar[str] = "s3:GetObjectVersionTagging"
    permission: ClassVar[Permission] = OBJECT_READ
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None


@final
@dataclass(slots=True)
class PutObjectTagging:
    action: ClassVar[str | None] = "s3:PutObjectTagging"
    version_action: ClassVar[str] = "s3:PutObjectVersionTagging"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "document"
    bucket: str
    key: str
    version_id: str | None = None


@final
@dataclass(slots=True)
class DeleteObjectTagging:
    action: ClassVar[str | None] = "s3:DeleteObjectTagging"
    version_action: ClassVar[str] = "s3:DeleteObjectVersionTagging"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None


# -- multipart uploads ---------------------------------------------------------------------------------


@final
@dataclass(slots=True)
class CreateMultipartUpload:
    action: ClassVar[str | None] = "s3:PutObject"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    headers: ObjectHeaders = field(default_factory=ObjectHeaders)
    acl: AclRequest = field(default_factory=AclRequest)
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    tagging: dict[str, str] | None = None
    lock: ObjectLockRequest = field(default_factory=ObjectLockRequest)
    sse: str | None = None


@final
@dataclass(slots=True)
class UploadPart:
    action: ClassVar[str | None] = "s3:PutObject"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "stream"
    bucket: str
    key: str
    upload_id: str = ""
    part_number: int = 0
    checksum: ChecksumRequest = field(default_factory=ChecksumRequest)
    content_length: int | None = None


@final
@dataclass(slots=True)
class UploadPartCopy:
    """Also needs READ on the source object (its ACL)."""

    action: ClassVar[str | None] = "s3:PutObject"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    upload_id: str = ""
    part_number: int = 0
    source: CopySource = field(default_factory=lambda: CopySource("", "", None, Conditions()))
    source_range: str | None = None


@final
@dataclass(slots=True)
class CompleteMultipartUpload:
    action: ClassVar[str | None] = "s3:PutObject"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "document"
    bucket: str
    key: str
    upload_id: str = ""
    conditions: Conditions = field(default_factory=Conditions)


@final
@dataclass(slots=True)
class AbortMultipartUpload:
    action: ClassVar[str | None] = "s3:AbortMultipartUpload"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    upload_id: str = ""


@final
@dataclass(slots=True)
class ListParts:
    action: ClassVar[str | None] = "s3:ListMultipartUploadParts"
    permission: ClassVar[Permission] = BUCKET_WRITE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    upload_id: str = ""
    max_parts: int = 1000
    part_number_marker: int = 0


# -- bucket policies and public access blocks ------------------------------------------------------------


@final
@dataclass(slots=True)
class PutBucketPolicy:
    action: ClassVar[str | None] = "s3:PutBucketPolicy"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketPolicy:
    action: ClassVar[str | None] = "s3:GetBucketPolicy"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class DeleteBucketPolicy:
    action: ClassVar[str | None] = "s3:DeleteBucketPolicy"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketPolicyStatus:
    action: ClassVar[str | None] = "s3:GetBucketPolicyStatus"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutPublicAccessBlock:
    action: ClassVar[str | None] = "s3:PutBucketPublicAccessBlock"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetPublicAccessBlock:
    action: ClassVar[str | None] = "s3:GetBucketPublicAccessBlock"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class DeletePublicAccessBlock:
    action: ClassVar[str | None] = "s3:PutBucketPublicAccessBlock"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


# -- CORS ----------------------------------------------------------------------------------------------


@final
@dataclass(slots=True)
class PutBucketCors:
    action: ClassVar[str | None] = "s3:PutBucketCORS"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketCors:
    action: ClassVar[str | None] = "s3:GetBucketCORS"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class DeleteBucketCors:
    action: ClassVar[str | None] = "s3:PutBucketCORS"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class Preflight:
    """OPTIONS: a browser asks whether a cross-origin request may be sent; the bucket's CORS rules answer."""

    action: ClassVar[str | None] = None
    permission: ClassVar[Permission] = ANYONE
    body: ClassVar[Body] = "none"
    bucket: str
    key: str | None = None


# -- lifecycle, ownership controls, object lock, logging, encryption (issue 11) -----------------------------


@final
@dataclass(slots=True)
class PutBucketLifecycleConfiguration:
    action: ClassVar[str | None] = "s3:PutLifecycleConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketLifecycleConfiguration:
    action: ClassVar[str | None] = "s3:GetLifecycleConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class DeleteBucketLifecycle:
    action: ClassVar[str | None] = "s3:PutLifecycleConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutBucketOwnershipControls:
    action: ClassVar[str | None] = "s3:PutBucketOwnershipControls"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketOwnershipControls:
    action: ClassVar[str | None] = "s3:GetBucketOwnershipControls"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class DeleteBucketOwnershipControls:
    action: ClassVar[str | None] = "s3:PutBucketOwnershipControls"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutObjectLockConfiguration:
    action: ClassVar[str | None] = "s3:PutBucketObjectLockConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetObjectLockConfiguration:
    action: ClassVar[str | None] = "s3:GetBucketObjectLockConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutObjectRetention:
    action: ClassVar[str | None] = "s3:PutObjectRetention"
    version_action: ClassVar[str] = "s3:PutObjectRetention"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str
    key: str
    version_id: str | None = None
    bypass_governance: bool = False


@final
@dataclass(slots=True)
class GetObjectRetention:
    action: ClassVar[str | None] = "s3:GetObjectRetention"
    version_action: ClassVar[str] = "s3:GetObjectRetention"
    permission: ClassVar[Permission] = OBJECT_READ
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None


@final
@dataclass(slots=True)
class PutObjectLegalHold:
    action: ClassVar[str | None] = "s3:PutObjectLegalHold"
    version_action: ClassVar[str] = "s3:PutObjectLegalHold"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str
    key: str
    version_id: str | None = None


@final
@dataclass(slots=True)
class GetObjectLegalHold:
    action: ClassVar[str | None] = "s3:GetObjectLegalHold"
    version_action: ClassVar[str] = "s3:GetObjectLegalHold"
    permission: ClassVar[Permission] = OBJECT_READ
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None


@final
@dataclass(slots=True)
class GetObjectAttributes:
    """GET /bucket/key?attributes: what x-amz-object-attributes names, of the version asked for."""

    action: ClassVar[str | None] = "s3:GetObjectAttributes"
    version_action: ClassVar[str] = "s3:GetObjectVersionAttributes"
    permission: ClassVar[Permission] = OBJECT_READ
    body: ClassVar[Body] = "none"
    bucket: str
    key: str
    version_id: str | None = None
    attributes: tuple[str, ...] = ()
    max_parts: int = 1000
    part_number_marker: int = 0


@final
@dataclass(slots=True)
class PutBucketLogging:
    action: ClassVar[str | None] = "s3:PutBucketLogging"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketLogging:
    action: ClassVar[str | None] = "s3:GetBucketLogging"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class PutBucketEncryption:
    action: ClassVar[str | None] = "s3:PutEncryptionConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "document"
    bucket: str


@final
@dataclass(slots=True)
class GetBucketEncryption:
    action: ClassVar[str | None] = "s3:GetEncryptionConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


@final
@dataclass(slots=True)
class DeleteBucketEncryption:
    action: ClassVar[str | None] = "s3:PutEncryptionConfiguration"
    permission: ClassVar[Permission] = BUCKET_OWNER
    body: ClassVar[Body] = "none"
    bucket: str


# -- what Walrus does not do ---------------------------------------------------------------------------


@final
@dataclass(slots=True)
class Unsupported:
    """A request S3 knows but Walrus does not do: answered 501 NotImplemented."""

    action: ClassVar[str | None] = None
    permission: ClassVar[Permission] = ANYONE
    body: ClassVar[Body] = "none"
    what: str
    bucket: str | None = None
    key: str | None = None


Endpoint = (
    ListBuckets
    | CreateBucket
    | HeadBucket
    | DeleteBucket
    | GetBucketLocation
    | GetBucketVersioning
    | PutBucketVersioning
    | GetBucketAcl
    | PutBucketAcl
    | GetBucketTagging
    | PutBucketTagging
    | DeleteBucketTagging
    | PostObject
    | ListObjects
    | ListObjectsV2
    | ListObjectVersions
    | ListMultipartUploads
    | PutObject
    | GetObject
    | HeadObject
    | DeleteObject
    | DeleteObjects
    | CopyObject
    | GetObjectAcl
    | PutObjectAcl
    | GetObjectTagging
    | PutObjectTagging
    | DeleteObjectTagging
    | CreateMultipartUpload
    | UploadPart
    | UploadPartCopy
    | CompleteMultipartUpload
    | AbortMultipartUpload
    | ListParts
    | PutBucketPolicy
    | GetBucketPolicy
    | DeleteBucketPolicy
    | GetBucketPolicyStatus
    | PutPublicAccessBlock
    | GetPublicAccessBlock
    | DeletePublicAccessBlock
    | PutBucketCors
    | GetBucketCors
    | DeleteBucketCors
    | Preflight
    | PutBucketLifecycleConfiguration
    | GetBucketLifecycleConfiguration
    | DeleteBucketLifecycle
    | PutBucketOwnershipControls
    | GetBucketOwnershipControls
    | DeleteBucketOwnershipControls
    | PutObjectLockConfiguration
    | GetObjectLockConfiguration
    | PutObjectRetention
    | GetObjectRetention
    | PutObjectLegalHold
    | GetObjectLegalHold
    | GetObjectAttributes
    | PutBucketLogging
    | GetBucketLogging
    | PutBucketEncryption
    | GetBucketEncryption
    | DeleteBucketEncryption
    | Unsupported
)

# Every endpoint class, in declaration order (the union's members).
ENDPOINTS: tuple[type[Endpoint], ...] = get_args(Endpoint)

_VERSIONED = (
    GetObject
    | HeadObject
    | DeleteObject
    | GetObjectAcl
    | PutObjectAcl
    | GetObjectTagging
    | PutObjectTagging
    | DeleteObjectTagging
    | PutObjectRetention
    | GetObjectRetention
    | PutObjectLegalHold
    | GetObjectLegalHold
    | GetObjectAttributes
)


def action_of(endpoint: Endpoint) -> str | None:
    """The S3 action a bucket policy judges `endpoint` as: its class's `action`, or `version_action` when the
    request names a version."""
    if isinstance(endpoint, _VERSIONED) and endpoint.version_id:
        return endpoint.version_action
    return endpoint.action


def needs_body(endpoint: Endpoint) -> bool:
    """Whether the handler reads a (small, whole) document from the request body."""
    return endpoint.body == "document"
