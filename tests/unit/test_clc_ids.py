"""roles/clc/ids.unused_id: EC2's short id form, drawn again while the owner says it is taken."""

from __future__ import annotations

import re

from euca.roles.clc.ids import unused_id


def test_unused_id_has_the_ec2_form_and_skips_taken_ones() -> None:
    asked: list[str] = []

    def taken(candidate: str) -> bool:
        asked.append(candidate)
        return len(asked) < 3  # the first two draws collide

    new = unused_id("vol", taken)
    assert re.fullmatch(r"vol-[0-9a-f]{8}", new)
    assert asked[-1] == new and len(asked) == 3
