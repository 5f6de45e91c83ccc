"""The metadata service after a CC restart: the CC keeps nothing on disk, so what it answers beyond the
leases (key, user data, groups...) comes from the CLC again: the view names each instance's metadata
version, the restarted CC asks for what it lacks in its DescribeResources reply, and the CLC's
PutInstanceMetadata fills it in. The CC here is the real controller and network (no bridge) over in-memory
nodes; every CLC message crosses the wire format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from euca.protocol import cluster as c
from euca.roles.cc.controller import ClusterController
from euca.roles.cc.metadata import Tokens, answer
from euca.roles.cc.network import ClusterNetwork
from helpers.cc_nodes import VM_TYPES, InMemoryNodeController, WireCheckedNodeClient, spec

NODE_URL = "https://n1:8775"
TOPOLOGY = [c.NodeAddress("n1", NODE_URL)]
TOKENS = Tokens(b"t" * 32)
USER_DATA = b"#!/bin/sh\necho hello\n"


async def from_clc(cc: ClusterController, message: msgspec.Struct) -> Any:
    """A CLC message through the wire format to the CC's handler, and its reply back."""
    path, body = c.encode_request(message)
    decoded = c.decode_request(path, body)
    reply = await cc.handlers()[type(decoded)](decoded)
    return c.decode_reply(type(message), 200, c.encode_reply(reply))


def get(cc_net: ClusterNetwork, ip: str, path: str) -> tuple[int, bytes]:
    a = answer(cc_net.metadata_record(ip), "GET", path, {}, TOKENS, 0.0)
    return a.status, a.body


VIEW = c.NetworkView(
    "v1",
    [c.InstanceNetwork("i-00000001", ["sg-00000001"], "203.0.113.5", metadata_version="m1")],
    [c.GroupRules("sg-00000001", [], ["i-00000001"])],
)
METADATA = c.InstanceMetadata(
    instance_id="i-00000001",
    version="m1",
    reservation_id="r-00000001",
    image_id="emi-12345678",
    instance_type="m1.small",
    launch_index=1,
    key_name="k",
    public_key="ssh-ed25519 AAAA k",
    user_data=USER_DATA,
    security_groups=["web"],
    manifest_path="images/hello.manifest.xml",
)


async def test_a_restarted_cc_answers_the_metadata_from_the_view(tmp_path: Path) -> None:
    node = InMemoryNodeController("n1")
    client = WireCheckedNodeClient({NODE_URL: node})
    net = ClusterNetwork("cluster01", "10.77.0.0/24", None, None, tmp_path)
    cc = ClusterController("cluster01", client, net)
    await from_clc(cc, c.DescribeResources("cluster01", TOPOLOGY, VM_TYPES))
    launched = msgspec.structs.replace(
        spec(1), key_name="k", public_key="ssh-ed25519 AAAA k", user_data=USER_DATA
    )
    reply = await from_clc(cc, c.RunInstances([launched]))
    ip = reply.instances[0].private_ip
    assert ip and get(net, ip, "/latest/user-data") == (200, USER_DATA)  # from the launch spec

    # The view names a metadata version; the spec is not the CLC's metadata, so the CC asks once.
    polled = await from_clc(cc, c.DescribeResources("cluster01", TOPOLOGY, VM_TYPES, VIEW))
    assert polled.metadata_wanted == ["i-00000001"]
    await from_clc(cc, c.PutInstanceMetadata([METADATA]))
    polled = await from_clc(cc, c.DescribeResources("cluster01", TOPOLOGY, VM_TYPES, VIEW))
    assert polled.metadata_wanted == []

    # A new CC process: nothing remembered but what the node reports (the lease) and the CLC's poll says.
    net = ClusterNetwork("cluster01", "10.77.0.0/24", None, None, tmp_path / "after")
    cc = ClusterController("cluster01", client, net)
    polled = await from_clc(cc, c.DescribeResources("cluster01", TOPOLOGY, VM_TYPES, VIEW))
    assert polled.metadata_wanted == ["i-00000001"]
    assert get(net, ip, "/latest/meta-data/instance-id") == (200, b"i-00000001")  # the lease
    assert get(net, ip, "/latest/meta-data/public-ipv4") == (200, b"203.0.113.5")  # the view
    assert get(net, ip, "/latest/user-data")[0] == 404  # not yet

    await from_clc(cc, c.PutInstanceMetadata([METADATA]))
    assert get(net, ip, "/latest/user-data") == (200, USER_DATA)
    assert get(net, ip, "/latest/meta-data/public-keys/0/openssh-key") == (200, b"ssh-ed25519 AAAA k\n")
    assert get(net, ip, "/latest/meta-data/security-groups") == (200, b"web")
    assert get(net, ip, "/latest/meta-data/ami-manifest-path") == (200, b"images/hello.manifest.xml")
    assert get(net, ip, "/latest/meta-data/reservation-id") == (200, b"r-00000001")
    # Another address is no instance's: nothing.
    assert get(net, "10.77.0.200", "/latest/meta-data/instance-id")[0] == 404

    # Terminated: the view no longer has it, and its metadata goes with its lease.
    await from_clc(cc, c.TerminateInstances(["i-00000001"]))
    await cc.poll_round()
    await from_clc(cc, c.DescribeResources("cluster01", TOPOLOGY, VM_TYPES, c.NetworkView("v2")))
    assert get(net, ip, "/latest/user-data")[0] == 404
