"""Tags through EC2: CreateTags, DeleteTags, DescribeTags; and how every resource shows its tags (tag_list).

A resource kind is known by its id prefix; each kind's records module says whether the caller can see a
resource of it (a new taggable resource adds its prefix to RESOURCE_KINDS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.images import records as images
from euca.roles.clc.instances import records as instances
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.tags import records

# DescribeTags pages: EC2 refuses fewer than 5 and answers at most 1,000 (a larger MaxResults is capped).
TAG_PAGES = PageLimits(5, 1000)


@dataclass(frozen=True)
class ResourceKind:
    resource_type: str
    not_found_code: str
    # (tx, resource id, caller's account id) -> the caller can see the resource
    visible: Callable[[Tx, str, str], bool]


_IMAGE = ResourceKind("image", "InvalidAMIID.NotFound", images.image_visible)
RESOURCE_KINDS: dict[str, ResourceKind] = {
    "emi": _IMAGE,
    "eki": _IMAGE,
    "eri": _IMAGE,
    "key": ResourceKind("key-pair", "InvalidKeyPair.NotFound", keypairs.key_pair_visible),
    "i": ResourceKind("instance", "InvalidInstanceID.NotFound", instances.instance_visible),
}


def resource_kind(resource_id: str) -> ResourceKind:
    prefix, dash, rest = resource_id.partition("-")
    kind = RESOURCE_KINDS.get(prefix)
    if kind is None or not dash or not rest:
        raise Ec2Error("InvalidID", f"The ID '{resource_id}' is not valid")
    return kind


def tag_list(tags: dict[str, str] | None) -> list[m.Tag] | None:
    if not tags:
        return None
    return [m.Tag(key=k, value=v) for k, v in tags.items()]


def _check_resources(tx: Tx, account_id: str, resource_ids: list[str]) -> list[tuple[str, ResourceKind]]:
    checked = []
    for rid in resource_ids:
        kind = resource_kind(rid)
        if not kind.visible(tx, rid, account_id):
            raise Ec2Error(kind.not_found_code, f"The {kind.resource_type} ID '{rid}' does not exist")
        checked.append((rid, kind))
    return checked


async def create_tags(call: Ec2Call, req: m.CreateTagsRequest) -> None:
    if not req.resources:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
    tags = records.check_tags(req.tags)
    if not tags:
        raise Ec2Error("MissingParameter", "The request must contain the parameter Tag")

    def write(tx: Tx) -> None:
        for rid, kind in _check_resources(tx, call.account_id, req.resources):
            records.write_tags(tx, call.account_id, rid, kind.resource_type, tags)

    await call.ctx.store.write(write)


async def delete_tags(call: Ec2Call, req: m.DeleteTagsRequest) -> None:
    if not req.resources:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")

    def write(tx: Tx) -> None:
        for rid, _ in _check_resources(tx, call.account_id, req.resources):
            records.delete_tags(tx, call.account_id, rid, req.tags)

    await call.ctx.store.write(write)


TAG_FILTERS: FilterSet[m.TagDescription] = FilterSet(
    {
        "key": lambda t: t.key,
        "value": lambda t: t.value,
        "resource-id": lambda t: t.resource_id,
        "resource-type": lambda t: t.resource_type,
    }
)


async def describe_tags(call: Ec2Call, req: m.DescribeTagsRequest) -> m.DescribeTagsResult:
    tags = await call.ctx.store.read(lambda tx: records.account_tags(tx, call.account_id))
    tags = TAG_FILTERS.apply(req.filters, tags)
    max_results = req.max_results
    if max_results is not None and max_results > TAG_PAGES.maximum:
        max_results = TAG_PAGES.maximum
    page, token = paginate(
        tags, lambda t: f"{t.resource_id}\x00{t.key}", max_results, req.next_token, TAG_PAGES
    )
    return m.DescribeTagsResult(tags=page, next_token=token)


HANDLERS: dict[str, Handler] = {
    "CreateTags": create_tags,
    "DeleteTags": delete_tags,
    "DescribeTags": describe_tags,
}
