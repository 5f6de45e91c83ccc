"""The clc_tags table and the tag rules: the only module that reads or writes tags.

Tags belong to the account that set them. Other resources' records modules call these functions for their
resources' tags (tags_of to show them, write_tags when created with TagSpecifications, forget_resource(s) when
the resource goes). A taggable resource's records module also declares its ResourceKind (its id prefixes, and
who can see a resource of it); the package's composition root hands every kind to the tags API, so tags, the
lowest resource package, imports no other resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error

MAX_TAGS_PER_RESOURCE = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
# SQLite's bound-parameter limit, with room for the other parameters of a statement.
CHUNK = 500


@dataclass(frozen=True)
class ResourceKind:
    """A taggable kind of resource, as CreateTags and DeleteTags find one by its id."""

    # The id prefixes before the dash ("emi" of emi-12345678).
    id_prefixes: tuple[str, ...]
    # The resource type tags record (DescribeTags' resource-type) and TagSpecification names.
    resource_type: str
    # The error code of an id the caller cannot see.
    not_found_code: str
    # (tx, resource id, caller's account id) -> the caller can see the resource
    visible: Callable[[Tx, str, str], bool]


# Characters no tag may hold: they cannot travel in EC2's XML answers (NUL and most C0 controls are not XML),
# so a tag holding one could be written but never shown or deleted by name.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_key(key: str | None) -> str:
    """InvalidParameterValue for a key no tag may have (CreateTags and DeleteTags alike)."""
    if not key:
        raise Ec2Error("InvalidParameterValue", "Tag keys must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise Ec2Error(
            "InvalidParameterValue", f"Tag key exceeds the maximum length of {MAX_KEY_LENGTH} characters"
        )
    if key.lower().startswith("aws:"):
        raise Ec2Error("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
    if _CONTROL.search(key) or "\n" in key or "\r" in key or "\t" in key:
        raise Ec2Error("InvalidParameterValue", "Tag keys must not contain control characters")
    return key


def check_value(value: str) -> None:
    if len(value) > MAX_VALUE_LENGTH:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Tag value exceeds the maximum length of {MAX_VALUE_LENGTH} characters",
        )
    if _CONTROL.search(value):
        raise Ec2Error("InvalidParameterValue", "Tag values must not contain control characters")


def check_tags(tags: Iterable[m.Tag]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for tag in tags:
        key = check_key(tag.key)
        value = tag.value if tag.value is not None else ""
        check_value(value)
        out.append((key, value))
    return out


def tags_from_specifications(specs: list[m.TagSpecification], resource_type: str) -> list[tuple[str, str]]:
    """The tags a create action's TagSpecification.N asks for, for the resource it creates."""
    tags: list[m.Tag] = []
    for spec in specs:
        if spec.resource_type != resource_type:
            raise Ec2Error(
                "InvalidParameterValue",
                f"'{spec.resource_type}' is not a valid taggable resource type for this operation.",
            )
        tags.extend(spec.tags)
    return check_tags(tags)


def write_tags(
    tx: Tx, account_id: str, resource_id: str, resource_type: str, tags: list[tuple[str, str]]
) -> None:
    tx.executemany(
        "INSERT INTO clc_tags(account_id, resource_id, resource_type, key, value) VALUES(?,?,?,?,?) "
        "ON CONFLICT(account_id, resource_id, key) DO UPDATE SET value=excluded.value",
        [(account_id, resource_id, resource_type, k, v) for k, v in tags],
    )
    count = tx.scalar(
        "SELECT COUNT(*) FROM clc_tags WHERE account_id=? AND resource_id=?", (account_id, resource_id)
    )
    if count > MAX_TAGS_PER_RESOURCE:
        raise Ec2Error(
            "TagLimitExceeded",
            f"The maximum number of tags per resource ({MAX_TAGS_PER_RESOURCE}) is exceeded",
        )


def delete_tags(tx: Tx, account_id: str, resource_id: str, tags: list[m.Tag] | None) -> None:
    """The caller's tags on the resource: all of them (None), or those named. A tag named without a value
    goes whatever its value; one named with a value (even "") goes only if it has exactly that value."""
    if tags is None:
        tx.execute("DELETE FROM clc_tags WHERE account_id=? AND resource_id=?", (account_id, resource_id))
        return
    for tag in tags:
        if not tag.key:
            raise Ec2Error("InvalidParameterValue", "Tag keys must not be empty")
        if tag.value is None:
            tx.execute(
                "DELETE FROM clc_tags WHERE account_id=? AND resource_id=? AND key=?",
                (account_id, resource_id, tag.key),
            )
        else:
            tx.execute(
                "DELETE FROM clc_tags WHERE account_id=? AND resource_id=? AND key=? AND value=?",
                (account_id, resource_id, tag.key, tag.value),
            )


def tags_of(tx: Tx, account_id: str, resource_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """resource id -> {key: value} of the caller's tags, for the given resources."""
    ids = list(dict.fromkeys(resource_ids))
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in tx.all(
            f"SELECT resource_id, key, value FROM clc_tags WHERE account_id=? AND resource_id IN ({marks}) "
            "ORDER BY key",
            (account_id, *chunk),
        ):
            found.setdefault(row["resource_id"], {})[row["key"]] = row["value"]
    return found


def account_tags(tx: Tx, account_id: str) -> list[m.TagDescription]:
    """Every tag the account has set, on whatever resource."""
    return [
        m.TagDescription(
            resource_id=r["resource_id"], resource_type=r["resource_type"], key=r["key"], value=r["value"]
        )
        for r in tx.all(
            "SELECT resource_id, resource_type, key, value FROM clc_tags WHERE account_id=?", (account_id,)
        )
    ]


def forget_resource(tx: Tx, resource_id: str) -> None:
    """The resource is gone: so are everybody's tags on it."""
    tx.execute("DELETE FROM clc_tags WHERE resource_id=?", (resource_id,))


def forget_resources(tx: Tx, resource_ids: Sequence[str]) -> None:
    for start in range(0, len(resource_ids), CHUNK):
        chunk = list(resource_ids[start : start + CHUNK])
        tx.execute(f"DELETE FROM clc_tags WHERE resource_id IN ({','.join('?' * len(chunk))})", chunk)
