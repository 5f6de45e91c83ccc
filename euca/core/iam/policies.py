"""Inline policies (of users, groups and roles) and managed policies (versions, attachments), and the
documents that apply to a principal (`effective_documents`)."""

from __future__ import annotations

import re
import time
from typing import Any

from euca.core.iam.common import (
    IDENTITY_RULES,
    MAX_GROUP_INLINE,
    MAX_MANAGED,
    MAX_ROLE_INLINE,
    MAX_USER_INLINE,
    arn,
    check_path,
    check_size,
    checked_document,
    conflict,
    encoded,
    limit,
    new_id,
    when,
)
from euca.core.iam.users import check_name, group_row, user_row
from euca.core.store import Tx
from euca.protocol.query.wire import QueryError

MAX_VERSIONS = 5
MAX_ATTACHED = 10
KINDS = ("user", "group", "role")
_INLINE_LIMIT = {"user": MAX_USER_INLINE, "group": MAX_GROUP_INLINE, "role": MAX_ROLE_INLINE}


def owner_name(tx: Tx, account_id: str, kind: str, name: str) -> str:
    """The owner's name as stored (IAM names are case-insensitive), NoSuchEntity when there is none."""
    if kind == "user":
        return str(user_row(tx, account_id, name)["name"])
    if kind == "group":
        return str(group_row(tx, account_id, name)["name"])
    row = tx.one("SELECT name FROM iam_roles WHERE account_id=? AND name=?", (account_id, name))
    if row is None:
        raise QueryError("NoSuchEntity", f"The role with name {name} cannot be found.")
    return str(row["name"])


# -- inline ----------------------------------------------------------------------------------------------


def put_inline(tx: Tx, account_id: str, kind: str, owner: str, name: str, document: str) -> None:
    owner = owner_name(tx, account_id, kind, owner)
    check_name(name, "policyName", 128)
    checked_document(document, IDENTITY_RULES)
    others = tx.all(
        "SELECT document FROM iam_inline_policies WHERE account_id=? AND kind=? AND owner=? AND name<>?",
        (account_id, kind, owner, name),
    )
    # The limit is on all of the owner's inline policies together, as IAM counts it.
    total = "".join(r["document"] for r in others)
    check_size(document, _INLINE_LIMIT[kind] - len(re.sub(r"\s", "", total)), f"{kind} {owner}")
    tx.execute(
        "INSERT INTO iam_inline_policies(account_id, kind, owner, name, document) VALUES(?,?,?,?,?) "
        "ON CONFLICT(account_id, kind, owner, name) DO UPDATE SET document=excluded.document",
        (account_id, kind, owner, name, document),
    )


def get_inline(tx: Tx, account_id: str, kind: str, owner: str, name: str) -> tuple[str, str, str]:
    """(owner, policy name, URL-encoded document)."""
    owner = owner_name(tx, account_id, kind, owner)
    row = tx.one(
        "SELECT name, document FROM iam_inline_policies WHERE account_id=? AND kind=? AND owner=? AND name=?",
        (account_id, kind, owner, name),
    )
    if row is None:
        raise QueryError("NoSuchEntity", f"The {kind} policy with name {name} cannot be found.")
    return owner, row["name"], encoded(row["document"])


def list_inline(tx: Tx, account_id: str, kind: str, owner: str) -> list[str]:
    owner = owner_name(tx, account_id, kind, owner)
    rows = tx.all(
        "SELECT name FROM iam_inline_policies WHERE account_id=? AND kind=? AND owner=? ORDER BY name",
        (account_id, kind, owner),
    )
    return [r["name"] for r in rows]


def delete_inline(tx: Tx, account_id: str, kind: str, owner: str, name: str) -> None:
    owner = owner_name(tx, account_id, kind, owner)
    if not tx.execute(
        "DELETE FROM iam_inline_policies WHERE account_id=? AND kind=? AND owner=? AND name=?",
        (account_id, kind, owner, name),
    ):
        raise QueryError("NoSuchEntity", f"The {kind} policy with name {name} cannot be found.")


