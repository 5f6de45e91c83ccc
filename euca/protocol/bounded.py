"""JSON and XML parsing of untrusted request bodies with bounds on size and nesting, sans-I/O.

Python's json module recurses once per nesting level, so `[` nested a thousand deep raises RecursionError (a
500 where a client error is due); ElementTree builds any depth and any DOCTYPE's internal entities. Every
parser of request input goes through here: the document is refused (BoundsError, a ValueError the caller maps
to its protocol's error code) when it is larger than `max_bytes`, nested deeper than `max_depth`, or (XML) has
a DOCTYPE at all. No request document of S3 or EC2 nests deeper than a handful of levels.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

DEFAULT_MAX_DEPTH = 32


class BoundsError(ValueError):
    """The document is too large, too deeply nested, or not allowed (an XML DOCTYPE)."""


# A JSON string (the unrolled form is linear: its alternatives never overlap) or one bracket.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, brackets inside strings not counted. On text that
    is not JSON the answer may be too high, never too low (so it never lets a deep document through)."""
    depth = deepest = 0
    for m in _JSON_TOKENS.finditer(text):
        c = m.group()[0]
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def loads_json(data: bytes | str, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """json.loads, after checking size and depth. BoundsError if out of bounds, ValueError if not JSON."""
    if len(data) > max_bytes:
        raise BoundsError(f"document larger than {max_bytes} bytes")
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if json_depth(text) > max_depth:
        raise BoundsError(f"document nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:  # unreachable after the depth check; kept so no input can become a 500
        raise BoundsError("document nested too deeply") from None


class _DepthLimitedBuilder:
    """A TreeBuilder that refuses a DOCTYPE and elements deeper than `max_depth` while parsing."""

    def __init__(self, max_depth: int):
        self.builder = ET.TreeBuilder()
        self.depth = 0
        self.max_depth = max_depth

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self.depth += 1
        if self.depth > self.max_depth:
            raise BoundsError(f"document nested deeper than {self.max_depth} levels")
        return self.builder.start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self.depth -= 1
        return self.builder.end(tag)

    def data(self, data: str) -> None:
        self.builder.data(data)

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise BoundsError("DOCTYPE is not allowed")

    def close(self) -> ET.Element:
        return self.builder.close()


def parse_xml(data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> ET.Element:
    """ET.fromstring with bounds. BoundsError if out of bounds, ET.ParseError if not well-formed XML."""
    if len(data) > max_bytes:
        raise BoundsError(f"document larger than {max_bytes} bytes")
    parser = ET.XMLParser(target=_DepthLimitedBuilder(max_depth))
    parser.feed(data)
    root: ET.Element = parser.close()
    return root
