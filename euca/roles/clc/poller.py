"""The CLC's poll of its clusters: capacity for placement and zones, instance state for DescribeInstances.

Every `clc.poll_interval` seconds, for each registered cluster at once: DescribeResources (carrying the
cluster's nodes and the instance types, so the CC learns its topology from the CLC) and DescribeInstances.
What the CC says is recorded (topology records.record_poll) and the instance table is reconciled with it
(instances/reconcile.py says how; instances records.apply_reconciliation writes it); an instance its cluster
has not reported for `clc.node_lost_timeout` goes terminated, only counted while the CC answers; terminated
instances are forgotten `clc.terminated_ttl` after they ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.cluster import ClusterFault, VmType
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.cluster_link import ClusterCaller
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.instances import records as instances
from euca.roles.clc.instances.reconcile import Reconciliation, reconcile
from euca.roles.clc.network_view import build_views, instance_metadata
from euca.roles.clc.snapshots.poll import SnapshotPoll
from euca.roles.clc.topology import records as topology
from euca.roles.clc.volumes import records as volumes
from euca.roles.clc.volumes.attach import finish_detach, finish_unexport
from euca.roles.clc.volumes.reconcile import (
    VolumeReconciliation,
    reconcile_attachments,
    reconcile_volumes,
)

log = logging.getLogger("euca.clc")


# -- the loop --------------------------------------------------------------------------------------------

# After a poke the clusters are asked about the instances on their way this soon, then at doubling intervals
# up to TRANSITION_MAX_POLL, until none is left.
TRANSITION_FIRST_POLL = 0.1
TRANSITION_MAX_POLL = 0.4
# Instances per PutInstanceMetadata (each up to 16 KiB of user data): a restarted CC of a thousand
# instances gets its metadata in a few calls of bounded size.
METADATA_BATCH = 100


def vouched_for(
    reported: list[cluster.InstanceStatus], nodes: list[cluster.NodeResources]
) -> list[cluster.InstanceStatus]:
    """The instances a cluster reports that count as seen: not those on a node its CC has marked down (the
    CC keeps them as last reported), so an instance whose node stopped answering is ended as lost after
    `clc.node_lost_timeout`, and one whose node answers again before that carries on (adopted)."""
    down = {n.node for n in nodes if n.state == "down"}
    return [i for i in reported if i.node not in down] if down else reported


@dataclass(frozen=True)
class PollSettings:
    interval: float
    node_lost_timeout: float
    terminated_ttl: float
    call_timeout: float = 30.0


class Poller:
    """Polls every registered cluster each interval (or sooner when poked); one task in the CLC's nursery."""

    def __init__(
        self,
        store: Any,
        caller: ClusterCaller,
        settings: PollSettings,
        *,
        clock: Callable[[], float] = time.time,
        snapshots: SnapshotPoll | None = None,
    ):
        self.store = store
        # Snapshots (issue 10): pending ones followed on their SC each round, deleted ones swept.
        self.snapshots = snapshots
        self.caller = caller
        self.settings = settings
        self.clock = clock
        self._poked = trio.Event()
        self._rounds = 0
        self._round_done = trio.Condition()
        # Last state logged per cluster, so a cluster that stays down is logged once, not every poll.
        self._logged_state: dict[str, str] = {}

    def poke(self) -> None:
        self._poked.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # A poke (RunInstances, TerminateInstances) polls at once; then, while instances are pending or
        # shutting down, their clusters are asked about those alone (each CC asks their nodes first) after
        # 0.1 s, 0.2 s, then every 0.4 s: an instance whose image is cached runs a fraction of a second after
        # its call, and the CLC should not add a whole poll interval to that.
        soon = 0.0
        while True:
            with trio.move_on_after(soon or self.settings.interval):
                await self._poked.wait()
            poked = self._poked.is_set()
            self._poked = trio.Event()
            if poked or not soon:
                await self.poll_once()
            else:
                await self.poll_transitions()
            soon = TRANSITION_FIRST_POLL if poked else min(soon * 2, TRANSITION_MAX_POLL)
            if soon and (
                soon >= self.settings.interval or not await self.store.read(instances.in_transition)
            ):
                soon = 0.0

    async def wait_for_round(self) -> None:
        """Until a round that started after this call has finished (tests, and one-box start-up)."""
        target = self._rounds + 2
        async with self._round_done:
            while self._rounds < target:
                await self._round_done.wait()

    async def poll_once(self) -> None:
        def read(
            tx: Tx,
        ) -> tuple[list[topology.Cluster], list[topology.Node], list[VmType], dict[str, cluster.NetworkView]]:
            clusters = topology.list_clusters(tx)
            views = build_views(tx, [c.name for c in clusters])
            return clusters, topology.list_nodes(tx), instance_types.vm_types(tx), views

        clusters, nodes, vm_types, views = await self.store.read(read)
        storage = await self.store.read(topology.list_storage)
        async with trio.open_nursery() as nursery:
            for c in clusters:
                addresses = [n.address for n in nodes if n.cluster == c.name]
                nursery.start_soon(self._poll_cluster, c, addresses, vm_types, views[c.name])
            for sc in storage:
                nursery.start_soon(self._poll_storage, sc)
                if self.snapshots is not None:
                    nursery.start_soon(self.snapshots.poll, sc)
        if self.snapshots is not None:
            await self.snapshots.sweep(await self.store.read(topology.list_storage))
        before = self.clock() - self.settings.terminated_ttl
        forgotten = await self.store.write(lambda tx: instances.forget_terminated(tx, before))
        if forgotten:
            log.info("terminated instances forgotten count=%d", len(forgotten))
        async with self._round_done:
            self._rounds += 1
            self._round_done.notify_all()

    async def poll_transitions(self) -> None:
        """Ask each cluster about its instances on their way to running or terminated, only those."""
        clusters, moving = await self.store.read(
            lambda tx: (topology.list_clusters(tx), instances.in_transition(tx))
        )
        async with trio.open_nursery() as nursery:
            for c in clusters:
                if moving.get(c.name):
                    nursery.start_soon(self._poll_instances, c, moving[c.name])

    async def _poll_instances(self, c: topology.Cluster, ids: list[str]) -> None:
        try:
            with trio.fail_after(self.settings.call_timeout):
                described = await self.caller.call(c.url, cluster.DescribeInstances(ids), expect_name=c.name)
        except (ClusterFault, trio.TooSlowError):
            return  # the next full poll records the cluster down
        now = self.clock()
        lost_after = self.settings.node_lost_timeout
        since = now - self.settings.terminated_ttl
        wanted = set(ids)

        def write(tx: Tx) -> Reconciliation:
            known = instances.known_instances(tx, c.name, since=since, ids=ids)
            reported = [i for i in described.instances if i.instance_id in wanted]
            result = reconcile(known, reported, now, lost_after)
            instances.apply_reconciliation(tx, result, now)
            return result

        result = await self.store.write(write)
        await self._reconciled(c, result)
        if result.gone or any(u.state == "terminated" for u in result.updates):
            # A slot is free once its node reported the instance gone, and the CC counts it free then; the
            # zone's capacity comes with the full poll (DescribeResources), so poll fully now instead of at
            # the next interval: a relaunch right after a terminate finds the slot.
            self.poke()

    async def _poll_cluster(
        self,
        c: topology.Cluster,
        nodes: list[cluster.NodeAddress],
        vm_types: list[VmType],
        network: cluster.NetworkView,
    ) -> None:
        try:
            with trio.fail_after(self.settings.call_timeout):
                resources = await self.caller.call(
                    c.url,
                    cluster.DescribeResources(c.name, nodes, vm_types, network, subnet=c.subnet),
                    expect_name=c.name,
                )
                described = await self.caller.call(c.url, cluster.DescribeInstances(), expect_name=c.name)
        except (ClusterFault, trio.TooSlowError) as e:
            reason = f"{e.code}: {e.message}" if isinstance(e, ClusterFault) else "no answer in time"
            now = self.clock()
            await self.store.write(
                lambda tx: topology.record_poll(tx, c.name, now=now, ok=False, reason=reason)
            )
            if self._logged_state.get(c.name) != "down":
                log.warning("cluster down name=%s url=%s reason=%s", c.name, c.url, reason)
                self._logged_state[c.name] = "down"
            return
        now = self.clock()
        lost_after = self.settings.node_lost_timeout
        since = now - self.settings.terminated_ttl

        def write(tx: Tx) -> Reconciliation:
            topology.record_poll(
                tx, c.name, now=now, ok=True, nodes=resources.nodes, capacity=resources.capacity
            )
            result = reconcile(
                instances.known_instances(tx, c.name, since=since),
                vouched_for(described.instances, resources.nodes),
                now,
                lost_after,
            )
            instances.apply_reconciliation(tx, result, now)
            return result

        result = await self.store.write(write)
        if resources.metadata_wanted:
            await self._send_metadata(c, resources.metadata_wanted)
        if self._logged_state.get(c.name) != "up":
            up = sum(1 for n in resources.nodes if n.state == "up")
            log.info("cluster up name=%s url=%s nodes_up=%d/%d", c.name, c.url, up, len(resources.nodes))
            self._logged_state[c.name] = "up"
        await self._reconciled(c, result)
        await self._poll_attachments(c, described.instances)

    async def _poll_attachments(self, c: topology.Cluster, reported: list[cluster.InstanceStatus]) -> None:
        """The cluster's volume attachments after its full report (volumes/reconcile.py decides): attached
        once the node has the disk; over (export dropped, row gone) once it no longer has it or the
        instance ended; detach asked again while the node still has a detaching one."""

        def read(tx: Tx) -> tuple[list[volumes.Attachment], set[str], str | None]:
            found = volumes.attachments_of_cluster(tx, c.name)
            ids = [a.instance_id for a in found]
            sc = topology.get_storage(tx, c.name)
            return found, set(ids) - instances.alive_instances(tx, ids), sc.url if sc else None

        attachments, ended, sc_url = await self.store.read(read)
        if not attachments:
            return
        result = reconcile_attachments(attachments, {s.instance_id: s for s in reported}, ended, self.clock())
        if result.attached:

            def write(tx: Tx) -> None:
                for volume_id in result.attached:
                    volumes.set_attachment_state(tx, volume_id, "attached", only_from="attaching")

            await self.store.write(write)
            for volume_id in result.attached:
                log.info("volume attached id=%s", volume_id)
        for a in result.finish:
            await finish_unexport(
                self.caller, self.store, c.name, sc_url, a.volume_id, instance_ended=a.instance_id in ended
            )
        for a in result.detach_again:
            await finish_detach(self.caller, self.store, c.name, a, force=a.force)

    async def _send_metadata(self, c: topology.Cluster, wanted: list[str]) -> None:
        """The metadata the CC asked for (it restarted, or an instance is new or changed), in batches."""
        for start in range(0, len(wanted), METADATA_BATCH):
            ids = wanted[start : start + METADATA_BATCH]
            found = await self.store.read(lambda tx, ids=ids: instance_metadata(tx, ids))
            if not found:
                continue
            try:
                with trio.fail_after(self.settings.call_timeout):
                    await self.caller.call(c.url, cluster.PutInstanceMetadata(found), expect_name=c.name)
            except (ClusterFault, trio.TooSlowError) as e:  # it asks again at the next poll
                why = e.code if isinstance(e, ClusterFault) else "no answer in time"
                log.warning("instance metadata not sent cluster=%s: %s", c.name, why)
                return
        log.info("instance metadata sent cluster=%s count=%d", c.name, len(wanted))

    async def _poll_storage(self, sc: topology.StorageController) -> None:
        """One poll of a cluster's SC: its state and space, and the cluster's volumes reconciled with what
        it holds (volumes/reconcile.py); what it should have made or removed is asked again."""
        # The table as it was before the SC answered: a decision applies only to a volume still in the state
        # it was decided from (CreateVolume may make one available while this poll is on its way).
        before = await self.store.read(lambda tx: volumes.volumes_of_cluster(tx, sc.cluster))
        was = {v.volume_id: v.state for v in before}
        try:
            with trio.fail_after(self.settings.call_timeout):
                reply = await self.caller.call(sc.url, cluster.DescribeVolumes(), expect_name=sc.cluster)
        except (ClusterFault, trio.TooSlowError) as e:
            reason = f"{e.code}: {e.message}" if isinstance(e, ClusterFault) else "no answer in time"
            now = self.clock()
            await self.store.write(
                lambda tx: topology.record_storage_poll(tx, sc.cluster, now=now, ok=False, reason=reason)
            )
            if self._logged_state.get("sc:" + sc.cluster) != "down":
                log.warning("storage controller down cluster=%s url=%s reason=%s", sc.cluster, sc.url, reason)
                self._logged_state["sc:" + sc.cluster] = "down"
            return
        now = self.clock()

        def write(tx: Tx) -> VolumeReconciliation:
            topology.record_storage_poll(
                tx,
                sc.cluster,
                now=now,
                ok=True,
                backend=reply.backend,
                capacity_gb=reply.capacity_gb,
                allocated_gb=reply.allocated_gb,
            )
            result = reconcile_volumes(before, reply.volumes)
            for volume_id, state, reason in result.updates:
                volumes.set_state(tx, volume_id, state, only_from=(was[volume_id],), reason=reason)
            for volume_id in result.forget:
                if volumes.set_state(tx, volume_id, "deleted", only_from=("deleting",)):
                    volumes.forget(tx, volume_id)
            for volume_id in result.grown:
                volumes.end_modification(tx, volume_id, ok=True)
            return result

        result = await self.store.write(write)
        if self._logged_state.get("sc:" + sc.cluster) != "up":
            log.info("storage controller up cluster=%s url=%s backend=%s", sc.cluster, sc.url, reply.backend)
            self._logged_state["sc:" + sc.cluster] = "up"
        for volume_id, state, reason in result.updates:
            log.info("volume state id=%s to=%s%s", volume_id, state, f" reason={reason}" if reason else "")
        for volume_id in result.forget:
            log.info("volume deleted id=%s", volume_id)
        if result.unknown:
            log.warning(
                "volumes not known to the CLC cluster=%s ids=%s", sc.cluster, ",".join(result.unknown[:20])
            )
        snapshot_of = {v.volume_id: v.snapshot_id for v in before if v.snapshot_id}
        for volume_id, size in result.create_again:
            if volume_id in snapshot_of and self.snapshots is not None:
                # A volume made from a snapshot is made again from it, never empty.
                try:
                    restore = await self.snapshots.restore_message(volume_id, size, snapshot_of[volume_id])
                except Ec2Error as e:
                    log.warning("volume restore resend id=%s: %s", volume_id, e.message)
                    continue
                await self._resend(sc, restore)
                continue
            await self._resend(sc, cluster.CreateVolume(volume_id, size))
        for volume_id in result.delete_again:
            await self._resend(sc, cluster.DeleteVolume(volume_id))
        for volume_id, size in result.grow_again:
            await self._resend(sc, cluster.GrowVolume(volume_id, size))

    async def _resend(
        self,
        sc: topology.StorageController,
        message: cluster.CreateVolume | cluster.DeleteVolume | cluster.GrowVolume | cluster.RestoreVolume,
    ) -> None:
        """Ask the SC again; its answer lands at the next poll."""
        try:
            with trio.fail_after(self.settings.call_timeout):
                await self.caller.call(sc.url, message, expect_name=sc.cluster)
            log.info("%s resent cluster=%s id=%s", type(message).__name__, sc.cluster, message.volume_id)
        except (ClusterFault, trio.TooSlowError) as e:
            why = e.code if isinstance(e, ClusterFault) else "no answer in time"
            log.warning(
                "%s resend failed cluster=%s id=%s: %s",
                type(message).__name__,
                sc.cluster,
                message.volume_id,
                why,
            )

    async def _reconciled(self, c: topology.Cluster, result: Reconciliation) -> None:
        """Log what changed, and tell the CC again what it should have terminated."""
        lost_after = self.settings.node_lost_timeout
        for u in result.updates:
            if u.state != u.previous:
                log.info(
                    "instance state id=%s from=%s to=%s node=%s ip=%s",
                    u.instance_id,
                    u.previous,
                    u.state,
                    u.node,
                    u.private_ip,
                )
        for instance_id in result.gone:
            log.info("instance state id=%s from=shutting-down to=terminated", instance_id)
        for instance_id in result.lost:
            log.warning(
                "instance lost id=%s cluster=%s: not reported for %.0fs", instance_id, c.name, lost_after
            )
        if result.unknown:
            log.warning(
                "instances not known to the CLC cluster=%s ids=%s", c.name, ",".join(result.unknown[:20])
            )
        if result.terminate_again:
            try:
                await self.caller.call(
                    c.url, cluster.TerminateInstances(result.terminate_again), expect_name=c.name
                )
                log.info("terminate resent cluster=%s ids=%s", c.name, ",".join(result.terminate_again))
            except ClusterFault as e:
                log.warning("terminate resend failed cluster=%s fault=%s", c.name, e.code)