# -- managed ---------------------------------------------------------------------------------------------

_POLICY_ARN = re.compile(r"^arn:aws:iam::(\d{12}):policy(/(?:[^/]+/)*)([^/]+)$")


def _policy(tx: Tx, row: Any, account_id: str) -> dict[str, Any]:
    policy_arn = arn(account_id, "policy", row["path"], row["name"])
    count = tx.scalar("SELECT count(*) FROM iam_attachments WHERE policy_arn=?", (policy_arn,))
    return {
        "PolicyName": row["name"],
        "PolicyId": row["policy_id"],
        "Arn": policy_arn,
        "Path": row["path"],
        "DefaultVersionId": row["default_version"],
        "AttachmentCount": int(count),
        "PermissionsBoundaryUsageCount": 0,
        "IsAttachable": True,
        "Description": row["description"] or None,
        "CreateDate": when(row["created"]),
        "UpdateDate": when(row["updated"]),
    }


def _policy_row(tx: Tx, account_id: str, policy_arn: str) -> Any:
    m = _POLICY_ARN.match(policy_arn)
    row = None
    if m is not None and m.group(1) == account_id:
        row = tx.one(
            "SELECT name, policy_id, path, description, default_version, next_version, created, updated "
            "FROM iam_policies WHERE account_id=? AND name=? AND path=?",
            (account_id, m.group(3), m.group(2)),
        )
    if row is None:
        raise QueryError("NoSuchEntity", f"Policy {policy_arn} does not exist or is not attachable.")
    return row


def create_policy(
    tx: Tx, account_id: str, name: str, path: str | None, document: str, description: str | None
) -> dict[str, Any]:
    check_name(name, "policyName", 128)
    path = check_path(path)
    checked_document(document, IDENTITY_RULES)
    check_size(document, MAX_MANAGED, f"policy {name}")
    if tx.one("SELECT 1 FROM iam_policies WHERE account_id=? AND name=?", (account_id, name)):
        raise QueryError(
            "EntityAlreadyExists", f"A policy called {name} already exists. Duplicate names are not allowed."
        )
    now = time.time()
    tx.execute(
        "INSERT INTO iam_policies(account_id, name, policy_id, path, description, default_version, next_version, "
        "created, updated) VALUES(?,?,?,?,?,?,?,?,?)",
        (account_id, name, new_id("ANPA"), path, description or "", "v1", 2, now, now),
    )
    tx.execute(
        "INSERT INTO iam_policy_versions(account_id, policy_name, version_id, document, created) VALUES(?,?,?,?,?)",
        (account_id, name, "v1", document, now),
    )
    return get_policy(tx, account_id, arn(account_id, "policy", path, name))


def get_policy(tx: Tx, account_id: str, policy_arn: str) -> dict[str, Any]:
    return _policy(tx, _policy_row(tx, account_id, policy_arn), account_id)


def list_policies(
    tx: Tx, account_id: str, scope: str, only_attached: bool, path_prefix: str | None
) -> list[Any]:
    if scope == "AWS":
        return []
    rows = tx.all(
        "SELECT name, policy_id, path, description, default_version, next_version, created, updated "
        "FROM iam_policies WHERE account_id=? ORDER BY name COLLATE NOCASE",
        (account_id,),
    )
    found = [_policy(tx, r, account_id) for r in rows if r["path"].startswith(path_prefix or "/")]
    return [p for p in found if p["AttachmentCount"] > 0] if only_attached else found


def delete_policy(tx: Tx, account_id: str, policy_arn: str) -> None:
    row = _policy_row(tx, account_id, policy_arn)
    if tx.one("SELECT 1 FROM iam_attachments WHERE policy_arn=?", (policy_arn,)):
        raise conflict("Cannot delete a policy attached to entities.")
    tx.execute("DELETE FROM iam_policies WHERE account_id=? AND name=?", (account_id, row["name"]))


