"""Object ownership (a bucket's ownership controls) as it acts on writes and ACL checks.

BucketOwnerEnforced disables ACLs, as S3 does: the bucket owner owns every object written into the bucket, a
write may carry no ACL but bucket-owner-full-control (AccessControlListNotSupported otherwise), PutBucketAcl and
PutObjectAcl are refused the same way, reading an ACL shows the bucket owner's FULL_CONTROL alone, and ACL
grants stop granting (objects written before keep their rows, but are judged by that owner-only ACL).
BucketOwnerPreferred gives the bucket owner the objects written with bucket-owner-full-control. ObjectWriter
(and no setting) keeps S3's classic rules: the writer owns what it writes.
"""

from __future__ import annotations

from typing import Any

from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import acl as acls
from euca.roles.walrus.meta import BucketRow, ObjectRow
from euca.roles.walrus.service import WalrusService

ENFORCED = "BucketOwnerEnforced"
PREFERRED = "BucketOwnerPreferred"


def acls_disabled(svc: WalrusService, bucket: str) -> bool:
    settings = svc.settings.get(bucket)
    return settings is not None and settings.get("ownership") == ENFORCED


def grants_beyond_owner(acl: dict[str, Any], owner_id: str) -> bool:
    """Whether an ACL grants anything to anyone but `owner_id` (ACLs cannot be disabled on such a bucket)."""
    return any(not (g[1] == "CanonicalUser" and g[2] == owner_id) for g in acl.get("grants", []))


def owner_only(b: BucketRow) -> acls.Acl:
    """The ACL everything in a bucket with ACLs disabled is judged by and shown with."""
    return acls.canned("private", b.owner_id, b.owner_name)


def refuse_acl(svc: WalrusService, bucket: str, req: s3.AclRequest, *, body_acl: bool = False) -> None:
    """AccessControlListNotSupported for a request that sets an ACL (headers, or a PUT ?acl body) on a bucket
    with ACLs disabled; bucket-owner-full-control alone is accepted on writes, as S3 accepts it."""
    if not acls_disabled(svc, bucket):
        return
    if body_acl or (req and not (req.canned == "bucket-owner-full-control" and not req.grants)):
        raise S3Error("AccessControlListNotSupported")


def writer(
    svc: WalrusService, b: BucketRow, writer_id: tuple[str, str], req: s3.AclRequest
) -> tuple[tuple[str, str], s3.AclRequest]:
    """Who owns what a write makes, and the ACL request to give it, under the bucket's ownership controls."""
    settings = svc.settings.get(b.name)
    ownership = settings.get("ownership") if settings is not None else None
    if ownership == ENFORCED:
        refuse_acl(svc, b.name, req)
        return (b.owner_id, b.owner_name), s3.AclRequest()
    if ownership == PREFERRED and req.canned == "bucket-owner-full-control":
        return (b.owner_id, b.owner_name), s3.AclRequest()
    return writer_id, req


def object_acl(svc: WalrusService, b: BucketRow, o: ObjectRow) -> acls.Acl | None:
    """The ACL an object is judged by: its own, or the owner-only one when the bucket has ACLs disabled."""
    if b.name in svc.settings and acls_disabled(svc, b.name):
        return owner_only(b)
    return o.acl
