"""What every IAM module shares: its errors as IAM words them, ids, ARNs, paths and paging."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from euca.protocol import policy as policy_language
from euca.protocol.query.wire import QueryError

T = TypeVar("T")

_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_id(prefix: str) -> str:
    """An IAM unique id: its kind's four-letter prefix (AIDA user, AGPA group, AROA role, ANPA policy, AIPA
    instance profile) and 17 characters."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


def no_such(what: str, name: str) -> QueryError:
    return QueryError("NoSuchEntity", f"The {what} with name {name} cannot be found.")


def exists(what: str, name: str) -> QueryError:
    return QueryError("EntityAlreadyExists", f"{what} with name {name} already exists.")


def conflict(message: str) -> QueryError:
    return QueryError("DeleteConflict", message)


def limit(quota: str, value: int) -> QueryError:
    return QueryError("LimitExceeded", f"Cannot exceed quota for {quota}: {value}")


def arn(account_id: str, kind: str, path: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:{kind}{path}{name}"


def check_path(path: str | None) -> str:
    path = path or "/"
    if not (path.startswith("/") and path.endswith("/")) or len(path) > 512:
        raise QueryError(
            "ValidationError",
            "The specified value for path is invalid. It must begin and end with / and contain only "
            "alphanumeric characters and/or / characters.",
        )
    return path


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def encoded(document: str) -> str:
    """A policy document as IAM returns it: URL-encoded (botocore decodes it back)."""
    return quote(document, safe="")


def page(
    items: Sequence[T], params: dict[str, Any], key: Callable[[T], str], out_name: str
) -> dict[str, Any]:
    """One page of a List* answer: Marker (the key of the last item of the previous page) and MaxItems."""
    marker = params.get("Marker")
    max_items = int(params.get("MaxItems") or 100)
    start = 0
    if marker:
        start = next((i + 1 for i, item in enumerate(items) if key(item) == marker), len(items))
    chunk = list(items[start : start + max_items])
    truncated = start + max_items < len(items)
    result: dict[str, Any] = {out_name: chunk, "IsTruncated": truncated}
    if truncated and chunk:
        result["Marker"] = key(chunk[-1])
    return result


# Size limits of IAM documents, counted without whitespace between JSON tokens (AWS's default quotas).
MAX_USER_INLINE = 2048
MAX_GROUP_INLINE = 5120
MAX_ROLE_INLINE = 10240
MAX_MANAGED = 6144
MAX_TRUST = 2048

IDENTITY_RULES = policy_language.Rules(
    principal="forbidden",
    check_action=policy_language.vendor_action,
    check_resource=policy_language.arn_resource,
    allow_limit=True,
)
TRUST_RULES = policy_language.Rules(
    principal="required", resource_required=False, check_action=policy_language.vendor_action
)


def checked_document(text: str, rules: policy_language.Rules) -> policy_language.Policy:
    """A document IAM accepts, else MalformedPolicyDocument."""
    try:
        return policy_language.parse(text, rules)
    except policy_language.PolicyDocumentError as e:
        raise QueryError("MalformedPolicyDocument", e.message) from None


def check_size(text: str, maximum: int, what: str) -> None:
    try:
        size = policy_language.minified_size(json.loads(text))
    except ValueError:
        return
    if size > maximum:
        raise QueryError("LimitExceeded", f"Maximum policy size of {maximum} bytes exceeded for {what}")
