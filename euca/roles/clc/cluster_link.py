"""How the CLC reaches its clusters: what its EC2 handlers (RunInstances, TerminateInstances, ...) and its
poller share, and how a CC's fault reads to an EC2 client."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from euca.protocol.cluster import ClusterFault
from euca.protocol.ec2.wire import Ec2Error

log = logging.getLogger("euca.clc")

# How long an EC2 action waits for a storage controller before it answers without it (the poller asks again).
SC_CALL_TIMEOUT = 10.0


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


async def ask_storage(link: ClusterLink | None, sc_url: str, cluster_name: str, message: object) -> Any:
    """A storage controller's answer to `message`, or None when there is no link or the SC did not answer in
    time or was unreachable (logged; the poller asks again). Its other faults (ClusterFault) are raised."""
    if link is None:
        return None
    try:
        with trio.fail_after(SC_CALL_TIMEOUT):
            return await link.caller.call(sc_url, message, expect_name=cluster_name)
    except trio.TooSlowError:
        log.warning("storage controller slow cluster=%s message=%s", cluster_name, type(message).__name__)
        return None
    except ClusterFault as e:
        if e.code == "Unavailable":
            log.warning("storage controller unreachable cluster=%s: %s", cluster_name, e.message)
            return None
        raise
