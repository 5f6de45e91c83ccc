"""What a node offers: the configured amounts (over-commit above the host's), or the host's."""

from __future__ import annotations

from euca.core.config import load_config
from euca.roles.nc.settings import NcSettings, offered, up_resources


def test_zero_means_the_host_and_more_than_the_host_is_over_commit() -> None:
    assert offered(0, 2) == 2
    assert offered(1, 2) == 1
    assert offered(8, 2) == 8  # Eucalyptus's MAX_CORES above the real count


def test_the_report_counts_down_from_what_is_offered_and_never_below_zero() -> None:
    r = up_resources("vm", "qemu", (8, 4096, 40), (3, 768, 15))
    assert (r.node, r.state, r.hypervisor) == ("vm", "up", "qemu")
    assert (r.cores_max, r.cores_free, r.memory_mb_max, r.memory_mb_free) == (8, 5, 4096, 3328)
    assert (r.disk_gb_max, r.disk_gb_free) == (40, 25)
    # Offered less than what runs (lowered after a restart): nothing free, not a negative count.
    r = up_resources("vm", "qemu", (2, 512, 10), (3, 768, 15))
    assert (r.cores_free, r.memory_mb_free, r.disk_gb_free) == (0, 0, 0)


def test_settings_read_the_nc_section() -> None:
    # As `--set nc.cores=8 ...` gives them.
    config = load_config(None, {"nc.cores": 8, "nc.memory_mb": 2048, "nc.disk_gb": 30})
    s = NcSettings.from_config(config)
    assert (s.cores, s.memory_mb, s.disk_gb) == (8, 2048, 30)
