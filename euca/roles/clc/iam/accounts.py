"""Euare's account operations, for the cloud administrator only: CreateAccount, ListAccounts, DeleteAccount
(`euca admin create-account` and the like are clients of these)."""

from __future__ import annotations

from typing import Any

from euca.core.identity import (
    ADMIN_ACCOUNT,
    IdentityError,
    create_account_tx,
    delete_account_tx,
    find_account_tx,
    list_accounts_tx,
)
from euca.core.store import Tx
from euca.protocol.query.wire import QueryError
from euca.roles.clc import admin
from euca.roles.clc.iam.call import Handler, QueryCall


def _account(name: str, account_id: str) -> dict[str, Any]:
    return {"AccountName": name, "AccountId": account_id}


async def create_account(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = str(p["AccountName"])
    try:
        account = await call.write(lambda tx: create_account_tx(tx, name))
    except IdentityError as e:
        code = "EntityAlreadyExists" if "already exists" in str(e) else "ValidationError"
        raise QueryError(code, str(e)) from None
    return {"Account": _account(account.name, account.account_id)}


async def list_accounts(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    accounts = await call.read(list_accounts_tx)
    return {"Accounts": [_account(a.name, a.account_id) for a in accounts], "IsTruncated": False}


def _held(kinds: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{kind}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}" for kind, ids in kinds.items()
    )


def delete_account_checked(tx: Tx, name: str, recursive: bool) -> None:
    """As Eucalyptus: an account that still holds resources is refused (DeleteConflict) unless Recursive;
    Recursive releases its elastic IPs and deletes its key pairs, security groups and identity, but still
    refuses while it has instances, volumes, snapshots, images or buckets (admin.UNSAFE_TO_DELETE: terminate
    or delete them first), or while its security groups are used (admin.delete_account_resources). Its
    buckets are seen only where Walrus shares the CLC's store."""
    account = find_account_tx(tx, name)
    if account is not None and account.name == ADMIN_ACCOUNT:
        raise PermissionError(name)  # the cloud administrators' account: refused before what it holds
    if account is not None and account.name == name:
        blocking = admin.delete_account_resources(
            tx, account.account_id, account.canonical_id, recursive=recursive
        )
        if blocking and recursive:
            raise IdentityError(
                f"Account {name} still has resources that must be terminated or deleted first: {_held(blocking)}"
            )
        if blocking:
            raise IdentityError(
                f"Account {name} still has {_held(blocking)}; delete them first or ask for Recursive."
            )
    delete_account_tx(tx, name, recursive)


async def delete_account(call: QueryCall, p: dict[str, Any]) -> None:
    name, recursive = str(p["AccountName"]), bool(p.get("Recursive", False))
    try:
        await call.write(lambda tx: delete_account_checked(tx, name, recursive))
    except LookupError:
        raise QueryError("NoSuchEntity", f"The account with name {name} cannot be found.") from None
    except PermissionError:
        raise QueryError(
            "AccessDenied", "The cloud administrators' account cannot be deleted.", 403
        ) from None
    except IdentityError as e:
        raise QueryError("DeleteConflict", str(e)) from None


HANDLERS: dict[str, Handler] = {
    "CreateAccount": create_account,
    "ListAccounts": list_accounts,
    "DeleteAccount": delete_account,
}