def _version(row: Any, default: str) -> dict[str, Any]:
    return {
        "Document": encoded(row["document"]),
        "VersionId": row["version_id"],
        "IsDefaultVersion": row["version_id"] == default,
        "CreateDate": when(row["created"]),
    }


def create_policy_version(tx: Tx, account_id: str, policy_arn: str, document: str, set_default: bool) -> Any:
    row = _policy_row(tx, account_id, policy_arn)
    checked_document(document, IDENTITY_RULES)
    check_size(document, MAX_MANAGED, f"policy {row['name']}")
    count = tx.scalar(
        "SELECT count(*) FROM iam_policy_versions WHERE account_id=? AND policy_name=?",
        (account_id, row["name"]),
    )
    if int(count) >= MAX_VERSIONS:
        raise QueryError(
            "LimitExceeded",
            f"A managed policy can have up to {MAX_VERSIONS} versions. Before you create a new version, you must "
            "delete an existing version.",
        )
    version_id, now = f"v{row['next_version']}", time.time()
    tx.execute(
        "INSERT INTO iam_policy_versions(account_id, policy_name, version_id, document, created) VALUES(?,?,?,?,?)",
        (account_id, row["name"], version_id, document, now),
    )
    default = version_id if set_default else row["default_version"]
    tx.execute(
        "UPDATE iam_policies SET next_version=next_version+1, default_version=?, updated=? "
        "WHERE account_id=? AND name=?",
        (default, now, account_id, row["name"]),
    )
    return get_policy_version(tx, account_id, policy_arn, version_id)


def get_policy_version(tx: Tx, account_id: str, policy_arn: str, version_id: str) -> dict[str, Any]:
    row = _policy_row(tx, account_id, policy_arn)
    version = tx.one(
        "SELECT version_id, document, created FROM iam_policy_versions "
        "WHERE account_id=? AND policy_name=? AND version_id=?",
        (account_id, row["name"], version_id),
    )
    if version is None:
        raise QueryError(
            "NoSuchEntity", f"Policy {policy_arn} version {version_id} does not exist or is not attachable."
        )
    return _version(version, row["default_version"])


def list_policy_versions(tx: Tx, account_id: str, policy_arn: str) -> list[dict[str, Any]]:
    row = _policy_row(tx, account_id, policy_arn)
    rows = tx.all(
        "SELECT version_id, document, created FROM iam_policy_versions WHERE account_id=? AND policy_name=? "
        "ORDER BY created DESC, CAST(substr(version_id, 2) AS INTEGER) DESC",
        (account_id, row["name"]),
    )
    versions = [_version(r, row["default_version"]) for r in rows]
    for v in versions:
        del v["Document"]
    return versions


def delete_policy_version(tx: Tx, account_id: str, policy_arn: str, version_id: str) -> None:
    row = _policy_row(tx, account_id, policy_arn)
    get_policy_version(tx, account_id, policy_arn, version_id)
    if version_id == row["default_version"]:
        raise conflict("Cannot delete the default version of a policy.")
    tx.execute(
        "DELETE FROM iam_policy_versions WHERE account_id=? AND policy_name=? AND version_id=?",
        (account_id, row["name"], version_id),
    )


def set_default_policy_version(tx: Tx, account_id: str, policy_arn: str, version_id: str) -> None:
    row = _policy_row(tx, account_id, policy_arn)
    get_policy_version(tx, account_id, policy_arn, version_id)
    tx.execute(
        "UPDATE iam_policies SET default_version=?, updated=? WHERE account_id=? AND name=?",
        (version_id, time.time(), account_id, row["name"]),
    )


