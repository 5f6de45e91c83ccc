"""Tags through EC2: CreateTags, DeleteTags, DescribeTags.

CreateTags and DeleteTags know a resource's kind by its id prefix. The kinds are not listed here: each
taggable resource's records module declares its ResourceKind, and the package's composition root
(euca/roles/clc/__init__.py) hands them all to handlers(), so tags imports no other resource. How a resource
shows its tags in its own answers is render.py's tag_list.
"""

from __future__ import annotations

from collections.abc import Iterable

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.tags import records
from euca.roles.clc.tags.records import ResourceKind

# DescribeTags pages: EC2 refuses fewer than 5 and answers at most 1,000 (a larger MaxResults is capped).
TAG_PAGES = PageLimits(5, 1000, capped=True)


def kinds_by_prefix(kinds: Iterable[ResourceKind]) -> dict[str, ResourceKind]:
    """id prefix -> its kind; two kinds claiming one prefix is a programming error."""
    table: dict[str, ResourceKind] = {}
    for kind in kinds:
        for prefix in kind.id_prefixes:
            other = table.setdefault(prefix, kind)
            if other is not kind:
                raise ValueError(
                    f"id prefix {prefix!r} is claimed by {other.resource_type} and {kind.resource_type}"
                )
    return table


def resource_kind(kinds: dict[str, ResourceKind], resource_id: str) -> ResourceKind:
    prefix, dash, rest = resource_id.partition("-")
    kind = kinds.get(prefix)
    if kind is None or not dash or not rest:
        raise Ec2Error("InvalidID", f"The ID '{resource_id}' is not valid")
    return kind


def _check_resources(
    tx: Tx, kinds: dict[str, ResourceKind], account_id: str, resource_ids: list[str]
) -> list[tuple[str, ResourceKind]]:
    checked = []
    for rid in resource_ids:
        kind = resource_kind(kinds, rid)
        if not kind.visible(tx, rid, account_id):
            raise Ec2Error(kind.not_found_code, f"The {kind.resource_type} ID '{rid}' does not exist")
        checked.append((rid, kind))
    return checked


class TagsApi:
    """CreateTags and DeleteTags over the taggable kinds they were handed."""

    def __init__(self, kinds: Iterable[ResourceKind]):
        self.kinds = kinds_by_prefix(kinds)

    async def create_tags(self, call: Ec2Call, req: m.CreateTagsRequest) -> None:
        if not req.resources:
            raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
        tags = records.check_tags(req.tags)
        if not tags:
            raise Ec2Error("MissingParameter", "The request must contain the parameter Tag")

        def write(tx: Tx) -> None:
            for rid, kind in _check_resources(tx, self.kinds, call.account_id, req.resources):
                records.write_tags(tx, call.account_id, rid, kind.resource_type, tags)

        await call.ctx.store.write(write)

    async def delete_tags(self, call: Ec2Call, req: m.DeleteTagsRequest) -> None:
        if not req.resources:
            raise Ec2Error("MissingParameter", "The request must contain the parameter ResourceId")
        for tag in req.tags or ():
            # The same keys CreateTags refuses (aws:, control characters) cannot be deleted either.
            records.check_key(tag.key)

        def write(tx: Tx) -> None:
            for rid, _ in _check_resources(tx, self.kinds, call.account_id, req.resources):
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
    page, token = paginate(
        tags, lambda t: f"{t.resource_id}\x00{t.key}", req.max_results, req.next_token, TAG_PAGES
    )
    return m.DescribeTagsResult(tags=page, next_token=token)


def handlers(kinds: Iterable[ResourceKind]) -> dict[str, Handler]:
    """The tags actions, CreateTags and DeleteTags knowing the taggable `kinds` (every resource's TAG_KIND)."""
    api = TagsApi(kinds)
    return {
        "CreateTags": api.create_tags,
        "DeleteTags": api.delete_tags,
        "DescribeTags": describe_tags,
    }
