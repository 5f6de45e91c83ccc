"""Fixtures of the end-to-end tests (real QEMU guests under qemu:///system, network namespaces). Whether this
host can run guests at all is helpers.qemu_host.unusable_reason(); each module skips on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from euca.images import bootimage as bi
from helpers.netns_lab import Lab
from helpers.onebox_cloud import GuestBridges, guest_bridges_here


@pytest.fixture(scope="session")
def boot_image() -> bi.BootImage:
    """The default guest image (kernel, busybox initramfs, root disk), from the cache or built once;
    the tests that need it skip when neither is possible."""
    try:
        return bi.find_boot_image() or bi.build_boot_image()
    except bi.BootImageUnavailable as e:
        pytest.skip(f"no boot image in {bi.default_cache_root()} and none can be built: {e}")


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Network namespaces made for one test, removed afterwards with whatever still runs in them."""
    spaces = Lab()
    try:
        yield spaces
    finally:
        spaces.cleanup()


@pytest.fixture(scope="module")
def guest_bridges() -> Iterator[GuestBridges]:
    """Bridges for one module's test clusters inside libvirtd's namespace, removed with their chains after it."""
    bridges = guest_bridges_here()
    try:
        yield bridges
    finally:
        bridges.cleanup()
