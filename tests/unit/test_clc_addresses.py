"""Public addresses: range parsing (pure) and the address records on a real store."""

from __future__ import annotations

import pytest

from euca.core.store import Store
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.addresses import records as addresses

ACCOUNT = "123456789012"
OTHER = "210987654321"


def test_parse_ranges() -> None:
    assert addresses.parse_ranges(["10.0.0.1-10.0.0.3, 10.0.0.2", "10.0.1.0/30 192.0.2.9"]) == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.1.1",
        "10.0.1.2",
        "192.0.2.9",
    ]
    assert addresses.parse_ranges([""]) == []
    for bad in ("10.0.0.3-10.0.0.1", "10.0.0.x", "10.0.0.0/8", "::1"):
        with pytest.raises(ValueError):
            addresses.parse_ranges([bad])


def test_allocate_associate_release_and_instances(clc_store: Store) -> None:
    clc_store.write_sync(lambda tx: addresses.add_to_pool(tx, ["10.9.0.1", "10.9.0.2", "10.9.0.3"]))
    assigned = clc_store.write_sync(lambda tx: addresses.assign_system(tx, ACCOUNT, ["i-00000001"]))
    assert assigned == {"i-00000001": "10.9.0.1"}
    eip = clc_store.write_sync(lambda tx: addresses.allocate(tx, ACCOUNT, "standard", None, []))
    assert eip.public_ip == "10.9.0.2" and eip.allocation_id and eip.elastic
    with pytest.raises(Ec2Error, match="InvalidAddress.InUse"):
        clc_store.write_sync(lambda tx: addresses.allocate(tx, OTHER, "standard", "10.9.0.2", []))
    with pytest.raises(Ec2Error, match="AuthFailure"):
        clc_store.read_sync(
            lambda tx: addresses.find_owned(tx, OTHER, public_ip="10.9.0.2", allocation_id=None)
        )
    with pytest.raises(Ec2Error, match="AuthFailure"):  # a system address is nobody's elastic IP
        clc_store.read_sync(
            lambda tx: addresses.find_owned(tx, ACCOUNT, public_ip="10.9.0.1", allocation_id=None)
        )
    clc_store.write_sync(lambda tx: addresses.associate(tx, eip, "i-00000001", False))
    # the system address went back to the pool
    assert clc_store.read_sync(lambda tx: addresses.public_ips_of(tx, ["i-00000001"])) == {
        "i-00000001": "10.9.0.2"
    }
    assert clc_store.read_sync(addresses.free_count) == 2
    held = clc_store.read_sync(
        lambda tx: addresses.find_owned(tx, ACCOUNT, public_ip=None, allocation_id=eip.allocation_id)
    )
    with pytest.raises(Ec2Error, match="Resource.AlreadyAssociated"):
        clc_store.write_sync(lambda tx: addresses.associate(tx, held, "i-00000002", False))
    with pytest.raises(Ec2Error, match="InvalidIPAddress.InUse"):
        clc_store.write_sync(lambda tx: addresses.release(tx, held))
    with pytest.raises(ValueError, match="in use"):
        clc_store.write_sync(lambda tx: addresses.remove_from_pool(tx, ["10.9.0.2"]))
    clc_store.write_sync(lambda tx: addresses.release_instances(tx, ["i-00000001"]))
    assert clc_store.read_sync(lambda tx: addresses.public_ips_of(tx, ["i-00000001"])) == {}
    clc_store.write_sync(
        lambda tx: addresses.release(
            tx, addresses.find_owned(tx, ACCOUNT, public_ip="10.9.0.2", allocation_id=None)
        )
    )
    assert clc_store.read_sync(addresses.free_count) == 3
    assert clc_store.write_sync(lambda tx: addresses.remove_from_pool(tx, ["10.9.0.3", "10.9.0.9"])) == [
        "10.9.0.3"
    ]
