"""RunInstances: check, place, record, and hand the instances to their zone's CC.

RunInstances places the request in a zone (placement.py) and records the instances pending in the same store
transaction (durable before any CC hears of them), builds each InstanceSpec (instance type, download manifests
of the images encrypted for the nodes' image certificate), and sends one cluster.RunInstances to the zone's
CC. A fault terminates them with the reason and answers the EC2 error. From then on the poller (poller.py)
keeps the table in step with what the CCs report.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass, field

import msgspec
import trio

from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.cluster import ClusterFault, ImageRef, InstanceSpec, VmType
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc import placement
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.app import Ec2Call
from euca.roles.clc.cluster_link import ClusterLink, connected, ec2_error_of
from euca.roles.clc.images import bundles
from euca.roles.clc.images import records as images
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.instances import launch_quota, profiles, records
from euca.roles.clc.instances.records import LAUNCH_FAILED, NO_CAPACITY
from euca.roles.clc.instances.render import to_reservations
from euca.roles.clc.keypairs import records as keypairs
from euca.roles.clc.security_groups import records as security_groups
from euca.roles.clc.tags import records as tags
from euca.roles.clc.topology import records as topology

log = logging.getLogger("euca.clc")

DEFAULT_INSTANCE_TYPE = "m1.small"
MAX_USER_DATA = 16 * 1024
MAX_CLIENT_TOKEN = 64


@dataclass(frozen=True)
class LaunchPlan:
    """What was checked before placement: the images, the key, the type, the request's digest."""

    image: images.ImageRecord
    kernel_id: str | None
    ramdisk_id: str | None
    vm: VmType
    key_name: str | None
    public_key: str | None
    user_data: bytes
    tags: list[tuple[str, str]]
    digest: str


def check_shutdown_behavior(value: str | None) -> None:
    """What a shutdown from inside the guest does: an instance-store instance can only terminate (its NC
    ends an instance whose guest powered off); `stop` needs an EBS root."""
    if value is None or value == "terminate":
        return
    if value == "stop":
        raise Ec2Error(
            "UnsupportedOperation",
            "An instance-store instance terminates when shut down from inside: "
            "instanceInitiatedShutdownBehavior 'stop' needs an EBS root device.",
        )
    raise Ec2Error(
        "InvalidParameterValue",
        f"Value ({value}) for parameter instanceInitiatedShutdownBehavior is invalid. Expected: stop, terminate.",
    )


def _user_data(text: str | None) -> bytes:
    if not text:
        return b""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Ec2Error("InvalidParameterValue", "Invalid BASE64 encoding of user data.") from None
    if len(data) > MAX_USER_DATA:
        raise Ec2Error("InvalidParameterValue", f"User data is limited to {MAX_USER_DATA} bytes.")
    return data


def _request_digest(req: m.RunInstancesRequest) -> str:
    """What a client token stands for: the request without the token itself."""
    same = msgspec.structs.replace(req, client_token=None, dry_run=False)
    return hashlib.sha256(msgspec.json.encode(same)).hexdigest()


def _check_request(req: m.RunInstancesRequest) -> None:
    if req.min_count < 1:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({req.min_count}) for parameter minCount is invalid. Expected a positive integer.",
        )
    if req.max_count < 1:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({req.max_count}) for parameter maxCount is invalid. Expected a positive integer.",
        )
    if req.min_count > req.max_count:
        raise Ec2Error("InvalidParameterValue", "MinCount must be less than or equal to MaxCount")
    if not req.image_id:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ImageId")
    if req.client_token is not None and (
        len(req.client_token) > MAX_CLIENT_TOKEN or not req.client_token.isascii() or not req.client_token
    ):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({req.client_token}) for parameter clientToken is invalid."
        )
    check_shutdown_behavior(req.instance_initiated_shutdown_behavior)
    if req.subnet_id or req.private_ip_address:
        raise Ec2Error(
            "InvalidParameterCombination",
            "This cloud runs EC2-Classic: SubnetId and PrivateIpAddress are not supported.",
        )


def _boot_image(tx: Tx, image_id: str, want: str, account_id: str) -> images.ImageRecord:
    image = images.visible_image(tx, image_id, account_id)
    if image.image_type != want:
        raise Ec2Error(
            "InvalidParameterValue", f"Image {image_id} is a {image.image_type} image, not a {want} image"
        )
    return image


