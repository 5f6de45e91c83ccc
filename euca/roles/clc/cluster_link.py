"""How the CLC reaches its clusters: what its EC2 handlers (RunInstances, TerminateInstances, ...) and its
poller share, and how a CC's fault reads to an EC2 client."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from euca.protocol.cluster import ClusterFault
from euca.protocol.ec2.wire import Ec2Error


class ClusterCaller(Protocol):
    """euca.core.cluster_client.ClusterClient as the CLC uses it (or an in-process stand-in in tests).
    `expect_name` is the registered cluster name the CC's certificate must carry. Raises
    euca.protocol.cluster.ClusterFault for a fault or an unreachable CC."""

    async def call(self, base_url: str, message: Any, *, expect_name: str | None = None) -> Any: ...


@dataclass
class ClusterLink:
    """The caller, and the node image certificate download manifests are encrypted for (all nodes of the
    cloud share it, as Eucalyptus's node-cert.pem)."""

    caller: ClusterCaller
    node_image_cert_pem: Callable[[], bytes]
    # Asks the poller for a poll now (after a RunInstances or TerminateInstances) rather than at its next tick.
    poke: Callable[[], None] = lambda: None
    # Tells the poller of a launch (cluster, group ids, instance ids), which decides whether the CC needs a
    # new network view at once (poller.launch_needs_view); None: a poke.
    on_launch: Callable[[str, Sequence[str], Sequence[str]], None] | None = None

    def launched(self, cluster: str, group_ids: Sequence[str], instance_ids: Sequence[str]) -> None:
        if self.on_launch is None:
            self.poke()
        else:
            self.on_launch(cluster, group_ids, instance_ids)


def connected(link: ClusterLink | None) -> ClusterLink:
    """The link an action that must reach a CC needs; a CLC running without one answers Unavailable."""
    if link is None:
        raise Ec2Error("Unavailable", "The cloud controller is not connected to any cluster.")
    return link


def ec2_error_of(fault: ClusterFault) -> Ec2Error:
    """A CC's fault as the EC2 client should see it: EC2 codes pass through, the rest is the CC's trouble."""
    if fault.code == "Unavailable":
        return Ec2Error("Unavailable", f"The cluster did not answer: {fault.message}")
    if "." in fault.code or fault.code in ("InsufficientInstanceCapacity", "IncorrectInstanceState"):
        return Ec2Error(fault.code, fault.message)
    return Ec2Error("InternalError", f"The cluster failed: {fault.code}: {fault.message}")
