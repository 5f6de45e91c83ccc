"""roles/sc/volumes' argument checks, shared by CreateVolume, RestoreVolume, GrowVolume, ExportVolume and
CreateSnapshot: the fault each answers."""

from __future__ import annotations

import pytest

from euca.protocol.cluster import ClusterFault
from euca.roles.sc import volumes
from euca.roles.sc.volumes import ScVolume


def test_check_new_refuses_a_bad_id_or_size() -> None:
    volumes.check_new("vol-0123abcd", 1)
    volumes.check_new("vol-0123abcd", volumes.MAX_SIZE_GB)
    for volume_id, size in (("vol-xyz", 1), ("vol-0123abcd", 0), ("vol-0123abcd", volumes.MAX_SIZE_GB + 1)):
        with pytest.raises(ClusterFault) as e:
            volumes.check_new(volume_id, size)
        assert (e.value.code, e.value.status) == ("InvalidParameterValue", 400)


def test_check_available() -> None:
    here = ScVolume("vol-0123abcd", 1, "available", None)
    assert volumes.check_available("vol-0123abcd", here) is here
    with pytest.raises(ClusterFault) as e:
        volumes.check_available("vol-0123abcd", None)
    assert (e.value.code, e.value.status) == ("InvalidVolume.NotFound", 404)
    with pytest.raises(ClusterFault) as e:
        volumes.check_available("vol-0123abcd", ScVolume("vol-0123abcd", 1, "creating", None))
    assert (e.value.code, e.value.status) == ("IncorrectState", 409)
