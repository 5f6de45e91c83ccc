"""How every resource shows its tags in an EC2 answer (below the tags API, so any resource's API may use it)."""

from __future__ import annotations

from euca.protocol.ec2 import messages as m


def tag_list(tags: dict[str, str] | None) -> list[m.Tag] | None:
    """A resource's tags as its description carries them: none at all (not an empty set) when untagged."""
    if not tags:
        return None
    return [m.Tag(key=k, value=v) for k, v in tags.items()]
