"""Eucalyptus's extensions to the IAM API (Euare), in the shape of botocore's model so the query wire decodes
and renders them like any IAM action: the cloud administrator's account operations, and `DelegateAccount`,
a parameter any Euare call may carry (the cloud administrator acting in another account, by name or id).
Eucalyptus answered them in IAM's namespace, with IAM's XML conventions."""

from __future__ import annotations

from typing import Any

DELEGATE_PARAM = "DelegateAccount"

_ACCOUNT = {
    "type": "structure",
    "members": {
        "AccountName": {"shape": "EucaAccountNameType"},
        "AccountId": {"shape": "accountIdType"},
    },
}

SHAPES: dict[str, dict[str, Any]] = {
    "EucaAccountNameType": {"type": "string", "min": 1, "max": 63},
    "EucaAccount": _ACCOUNT,
    "EucaAccountList": {"type": "list", "member": {"shape": "EucaAccount"}},
    "CreateAccountRequest": {
        "type": "structure",
        "required": ["AccountName"],
        "members": {"AccountName": {"shape": "EucaAccountNameType"}},
    },
    "CreateAccountResponse": {
        "type": "structure",
        "required": ["Account"],
        "members": {"Account": {"shape": "EucaAccount"}},
    },
    "ListAccountsRequest": {"type": "structure", "members": {}},
    "ListAccountsResponse": {
        "type": "structure",
        "required": ["Accounts"],
        "members": {
            "Accounts": {"shape": "EucaAccountList"},
            "IsTruncated": {"shape": "booleanType"},
        },
    },
    "DeleteAccountRequest": {
        "type": "structure",
        "required": ["AccountName"],
        "members": {
            "AccountName": {"shape": "EucaAccountNameType"},
            "Recursive": {"shape": "booleanType"},
        },
    },
}

OPERATIONS: dict[str, dict[str, Any]] = {
    "CreateAccount": {
        "name": "CreateAccount",
        "input": {"shape": "CreateAccountRequest"},
        "output": {"shape": "CreateAccountResponse", "resultWrapper": "CreateAccountResult"},
    },
    "ListAccounts": {
        "name": "ListAccounts",
        "input": {"shape": "ListAccountsRequest"},
        "output": {"shape": "ListAccountsResponse", "resultWrapper": "ListAccountsResult"},
    },
    "DeleteAccount": {"name": "DeleteAccount", "input": {"shape": "DeleteAccountRequest"}},
}


def extend(raw: dict[str, Any]) -> dict[str, Any]:
    """botocore's IAM model with the Euare operations added (botocore's own names never collide: they are
    checked here)."""
    assert not set(SHAPES) & set(raw["shapes"]) and not set(OPERATIONS) & set(raw["operations"])
    assert "accountIdType" in raw["shapes"] and "booleanType" in raw["shapes"]
    return {**raw, "shapes": {**raw["shapes"], **SHAPES}, "operations": {**raw["operations"], **OPERATIONS}}
