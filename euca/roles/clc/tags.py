"""Tags: CreateTags, DeleteTags, DescribeTags, and the helpers other resources use for theirs.

Tags belong to the account that set them. A resource kind is known by its id prefix; each kind says how to
check that the caller can see a resource (a later issue adds instances, volumes, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Call

MAX_TAGS_PER_RESOURCE = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256


@dataclass(frozen=True)
class ResourceKind:
    resource_type: str
    not_found_code: str
    # (tx, resource id, caller's account id) -> the caller can see the resource
    visible: Callable[[Tx, str, str], bool]


def _image_visible(tx: Tx, image_id: str, account_id: str) -> bool:
    return bool(
        tx.one(
            "SELECT 1 FROM clc_images i WHERE i.image_id=? AND (i.account_id=? OR i.public=1 OR EXISTS("
            "SELECT 1 FROM clc_image_launch_permissions p WHERE p.image_id=i.image_id AND p.account_id=?))",
            (image_id, account_id, account_id),
        )
    )


def _keypair_visible(tx: Tx, key_pair_id: str, account_id: str) -> bool:
    return bool(
        tx.one("SELECT 1 FROM clc_keypairs WHERE key_pair_id=? AND account_id=?", (key_pair_id, account_id))
    )


def _instance_visible(tx: Tx, instance_id: str, account_id: str) -> bool:
    return bool(
        tx.one("SELECT 1 FROM clc_instances WHERE instance_id=? AND account_id=?", (instance_id, account_id))
    )


_IMAGE = ResourceKind("image", "InvalidAMIID.NotFound", _image_visible)
RESOURCE_KINDS: dict[str, ResourceKind] = {
    "emi": _IMAGE,
    "eki": _IMAGE,
    "eri": _IMAGE,
    "key": ResourceKind("key-pair", "InvalidKeyPair.NotFound", _keypair_visible),
    "i": ResourceKind("instance", "InvalidInstanceID.NotFound", _instance_visible),
}


def resource_kind(resource_id: str) -> ResourceKind:
    prefix, dash, rest = resource_id.partition("-")
    kind = RESOURCE_KINDS.get(prefix)
    if kind is None or not dash or not rest:
        raise Ec2Error("InvalidID", f"The ID '{resource_id}' is not valid")
    return kind


def check_tags(tags: Iterable[m.Tag], *, need_values: bool = True) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for tag in tags:
        key = tag.key
        if not key:
            raise Ec2Error("InvalidParameterValue", "Tag keys must not be empty")
        if len(key) > MAX_KEY_LENGTH:
            raise Ec2Error(
                "InvalidParameterValue", f"Tag key exceeds the maximum length of {MAX_KEY_LENGTH} characters"
            )
        if key.lower().startswith("aws:"):
            raise Ec2Error(
                "InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use"
            )
        value = tag.value if tag.value is not None else ""
        if len(value) > MAX_VALUE_LENGTH:
            raise Ec2Error(
                "InvalidParameterValue",
                f"Tag value exceeds the maximum length of {MAX_VALUE_LENGTH} characters",
            )
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


def tags_of(tx: Tx, account_id: str, resource_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """resource id -> {key: value} of the caller's tags, for the given resources."""
    ids = list(dict.fromkeys(resource_ids))
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in tx.all(
            f"SELECT resource_id, key, value FROM clc_tags WHERE account_id=? AND resource_id IN ({marks}) "
            "ORDER BY key",
            (account_id, *chunk),
        ):
            found.setdefault(row["resource_id"], {})[row["key"]] = row["value"]
    return found


def tag_list(tags: dict[str, str] | None) -> list[m.Tag] | None:
    if not tags:
        return None
    return [m.Tag(key=k, value=v) for k, v in tags.items()]


def forget_resource(tx: Tx, resource_id: str) -> None:
    """The resource is gone: so are everybody's tags on it."""
    tx.execute("DELETE FROM clc_tags WHERE resource_id=?", (resource_id,))


def _check_resources(tx: Tx, account_id: str, resource_ids: list[str]) -> list[tuple[str, ResourceKind]]:
    checked = []
    for rid in resource_ids:
        kind = resource_kind(rid)
        if not kind.visible(tx, rid, account_id):
            raise Ec2Error(kind.not_found_code, f"The {kind.resource_type} ID '{rid}' does not exist")
        checked.append((rid, kind))
    return checked


async def create_tags(call: Call, req: m.CreateTagsRequest) -> None:
    if not req.resources:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
    tags = check_tags(req.tags)
    if not tags:
        raise Ec2Error("MissingParameter", "The request must contain the parameter Tag")

    def write(tx: Tx) -> None:
        for rid, kind in _check_resources(tx, call.account_id, req.resources):
            write_tags(tx, call.account_id, rid, kind.resource_type, tags)

    await call.ctx.store.write(write)


async def delete_tags(call: Call, req: m.DeleteTagsRequest) -> None:
    if not req.resources:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")

    def write(tx: Tx) -> None:
        for rid, _ in _check_resources(tx, call.account_id, req.resources):
            if req.tags is None:
                tx.execute(
                    "DELETE FROM clc_tags WHERE account_id=? AND resource_id=?", (call.account_id, rid)
                )
                continue
            for tag in req.tags:
                if not tag.key:
                    raise Ec2Error("InvalidParameterValue", "Tag keys must not be empty")
                if tag.value is None:  # no value given: the key goes whatever its value
                    tx.execute(
                        "DELETE FROM clc_tags WHERE account_id=? AND resource_id=? AND key=?",
                        (call.account_id, rid, tag.key),
                    )
                else:  # a value given (even ""): only a tag with exactly that value goes
                    tx.execute(
                        "DELETE FROM clc_tags WHERE account_id=? AND resource_id=? AND key=? AND value=?",
                        (call.account_id, rid, tag.key, tag.value),
                    )

    await call.ctx.store.write(write)


TAG_FILTERS: FilterSet[m.TagDescription] = FilterSet(
    {
        "key": lambda t: t.key,
        "value": lambda t: t.value,
        "resource-id": lambda t: t.resource_id,
        "resource-type": lambda t: t.resource_type,
    }
)


async def describe_tags(call: Call, req: m.DescribeTagsRequest) -> m.DescribeTagsResult:
    rows = await call.ctx.store.read(
        lambda tx: tx.all(
            "SELECT resource_id, resource_type, key, value FROM clc_tags WHERE account_id=?",
            (call.account_id,),
        )
    )
    tags = [
        m.TagDescription(
            resource_id=r["resource_id"], resource_type=r["resource_type"], key=r["key"], value=r["value"]
        )
        for r in rows
    ]
    tags = TAG_FILTERS.apply(req.filters, tags)
    page, token = paginate(
        tags, lambda t: f"{t.resource_id}\x00{t.key}", req.max_results, req.next_token, PageLimits(5, 1000)
    )
    return m.DescribeTagsResult(tags=page, next_token=token)
