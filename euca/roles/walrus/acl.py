"""Access control lists: stored form, canned ACLs, and the permission check.

Stored form (JSON in the store): {"owner": id, "owner_name": name, "grants": [[permission, type, grantee, name]]}.
"""

from __future__ import annotations

from typing import Any

from euca.core.identity import Principal
from euca.protocol.s3 import (
    ALL_USERS,
    AUTHENTICATED_USERS,
    LOG_DELIVERY,
    AccessControlPolicy,
    Grant,
)
from euca.roles.walrus.access import Access

Acl = dict[str, Any]


def canned(name: str, owner_id: str, owner_name: str, bucket_owner: tuple[str, str] | None = None) -> Acl:
    grants: list[list[str]] = [["FULL_CONTROL", "CanonicalUser", owner_id, owner_name]]
    if name == "public-read":
        grants.append(["READ", "Group", ALL_USERS, ""])
    elif name == "public-read-write":
        grants += [["READ", "Group", ALL_USERS, ""], ["WRITE", "Group", ALL_USERS, ""]]
    elif name == "authenticated-read":
        grants.append(["READ", "Group", AUTHENTICATED_USERS, ""])
    elif name == "log-delivery-write":
        grants += [["WRITE", "Group", LOG_DELIVERY, ""], ["READ_ACP", "Group", LOG_DELIVERY, ""]]
    elif name in ("bucket-owner-read", "bucket-owner-full-control") and bucket_owner is not None:
        if bucket_owner[0] != owner_id:
            perm = "READ" if name == "bucket-owner-read" else "FULL_CONTROL"
            grants.append([perm, "CanonicalUser", bucket_owner[0], bucket_owner[1]])
    return {"owner": owner_id, "owner_name": owner_name, "grants": grants}


def from_grants(owner_id: str, owner_name: str, grants: list[Grant]) -> Acl:
    return {
        "owner": owner_id,
        "owner_name": owner_name,
        "grants": [[g.permission, g.grantee_type, g.grantee, g.display_name] for g in grants],
    }


def to_policy(acl: Acl) -> AccessControlPolicy:
    # Group (URI) grants are listed before user grants, as Ceph RGW does: clients such as s3-tests index
    # into the list (the owner's FULL_CONTROL comes last in a public-read-write ACL) and sort user grants
    # by DisplayName only when the first grant has one.
    grants = sorted(acl.get("grants", []), key=lambda g: 0 if g[1] == "Group" else 1)
    return AccessControlPolicy(
        acl.get("owner", ""),
        acl.get("owner_name", ""),
        [Grant(g[0], g[1], g[2], g[3]) for g in grants],
    )


_IMPLIED = {"READ", "WRITE", "READ_ACP", "WRITE_ACP"}


def allowed(acl: Acl | None, principal: Principal | None, permission: str, access: Access) -> bool:
    """Whether `principal` (None: anonymous) holds `permission` through `acl`, under the `access` decision of
    the bucket's policy and public access block (a policy grant passes every check; public grants may be
    ignored); owners always keep the ACP ones."""
    if access.policy_grant:
        return True
    if acl is None:
        return False
    ignore_public = access.ignore_public_acls
    if principal is not None and acl.get("owner") == principal.canonical_id:
        if permission in ("READ_ACP", "WRITE_ACP"):
            return True
    for perm, gtype, grantee, _ in acl.get("grants", []):
        if perm != permission and not (perm == "FULL_CONTROL" and permission in _IMPLIED):
            continue
        if gtype == "Group" and not ignore_public:
            if grantee == ALL_USERS:
                return True
            if grantee == AUTHENTICATED_USERS and principal is not None:
                return True
        elif gtype == "CanonicalUser" and principal is not None and grantee == principal.canonical_id:
            return True
    return False