def attach(tx: Tx, account_id: str, kind: str, owner: str, policy_arn: str) -> None:
    owner = owner_name(tx, account_id, kind, owner)
    _policy_row(tx, account_id, policy_arn)
    count = tx.scalar(
        "SELECT count(*) FROM iam_attachments WHERE account_id=? AND kind=? AND owner=? AND policy_arn<>?",
        (account_id, kind, owner, policy_arn),
    )
    if int(count) >= MAX_ATTACHED:
        raise limit(f"PoliciesPer{kind.capitalize()}", MAX_ATTACHED)
    tx.execute(
        "INSERT INTO iam_attachments(account_id, kind, owner, policy_arn) VALUES(?,?,?,?) ON CONFLICT DO NOTHING",
        (account_id, kind, owner, policy_arn),
    )


def detach(tx: Tx, account_id: str, kind: str, owner: str, policy_arn: str) -> None:
    owner = owner_name(tx, account_id, kind, owner)
    if not tx.execute(
        "DELETE FROM iam_attachments WHERE account_id=? AND kind=? AND owner=? AND policy_arn=?",
        (account_id, kind, owner, policy_arn),
    ):
        raise QueryError("NoSuchEntity", f"Policy {policy_arn} was not found.")


def list_attached(tx: Tx, account_id: str, kind: str, owner: str) -> list[dict[str, Any]]:
    owner = owner_name(tx, account_id, kind, owner)
    rows = tx.all(
        "SELECT policy_arn FROM iam_attachments WHERE account_id=? AND kind=? AND owner=? ORDER BY policy_arn",
        (account_id, kind, owner),
    )
    return [{"PolicyName": r["policy_arn"].rsplit("/", 1)[-1], "PolicyArn": r["policy_arn"]} for r in rows]


def list_entities_for_policy(tx: Tx, account_id: str, policy_arn: str) -> dict[str, list[dict[str, Any]]]:
    _policy_row(tx, account_id, policy_arn)
    out: dict[str, list[dict[str, Any]]] = {"PolicyUsers": [], "PolicyGroups": [], "PolicyRoles": []}
    for r in tx.all(
        "SELECT kind, owner FROM iam_attachments WHERE account_id=? AND policy_arn=? ORDER BY owner",
        (account_id, policy_arn),
    ):
        kind, owner = r["kind"], r["owner"]
        out[f"Policy{kind.capitalize()}s"].append({f"{kind.capitalize()}Name": owner})
    return out


# -- what applies to a principal -------------------------------------------------------------------------


def effective_documents(tx: Tx, account_id: str, kind: str, name: str) -> list[str]:
    """Every identity policy document of a user (its own, its groups', inline and attached managed
    versions) or of a role. A user or role that no longer exists has none."""
    owners: list[tuple[str, str]] = [(kind, name)]
    if kind == "user":
        owners += [
            ("group", r["group_name"])
            for r in tx.all(
                "SELECT group_name FROM iam_group_members WHERE account_id=? AND user_name=?",
                (account_id, name),
            )
        ]
    documents: list[str] = []
    for owner_kind, owner in owners:
        documents += [
            r["document"]
            for r in tx.all(
                "SELECT document FROM iam_inline_policies WHERE account_id=? AND kind=? AND owner=?",
                (account_id, owner_kind, owner),
            )
        ]
        documents += [
            r["document"]
            for r in tx.all(
                "SELECT v.document FROM iam_attachments a JOIN iam_policies p ON p.account_id=a.account_id "
                "AND a.policy_arn = ('arn:aws:iam::' || p.account_id || ':policy' || p.path || p.name) COLLATE BINARY "
                "JOIN iam_policy_versions v ON v.account_id=p.account_id AND v.policy_name=p.name "
                "AND v.version_id=p.default_version WHERE a.account_id=? AND a.kind=? AND a.owner=?",
                (account_id, owner_kind, owner),
            )
        ]
    return documents


def kinds_valid(kind: str) -> bool:
    return kind in KINDS
