"""The NC role under the supervisor (libvirt test:///default): answering the CC over mutual TLS, refusing
any other caller, and running an instance from a download manifest made for the node image certificate the
supervisor issued."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from euca.core.cluster_client import ClusterClient
from euca.core.components import Components, ensure_components
from euca.core.config import load_config
from euca.core.roles import RoleContext
from euca.core.supervisor import Supervisor
from euca.images.bundler import bundle_image
from euca.protocol import bundle as b
from euca.protocol.cluster import (
    ClusterFault,
    ImageRef,
    InstanceSpec,
    NcDescribeInstances,
    NcDescribeResource,
    NcRunInstance,
    NcTerminateInstance,
    VmType,
)


@pytest.fixture
async def nc_host(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[RoleContext]:
    config = load_config(
        None,
        {
            "data_dir": str(tmp_path / "data"),
            "log_level": "WARNING",
            "nc.listen.host": "127.0.0.1",
            "nc.listen.port": 0,
            "nc.libvirt_uri": "test:///default",
            "nc.name": "node-7",
            "nc.cores": 2,
            "nc.memory_mb": 1024,
            "nc.disk_gb": 10,
        },
    )
    supervisor = Supervisor(config, ["nc"])
    ctx = await nursery.start(supervisor.run)
    yield ctx
    supervisor.stop()


@pytest.fixture
def callers(nc_host: RoleContext, tmp_path: Path) -> Components:
    """Certificates of other components of the same cloud (a CC and a CLC)."""
    components = Components(tmp_path / "callers")
    ensure_components(
        components, nc_host.ca, [("cc", "cluster01", ["127.0.0.1"]), ("clc", "clc", ["127.0.0.1"])]
    )
    return components


async def test_the_cc_is_answered_and_others_refused(nc_host: RoleContext, callers: Components) -> None:
    url = nc_host.endpoints["nc"]
    assert url.startswith("https://")
    cc = ClusterClient(callers, "cc")
    clc = ClusterClient(callers, "clc")
    try:
        resources = await cc.call(url, NcDescribeResource(), expect_name="node-7")
        assert (resources.node, resources.state, resources.cores_max, resources.disk_gb_free) == (
            "node-7",
            "up",
            2,
            10,
        )
        with pytest.raises(ClusterFault) as e:
            await clc.call(url, NcDescribeResource())
        assert e.value.code == "Unauthorized"
        with pytest.raises(ClusterFault) as e:
            await cc.call(url, NcTerminateInstance("i-0000dead"))
        assert e.value.code == "InvalidInstanceID.NotFound"
    finally:
        await cc.aclose()
        await clc.aclose()


async def test_run_over_the_wire(nc_host: RoleContext, callers: Components, tmp_path: Path) -> None:
    """The CLC's side of it done by hand: bundle, download manifest for the node image cert, signed."""
    ca = nc_host.ca
    user_key, user_cert = ca.issue("user-000000000042")
    image = tmp_path / "root.img"
    image.write_bytes(os.urandom(4096) + bytes(1 << 20))
    out = tmp_path / "bundle"
    result = bundle_image(
        image,
        out,
        user="000000000042",
        cloud_cert=ca.cert,
        user_cert=b.load_certificate(user_cert),
        user_key=b.load_private_key(user_key),
    )
    manifest = b.parse_manifest(result.manifest)
    node_image_cert = b.load_certificate(nc_host.components.node_image_cert_pem)
    download = b.build_download_manifest(
        manifest,
        image_id="emi-00000007",
        part_urls=[str(out / p.filename) for p in manifest.parts],
        cloud_key=ca.key,
        node_cert=node_image_cert,
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    spec = InstanceSpec(
        instance_id="i-00000007",
        reservation_id="r-00000007",
        account_id="000000000042",
        launch_index=0,
        vm_type=VmType("m1.small", 1, 256, 1),
        machine=ImageRef("emi-00000007", "machine", download.decode()),
    )
    url = nc_host.endpoints["nc"]
    cc = ClusterClient(callers, "cc")
    try:
        await run_poll_terminate(cc, url, spec)
    finally:
        await cc.aclose()


async def run_poll_terminate(cc: ClusterClient, url: str, spec: InstanceSpec) -> None:
    status = await cc.call(url, NcRunInstance(spec))
    assert (status.instance_id, status.state, status.node) == ("i-00000007", "pending", "node-7")
    # Poll as the CC does until the node reports it past staging.
    with trio.fail_after(60):  # a hang guard, not a timing assertion
        while True:
            [status] = (await cc.call(url, NcDescribeInstances(["i-00000007"]))).instances
            if status.nc_state != "staging":
                break
            await trio.sleep(0.05)
    assert (status.state, status.nc_state, status.reason) == ("running", "running", None)
    resources = await cc.call(url, NcDescribeResource())
    assert resources.cores_free == 1
    status = await cc.call(url, NcTerminateInstance("i-00000007"))
    assert status.state == "shutting-down"