def _plan(tx: Tx, call: Ec2Call, req: m.RunInstancesRequest, user_data: bytes, digest: str) -> LaunchPlan:
    assert req.image_id
    image = _boot_image(tx, req.image_id, "machine", call.account_id)
    if image.state != "available":
        raise Ec2Error("InvalidAMIID.Unavailable", f"Image {image.image_id} is {image.state}, not available")
    kernel_id = req.kernel_id or image.kernel_id
    ramdisk_id = req.ramdisk_id or image.ramdisk_id
    if kernel_id:
        _boot_image(tx, kernel_id, "kernel", call.account_id)
    if ramdisk_id:
        _boot_image(tx, ramdisk_id, "ramdisk", call.account_id)
    if ramdisk_id and not kernel_id:
        raise Ec2Error("InvalidParameterCombination", "A ramdisk needs a kernel: give KernelId too.")
    type_name = req.instance_type or DEFAULT_INSTANCE_TYPE
    vm_type = instance_types.load_instance_type(tx, type_name)
    if vm_type is None:
        raise Ec2Error("InvalidParameterValue", f"Invalid value '{type_name}' for InstanceType.")
    public_key = None
    if req.key_name is not None:
        public_key = keypairs.public_key_of(tx, call.account_id, req.key_name)
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "instance")
    return LaunchPlan(
        image=image,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        vm=vm_type.vm_type,
        key_name=req.key_name,
        public_key=public_key,
        user_data=user_data,
        tags=tag_pairs,
        digest=digest,
    )


@dataclass(frozen=True)
class Placed:
    reservation_id: str
    cluster: topology.Cluster | None  # None: an earlier request with the same client token
    instance_ids: list[str]
    launch_time: float
    group_ids: list[str] = field(default_factory=list)
    public_ips: dict[str, str] = field(default_factory=dict)  # instance id -> its public address


def _place(
    tx: Tx,
    call: Ec2Call,
    req: m.RunInstancesRequest,
    plan: LaunchPlan,
    now: float,
    limits: dict[str, int] | None = None,
    profile: profiles.Profile | None = None,
) -> Placed:
    """In one write transaction: the client token, the quotas, the zone, the pending instances, the
    capacity taken."""
    if req.client_token:
        existing = records.existing_reservation(tx, call.account_id, req.client_token, plan.digest)
        if existing is not None:
            return Placed(existing, None, [], now)
    if limits:  # in this transaction, so a concurrent launch of the account is counted (launch_quota.py)
        launch_quota.check_launch(
            tx, call.account_id, limits, plan.vm.name, max(req.max_count, req.min_count)
        )
    # The groups are found (the default made on first use) in the transaction that records the instances in
    # them, so no group is deleted in between.
    groups = security_groups.groups_for_launch(
        tx, call.account_id, req.security_groups, req.security_group_ids
    )
    clusters = topology.list_clusters(tx)
    zones = [
        placement.ZoneCapacity(
            c.zone,
            c.name,
            next((t.free for t in c.capacity if t.vm_type == plan.vm.name), 0),
            c.available,
        )
        for c in clusters
    ]
    requested = req.placement.availability_zone if req.placement else None
    try:
        chosen = placement.choose_zone(zones, requested, req.min_count, req.max_count)
    except placement.PlacementError as e:
        raise Ec2Error(e.code, e.message) from None
    target = next(c for c in clusters if c.name == chosen.cluster)
    count = chosen.count
    auto_address = call.ctx.config.clc.auto_public_address and not addresses.pool_is_empty(tx)
    if auto_address:
        # Each instance gets a public address from the pool (as Eucalyptus did): no more instances than
        # there are free addresses; fewer than MinCount is a launch refused.
        free = addresses.free_count(tx)
        if free < req.min_count:
            raise Ec2Error(
                "InsufficientAddressCapacity",
                f"The public address pool has {free} free address(es); {req.min_count} instance(s) need one each.",
            )
        count = min(count, free)
    new = records.NewReservation(
        account_id=call.account_id,
        requester=call.principal.arn,
        client_token=req.client_token,
        request_digest=plan.digest,
        groups=[g.name for g in groups],
        group_ids=[g.group_id for g in groups],
        image_id=plan.image.image_id,
        kernel_id=plan.kernel_id,
        ramdisk_id=plan.ramdisk_id,
        instance_type=plan.vm.name,
        key_name=plan.key_name,
        user_data=plan.user_data,
        architecture=plan.image.architecture,
        zone=target.zone,
        cluster=target.name,
        count=count,
        tags=plan.tags,
        disable_api_termination=req.disable_api_termination,
    )
    reservation_id, ids = records.record_launch(tx, new, now)
    if profile is not None:  # the instance profile and its role's first credentials (profiles.py)
        profiles.associate(tx, profile, ids, call.ctx.identity.clock())
    public_ips = addresses.assign_system(tx, call.account_id, ids) if auto_address else {}
    nodes, capacity = placement.capacity_after(
        target.capacity, target.nodes, instance_types.vm_types(tx), plan.vm, count
    )
    topology.record_resources(tx, target.name, nodes, capacity)
    return Placed(reservation_id, target, ids, now, new.group_ids, public_ips)


