"""The scale bench's simulated nodes (helpers.sim_nodes): real NCs on private test-driver connections, each
on its own mutual-TLS listener with a certificate naming it and its cluster, called by a real ClusterClient
as the cluster's CC."""

from __future__ import annotations

from pathlib import Path

import trio

from euca.core.cluster_client import ClusterClient
from euca.core.components import COMPONENTS_DIR, Components, ensure_components
from euca.core.pki import CloudCA
from euca.protocol.cluster import ClusterFault, NcDescribeInstances, NcDescribeResource
from euca.roles.nc.disks import DiskLayout
from helpers.sim_nodes import SimPlan, node_name, serve_nodes, sparse_disks


def test_sparse_disks_have_the_layout_sizes(tmp_path: Path) -> None:
    base = tmp_path / "image"
    base.write_bytes(b"x" * 4096)
    disks = sparse_disks(tmp_path, base, DiskLayout(ephemeral_bytes=1 << 30, swap_bytes=1 << 29))
    assert [(d.target, d.format, Path(d.path).stat().st_size) for d in disks] == [
        ("vda", "qcow2", 4096),
        ("vdb", "raw", 1 << 30),
        ("vdc", "raw", 1 << 29),
    ]
    assert Path(disks[1].path).stat().st_blocks == 0  # sparse: nothing written


def test_simulated_nodes_answer_their_clusters_cc_only(tmp_path: Path) -> None:
    clc_data = tmp_path / "clc"
    ca = CloudCA.load_or_create(clc_data / "pki")
    clc = Components(clc_data / COMPONENTS_DIR)
    ensure_components(clc, ca, [], node_image=True, node_image_name="simc")
    cc = Components(tmp_path / "cc")
    ensure_components(cc, ca, [("cc", "simc", ["127.0.0.1"])])
    other = Components(tmp_path / "other-cc")
    ensure_components(other, ca, [("cc", "elsewhere", ["127.0.0.1"])])
    plan = SimPlan(clc_data, "simc", first=5, count=3, base_port=0, work=tmp_path / "nodes", cores=4)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(serve_nodes, plan)
            assert len(ports) == 3
            async with ClusterClient(cc, "cc") as client, ClusterClient(other, "cc") as stranger:
                for offset, port in enumerate(ports):
                    url = f"https://127.0.0.1:{port}"
                    name = node_name(5 + offset)
                    res = await client.call(url, NcDescribeResource(), expect_name=name)
                    assert (res.node, res.state, res.cores_max, res.cores_free) == (name, "up", 4, 4)
                    listed = await client.call(url, NcDescribeInstances(), expect_name=name)
                    assert listed.instances == []
                    async with ClusterClient(cc, "cc") as fresh:  # the name is checked on a new connection
                        try:
                            await fresh.call(url, NcDescribeResource(), expect_name=node_name(99))
                        except ClusterFault as e:
                            assert e.code == "Unauthorized"  # its certificate names it, not another node
                        else:
                            raise AssertionError("a node answered under another node's name")
                    try:
                        await stranger.call(url, NcDescribeResource(), expect_name=name)
                    except ClusterFault as e:
                        assert e.status == 403  # another cluster's CC
                    else:
                        raise AssertionError("a node answered another cluster's CC")
            nursery.cancel_scope.cancel()

    trio.run(main)
