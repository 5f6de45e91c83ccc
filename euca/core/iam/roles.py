"""Roles (with their trust policies) and instance profiles; the account summary."""

from __future__ import annotations

import time
from typing import Any

from euca.core.iam.common import (
    MAX_TRUST,
    TRUST_RULES,
    arn,
    check_path,
    check_size,
    checked_document,
    conflict,
    encoded,
    exists,
    limit,
    new_id,
    when,
)
from euca.core.iam.policies import MAX_ATTACHED, MAX_VERSIONS
from euca.core.iam.users import MAX_ACCESS_KEYS, MAX_SIGNING_CERTIFICATES, check_name
from euca.core.store import Tx
from euca.protocol.query.wire import QueryError

DEFAULT_MAX_SESSION = 3600

_ROLE_COLUMNS = "name, role_id, path, trust_policy, description, max_session, created"


def _role(row: Any, account_id: str) -> dict[str, Any]:
    role: dict[str, Any] = {
        "Path": row["path"],
        "RoleName": row["name"],
        "RoleId": row["role_id"],
        "Arn": arn(account_id, "role", row["path"], row["name"]),
        "CreateDate": when(row["created"]),
        "AssumeRolePolicyDocument": encoded(row["trust_policy"]),
        "MaxSessionDuration": row["max_session"],
    }
    if row["description"]:
        role["Description"] = row["description"]
    return role


def role_row(tx: Tx, account_id: str, name: str) -> Any:
    row = tx.one(f"SELECT {_ROLE_COLUMNS} FROM iam_roles WHERE account_id=? AND name=?", (account_id, name))
    if row is None:
        raise QueryError("NoSuchEntity", f"The role with name {name} cannot be found.")
    return row


def _check_session(seconds: int | None) -> int:
    value = DEFAULT_MAX_SESSION if seconds is None else seconds
    if not 3600 <= value <= 43200:
        raise QueryError(
            "ValidationError",
            f"1 validation error detected: Value '{value}' at 'maxSessionDuration' failed to satisfy constraint: "
            "Member must have value between 3600 and 43200",
        )
    return value


def create_role(
    tx: Tx,
    account_id: str,
    name: str,
    path: str | None,
    trust_policy: str,
    description: str | None,
    max_session: int | None,
) -> dict[str, Any]:
    check_name(name, "roleName")
    path = check_path(path)
    checked_document(trust_policy, TRUST_RULES)
    check_size(trust_policy, MAX_TRUST, f"role {name}")
    session = _check_session(max_session)
    if tx.one("SELECT 1 FROM iam_roles WHERE account_id=? AND name=?", (account_id, name)):
        raise exists("Role", name)
    tx.execute(
        f"INSERT INTO iam_roles({_ROLE_COLUMNS}, account_id) VALUES(?,?,?,?,?,?,?,?)",
        (name, new_id("AROA"), path, trust_policy, description or "", session, time.time(), account_id),
    )
    return get_role(tx, account_id, name)


def get_role(tx: Tx, account_id: str, name: str) -> dict[str, Any]:
    return _role(role_row(tx, account_id, name), account_id)


def role_trust_policy(tx: Tx, account_id: str, name: str) -> tuple[dict[str, Any], str]:
    """(the role, its trust policy as stored), for AssumeRole."""
    row = role_row(tx, account_id, name)
    return _role(row, account_id), str(row["trust_policy"])


def list_roles(tx: Tx, account_id: str, path_prefix: str | None) -> list[dict[str, Any]]:
    rows = tx.all(
        f"SELECT {_ROLE_COLUMNS} FROM iam_roles WHERE account_id=? ORDER BY name COLLATE NOCASE",
        (account_id,),
    )
    return [_role(r, account_id) for r in rows if r["path"].startswith(path_prefix or "/")]


def update_role(tx: Tx, account_id: str, name: str, description: str | None, max_session: int | None) -> None:
    current = role_row(tx, account_id, name)["name"]
    if description is not None:
        tx.execute(
            "UPDATE iam_roles SET description=? WHERE account_id=? AND name=?",
            (description, account_id, current),
        )
    if max_session is not None:
        tx.execute(
            "UPDATE iam_roles SET max_session=? WHERE account_id=? AND name=?",
            (_check_session(max_session), account_id, current),
        )


