"""The tags API's table of taggable kinds: each taggable resource's records module declares its kind, the
CLC's composition root hands them all over (TAGGABLE), and CreateTags/DeleteTags find a kind by id prefix."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import euca.roles.clc
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc import TAGGABLE
from euca.roles.clc.images import records as images
from euca.roles.clc.instances import records as instances
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.tags.api import kinds_by_prefix, resource_kind
from euca.roles.clc.tags.records import ResourceKind
from euca.roles.clc.tags.render import tag_list

CLC = Path(euca.roles.clc.__file__).parent


def test_every_declared_kind_is_taggable() -> None:
    """A records module declaring a TAG_KIND that the composition root forgot would answer InvalidID."""
    declared = []
    for path in sorted(CLC.glob("*/records.py")):
        module = importlib.import_module(f"euca.roles.clc.{path.parent.name}.records")
        kind = getattr(module, "TAG_KIND", None)
        if kind is not None:
            assert isinstance(kind, ResourceKind)
            declared.append(kind)
    assert sorted(k.resource_type for k in declared) == sorted(k.resource_type for k in TAGGABLE)


def test_kinds_by_prefix() -> None:
    kinds = kinds_by_prefix(TAGGABLE)
    assert {p: k.resource_type for p, k in kinds.items()} == {
        "emi": "image",
        "eki": "image",
        "eri": "image",
        "key": "key-pair",
        "i": "instance",
        "sg": "security-group",
        "eipalloc": "elastic-ip",
        "vol": "volume",
        "snap": "snapshot",
    }
    assert kinds["emi"] is images.TAG_KIND
    assert kinds["key"].visible is keypairs.key_pair_visible
    assert kinds["i"].not_found_code == "InvalidInstanceID.NotFound"
    assert resource_kind(kinds, "i-12345678") is instances.TAG_KIND
    for bad in ("eni-12345678", "i-", "i", "emi12345678"):
        with pytest.raises(Ec2Error, match="InvalidID"):
            resource_kind(kinds, bad)


def test_two_kinds_claiming_one_prefix_is_refused() -> None:
    clash = ResourceKind(("i",), "other", "InvalidOther.NotFound", lambda tx, rid, account: False)
    with pytest.raises(ValueError, match="'i' is claimed by instance and other"):
        kinds_by_prefix([*TAGGABLE, clash])


def test_tag_list() -> None:
    assert tag_list(None) is None
    assert tag_list({}) is None
    assert [(t.key, t.value) for t in tag_list({"a": "1", "b": ""}) or []] == [("a", "1"), ("b", "")]
