"""Instances: RunInstances, DescribeInstances, TerminateInstances, RebootInstances, GetConsoleOutput,
DescribeInstanceStatus (Stop/StartInstances answer UnsupportedOperation: instance-store only).

The instance table is the CLC's record; the CCs run the instances. RunInstances places the request in a zone
(placement.py), records the instances pending in the same store transaction (durable before any CC hears of
them), builds each InstanceSpec (instance type, download manifests of the images encrypted for the nodes'
image certificate), and sends one cluster.RunInstances to the zone's CC. A fault terminates them with the
reason and answers the EC2 error. From then on the poller (poller.py) keeps the table in step with what the
CCs report. An account sees only its own instances.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import trio

from euca.core.store import Store, Tx
from euca.protocol import cluster
from euca.protocol.cluster import STATE_CODES, ClusterFault, ImageRef, InstanceSpec, VmType
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, decode_token, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc import images, instance_types, placement, topology
from euca.roles.clc import tags as tagging
from euca.roles.clc.app import Call
from euca.roles.clc.topology import ClusterLink

log = logging.getLogger("euca.clc")

NAMESPACE = "clc.instances"
INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
DEFAULT_INSTANCE_TYPE = "m1.small"
MAX_USER_DATA = 16 * 1024
MAX_CLIENT_TOKEN = 64
MAX_CONSOLE = 64 * 1024

# EC2 states only move forward (a late report never brings a terminated instance back).
RANK = {"pending": 0, "running": 1, "stopping": 1, "stopped": 1, "shutting-down": 2, "terminated": 3}

SCHEMA: list[str | Callable[[Tx], None]] = [
    """
    -- One RunInstances request. The client token (per account) makes RunInstances idempotent;
    -- request_digest is what was asked with it, so a different request with the same token is refused.
    CREATE TABLE clc_reservations (
        reservation_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        requester TEXT NOT NULL,
        client_token TEXT,
        request_digest TEXT NOT NULL,
        groups TEXT NOT NULL DEFAULT '[]',
        created REAL NOT NULL
    );
    CREATE UNIQUE INDEX clc_reservations_token ON clc_reservations(account_id, client_token)
        WHERE client_token IS NOT NULL;
    -- seq orders instances by launch (DescribeInstances pages by it).
    -- cluster is NULL only for an instance that never reached a CC.
    -- last_seen: when a CC last reported it (or its launch); terminated_at: when it became terminated.
    CREATE TABLE clc_instances (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL UNIQUE,
        reservation_id TEXT NOT NULL REFERENCES clc_reservations(reservation_id),
        account_id TEXT NOT NULL,
        launch_index INTEGER NOT NULL,
        image_id TEXT NOT NULL,
        kernel_id TEXT,
        ramdisk_id TEXT,
        instance_type TEXT NOT NULL,
        key_name TEXT,
        user_data BLOB NOT NULL DEFAULT x'',
        architecture TEXT,
        zone TEXT NOT NULL,
        cluster TEXT,
        node TEXT,
        private_ip TEXT,
        mac TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        state_reason_code TEXT,
        state_reason_message TEXT,
        launch_time REAL NOT NULL,
        last_seen REAL NOT NULL,
        terminated_at REAL
    );
    CREATE INDEX clc_instances_account ON clc_instances(account_id);
    CREATE INDEX clc_instances_cluster ON clc_instances(cluster, state);
    CREATE INDEX clc_instances_terminated ON clc_instances(terminated_at) WHERE terminated_at IS NOT NULL;
    """,
]


def migrate(store: Store) -> None:
    store.migrate(NAMESPACE, SCHEMA)


# Why an instance ended, as EC2 reports it (StateReason code and message).
USER_SHUTDOWN = ("Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown")
NODE_LOST = ("Server.InternalError", "The instance's node stopped reporting it")
LAUNCH_FAILED = "Server.InternalError"
NO_CAPACITY = "Server.InsufficientInstanceCapacity"


@dataclass(frozen=True)
class InstanceRecord:
    seq: int
    instance_id: str
    reservation_id: str
    account_id: str
    launch_index: int
    image_id: str
    kernel_id: str | None
    ramdisk_id: str | None
    instance_type: str
    key_name: str | None
    architecture: str | None
    zone: str
    cluster: str | None
    node: str | None
    private_ip: str | None
    mac: str | None
    state: str
    reason: str | None
    state_reason_code: str | None
    state_reason_message: str | None
    launch_time: float
    last_seen: float
    terminated_at: float | None
    client_token: str | None = None
    groups: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def state_code(self) -> int:
        return STATE_CODES.get(self.state, 0)

    @property
    def alive(self) -> bool:
        return self.state in ("pending", "running")


_groups_decoder = msgspec.json.Decoder(list[str])
_INSTANCE_COLUMNS = (
    "i.seq, i.instance_id, i.reservation_id, i.account_id, i.launch_index, i.image_id, i.kernel_id, "
    "i.ramdisk_id, i.instance_type, i.key_name, i.architecture, i.zone, i.cluster, i.node, i.private_ip, i.mac, "
    "i.state, i.reason, i.state_reason_code, i.state_reason_message, i.launch_time, i.last_seen, "
    "i.terminated_at, r.client_token, r.groups"
)
_FROM = "FROM clc_instances i JOIN clc_reservations r ON r.reservation_id = i.reservation_id"


def _record(row: sqlite3.Row, tags: dict[str, str] | None = None) -> InstanceRecord:
    return InstanceRecord(
        seq=row["seq"],
        instance_id=row["instance_id"],
        reservation_id=row["reservation_id"],
        account_id=row["account_id"],
        launch_index=row["launch_index"],
        image_id=row["image_id"],
        kernel_id=row["kernel_id"],
        ramdisk_id=row["ramdisk_id"],
        instance_type=row["instance_type"],
        key_name=row["key_name"],
        architecture=row["architecture"],
        zone=row["zone"],
        cluster=row["cluster"],
        node=row["node"],
        private_ip=row["private_ip"],
        mac=row["mac"],
        state=row["state"],
        reason=row["reason"],
        state_reason_code=row["state_reason_code"],
        state_reason_message=row["state_reason_message"],
        launch_time=row["launch_time"],
        last_seen=row["last_seen"],
        terminated_at=row["terminated_at"],
        client_token=row["client_token"],
        groups=_groups_decoder.decode(row["groups"]),
        tags=tags or {},
    )


def load_instances(
    tx: Tx,
    account_id: str | None,
    *,
    with_tags: bool = True,
    ids: Sequence[str] | None = None,
    after_seq: int | None = None,
    limit: int | None = None,
) -> list[InstanceRecord]:
    """The account's instances (every account's for None), in launch order, with the account's tags.

    Narrowed in the query, so a DescribeInstances of a few ids or of one page does not read them all:
    `ids` only these; `after_seq` only those launched after that one (a page token); `limit` at most so many.
    """
    where: list[str] = []
    args: list[object] = []
    if account_id is not None:
        where.append("i.account_id=?")
        args.append(account_id)
    if after_seq is not None:
        where.append("i.seq>?")
        args.append(after_seq)
    if ids is not None:
        rows = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            conditions = " AND ".join([*where, f"i.instance_id IN ({','.join('?' * len(chunk))})"])
            rows.extend(tx.all(f"SELECT {_INSTANCE_COLUMNS} {_FROM} WHERE {conditions}", (*args, *chunk)))
        rows.sort(key=lambda r: r["seq"])
        if limit is not None:
            rows = rows[:limit]
    else:
        sql = f"SELECT {_INSTANCE_COLUMNS} {_FROM}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY i.seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = tx.all(sql, tuple(args))
    tags: dict[str, dict[str, str]] = {}
    if with_tags and rows:
        if account_id is None:
            for owner in {r["account_id"] for r in rows}:
                tags.update(
                    tagging.tags_of(tx, owner, (r["instance_id"] for r in rows if r["account_id"] == owner))
                )
        else:
            tags = tagging.tags_of(tx, account_id, (r["instance_id"] for r in rows))
    return [_record(r, tags.get(r["instance_id"])) for r in rows]


def load_reservation(tx: Tx, reservation_id: str) -> list[InstanceRecord]:
    rows = tx.all(
        f"SELECT {_INSTANCE_COLUMNS} {_FROM} WHERE i.reservation_id=? ORDER BY i.seq", (reservation_id,)
    )
    if not rows:
        return []
    tags = tagging.tags_of(tx, rows[0]["account_id"], (r["instance_id"] for r in rows))
    return [_record(r, tags.get(r["instance_id"])) for r in rows]


# -- ids and errors --------------------------------------------------------------------------------------


def new_instance_id(tx: Tx) -> str:
    while True:
        instance_id = f"i-{secrets.token_hex(4)}"
        if not tx.one("SELECT 1 FROM clc_instances WHERE instance_id=?", (instance_id,)):
            return instance_id


def new_reservation_id(tx: Tx) -> str:
    while True:
        reservation_id = f"r-{secrets.token_hex(4)}"
        if not tx.one("SELECT 1 FROM clc_reservations WHERE reservation_id=?", (reservation_id,)):
            return reservation_id


def check_instance_ids(ids: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(ids))
    for instance_id in out:
        if not INSTANCE_ID_RE.match(instance_id):
            raise Ec2Error("InvalidInstanceID.Malformed", f'Invalid id: "{instance_id}"')
    return out


def not_found(ids: Sequence[str]) -> Ec2Error:
    if len(ids) == 1:
        return Ec2Error("InvalidInstanceID.NotFound", f"The instance ID '{ids[0]}' does not exist")
    return Ec2Error("InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(ids)}' do not exist")


def _owned(tx: Tx, account_id: str, ids: Sequence[str]) -> list[InstanceRecord]:
    """The caller's instances with these ids, in the order asked; any missing one is NotFound."""
    found = {r.instance_id: r for r in load_instances(tx, account_id, with_tags=False, ids=ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise not_found(missing)
    return [found[i] for i in ids]


def _link(call: Call) -> ClusterLink:
    link = call.cluster
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


# -- rendering -------------------------------------------------------------------------------------------


def _dns_name(ip: str | None) -> str:
    return f"euca-{ip.replace('.', '-')}.eucalyptus.internal" if ip else ""


def to_instance(r: InstanceRecord) -> m.Instance:
    reason = None
    if r.state_reason_code:
        reason = m.StateReason(
            code=r.state_reason_code, message=r.state_reason_message or r.state_reason_code
        )
    return m.Instance(
        instance_id=r.instance_id,
        image_id=r.image_id,
        state=m.InstanceState(code=r.state_code, name=r.state),
        instance_type=r.instance_type,
        launch_time=datetime.fromtimestamp(r.launch_time, UTC),
        placement=m.Placement(availability_zone=r.zone, tenancy="default", group_name=""),
        ami_launch_index=r.launch_index,
        private_dns_name=_dns_name(r.private_ip),
        public_dns_name="",
        state_transition_reason=r.reason or "",
        key_name=r.key_name,
        kernel_id=r.kernel_id,
        ramdisk_id=r.ramdisk_id,
        monitoring=m.Monitoring(state="disabled"),
        private_ip_address=r.private_ip,
        architecture=r.architecture,
        root_device_type="instance-store",
        root_device_name="/dev/sda1",
        virtualization_type="paravirtual" if r.kernel_id else "hvm",
        client_token=r.client_token or "",
        ebs_optimized=False,
        security_groups=[m.GroupIdentifier(group_name=g) for g in r.groups],
        state_reason=reason,
        tags=tagging.tag_list(r.tags),
    )


def to_reservations(records: Iterable[InstanceRecord]) -> list[m.Reservation]:
    """Instances grouped by reservation, reservations in the order their first instance comes."""
    grouped: dict[str, list[InstanceRecord]] = {}
    for r in records:
        grouped.setdefault(r.reservation_id, []).append(r)
    return [
        m.Reservation(
            reservation_id=rid,
            owner_id=members[0].account_id,
            requester_id=None,
            groups=[m.GroupIdentifier(group_name=g) for g in members[0].groups],
            instances=[to_instance(r) for r in members],
        )
        for rid, members in grouped.items()
    ]


# -- RunInstances ----------------------------------------------------------------------------------------


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
    groups: list[str]
    tags: list[tuple[str, str]]
    digest: str


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
    if req.subnet_id or req.private_ip_address:
        raise Ec2Error(
            "InvalidParameterCombination",
            "This cloud runs EC2-Classic: SubnetId and PrivateIpAddress are not supported.",
        )


def _boot_image(tx: Tx, image_id: str, want: str, account_id: str) -> images.ImageRecord:
    images.check_image_id(image_id)
    image = images.load_image(tx, image_id)
    if image is None or not image.visible_to(account_id):
        raise Ec2Error("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
    if image.image_type != want:
        raise Ec2Error(
            "InvalidParameterValue", f"Image {image_id} is a {image.image_type} image, not a {want} image"
        )
    return image


def _plan(tx: Tx, call: Call, req: m.RunInstancesRequest, user_data: bytes, digest: str) -> LaunchPlan:
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
        row = tx.one(
            "SELECT public_key FROM clc_keypairs WHERE account_id=? AND name=?",
            (call.account_id, req.key_name),
        )
        if row is None:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{req.key_name}' does not exist")
        public_key = row["public_key"]
    groups = list(dict.fromkeys([*req.security_groups, *req.security_group_ids])) or ["default"]
    tags = tagging.tags_from_specifications(req.tag_specifications, "instance")
    return LaunchPlan(
        image=image,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        vm=vm_type.vm_type,
        key_name=req.key_name,
        public_key=public_key,
        user_data=user_data,
        groups=groups,
        tags=tags,
        digest=digest,
    )


def _existing_reservation(tx: Tx, account_id: str, token: str, digest: str) -> str | None:
    row = tx.one(
        "SELECT reservation_id, request_digest FROM clc_reservations WHERE account_id=? AND client_token=?",
        (account_id, token),
    )
    if row is None:
        return None
    if row["request_digest"] != digest:
        raise Ec2Error(
            "IdempotentParameterMismatch",
            f"The client token '{token}' was used before with a different request.",
        )
    return str(row["reservation_id"])


@dataclass(frozen=True)
class Placed:
    reservation_id: str
    cluster: topology.Cluster | None  # None: an earlier request with the same client token
    instance_ids: list[str]
    launch_time: float


def _place(tx: Tx, call: Call, req: m.RunInstancesRequest, plan: LaunchPlan, now: float) -> Placed:
    """In one write transaction: the client token, the zone, the pending instances, the capacity taken."""
    if req.client_token:
        existing = _existing_reservation(tx, call.account_id, req.client_token, plan.digest)
        if existing is not None:
            return Placed(existing, None, [], now)
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
    reservation_id = new_reservation_id(tx)
    tx.execute(
        "INSERT INTO clc_reservations(reservation_id, account_id, requester, client_token, request_digest, groups, "
        "created) VALUES(?,?,?,?,?,?,?)",
        (
            reservation_id,
            call.account_id,
            call.principal.arn,
            req.client_token,
            plan.digest,
            msgspec.json.encode(plan.groups).decode(),
            now,
        ),
    )
    ids: list[str] = []
    for index in range(chosen.count):
        instance_id = new_instance_id(tx)
        ids.append(instance_id)
        tx.execute(
            "INSERT INTO clc_instances(instance_id, reservation_id, account_id, launch_index, image_id, kernel_id, "
            "ramdisk_id, instance_type, key_name, user_data, architecture, zone, cluster, state, launch_time, "
            "last_seen) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',?,?)",
            (
                instance_id,
                reservation_id,
                call.account_id,
                index,
                plan.image.image_id,
                plan.kernel_id,
                plan.ramdisk_id,
                plan.vm.name,
                plan.key_name,
                plan.user_data,
                plan.image.architecture,
                target.zone,
                target.name,
                now,
                now,
            ),
        )
        tagging.write_tags(tx, call.account_id, instance_id, "instance", plan.tags)
    nodes, capacity = placement.capacity_after(
        target.capacity, target.nodes, instance_types.vm_types(tx), plan.vm, chosen.count
    )
    topology.record_resources(tx, target.name, nodes, capacity)
    return Placed(reservation_id, target, ids, now)


async def _image_refs(
    call: Call, link: ClusterLink, plan: LaunchPlan
) -> tuple[ImageRef, ImageRef | None, ImageRef | None]:
    """Download manifests for the images, each built once for the whole request."""
    cert = await trio.to_thread.run_sync(link.node_image_cert_pem)

    async def ref(image_id: str, kind: str) -> ImageRef:
        manifest = await images.download_manifest_for(call.ctx, image_id, cert)
        return ImageRef(image_id, kind, manifest.decode())  # type: ignore[arg-type]

    machine = await ref(plan.image.image_id, "machine")
    kernel = await ref(plan.kernel_id, "kernel") if plan.kernel_id else None
    ramdisk = await ref(plan.ramdisk_id, "ramdisk") if plan.ramdisk_id else None
    return machine, kernel, ramdisk


def mark_terminated(tx: Tx, ids: Sequence[str], code: str, text: str, now: float) -> None:
    """These instances ended for `code` (a StateReason code); `text` says why."""
    message = f"{code}: {text}"
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        tx.execute(
            f"UPDATE clc_instances SET state='terminated', state_reason_code=?, state_reason_message=?, "
            f"reason=?, terminated_at=? WHERE state!='terminated' AND instance_id IN ({marks})",
            (code, message, message, now, *chunk),
        )


def apply_statuses(tx: Tx, statuses: Iterable[cluster.InstanceStatus], now: float) -> None:
    """What a CC answered about instances it was just asked to run or terminate (the poller does the rest)."""
    for s in statuses:
        row = tx.one("SELECT state FROM clc_instances WHERE instance_id=?", (s.instance_id,))
        if row is None:
            continue
        state = s.state if RANK.get(s.state, 0) >= RANK.get(row["state"], 0) else row["state"]
        terminated_at = now if state == "terminated" and row["state"] != "terminated" else None
        tx.execute(
            "UPDATE clc_instances SET state=?, node=COALESCE(?, node), private_ip=COALESCE(?, private_ip), "
            "mac=COALESCE(?, mac), last_seen=?, terminated_at=COALESCE(terminated_at, ?) WHERE instance_id=?",
            (state, s.node or None, s.private_ip, s.mac, now, terminated_at, s.instance_id),
        )


async def run_instances(call: Call, req: m.RunInstancesRequest) -> m.Reservation:
    _check_request(req)
    user_data = _user_data(req.user_data)
    digest = _request_digest(req)
    store = call.ctx.store
    if req.client_token:
        token = req.client_token
        existing = await store.read(lambda tx: _existing_reservation(tx, call.account_id, token, digest))
        if existing is not None:
            return (await _reservation_result(call, existing))[0]
    plan = await store.read(lambda tx: _plan(tx, call, req, user_data, digest))
    link = _link(call)
    now = time.time()
    placed = await store.write(lambda tx: _place(tx, call, req, plan, now))
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
    await store.write(lambda tx: apply_statuses(tx, reply.instances, now))
    link.poke()
    return (await _reservation_result(call, placed.reservation_id))[0]


async def _reservation_result(call: Call, reservation_id: str) -> list[m.Reservation]:
    records = await call.ctx.store.read(lambda tx: load_reservation(tx, reservation_id))
    return to_reservations(records) or [
        m.Reservation(reservation_id=reservation_id, owner_id=call.account_id)
    ]


async def _fail(call: Call, placed: Placed, code: str, message: str) -> None:
    """The launch failed: its instances end with the reason, and its client token is free again, so the
    client's retry with the same token is a new attempt rather than this failure replayed."""
    now = time.time()

    def write(tx: Tx) -> None:
        mark_terminated(tx, placed.instance_ids, code, message, now)
        tx.execute(
            "UPDATE clc_reservations SET client_token=NULL WHERE reservation_id=?", (placed.reservation_id,)
        )

    await call.ctx.store.write(write)


# -- DescribeInstances -----------------------------------------------------------------------------------

INSTANCE_FILTERS: FilterSet[InstanceRecord] = FilterSet(
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
        "private-dns-name": lambda r: _dns_name(r.private_ip) or None,
        "launch-index": lambda r: r.launch_index,
        "ami-launch-index": lambda r: r.launch_index,
        "architecture": lambda r: r.architecture,
        "client-token": lambda r: r.client_token,
        "group-name": lambda r: r.groups,
        "instance.group-name": lambda r: r.groups,
        "root-device-type": lambda r: "instance-store",
        "tenancy": lambda r: "default",
        "reason": lambda r: r.reason,
        "state-reason-code": lambda r: r.state_reason_code,
    },
    tags=lambda r: r.tags,
)

INSTANCE_PAGES = PageLimits(5, 1000)


def _page_key(r: InstanceRecord) -> str:
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


async def describe_instances(call: Call, req: m.DescribeInstancesRequest) -> m.DescribeInstancesResult:
    ids = list(req.instance_ids)
    everyone = call.principal.is_cloud_admin and "verbose" in ids  # euca-describe-instances verbose
    if everyone:
        ids = [i for i in ids if i != "verbose"]
    ids = check_instance_ids(ids)
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
    records = await call.ctx.store.read(
        lambda tx: load_instances(tx, owner, ids=ids or None, after_seq=after, limit=limit)
    )
    if ids:
        wanted = set(ids)
        records = [r for r in records if r.instance_id in wanted]
        missing = [i for i in ids if i not in {r.instance_id for r in records}]
        if missing:
            raise not_found(missing)
    records = INSTANCE_FILTERS.apply(req.filters, records)
    page, token = paginate(records, _page_key, req.max_results, req.next_token, INSTANCE_PAGES)
    return m.DescribeInstancesResult(reservations=to_reservations(page), next_token=token)


# -- TerminateInstances, RebootInstances -----------------------------------------------------------------


def _by_cluster(records: Iterable[InstanceRecord]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for r in records:
        if r.cluster:
            grouped.setdefault(r.cluster, []).append(r.instance_id)
    return grouped


async def _cluster_urls(call: Call) -> dict[str, str]:
    clusters = await call.ctx.store.read(topology.list_clusters)
    return {c.name: c.url for c in clusters}


async def terminate_instances(call: Call, req: m.TerminateInstancesRequest) -> m.TerminateInstancesResult:
    ids = check_instance_ids(req.instance_ids)
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    now = time.time()
    when = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S GMT")

    def write(tx: Tx) -> tuple[list[InstanceRecord], dict[str, str]]:
        records = _owned(tx, call.account_id, ids)
        current: dict[str, str] = {}
        for r in records:
            if not r.alive:
                current[r.instance_id] = r.state
                continue
            # Never placed: nothing runs anywhere. Otherwise the CC is told next (and again by the poller).
            state = "shutting-down" if r.cluster else "terminated"
            tx.execute(
                "UPDATE clc_instances SET state=?, reason=?, state_reason_code=?, state_reason_message=?, "
                "terminated_at=? WHERE instance_id=?",
                (
                    state,
                    f"User initiated ({when})",
                    USER_SHUTDOWN[0],
                    USER_SHUTDOWN[1],
                    now if state == "terminated" else None,
                    r.instance_id,
                ),
            )
            current[r.instance_id] = state
        return records, current

    records, current = await call.ctx.store.write(write)
    to_tell = [r for r in records if r.alive and r.cluster]
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
            for r in records
        ]
    )


async def _tell_clusters(call: Call, link: ClusterLink, grouped: dict[str, list[str]], what: str) -> None:
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
        await call.ctx.store.write(lambda tx: apply_statuses(tx, reply.instances, now))

    async with trio.open_nursery() as nursery:
        for name, ids in grouped.items():
            nursery.start_soon(tell, name, ids)


async def reboot_instances(call: Call, req: m.RebootInstancesRequest) -> None:
    ids = check_instance_ids(req.instance_ids)
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    records = await call.ctx.store.read(lambda tx: _owned(tx, call.account_id, ids))
    for r in records:
        if not r.alive:
            raise Ec2Error(
                "IncorrectInstanceState",
                f"The instance '{r.instance_id}' is not in a state from which it can be rebooted.",
            )
    link = _link(call)
    urls = await _cluster_urls(call)
    log.info("reboot instances account=%s ids=%s", call.account_id, ",".join(ids))
    for name, cluster_ids in _by_cluster(records).items():
        url = urls.get(name)
        if url is None:
            raise Ec2Error("Unavailable", f"The cluster {name} of these instances is no longer registered.")
        try:
            await link.caller.call(url, cluster.RebootInstances(cluster_ids), expect_name=name)
        except ClusterFault as e:
            raise ec2_error_of(e) from None


# -- Stop/StartInstances: instance-store instances cannot stop -------------------------------------------


async def stop_instances(call: Call, req: m.StopInstancesRequest) -> None:
    await _cannot(call, req.instance_ids, "stopped")


async def start_instances(call: Call, req: m.StartInstancesRequest) -> None:
    await _cannot(call, req.instance_ids, "started")


async def _cannot(call: Call, instance_ids: list[str], what: str) -> None:
    ids = check_instance_ids(instance_ids)
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
    await call.ctx.store.read(lambda tx: _owned(tx, call.account_id, ids))
    raise Ec2Error(
        "UnsupportedOperation",
        f"The instance '{ids[0]}' does not have an 'ebs' root device type and cannot be {what}.",
    )


# -- GetConsoleOutput ------------------------------------------------------------------------------------


async def get_console_output(call: Call, req: m.GetConsoleOutputRequest) -> m.GetConsoleOutputResult:
    (instance_id,) = check_instance_ids([req.instance_id])
    (record,) = await call.ctx.store.read(lambda tx: _owned(tx, call.account_id, [instance_id]))
    now = datetime.now(UTC)
    if not record.alive or not record.cluster:
        return m.GetConsoleOutputResult(instance_id=instance_id, timestamp=now)
    link = _link(call)
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


def _status(r: InstanceRecord) -> m.InstanceStatus:
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
    call: Call, req: m.DescribeInstanceStatusRequest
) -> m.DescribeInstanceStatusResult:
    ids = check_instance_ids(req.instance_ids)
    if ids and req.max_results is not None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        )
    records = await call.ctx.store.read(
        lambda tx: load_instances(tx, call.account_id, with_tags=False, ids=ids or None)
    )
    if ids:
        known = {r.instance_id for r in records}
        missing = [i for i in ids if i not in known]
        if missing:
            raise not_found(missing)
        records = [r for r in records if r.instance_id in set(ids)]
    # Without IncludeAllInstances EC2 lists running instances only.
    if not req.include_all_instances:
        records = [r for r in records if r.state == "running"]
    by_id = {r.instance_id: r for r in records}
    statuses = STATUS_FILTERS.apply(req.filters, [_status(r) for r in records])
    page, token = paginate(
        statuses, lambda s: _page_key(by_id[s.instance_id]), req.max_results, req.next_token, INSTANCE_PAGES
    )
    return m.DescribeInstanceStatusResult(instance_statuses=page, next_token=token)