def update_trust_policy(tx: Tx, account_id: str, name: str, trust_policy: str) -> None:
    current = role_row(tx, account_id, name)["name"]
    checked_document(trust_policy, TRUST_RULES)
    check_size(trust_policy, MAX_TRUST, f"role {current}")
    tx.execute(
        "UPDATE iam_roles SET trust_policy=? WHERE account_id=? AND name=?",
        (trust_policy, account_id, current),
    )


def delete_role(tx: Tx, account_id: str, name: str) -> None:
    current = role_row(tx, account_id, name)["name"]
    if tx.one(
        "SELECT 1 FROM iam_instance_profile_roles WHERE account_id=? AND role_name=?", (account_id, current)
    ):
        raise conflict("Cannot delete entity, must remove roles from instance profile first.")
    if tx.one(
        "SELECT 1 FROM iam_inline_policies WHERE account_id=? AND kind='role' AND owner=?",
        (account_id, current),
    ):
        raise conflict("Cannot delete entity, must delete policies first.")
    if tx.one(
        "SELECT 1 FROM iam_attachments WHERE account_id=? AND kind='role' AND owner=?", (account_id, current)
    ):
        raise conflict("Cannot delete entity, must detach all policies first.")
    tx.execute("DELETE FROM iam_roles WHERE account_id=? AND name=?", (account_id, current))


# -- instance profiles -----------------------------------------------------------------------------------


def _profile(tx: Tx, row: Any, account_id: str) -> dict[str, Any]:
    roles = tx.all(
        f"SELECT {', '.join('r.' + c.strip() for c in _ROLE_COLUMNS.split(','))} FROM iam_instance_profile_roles p "
        "JOIN iam_roles r ON r.account_id=p.account_id AND r.name=p.role_name "
        "WHERE p.account_id=? AND p.profile_name=? ORDER BY r.name",
        (account_id, row["name"]),
    )
    return {
        "Path": row["path"],
        "InstanceProfileName": row["name"],
        "InstanceProfileId": row["profile_id"],
        "Arn": arn(account_id, "instance-profile", row["path"], row["name"]),
        "CreateDate": when(row["created"]),
        "Roles": [_role(r, account_id) for r in roles],
    }


def _profile_row(tx: Tx, account_id: str, name: str) -> Any:
    row = tx.one(
        "SELECT name, profile_id, path, created FROM iam_instance_profiles WHERE account_id=? AND name=?",
        (account_id, name),
    )
    if row is None:
        raise QueryError("NoSuchEntity", f"Instance Profile {name} cannot be found.")
    return row


def create_instance_profile(tx: Tx, account_id: str, name: str, path: str | None) -> dict[str, Any]:
    check_name(name, "instanceProfileName", 128)
    path = check_path(path)
    if tx.one("SELECT 1 FROM iam_instance_profiles WHERE account_id=? AND name=?", (account_id, name)):
        raise QueryError("EntityAlreadyExists", f"Instance Profile {name} already exists.")
    tx.execute(
        "INSERT INTO iam_instance_profiles(account_id, name, profile_id, path, created) VALUES(?,?,?,?,?)",
        (account_id, name, new_id("AIPA"), path, time.time()),
    )
    return get_instance_profile(tx, account_id, name)


def get_instance_profile(tx: Tx, account_id: str, name: str) -> dict[str, Any]:
    return _profile(tx, _profile_row(tx, account_id, name), account_id)


def list_instance_profiles(tx: Tx, account_id: str, path_prefix: str | None) -> list[dict[str, Any]]:
    rows = tx.all(
        "SELECT name, profile_id, path, created FROM iam_instance_profiles WHERE account_id=? "
        "ORDER BY name COLLATE NOCASE",
        (account_id,),
    )
    return [_profile(tx, r, account_id) for r in rows if r["path"].startswith(path_prefix or "/")]


