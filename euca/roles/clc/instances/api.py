"""Instances through EC2, once launched (RunInstances is launch.py): DescribeInstances, TerminateInstances
(refused for a protected instance: disableApiTermination; detaches its volumes), RebootInstances,
GetConsoleOutput, DescribeInstanceStatus, GetPasswordData; Stop/StartInstances are ebs.py (EBS-backed
instances only); Describe/ModifyInstanceAttribute are attributes.py."""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import trio

from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.cluster import STATE_CODES, ClusterFault
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, decode_token, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.cluster_link import ClusterLink, connected, ec2_error_of
from euca.roles.clc.instances import attributes, ebs, records
from euca.roles.clc.instances.launch import run_instances
from euca.roles.clc.instances.records import ClcInstance
from euca.roles.clc.instances.render import dns_name, public_dns_name, to_reservations
from euca.roles.clc.topology import records as topology
from euca.roles.clc.volumes import records as volumes

log = logging.getLogger("euca.clc")

MAX_CONSOLE = 64 * 1024


# -- DescribeInstances -----------------------------------------------------------------------------------

INSTANCE_FILTERS: FilterSet[ClcInstance] = FilterSet(
    {
        "instance-id": lambda r: r.instance_id,
        "instance-state-name": lambda r: r.state,
        "instance-state-code": lambda r: r.state_code,
        "instance-type": lambda r: r.instance_type,
        "image-id": lambda r: r.image_id,
        "kernel-id": lambda r: r.kernel_id,
        "ramdisk-id": lambda r: r.ramdisk_id,
        "key-name": lambda r: r.key_name,
        "availability-zone": lambda r: r.zone,
        "reservation-id": lambda r: r.reservation_id,
        "owner-id": lambda r: r.account_id,
        "private-ip-address": lambda r: r.private_ip,
        "private-dns-name": lambda r: dns_name(r.private_ip) or None,
        "ip-address": lambda r: r.public_ip,
        "network-interface.addresses.association.public-ip": lambda r: r.public_ip,
        "dns-name": lambda r: public_dns_name(r.public_ip) or None,
        "launch-index": lambda r: r.launch_index,
        "ami-launch-index": lambda r: r.launch_index,
        "architecture": lambda r: r.architecture,
        "client-token": lambda r: r.client_token,
        "group-name": lambda r: r.groups,
        "instance.group-name": lambda r: r.groups,
        "group-id": lambda r: r.group_ids,
        "instance.group-id": lambda r: r.group_ids,
        "root-device-type": lambda r: r.root_device_type,
        "tenancy": lambda r: "default",
        "reason": lambda r: r.reason,
        "state-reason-code": lambda r: r.state_reason_code,
        "root-device-name": lambda r: r.root_device_name or "/dev/sda1",
        # The EBS volumes attached (issue 10).
        "block-device-mapping.volume-id": lambda r: [a.volume_id for a in r.volumes],
        "block-device-mapping.device-name": lambda r: [a.device for a in r.volumes],
        "block-device-mapping.status": lambda r: [
            "detaching" if a.state == "terminating" else a.state for a in r.volumes
        ],
        "block-device-mapping.attach-time": lambda r: [
            datetime.fromtimestamp(a.attach_time, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z") for a in r.volumes
        ],
        "block-device-mapping.delete-on-termination": lambda r: [
            str(a.delete_on_termination).lower() for a in r.volumes
        ],
    },
    tags=lambda r: r.tags,
)

INSTANCE_PAGES = PageLimits(5, 1000)


def _page_key(r: ClcInstance) -> str:
    return f"{r.seq:016d}"


def _seq_after(next_token: str | None) -> int | None:
    """The launch sequence number a page token names (paginate checks the token itself)."""
    if not next_token:
        return None
    try:
        key = decode_token(next_token)
    except Ec2Error:
        return None
    return int(key) if key.isdigit() else None


async def describe_instances(call: Ec2Call, req: m.DescribeInstancesRequest) -> m.DescribeInstancesResult:
    ids = list(req.instance_ids)
    everyone = call.principal.is_cloud_admin and "verbose" in ids  # euca-describe-instances verbose
    if everyone:
        ids = [i for i in ids if i != "verbose"]
    ids = records.check_instance_ids(ids)
    if ids and req.max_results is not None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    owner = None if everyone else call.account_id
    after = _seq_after(req.next_token)
    # Without filters a page is the next max_results in launch order: read only those (and one more, which
    # says whether there is a next page).
    limit = req.max_results + 1 if req.max_results is not None and not req.filters and not ids else None
    found = await call.ctx.store.read(
        lambda tx: records.load_instances(tx, owner, ids=ids or None, after_seq=after, limit=limit)
    )
    if ids:
        wanted = set(ids)
        found = [r for r in found if r.instance_id in wanted]
        missing = [i for i in ids if i not in {r.instance_id for r in found}]
        if missing:
            raise records.not_found(missing)
    found = INSTANCE_FILTERS.apply(req.filters, found)
    page, token = paginate(found, _page_key, req.max_results, req.next_token, INSTANCE_PAGES)
    return m.DescribeInstancesResult(reservations=to_reservations(page), next_token=token)


# -- TerminateInstances, RebootInstances -----------------------------------------------------------------


def _by_cluster(instances: Iterable[ClcInstance]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for r in instances:
        if r.cluster:
            grouped.setdefault(r.cluster, []).append(r.instance_id)
    return grouped


async def _cluster_urls(call: Ec2Call) -> dict[str, str]:
    clusters = await call.ctx.store.read(topology.list_clusters)
    return {c.name: c.url for c in clusters}


async def terminate_instances(call: Ec2Call, req: m.TerminateInstancesRequest) -> m.TerminateInstancesResult:
    ids = records.check_instance_ids(req.instance_ids)
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    now = time.time()
    when = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S GMT")

    def write(tx: Tx) -> tuple[list[ClcInstance], dict[str, str]]:
        found = records.owned(tx, call.account_id, ids)
        for r in found:
            if r.disable_api_termination:
                raise Ec2Error(
                    "OperationNotPermitted",
                    f"The instance '{r.instance_id}' may not be terminated. "
                    "Modify its 'disableApiTermination' instance attribute and try again.",
                )
        current: dict[str, str] = {}
        for r in found:
            if r.alive or r.state in ("stopping", "stopped"):
                # A stopped instance is on no node: terminated at once (its cluster has nothing to end).
                on_node = r if r.state != "stopped" else dataclasses.replace(r, cluster=None)
                current[r.instance_id] = records.mark_user_terminated(
                    tx, on_node, f"User initiated ({when})", now
                )
                volumes.instance_ended(tx, r.instance_id)  # its volumes detach as it ends
            else:
                current[r.instance_id] = r.state
        return found, current

    found, current = await call.ctx.store.write(write)
    to_tell = [r for r in found if (r.alive or r.state == "stopping") and r.cluster]
    if to_tell:
        log.info(
            "terminate instances account=%s ids=%s", call.account_id, ",".join(r.instance_id for r in to_tell)
        )
        link = call.cluster
        if link is not None:
            await _tell_clusters(call, link, _by_cluster(to_tell), "terminate")
            link.poke()
    return m.TerminateInstancesResult(
        terminating_instances=[
            m.InstanceStateChange(
                instance_id=r.instance_id,
                previous_state=m.InstanceState(code=r.state_code, name=r.state),
                current_state=m.InstanceState(
                    code=STATE_CODES[current[r.instance_id]], name=current[r.instance_id]
                ),
            )
            for r in found
        ]
    )


async def _tell_clusters(call: Ec2Call, link: ClusterLink, grouped: dict[str, list[str]], what: str) -> None:
    """Terminate (best effort: the poller tells a CC again until it reports them gone)."""
    urls = await _cluster_urls(call)

    async def tell(name: str, ids: list[str]) -> None:
        url = urls.get(name)
        if url is None:
            return
        try:
            reply = await link.caller.call(url, cluster.TerminateInstances(ids), expect_name=name)
        except ClusterFault as e:
            log.warning(
                "%s not delivered cluster=%s ids=%s fault=%s: %s",
                what,
                name,
                ",".join(ids),
                e.code,
                e.message,
            )
            return
        now = time.time()
        await call.ctx.store.write(lambda tx: records.apply_statuses(tx, reply.instances, now))

    async with trio.open_nursery() as nursery:
        for name, ids in grouped.items():
            nursery.start_soon(tell, name, ids)


async def reboot_instances(call: Ec2Call, req: m.RebootInstancesRequest) -> None:
    ids = records.check_instance_ids(req.instance_ids)
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    found = await call.ctx.store.read(lambda tx: records.owned(tx, call.account_id, ids))
    for r in found:
        if not r.alive:
            raise Ec2Error(
                "IncorrectInstanceState",
                f"The instance '{r.instance_id}' is not in a state from which it can be rebooted.",
            )
    link = connected(call.cluster)
    urls = await _cluster_urls(call)
    log.info("reboot instances account=%s ids=%s", call.account_id, ",".join(ids))
    for name, cluster_ids in _by_cluster(found).items():
        url = urls.get(name)
        if url is None:
            raise Ec2Error("Unavailable", f"The cluster {name} of these instances is no longer registered.")
        try:
            await link.caller.call(url, cluster.RebootInstances(cluster_ids), expect_name=name)
        except ClusterFault as e:
            raise ec2_error_of(e) from None


# -- GetConsoleOutput ------------------------------------------------------------------------------------


async def get_console_output(call: Ec2Call, req: m.GetConsoleOutputRequest) -> m.GetConsoleOutputResult:
    (instance_id,) = records.check_instance_ids([req.instance_id])
    (record,) = await call.ctx.store.read(lambda tx: records.owned(tx, call.account_id, [instance_id]))
    now = datetime.now(UTC)
    if not record.alive or not record.cluster:
        return m.GetConsoleOutputResult(instance_id=instance_id, timestamp=now)
    link = connected(call.cluster)
    url = (await _cluster_urls(call)).get(record.cluster)
    if url is None:
        return m.GetConsoleOutputResult(instance_id=instance_id, timestamp=now)
    try:
        reply = await link.caller.call(url, cluster.GetConsoleOutput(instance_id), expect_name=record.cluster)
    except ClusterFault as e:
        if e.code == "InvalidInstanceID.NotFound":  # not on a node yet, or already gone
            return m.GetConsoleOutputResult(instance_id=instance_id, timestamp=now)
        raise ec2_error_of(e) from None
    output = reply.output[-MAX_CONSOLE:]
    return m.GetConsoleOutputResult(
        instance_id=instance_id,
        output=base64.b64encode(output).decode("ascii") if output else None,
        timestamp=datetime.fromtimestamp(reply.timestamp, UTC) if reply.timestamp else now,
    )


# -- DescribeInstanceStatus ------------------------------------------------------------------------------


def _status(r: ClcInstance) -> m.InstanceStatus:
    running = r.state == "running"
    summary = (
        m.InstanceStatusSummary(
            status="ok", details=[m.InstanceStatusDetails(name="reachability", status="passed")]
        )
        if running
        else m.InstanceStatusSummary(status="not-applicable")
    )
    return m.InstanceStatus(
        instance_id=r.instance_id,
        availability_zone=r.zone,
        instance_state=m.InstanceState(code=r.state_code, name=r.state),
        instance_status=summary,
        system_status=summary,
    )


STATUS_FILTERS: FilterSet[m.InstanceStatus] = FilterSet(
    {
        "availability-zone": lambda s: s.availability_zone,
        "instance-state-name": lambda s: s.instance_state.name,
        "instance-state-code": lambda s: s.instance_state.code,
        "instance-status.status": lambda s: s.instance_status.status,
        "system-status.status": lambda s: s.system_status.status,
        "instance-status.reachability": lambda s: [d.status for d in s.instance_status.details],
        "system-status.reachability": lambda s: [d.status for d in s.system_status.details],
    }
)


async def describe_instance_status(
    call: Ec2Call, req: m.DescribeInstanceStatusRequest
) -> m.DescribeInstanceStatusResult:
    ids = records.check_instance_ids(req.instance_ids)
    if ids and req.max_results is not None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    found = await call.ctx.store.read(
        lambda tx: records.load_instances(tx, call.account_id, with_tags=False, ids=ids or None)
    )
    if ids:
        known = {r.instance_id for r in found}
        missing = [i for i in ids if i not in known]
        if missing:
            raise records.not_found(missing)
        found = [r for r in found if r.instance_id in set(ids)]
    # Without IncludeAllInstances EC2 lists running instances only.
    if not req.include_all_instances:
        found = [r for r in found if r.state == "running"]
    by_id = {r.instance_id: r for r in found}
    statuses = STATUS_FILTERS.apply(req.filters, [_status(r) for r in found])
    page, token = paginate(
        statuses, lambda s: _page_key(by_id[s.instance_id]), req.max_results, req.next_token, INSTANCE_PAGES
    )
    return m.DescribeInstanceStatusResult(instance_statuses=page, next_token=token)


# -- GetPasswordData -------------------------------------------------------------------------------------


async def get_password_data(call: Ec2Call, req: m.GetPasswordDataRequest) -> m.GetPasswordDataResult:
    """No instance here has a Windows password: EC2 answers a Linux instance with empty password data."""
    (instance_id,) = records.check_instance_ids([req.instance_id])
    await call.ctx.store.read(lambda tx: records.owned(tx, call.account_id, [instance_id]))
    return m.GetPasswordDataResult(instance_id=instance_id, password_data="", timestamp=datetime.now(UTC))


HANDLERS: dict[str, Handler] = {
    "RunInstances": run_instances,
    "DescribeInstances": describe_instances,
    "TerminateInstances": terminate_instances,
    "RebootInstances": reboot_instances,
    "StopInstances": ebs.stop_instances,
    "StartInstances": ebs.start_instances,
    "GetConsoleOutput": get_console_output,
    "DescribeInstanceStatus": describe_instance_status,
    "GetPasswordData": get_password_data,
    **attributes.HANDLERS,
}
