"""The NC's libvirt connection on test:///default: calls in threads, reconnect after a broken connection,
our domains told apart from others by their metadata."""

from __future__ import annotations

import threading
from collections.abc import Callable

import libvirt
import pytest
import trio

from euca.roles.nc.domain import Disk, DomainSpec, domain_xml
from euca.roles.nc.hypervisor import Hypervisor, HypervisorError, HypervisorUnavailable

OWNER = "/var/lib/euca/nc/instances"


def xml(name: str, owner: str = OWNER) -> str:
    return domain_xml(
        DomainSpec(
            name=name,
            domain_type="qemu",
            cores=1,
            memory_mb=128,
            disks=(Disk("/nonexistent/root.qcow2", "vda", "qcow2"),),
            console_path="/nonexistent/console.log",
            owner_dir=owner,
        )
    )


async def test_host_info_and_domain_listing() -> None:
    hv = Hypervisor("test:///default")
    try:
        info = await hv.host_info()
        assert info.cores > 0 and info.memory_mb > 0
        await hv.define_and_start(xml("i-00000001"))
        await hv.define_and_start(xml("i-00000002", owner="/other/nc"))
        states = await hv.domain_states()
        assert states["i-00000001"] == libvirt.VIR_DOMAIN_RUNNING
        assert states["test"] == libvirt.VIR_DOMAIN_RUNNING  # the driver's own domain
        owners = {d.name: d.owner_dir for d in await hv.list_domains()}
        assert owners == {"test": None, "i-00000001": OWNER, "i-00000002": "/other/nc"}
    finally:
        await hv.close()


async def test_destroy_only_what_is_ours() -> None:
    hv = Hypervisor("test:///default")
    try:
        await hv.define_and_start(xml("i-00000001"))
        await hv.define_and_start(xml("i-00000002", owner="/other/nc"))
        assert not await hv.destroy("i-00000002", owner=OWNER)
        assert not await hv.destroy("test", owner=OWNER)
        assert await hv.destroy("i-00000001", owner=OWNER)
        assert not await hv.destroy("i-00000001", owner=OWNER)  # gone: fine, says so
        assert await hv.domain_state("i-00000001") is None
        assert await hv.domain_state("i-00000002") == libvirt.VIR_DOMAIN_RUNNING
    finally:
        await hv.close()


async def test_reboot_resets_a_running_domain() -> None:
    hv = Hypervisor("test:///default")
    try:
        await hv.define_and_start(xml("i-00000001"))
        assert await hv.reboot("i-00000001") == "reset"
        assert await hv.domain_state("i-00000001") == libvirt.VIR_DOMAIN_RUNNING
    finally:
        await hv.close()


async def test_a_domain_that_cannot_start_is_not_left_defined() -> None:
    hv = Hypervisor("test:///default")
    try:
        await hv.define_and_start(xml("i-00000001"))
        # Same name, another UUID: libvirt refuses to define it.
        with pytest.raises(HypervisorError):
            await hv.define_and_start(
                xml("i-00000001").replace("<name>", "<uuid>00000000-0000-0000-0000-000000000001</uuid><name>")
            )
        assert await hv.domain_state("i-00000001") == libvirt.VIR_DOMAIN_RUNNING
    finally:
        await hv.close()


async def test_reconnects_after_the_connection_broke() -> None:
    hv = Hypervisor("test:///default")
    try:
        await hv.host_info()
        first = hv._conn
        assert first is not None
        first.close()  # as when libvirtd restarts under us
        info = await hv.host_info()
        assert info.cores > 0
        assert hv._conn is not None and hv._conn is not first
    finally:
        await hv.close()


async def test_unreachable_libvirt_is_an_error_not_a_hang() -> None:
    hv = Hypervisor("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    with pytest.raises(HypervisorUnavailable):
        await hv.host_info()


async def test_calls_into_the_in_process_test_driver_run_one_at_a_time() -> None:
    """libvirt's test driver runs in this process; two threads in it at once crashed the test suite once (a
    segfault in defineXML): such calls are serialised, while calls through libvirtd are not."""
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    first_in = threading.Event()
    release = threading.Event()

    def call(name: str) -> Callable[[libvirt.virConnect], None]:
        def fn(conn: libvirt.virConnect) -> None:
            inside.append(name)
            overlaps.append(tuple(inside))
            if name == "first":
                first_in.set()
                release.wait(10)
            conn.getHostname()
            inside.remove(name)

        return fn

    hv = Hypervisor("test:///default")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hv.call, call("first"))
            await trio.to_thread.run_sync(first_in.wait, 10)
            nursery.start_soon(hv.call, call("second"))
            await trio.sleep(0.2)  # time for the second call's thread to (wrongly) enter
            release.set()
    finally:
        await hv.close()
    assert overlaps == [("first",), ("second",)]