def list_instance_profiles_for_role(tx: Tx, account_id: str, role: str) -> list[dict[str, Any]]:
    current = role_row(tx, account_id, role)["name"]
    rows = tx.all(
        "SELECT i.name, i.profile_id, i.path, i.created FROM iam_instance_profile_roles p "
        "JOIN iam_instance_profiles i ON i.account_id=p.account_id AND i.name=p.profile_name "
        "WHERE p.account_id=? AND p.role_name=? ORDER BY i.name",
        (account_id, current),
    )
    return [_profile(tx, r, account_id) for r in rows]


def delete_instance_profile(tx: Tx, account_id: str, name: str) -> None:
    current = _profile_row(tx, account_id, name)["name"]
    if tx.one(
        "SELECT 1 FROM iam_instance_profile_roles WHERE account_id=? AND profile_name=?",
        (account_id, current),
    ):
        raise conflict("Cannot delete entity, must remove roles from instance profile first.")
    tx.execute("DELETE FROM iam_instance_profiles WHERE account_id=? AND name=?", (account_id, current))


def add_role_to_instance_profile(tx: Tx, account_id: str, profile: str, role: str) -> None:
    p = _profile_row(tx, account_id, profile)["name"]
    r = role_row(tx, account_id, role)["name"]
    if tx.one(
        "SELECT 1 FROM iam_instance_profile_roles WHERE account_id=? AND profile_name=?", (account_id, p)
    ):
        raise limit("InstanceSessionsPerInstanceProfile", 1)
    tx.execute(
        "INSERT INTO iam_instance_profile_roles(account_id, profile_name, role_name) VALUES(?,?,?)",
        (account_id, p, r),
    )


def remove_role_from_instance_profile(tx: Tx, account_id: str, profile: str, role: str) -> None:
    p = _profile_row(tx, account_id, profile)["name"]
    r = role_row(tx, account_id, role)["name"]
    if not tx.execute(
        "DELETE FROM iam_instance_profile_roles WHERE account_id=? AND profile_name=? AND role_name=?",
        (account_id, p, r),
    ):
        raise QueryError("NoSuchEntity", f"Role {r} in Instance Profile {p} cannot be found.")


# -- the account summary ---------------------------------------------------------------------------------


def account_summary(tx: Tx, account_id: str) -> dict[str, int]:
    def count(sql: str) -> int:
        return int(tx.scalar(sql, (account_id,)))

    return {
        "Users": count("SELECT count(*) FROM users WHERE account_id=?"),
        "UsersQuota": 5000,
        "Groups": count("SELECT count(*) FROM iam_groups WHERE account_id=?"),
        "GroupsQuota": 300,
        "Roles": count("SELECT count(*) FROM iam_roles WHERE account_id=?"),
        "RolesQuota": 1000,
        "Policies": count("SELECT count(*) FROM iam_policies WHERE account_id=?"),
        "PoliciesQuota": 1500,
        "PolicyVersionsInUse": count("SELECT count(*) FROM iam_attachments WHERE account_id=?"),
        "PolicyVersionsInUseQuota": 10000,
        "VersionsPerPolicyQuota": MAX_VERSIONS,
        "InstanceProfiles": count("SELECT count(*) FROM iam_instance_profiles WHERE account_id=?"),
        "InstanceProfilesQuota": 1000,
        "AccessKeysPerUserQuota": MAX_ACCESS_KEYS,
        "SigningCertificatesPerUserQuota": MAX_SIGNING_CERTIFICATES,
        "AttachedPoliciesPerUserQuota": MAX_ATTACHED,
        "AttachedPoliciesPerGroupQuota": MAX_ATTACHED,
        "AttachedPoliciesPerRoleQuota": MAX_ATTACHED,
        "GroupsPerUserQuota": 10,
        "UserPolicySizeQuota": 2048,
        "GroupPolicySizeQuota": 5120,
        "PolicySizeQuota": 6144,
        "AssumeRolePolicySizeQuota": MAX_TRUST,
        "ServerCertificates": 0,
        "ServerCertificatesQuota": 20,
        "MFADevices": 0,
        "MFADevicesInUse": 0,
        "AccountMFAEnabled": 0,
        "AccountAccessKeysPresent": 0,
        "AccountSigningCertificatesPresent": 0,
        "GlobalEndpointTokenVersion": 1,
        "Providers": 0,
    }
