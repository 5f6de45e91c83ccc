"""The CC role as the supervisor runs it: its mutual-TLS listener answering a CLC certificate, and its own
ClusterClient calling a node listener (an in-memory node behind a real ClusterApp) as component "cc"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from euca.core.cluster_app import ClusterApp
from euca.core.cluster_client import ClusterClient
from euca.core.components import ensure_components
from euca.core.config import load_config
from euca.core.http import HttpServer, Peer
from euca.core.roles import Dispatcher, RoleContext
from euca.core.supervisor import Supervisor
from euca.protocol import cluster as c
from euca.protocol.cluster import ClusterFault
from helpers.cc_nodes import VM_TYPES, InMemoryNodeController, spec

HANG_GUARD = 60


async def test_cc_role_answers_the_clc_and_calls_its_node_over_mutual_tls(tmp_path: Path) -> None:
    config = load_config(
        None,
        {
            "data_dir": str(tmp_path),
            "log_level": "WARNING",
            "cc.listen.host": "127.0.0.1",
            "cc.listen.port": 0,
            "cc.poll_interval": 3600.0,  # rounds come from DescribeResources here, not the clock
            "cc.bridge": "",
        },
    )
    supervisor = Supervisor(config, ["cc"])
    node = InMemoryNodeController("node-a")
    callers: list[Peer] = []

    async def nc_handler(message: Any, peer: Peer) -> Any:
        callers.append(peer)
        return await node.handle(message)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            ctx: RoleContext = await nursery.start(supervisor.run)
            components = ctx.components
            ensure_components(
                components, ctx.ca, [("clc", "clc", ["127.0.0.1"]), ("nc", "node-a", ["127.0.0.1"])]
            )
            nc_app = ClusterApp("nc", {cls: nc_handler for cls in c.NC_MESSAGES})
            nc_server = HttpServer(
                Dispatcher([nc_app]),
                "127.0.0.1",
                0,
                config.http,
                ssl_context=components.server_context("nc"),
            )
            nc_port = await nursery.start(nc_server.serve)
            nc_url = f"https://127.0.0.1:{nc_port}"
            cc_url = ctx.endpoints["cc"]
            assert cc_url.startswith("https://")

            async with ClusterClient(components, "clc") as clc:
                topology = c.DescribeResources("cluster01", [c.NodeAddress("node-a", nc_url)], VM_TYPES)
                resources = await clc.call(cc_url, topology)
                assert [(n.node, n.state, n.cores_max) for n in resources.nodes] == [("node-a", "up", 4)]
                run = await clc.call(cc_url, c.RunInstances([spec(1), spec(2)]))
                assert [(s.node, s.state) for s in run.instances] == [("node-a", "pending")] * 2
                listed = await clc.call(cc_url, c.DescribeInstances())
                assert {s.instance_id for s in listed.instances} == {"i-00000001", "i-00000002"}
                console = await clc.call(cc_url, c.GetConsoleOutput("i-00000001"))
                assert console.output == b"booted i-00000001\n"
                ended = await clc.call(cc_url, c.TerminateInstances(["i-00000002"]))
                assert ended.instances[0].state == "terminated"
                try:
                    await clc.call(cc_url, c.RunInstances([spec(i) for i in range(3, 9)]))
                except ClusterFault as fault:
                    assert (fault.code, fault.status) == ("InsufficientInstanceCapacity", 400)
                else:
                    raise AssertionError("six more small instances do not fit in 4 cores")
            # A node's certificate may not call the CC.
            async with ClusterClient(components, "nc") as stranger:
                try:
                    await stranger.call(cc_url, c.DescribeInstances())
                except ClusterFault as fault:
                    assert fault.code == "Unauthorized"
                else:
                    raise AssertionError("an NC certificate called the CC")

            assert callers and {(p.role, p.name) for p in callers} == {("cc", "cluster01")}
            nc_server.shutdown()
            supervisor.stop()
