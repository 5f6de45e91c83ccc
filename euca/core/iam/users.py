"""Users (with paths), groups and their members, access keys, login profiles and signing certificates."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from euca.core.iam.common import arn, check_path, conflict, exists, limit, new_id, no_such, when
from euca.core.store import Tx
from euca.protocol.query.wire import QueryError

ADMIN_USER = "admin"
MAX_ACCESS_KEYS = 2
MAX_SIGNING_CERTIFICATES = 2
_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,128}$")


def check_name(name: str, what: str, maximum: int = 64) -> None:
    if not _NAME.match(name) or len(name) > maximum:
        raise QueryError(
            "ValidationError",
            f"The specified value for {what} is invalid. It must contain only alphanumeric characters and/or "
            "the following: +=,.@_-",
        )


# -- users -----------------------------------------------------------------------------------------------


def _user(row: Any, account_id: str) -> dict[str, Any]:
    return {
        "Path": row["path"],
        "UserName": row["name"],
        "UserId": row["user_id"],
        "Arn": arn(account_id, "user", row["path"], row["name"]),
        "CreateDate": when(row["created"]),
    }


def user_row(tx: Tx, account_id: str, name: str) -> Any:
    row = tx.one(
        "SELECT name, user_id, path, created FROM users WHERE account_id=? AND name=? COLLATE NOCASE",
        (account_id, name),
    )
    if row is None:
        raise no_such("user", name)
    return row


def create_user(tx: Tx, account_id: str, name: str, path: str | None) -> dict[str, Any]:
    check_name(name, "userName")
    path = check_path(path)
    if tx.one("SELECT 1 FROM users WHERE account_id=? AND name=? COLLATE NOCASE", (account_id, name)):
        raise exists("User", name)
    tx.execute(
        "INSERT INTO users(account_id, name, user_id, created, path) VALUES(?,?,?,?,?)",
        (account_id, name, new_id("AIDA"), time.time(), path),
    )
    return get_user(tx, account_id, name)


def get_user(tx: Tx, account_id: str, name: str) -> dict[str, Any]:
    return _user(user_row(tx, account_id, name), account_id)


def list_users(tx: Tx, account_id: str, path_prefix: str | None) -> list[dict[str, Any]]:
    rows = tx.all(
        "SELECT name, user_id, path, created FROM users WHERE account_id=? AND path LIKE ? ESCAPE '\\' "
        "ORDER BY name COLLATE NOCASE",
        (account_id, _like_prefix(path_prefix or "/")),
    )
    return [_user(r, account_id) for r in rows]


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def update_user(tx: Tx, account_id: str, name: str, new_name: str | None, new_path: str | None) -> None:
    row = user_row(tx, account_id, name)
    current = row["name"]
    if new_path is not None:
        tx.execute(
            "UPDATE users SET path=? WHERE account_id=? AND name=?",
            (check_path(new_path), account_id, current),
        )
    if new_name is not None and new_name != current:
        check_name(new_name, "newUserName")
        if current == ADMIN_USER:
            raise QueryError("AccessDenied", "The account's admin user cannot be renamed.", 403)
        if tx.one("SELECT 1 FROM users WHERE account_id=? AND name=? COLLATE NOCASE", (account_id, new_name)):
            raise exists("User", new_name)
        # Rows that name the user follow (the foreign keys have no ON UPDATE, so they are moved by hand).
        tx.execute("PRAGMA defer_foreign_keys=ON")
        tx.execute("UPDATE users SET name=? WHERE account_id=? AND name=?", (new_name, account_id, current))
        for table, column in (
            ("access_keys", "user_name"),
            ("signing_certificates", "user_name"),
            ("iam_group_members", "user_name"),
            ("iam_login_profiles", "user_name"),
        ):
            tx.execute(
                f"UPDATE {table} SET {column}=? WHERE account_id=? AND {column}=?",
                (new_name, account_id, current),
            )
        for table in ("iam_inline_policies", "iam_attachments"):
            tx.execute(
                f"UPDATE {table} SET owner=? WHERE account_id=? AND kind='user' AND owner=?",
                (new_name, account_id, current),
            )


def delete_user(tx: Tx, account_id: str, name: str) -> None:
    current = user_row(tx, account_id, name)["name"]
    if current == ADMIN_USER:
        raise QueryError("DeleteConflict", "Cannot delete the account's admin user.")
    checks = (
        ("SELECT 1 FROM access_keys WHERE account_id=? AND user_name=?", "must delete access keys first."),
        (
            "SELECT 1 FROM signing_certificates WHERE account_id=? AND user_name=?",
            "must delete signing certificates first.",
        ),
        (
            "SELECT 1 FROM iam_login_profiles WHERE account_id=? AND user_name=?",
            "must delete login profile first.",
        ),
        (
            "SELECT 1 FROM iam_inline_policies WHERE account_id=? AND kind='user' AND owner=?",
            "must delete policies first.",
        ),
        (
            "SELECT 1 FROM iam_attachments WHERE account_id=? AND kind='user' AND owner=?",
            "must detach all policies first.",
        ),
        (
            "SELECT 1 FROM iam_group_members WHERE account_id=? AND user_name=?",
            "must remove users from group first.",
        ),
    )
    for sql, message in checks:
        if tx.one(sql, (account_id, current)):
            raise conflict(f"Cannot delete entity, {message}")
    tx.execute("DELETE FROM users WHERE account_id=? AND name=?", (account_id, current))


# -- groups ----------------------------------------------------------------------------------------------


def _group(row: Any, account_id: str) -> dict[str, Any]:
    return {
        "Path": row["path"],
        "GroupName": row["name"],
        "GroupId": row["group_id"],
        "Arn": arn(account_id, "group", row["path"], row["name"]),
        "CreateDate": when(row["created"]),
    }


def group_row(tx: Tx, account_id: str, name: str) -> Any:
    row = tx.one(
        "SELECT name, group_id, path, created FROM iam_groups WHERE account_id=? AND name=?",
        (account_id, name),
    )
    if row is None:
        raise no_such("group", name)
    return row


def create_group(tx: Tx, account_id: str, name: str, path: str | None) -> dict[str, Any]:
    check_name(name, "groupName", 128)
    path = check_path(path)
    if tx.one("SELECT 1 FROM iam_groups WHERE account_id=? AND name=?", (account_id, name)):
        raise exists("Group", name)
    tx.execute(
        "INSERT INTO iam_groups(account_id, name, group_id, path, created) VALUES(?,?,?,?,?)",
        (account_id, name, new_id("AGPA"), path, time.time()),
    )
    return _group(group_row(tx, account_id, name), account_id)


def get_group(tx: Tx, account_id: str, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    group = _group(group_row(tx, account_id, name), account_id)
    rows = tx.all(
        "SELECT u.name, u.user_id, u.path, u.created FROM iam_group_members m JOIN users u "
        "ON u.account_id=m.account_id AND u.name=m.user_name WHERE m.account_id=? AND m.group_name=? "
        "ORDER BY u.name COLLATE NOCASE",
        (account_id, group["GroupName"]),
    )
    return group, [_user(r, account_id) for r in rows]


def list_groups(tx: Tx, account_id: str, path_prefix: str | None) -> list[dict[str, Any]]:
    rows = tx.all(
        "SELECT name, group_id, path, created FROM iam_groups WHERE account_id=? AND path LIKE ? ESCAPE '\\' "
        "ORDER BY name COLLATE NOCASE",
        (account_id, _like_prefix(path_prefix or "/")),
    )
    return [_group(r, account_id) for r in rows]


def groups_for_user(tx: Tx, account_id: str, user_name: str) -> list[dict[str, Any]]:
    user = user_row(tx, account_id, user_name)["name"]
    rows = tx.all(
        "SELECT g.name, g.group_id, g.path, g.created FROM iam_group_members m JOIN iam_groups g "
        "ON g.account_id=m.account_id AND g.name=m.group_name WHERE m.account_id=? AND m.user_name=? "
        "ORDER BY g.name COLLATE NOCASE",
        (account_id, user),
    )
    return [_group(r, account_id) for r in rows]


def update_group(tx: Tx, account_id: str, name: str, new_name: str | None, new_path: str | None) -> None:
    current = group_row(tx, account_id, name)["name"]
    if new_path is not None:
        tx.execute(
            "UPDATE iam_groups SET path=? WHERE account_id=? AND name=?",
            (check_path(new_path), account_id, current),
        )
    if new_name is not None and new_name != current:
        check_name(new_name, "newGroupName", 128)
        if tx.one("SELECT 1 FROM iam_groups WHERE account_id=? AND name=?", (account_id, new_name)):
            raise exists("Group", new_name)
        tx.execute("PRAGMA defer_foreign_keys=ON")
        tx.execute(
            "UPDATE iam_groups SET name=? WHERE account_id=? AND name=?", (new_name, account_id, current)
        )
        tx.execute(
            "UPDATE iam_group_members SET group_name=? WHERE account_id=? AND group_name=?",
            (new_name, account_id, current),
        )
        for table in ("iam_inline_policies", "iam_attachments"):
            tx.execute(
                f"UPDATE {table} SET owner=? WHERE account_id=? AND kind='group' AND owner=?",
                (new_name, account_id, current),
            )


def delete_group(tx: Tx, account_id: str, name: str) -> None:
    current = group_row(tx, account_id, name)["name"]
    if tx.one("SELECT 1 FROM iam_group_members WHERE account_id=? AND group_name=?", (account_id, current)):
        raise conflict("Cannot delete entity, must remove users from group first.")
    if tx.one(
        "SELECT 1 FROM iam_inline_policies WHERE account_id=? AND kind='group' AND owner=?",
        (account_id, current),
    ):
        raise conflict("Cannot delete entity, must delete policies first.")
    if tx.one(
        "SELECT 1 FROM iam_attachments WHERE account_id=? AND kind='group' AND owner=?", (account_id, current)
    ):
        raise conflict("Cannot delete entity, must detach all policies first.")
    tx.execute("DELETE FROM iam_groups WHERE account_id=? AND name=?", (account_id, current))


def add_user_to_group(tx: Tx, account_id: str, group: str, user: str) -> None:
    g = group_row(tx, account_id, group)["name"]
    u = user_row(tx, account_id, user)["name"]
    tx.execute(
        "INSERT INTO iam_group_members(account_id, group_name, user_name) VALUES(?,?,?) ON CONFLICT DO NOTHING",
        (account_id, g, u),
    )


def remove_user_from_group(tx: Tx, account_id: str, group: str, user: str) -> None:
    g = group_row(tx, account_id, group)["name"]
    u = user_row(tx, account_id, user)["name"]
    if not tx.execute(
        "DELETE FROM iam_group_members WHERE account_id=? AND group_name=? AND user_name=?",
        (account_id, g, u),
    ):
        raise QueryError("NoSuchEntity", f"User {u} is not in group {g}.")


# -- access keys -----------------------------------------------------------------------------------------


def _new_access_key_id() -> str:
    return "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))


def create_access_key(tx: Tx, account_id: str, user: str) -> dict[str, Any]:
    name = user_row(tx, account_id, user)["name"]
    count = tx.scalar(
        "SELECT count(*) FROM access_keys WHERE account_id=? AND user_name=?", (account_id, name)
    )
    if int(count) >= MAX_ACCESS_KEYS:
        raise limit("AccessKeysPerUser", MAX_ACCESS_KEYS)
    akid, secret, now = _new_access_key_id(), secrets.token_urlsafe(30)[:40], time.time()
    tx.execute(
        "INSERT INTO access_keys(access_key_id, secret_key, account_id, user_name, active, created) "
        "VALUES(?,?,?,?,1,?)",
        (akid, secret, account_id, name, now),
    )
    return {
        "UserName": name,
        "AccessKeyId": akid,
        "Status": "Active",
        "SecretAccessKey": secret,
        "CreateDate": when(now),
    }


def list_access_keys(tx: Tx, account_id: str, user: str) -> list[dict[str, Any]]:
    name = user_row(tx, account_id, user)["name"]
    rows = tx.all(
        "SELECT access_key_id, active, created FROM access_keys WHERE account_id=? AND user_name=? ORDER BY created",
        (account_id, name),
    )
    return [
        {
            "UserName": name,
            "AccessKeyId": r["access_key_id"],
            "Status": "Active" if r["active"] else "Inactive",
            "CreateDate": when(r["created"]),
        }
        for r in rows
    ]


def _key_owner(tx: Tx, account_id: str, user: str, access_key_id: str) -> str:
    name = str(user_row(tx, account_id, user)["name"])
    if not tx.one(
        "SELECT 1 FROM access_keys WHERE account_id=? AND user_name=? AND access_key_id=?",
        (account_id, name, access_key_id),
    ):
        raise QueryError("NoSuchEntity", f"The Access Key with id {access_key_id} cannot be found.")
    return name


def update_access_key(tx: Tx, account_id: str, user: str, access_key_id: str, status: str) -> None:
    if status not in ("Active", "Inactive"):
        raise QueryError("ValidationError", f"Value '{status}' at 'status' failed to satisfy constraint")
    _key_owner(tx, account_id, user, access_key_id)
    tx.execute(
        "UPDATE access_keys SET active=? WHERE access_key_id=?",
        (1 if status == "Active" else 0, access_key_id),
    )


def delete_access_key(tx: Tx, account_id: str, user: str, access_key_id: str) -> None:
    _key_owner(tx, account_id, user, access_key_id)
    tx.execute("DELETE FROM access_keys WHERE access_key_id=?", (access_key_id,))


def access_key_last_used(tx: Tx, account_id: str, access_key_id: str) -> dict[str, Any]:
    row = tx.one(
        "SELECT user_name, last_used, last_used_service, last_used_region FROM access_keys "
        "WHERE account_id=? AND access_key_id=?",
        (account_id, access_key_id),
    )
    if row is None:
        raise QueryError("NoSuchEntity", f"The Access Key with id {access_key_id} cannot be found.")
    used: dict[str, Any] = {
        "ServiceName": row["last_used_service"] or "N/A",
        "Region": row["last_used_region"] or "N/A",
    }
    if row["last_used"] is not None:
        used["LastUsedDate"] = when(row["last_used"])
    return {"UserName": row["user_name"], "AccessKeyLastUsed": used}


# -- login profiles --------------------------------------------------------------------------------------


def _hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _check_password(password: str) -> None:
    if not 6 <= len(password) <= 128:
        raise QueryError("PasswordPolicyViolation", "Password should have a minimum length of 6")


def create_login_profile(tx: Tx, account_id: str, user: str, password: str, reset: bool) -> dict[str, Any]:
    name = user_row(tx, account_id, user)["name"]
    if tx.one("SELECT 1 FROM iam_login_profiles WHERE account_id=? AND user_name=?", (account_id, name)):
        raise QueryError("EntityAlreadyExists", f"Login Profile for user {name} already exists.")
    _check_password(password)
    now = time.time()
    tx.execute(
        "INSERT INTO iam_login_profiles(account_id, user_name, password_hash, reset_required, created) "
        "VALUES(?,?,?,?,?)",
        (account_id, name, _hash_password(password), 1 if reset else 0, now),
    )
    return {"UserName": name, "CreateDate": when(now), "PasswordResetRequired": reset}


def get_login_profile(tx: Tx, account_id: str, user: str) -> dict[str, Any]:
    name = user_row(tx, account_id, user)["name"]
    row = tx.one(
        "SELECT reset_required, created FROM iam_login_profiles WHERE account_id=? AND user_name=?",
        (account_id, name),
    )
    if row is None:
        raise QueryError("NoSuchEntity", f"Login Profile for User {name} cannot be found.")
    return {
        "UserName": name,
        "CreateDate": when(row["created"]),
        "PasswordResetRequired": bool(row["reset_required"]),
    }


def update_login_profile(
    tx: Tx, account_id: str, user: str, password: str | None, reset: bool | None
) -> None:
    name = get_login_profile(tx, account_id, user)["UserName"]
    if password is not None:
        _check_password(password)
        tx.execute(
            "UPDATE iam_login_profiles SET password_hash=? WHERE account_id=? AND user_name=?",
            (_hash_password(password), account_id, name),
        )
    if reset is not None:
        tx.execute(
            "UPDATE iam_login_profiles SET reset_required=? WHERE account_id=? AND user_name=?",
            (1 if reset else 0, account_id, name),
        )


def delete_login_profile(tx: Tx, account_id: str, user: str) -> None:
    name = get_login_profile(tx, account_id, user)["UserName"]
    tx.execute("DELETE FROM iam_login_profiles WHERE account_id=? AND user_name=?", (account_id, name))


# -- signing certificates --------------------------------------------------------------------------------


def _certificate(row: Any) -> dict[str, Any]:
    return {
        "UserName": row["user_name"],
        "CertificateId": row["certificate_id"],
        "CertificateBody": row["pem"],
        "Status": "Active" if row["active"] else "Inactive",
        "UploadDate": when(row["created"]),
    }


def upload_signing_certificate(tx: Tx, account_id: str, user: str, body: str) -> dict[str, Any]:
    name = user_row(tx, account_id, user)["name"]
    try:
        cert = x509.load_pem_x509_certificate(body.encode())
    except ValueError:
        raise QueryError(
            "MalformedCertificate", "The certificate body is not a valid PEM X.509 certificate."
        ) from None
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    if tx.one("SELECT 1 FROM signing_certificates WHERE fingerprint=?", (fingerprint,)):
        raise QueryError("DuplicateCertificate", "The certificate is already registered.")
    count = tx.scalar(
        "SELECT count(*) FROM signing_certificates WHERE account_id=? AND user_name=?", (account_id, name)
    )
    if int(count) >= MAX_SIGNING_CERTIFICATES:
        raise limit("SigningCertificatesPerUser", MAX_SIGNING_CERTIFICATES)
    certificate_id = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(32))
    tx.execute(
        "INSERT INTO signing_certificates(certificate_id, account_id, user_name, pem, fingerprint, active, created) "
        "VALUES(?,?,?,?,?,1,?)",
        (certificate_id, account_id, name, pem, fingerprint, time.time()),
    )
    return _certificate(_certificate_row(tx, account_id, certificate_id))


def _certificate_row(tx: Tx, account_id: str, certificate_id: str) -> Any:
    row = tx.one(
        "SELECT certificate_id, user_name, pem, active, created FROM signing_certificates "
        "WHERE account_id=? AND certificate_id=?",
        (account_id, certificate_id),
    )
    if row is None:
        raise QueryError("NoSuchEntity", f"The Certificate with id {certificate_id} cannot be found.")
    return row


def list_signing_certificates(tx: Tx, account_id: str, user: str) -> list[dict[str, Any]]:
    name = user_row(tx, account_id, user)["name"]
    rows = tx.all(
        "SELECT certificate_id, user_name, pem, active, created FROM signing_certificates "
        "WHERE account_id=? AND user_name=? ORDER BY created",
        (account_id, name),
    )
    return [_certificate(r) for r in rows]


def update_signing_certificate(tx: Tx, account_id: str, certificate_id: str, status: str) -> None:
    if status not in ("Active", "Inactive"):
        raise QueryError("ValidationError", f"Value '{status}' at 'status' failed to satisfy constraint")
    _certificate_row(tx, account_id, certificate_id)
    tx.execute(
        "UPDATE signing_certificates SET active=? WHERE certificate_id=?",
        (1 if status == "Active" else 0, certificate_id),
    )


def delete_signing_certificate(tx: Tx, account_id: str, certificate_id: str) -> None:
    _certificate_row(tx, account_id, certificate_id)
    tx.execute("DELETE FROM signing_certificates WHERE certificate_id=?", (certificate_id,))