async def _image_refs(
    call: Ec2Call, link: ClusterLink, plan: LaunchPlan
) -> tuple[ImageRef, ImageRef | None, ImageRef | None]:
    """Download manifests for the images, each built once for the whole request."""
    cert = await trio.to_thread.run_sync(link.node_image_cert_pem)

    async def ref(image_id: str, kind: str) -> ImageRef:
        manifest = await bundles.download_manifest_for(call.ctx, image_id, cert)
        return ImageRef(image_id, kind, manifest.decode())  # type: ignore[arg-type]

    machine = await ref(plan.image.image_id, "machine")
    kernel = await ref(plan.kernel_id, "kernel") if plan.kernel_id else None
    ramdisk = await ref(plan.ramdisk_id, "ramdisk") if plan.ramdisk_id else None
    return machine, kernel, ramdisk


async def run_instances(call: Ec2Call, req: m.RunInstancesRequest) -> m.Reservation:
    _check_request(req)
    user_data = _user_data(req.user_data)
    digest = _request_digest(req)
    store = call.ctx.store
    if req.client_token:
        token = req.client_token
        existing = await store.read(
            lambda tx: records.existing_reservation(tx, call.account_id, token, digest)
        )
        if existing is not None:
            return (await _reservation_result(call, existing))[0]
    plan = await store.read(lambda tx: _plan(tx, call, req, user_data, digest))
    link = connected(call.cluster)
    limits = await launch_quota.launch_limits(call)
    spec = req.iam_instance_profile
    profile = await profiles.resolve(call, spec) if spec is not None else None
    now = time.time()
    placed = await store.write(lambda tx: _place(tx, call, req, plan, now, limits, profile))
    if placed.cluster is None:  # the same client token won a race with us
        return (await _reservation_result(call, placed.reservation_id))[0]
    target = placed.cluster
    log.info(
        "run instances reservation=%s account=%s image=%s type=%s count=%d zone=%s",
        placed.reservation_id,
        call.account_id,
        plan.image.image_id,
        plan.vm.name,
        len(placed.instance_ids),
        target.zone,
    )
    try:
        machine, kernel, ramdisk = await _image_refs(call, link, plan)
    except Ec2Error as e:
        await _fail(call, placed, LAUNCH_FAILED, e.message)
        raise
    except Exception as e:
        log.exception("download manifest failed reservation=%s", placed.reservation_id)
        await _fail(call, placed, LAUNCH_FAILED, f"the image cannot be prepared: {type(e).__name__}")
        raise Ec2Error(
            "InternalError", f"The image cannot be prepared for the nodes: {type(e).__name__}"
        ) from None
    specs = [
        InstanceSpec(
            instance_id=instance_id,
            reservation_id=placed.reservation_id,
            account_id=call.account_id,
            launch_index=index,
            vm_type=plan.vm,
            machine=machine,
            kernel=kernel,
            ramdisk=ramdisk,
            key_name=plan.key_name,
            public_key=plan.public_key,
            user_data=plan.user_data,
            launch_time=placed.launch_time,
            security_groups=placed.group_ids,
            public_ip=placed.public_ips.get(instance_id),
        )
        for index, instance_id in enumerate(placed.instance_ids)
    ]
    try:
        reply = await link.caller.call(target.url, cluster.RunInstances(specs), expect_name=target.name)
    except ClusterFault as e:
        code = NO_CAPACITY if e.code == "InsufficientInstanceCapacity" else LAUNCH_FAILED
        await _fail(call, placed, code, e.message)
        log.warning(
            "run instances failed reservation=%s cluster=%s fault=%s",
            placed.reservation_id,
            target.name,
            e.code,
        )
        link.poke()
        raise ec2_error_of(e) from None
    now = time.time()
    await store.write(lambda tx: records.apply_statuses(tx, reply.instances, now))
    link.poke()
    return (await _reservation_result(call, placed.reservation_id))[0]


async def _reservation_result(call: Ec2Call, reservation_id: str) -> list[m.Reservation]:
    launched = await call.ctx.store.read(lambda tx: records.load_reservation(tx, reservation_id))
    return to_reservations(launched) or [
        m.Reservation(reservation_id=reservation_id, owner_id=call.account_id)
    ]


async def _fail(call: Ec2Call, placed: Placed, code: str, message: str) -> None:
    """The launch failed: its instances end with the reason, and its client token is free again, so the
    client's retry with the same token is a new attempt rather than this failure replayed."""
    now = time.time()

    def write(tx: Tx) -> None:
        records.mark_terminated(tx, placed.instance_ids, code, message, now)
        records.release_client_token(tx, placed.reservation_id)

    await call.ctx.store.write(write)
