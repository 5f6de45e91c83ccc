"""What every Describe action shares: `Filter.N.Name/Value.M` filters, tag filters, MaxResults/NextToken pages.

A resource kind declares its filters once, as a FilterSet (filter name -> the values a resource has for it);
tag filters (`tag:KEY`, `tag-key`, `tag-value`) come with any set that is given a way to read tags.
Filter semantics are EC2's: values of one filter are OR-ed, filters are AND-ed, `*` and `?` are wildcards
(`\\*`, `\\?`, `\\\\` escape them), and a filter name the resource does not know is refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec

from euca.protocol.ec2.wire import Ec2Error

R = TypeVar("R")

# What an extractor returns for a resource: one value, several values, or None (the resource has none).
FilterValues = str | bool | int | Iterable[str] | None


class Filter(msgspec.Struct, rename="pascal"):
    name: str | None = None
    values: list[str] = []


def _values_of(raw: FilterValues) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, bool):
        return ["true" if raw else "false"]
    if isinstance(raw, str | int):
        return [str(raw)]
    return [v for v in raw if v is not None]


def wildcard_pattern(value: str) -> re.Pattern[str]:
    """An EC2 filter value as a regex: `*` any run, `?` one character, backslash escapes them."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value) and value[i + 1] in "*?\\":
            out.append(re.escape(value[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass
class _Compiled(Generic[R]):
    tests: list[tuple[Callable[[R], list[str]], list[re.Pattern[str]]]]

    def __call__(self, resource: R) -> bool:
        for extract, patterns in self.tests:
            have = extract(resource)
            if not any(p.fullmatch(v) for v in have for p in patterns):
                return False
        return True


@dataclass
class FilterSet(Generic[R]):
    """The filters one kind of resource answers to."""

    extractors: dict[str, Callable[[R], FilterValues]]
    # The resource's tags (key -> value); gives the set `tag:KEY`, `tag-key` and `tag-value`.
    tags: Callable[[R], dict[str, str]] | None = None
    names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = frozenset(self.extractors)

    def compile(self, filters: Sequence[Filter] | None) -> Callable[[R], bool]:
        """A predicate for the request's filters; an unknown filter name is an InvalidParameterValue."""
        tests: list[tuple[Callable[[R], list[str]], list[re.Pattern[str]]]] = []
        for f in filters or ():
            if not f.name:
                raise Ec2Error("InvalidParameterValue", "The filter name must not be empty")
            tests.append((self._extractor(f.name), [wildcard_pattern(v) for v in f.values]))
        return _Compiled(tests)

    def _extractor(self, name: str) -> Callable[[R], list[str]]:
        found = self.extractors.get(name)
        if found is not None:
            get = found
            return lambda r: _values_of(get(r))
        tags = self.tags
        if tags is not None:
            if name.startswith("tag:") and len(name) > 4:
                key = name[4:]
                return lambda r: _values_of(tags(r).get(key))
            if name == "tag-key":
                return lambda r: list(tags(r))
            if name == "tag-value":
                return lambda r: list(tags(r).values())
        raise Ec2Error("InvalidParameterValue", f"The filter '{name}' is invalid")

    def apply(self, filters: Sequence[Filter] | None, resources: Iterable[R]) -> list[R]:
        keep = self.compile(filters)
        return [r for r in resources if keep(r)]


# -- pagination ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageLimits:
    """MaxResults bounds of one action (from the EC2 documentation: most are 5..1000)."""

    minimum: int = 5
    maximum: int = 1000
    # Some actions answer a MaxResults above the maximum with a page of the maximum instead of refusing it
    # (EC2's documentation says so for DescribeTags and DescribeVolumes; the aws CLI sends 1000 to both).
    capped: bool = False


def paginate(
    items: Sequence[R],
    key: Callable[[R], str],
    max_results: int | None,
    next_token: str | None,
    limits: PageLimits = PageLimits(),
) -> tuple[list[R], str | None]:
    """One page of `items` in `key` order, and the token for the next page (None on the last page).

    The token names the last key returned, not an offset, so resources created or deleted between pages
    never make a page skip or repeat one that is still there.
    """
    ordered = sorted(items, key=key)
    if next_token:
        after = decode_token(next_token)
        ordered = [r for r in ordered if key(r) > after]
    if max_results is None:
        return ordered, None
    if limits.capped:
        max_results = min(max_results, limits.maximum)
    if not limits.minimum <= max_results <= limits.maximum:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ( {max_results} ) for parameter maxResults is invalid. "
            f"Expecting a value between {limits.minimum} and {limits.maximum}.",
        )
    page = ordered[:max_results]
    token = encode_token(key(page[-1])) if len(ordered) > max_results else None
    return page, token


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(b"v1:" + last_key.encode("utf-8")).decode("ascii")


def decode_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        if raw.startswith(b"v1:"):
            return raw[3:].decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        pass
    raise Ec2Error("InvalidPaginationToken", f"The pagination token {token!r} is invalid.")
