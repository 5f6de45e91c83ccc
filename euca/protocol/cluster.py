"""Messages between the CLC, the CCs and the NCs: typed msgspec structs carried as JSON over HTTP.

Who calls whom (always downward, as in Eucalyptus; the caller polls, nobody pushes upward):

    CLC --(cc port 8774)--> CC --(nc port 8775)--> NC
    CLC --(sc port 8776)--> SC  (the cluster's storage; later its NCs too, to reach volumes' exports)

Wire (sans-I/O here; the transport lives in euca/core):
    request:  POST /cluster/<MessageName>   body: JSON of the message struct
    reply:    200, body: JSON of the message's reply struct
    fault:    4xx/5xx, body: JSON of `Fault` (code, message) — codes are the EC2 codes the CLC passes on
              (InsufficientInstanceCapacity, InvalidInstanceID.NotFound, ...) or `Unauthorized`/`BadMessage`.

Authentication: mutual TLS. Every component holds a key and a certificate issued by the cloud CA, with
Organization "euca", OrganizationalUnit = its role ("clc", "cc", "nc", "sc") and CommonName = its registered
name. A listener only takes calls from the roles in `ALLOWED_CALLERS` for it; anything else is refused
before a message is decoded. An NC's certificate also names its cluster (SAN `urn:euca:cluster:<name>`), and
an NC takes calls only from the CC whose CN is that cluster.

Instance states: the NC's own lifecycle (`NcState`) maps to the EC2 state the CC and CLC report (`ec2_state`).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from euca.protocol.errors import CodedError

PATH_PREFIX = "/cluster/"

# Listener role -> roles whose certificates may call it.
ALLOWED_CALLERS: dict[str, frozenset[str]] = {
    "cc": frozenset({"clc"}),
    "nc": frozenset({"cc"}),
    "sc": frozenset({"clc", "nc"}),
}

Ec2State = Literal["pending", "running", "shutting-down", "terminated", "stopping", "stopped"]
STATE_CODES: dict[str, int] = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}

# The NC's lifecycle, as Eucalyptus named it. staging: fetching images and making disks; booting: domain
# created; running/blocked/paused: libvirt says so; teardown: being destroyed; terminated: gone (kept a
# while so the CC/CLC see the end); canceled: failed before it ran (reason in InstanceStatus.reason).
NcState = Literal["staging", "booting", "running", "blocked", "paused", "teardown", "terminated", "canceled"]

_EC2_OF_NC: dict[str, Ec2State] = {
    "staging": "pending",
    "booting": "running",
    "running": "running",
    "blocked": "running",
    "paused": "running",
    "teardown": "shutting-down",
    "terminated": "terminated",
    "canceled": "terminated",
}


def ec2_state(nc_state: str) -> Ec2State:
    return _EC2_OF_NC.get(nc_state, "pending")


# ---------------------------------------------------------------------------------------------------------
# Shared values


class VmType(msgspec.Struct, frozen=True):
    """An instance type as the admin defined it (REFERENCE.md has the 4.x defaults)."""

    name: str
    cores: int
    memory_mb: int
    disk_gb: int


class ImageRef(msgspec.Struct, frozen=True):
    """One image an instance needs, and how a node gets its bytes.

    `download_manifest` is the signed download manifest (euca.protocol.bundle.build_download_manifest):
    presigned part URLs and the bundle key/IV encrypted for the cluster's node certificate, so the key
    never crosses the wire in plain text.
    """

    image_id: str
    kind: Literal["machine", "kernel", "ramdisk"]
    download_manifest: str


class NetConfig(msgspec.Struct, frozen=True):
    """The instance's place on the VM network; chosen by the CC, which owns the cluster's network."""

    mac: str
    private_ip: str
    bridge: str | None = None  # the NC attaches the NIC to this bridge; None: no NIC


class InstanceSpec(msgspec.Struct, frozen=True):
    """Everything a node needs to run one instance."""

    instance_id: str
    reservation_id: str
    account_id: str
    launch_index: int
    vm_type: VmType
    machine: ImageRef
    kernel: ImageRef | None = None
    ramdisk: ImageRef | None = None
    key_name: str | None = None
    public_key: str | None = None  # OpenSSH line of the key pair, for the metadata service
    user_data: bytes = b""  # raw bytes (JSON carries them base64)
    net: NetConfig | None = None  # None from the CLC; the CC fills it in before it reaches the NC
    launch_time: float = 0.0
    security_groups: list[str] = []  # the ids of its security groups (their rules: NetworkView)
    public_ip: str | None = None  # its public address from the CLC's pool, if it has one


class InstanceStatus(msgspec.Struct, frozen=True):
    instance_id: str
    reservation_id: str
    account_id: str
    state: Ec2State
    nc_state: NcState
    node: str  # the node's registered name
    vm_type: str
    image_id: str
    launch_index: int = 0
    private_ip: str | None = None
    mac: str | None = None
    launch_time: float = 0.0
    reason: str | None = None  # why it is terminated/canceled, if not by request
    volumes: list[AttachedVolume] = []  # EBS volumes attached to it (issue 10), as its NC has them


class NodeResources(msgspec.Struct, frozen=True):
    """What one node has. Max is the host's total; free is max minus what non-terminated instances use."""

    node: str
    state: Literal["up", "down"]
    cores_max: int = 0
    cores_free: int = 0
    memory_mb_max: int = 0
    memory_mb_free: int = 0
    disk_gb_max: int = 0
    disk_gb_free: int = 0
    hypervisor: str = ""  # "kvm" or "qemu"
    reason: str | None = None  # why it is down


class TypeCapacity(msgspec.Struct, frozen=True):
    """How many instances of one type still fit in the cluster (`free`) and would fit when empty (`max`)."""

    vm_type: str
    free: int
    max: int


class NodeAddress(msgspec.Struct, frozen=True):
    """A registered node: its name and where its NC answers (https://host:8775)."""

    name: str
    url: str


class Fault(msgspec.Struct, frozen=True):
    code: str
    message: str


class Ack(msgspec.Struct, frozen=True):
    pass


class InstancesReply(msgspec.Struct, frozen=True):
    instances: list[InstanceStatus]


class ConsoleOutput(msgspec.Struct, frozen=True):
    instance_id: str
    output: bytes  # the tail of the serial console (EC2 returns at most 64 KiB)
    timestamp: float


# ---------------------------------------------------------------------------------------------------------
# CLC -> CC


class SecurityRule(msgspec.Struct, frozen=True):
    """One ingress rule of a security group: traffic of `protocol` (tcp, udp, icmp, -1 for all) on ports
    from_port..to_port (ICMP: type and code, -1 for any) from `cidr` or from the members of `source_group`."""

    protocol: str
    from_port: int = -1
    to_port: int = -1
    cidr: str | None = None
    source_group: str | None = None


class GroupRules(msgspec.Struct, frozen=True):
    """A security group as one cluster enforces it. Its members as this cluster's rules see them: instances
    of this cluster by id (the CC knows their private addresses), instances elsewhere by public address
    (traffic between clusters crosses the public network)."""

    group_id: str
    rules: list[SecurityRule] = []
    member_ids: list[str] = []
    remote_addresses: list[str] = []


class InstanceNetwork(msgspec.Struct, frozen=True):
    """One live instance of the cluster: its groups, and the public address to DNAT/SNAT for it."""

    instance_id: str
    security_groups: list[str] = []
    public_ip: str | None = None
    # A digest of its InstanceMetadata: a CC whose copy differs (or that has none: it restarted) names the
    # instance in ResourcesReply.metadata_wanted and the CLC sends it (PutInstanceMetadata).
    metadata_version: str = ""


class NetworkView(msgspec.Struct, frozen=True):
    """What a cluster's network enforces, whole: its live instances, and every group they are in or that a
    rule of theirs names. `version` is a digest of the rest, so a CC applies a view only when it changed."""

    version: str
    instances: list[InstanceNetwork] = []
    groups: list[GroupRules] = []


# --- The metadata service's data (issue 9): what a CC answers at 169.254.169.254 beyond what its leases
# and the view say. Not in every poll (user data is up to 16 KiB an instance): the view carries a digest
# per instance, the CC asks for what it lacks in its reply, and the CLC sends it at once.


class BlockDevice(msgspec.Struct, frozen=True):
    """One entry of meta-data/block-device-mapping/: `name` (ami, root, ephemeral0, ebs1...) -> device."""

    name: str
    device: str


# --- Instance profiles (issue 12): the role credentials an instance's metadata service serves
# (iam/info, iam/security-credentials/ROLE). The CLC mints them (STS sessions of the role) and replaces them
# before they expire; a new key changes the instance's metadata_version, so the CC asks for them again.


class InstanceIam(msgspec.Struct, frozen=True):
    profile_arn: str
    profile_id: str
    role_name: str | None = None  # None: the profile has no role (iam/info only)
    access_key_id: str | None = None
    secret_key: str | None = None
    token: str | None = None
    expires: float | None = None  # epoch seconds
    issued: float = 0.0  # LastUpdated


class InstanceMetadata(msgspec.Struct, frozen=True):
    """One instance's launch facts for its metadata service (the CLC's records; the same for its life,
    but for the block devices, which volumes will change)."""

    instance_id: str
    version: str  # the digest InstanceNetwork.metadata_version names
    reservation_id: str
    image_id: str
    instance_type: str
    launch_index: int = 0
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    key_name: str | None = None
    public_key: str | None = None  # None when the key pair was deleted since the launch
    user_data: bytes = b""
    security_groups: list[str] = []  # names, as launched
    manifest_path: str | None = None  # the image's bucket/manifest (ami-manifest-path)
    block_devices: list[BlockDevice] = []
    iam: InstanceIam | None = None  # instance profiles (issue 12)


class PutInstanceMetadata(msgspec.Struct, frozen=True):
    """CLC -> CC: the metadata of instances the CC named in metadata_wanted. Answered Ack."""

    instances: list[InstanceMetadata]


class DescribeResources(msgspec.Struct, frozen=True):
    """The CLC's poll for capacity. It carries the cluster's topology and instance types, which are data in
    the CLC: the CC keeps no configuration of its own beyond its name, so a CC restarted, or moved to another
    host, learns its nodes on the next poll. It carries the cluster's network view the same way (security
    groups, public addresses), so a restarted CC rebuilds its rules from its first poll."""

    cluster: str
    nodes: list[NodeAddress]
    vm_types: list[VmType]
    network: NetworkView | None = None
    # The cluster's private subnet as the admin set it (issue 9); None: the CC's own (cc.subnet). A CC
    # moves to it while it holds no instance's address.
    subnet: str | None = None


class ResourcesReply(msgspec.Struct, frozen=True):
    cluster: str
    nodes: list[NodeResources]
    capacity: list[TypeCapacity]
    metadata_wanted: list[str] = []  # instances of the view whose metadata (of its version) the CC lacks
    subnet: str = ""  # the private subnet the CC serves (it differs from the CLC's while instances hold it)


class DescribeInstances(msgspec.Struct, frozen=True):
    instance_ids: list[str] = []  # empty: all


class RunInstances(msgspec.Struct, frozen=True):
    """Place and start these instances (all of one reservation). All or nothing: if the cluster cannot hold
    every one, the CC starts none and answers Fault InsufficientInstanceCapacity. Idempotent per
    instance id: a spec already placed is not placed twice (the CLC may resend after a timeout)."""

    instances: list[InstanceSpec]


class TerminateInstances(msgspec.Struct, frozen=True):
    instance_ids: list[str]


class RebootInstances(msgspec.Struct, frozen=True):
    instance_ids: list[str]


class GetConsoleOutput(msgspec.Struct, frozen=True):
    instance_id: str


# ---------------------------------------------------------------------------------------------------------
# CC -> NC (Eucalyptus's ncDescribeResource, ncRunInstance, ...)


class NcDescribeResource(msgspec.Struct, frozen=True):
    pass


class NcDescribeInstances(msgspec.Struct, frozen=True):
    instance_ids: list[str] = []


class NcRunInstance(msgspec.Struct, frozen=True):
    """Start one instance. Answers at once with state staging (pending); fetching the images, making the
    disks and booting happen in the background and show in later NcDescribeInstances. Idempotent per
    instance id."""

    instance: InstanceSpec


class NcRunInstances(msgspec.Struct, frozen=True):
    """Start these instances (those of one RunInstances the CC placed on this node): one call instead of one
    per instance. Each is as NcRunInstance; all or nothing: a fault means none of them was started. The reply
    lists their statuses in the order asked."""

    instances: list[InstanceSpec]


class NcTerminateInstance(msgspec.Struct, frozen=True):
    instance_id: str


class NcRebootInstance(msgspec.Struct, frozen=True):
    instance_id: str


class NcGetConsoleOutput(msgspec.Struct, frozen=True):
    instance_id: str


# ---------------------------------------------------------------------------------------------------------
# CLC (later NC) -> SC (issue 10: EBS volumes). One SC per cluster, on its own mutual-TLS listener (8776).
# The CLC decides (ids, sizes, zones) and keeps the EC2 view; the SC keeps the bytes and what it holds, and
# answers for it again after a restart, so the CLC's poll reconciles "creating"/"deleting" both ways.

ScVolumeState = Literal["creating", "available", "deleting", "deleted", "error"]


class VolumeExport(msgspec.Struct, frozen=True):
    """How a node reaches a volume's bytes: what the NC turns into a libvirt <disk>. `kind` "file": a path
    on the node's own host (a one-box); "nbd": QEMU's own NBD client (host, port, export name, no kernel
    module); "rbd": Ceph (pool/image in `name`, monitors as host:port in `hosts`, the cephx user in `user`)."""

    kind: Literal["file", "nbd", "rbd"]
    path: str | None = None
    host: str | None = None
    port: int | None = None
    name: str | None = None
    hosts: list[str] = []
    user: str | None = None


class VolumeStatus(msgspec.Struct, frozen=True):
    """One volume as its SC holds it. A volume the SC does not know is reported `deleted`."""

    volume_id: str
    state: ScVolumeState
    size_gb: int = 0
    reason: str | None = None


class CreateVolume(msgspec.Struct, frozen=True):
    """Make an empty volume of `size_gb` GiB. Idempotent per volume id: a volume already there (same size)
    is answered with its status, so the CLC may resend after a timeout or a restart."""

    volume_id: str
    size_gb: int


class DeleteVolume(msgspec.Struct, frozen=True):
    """Remove a volume and its bytes. Idempotent: an unknown volume answers `deleted`."""

    volume_id: str


class GrowVolume(msgspec.Struct, frozen=True):
    """Make a volume `size_gb` GiB (ModifyVolume); the new space reads as zeros. Idempotent: a volume that
    size already answers its status; a smaller size is refused (volumes only grow)."""

    volume_id: str
    size_gb: int


class DescribeVolumes(msgspec.Struct, frozen=True):
    volume_ids: list[str] = []  # empty: all


class VolumesReply(msgspec.Struct, frozen=True):
    """The volumes asked about (all when none named) and the SC's space: GiB the volumes may use at most
    (`capacity_gb`, 0: unbounded) and GiB promised to volumes so far (sparse files use less)."""

    volumes: list[VolumeStatus]
    capacity_gb: int = 0
    allocated_gb: int = 0
    backend: str = ""


# ---------------------------------------------------------------------------------------------------------
# Attaching volumes (issue 10: AttachVolume / DetachVolume). The CLC asks the zone's SC for an export of the
# volume for the instance's node (ExportVolume), then its CC to attach it (AttachVolume), which passes it to
# the instance's NC (NcAttachVolume): a virtio disk hot-plugged from the export. Detach is the reverse, the
# SC's UnexportVolume last. Each NC reports its instances' volumes in InstanceStatus.volumes, which is how
# the CLC's poll sees an attachment done (or gone after a restart).


class AttachedVolume(msgspec.Struct, frozen=True):
    """A volume attached to an instance, as its node has it: the EC2 device name the user asked for, the
    guest's disk (vdX), and `detaching` while the guest has not yet let go of the disk."""

    volume_id: str
    device: str
    target: str
    state: Literal["attached", "detaching"] = "attached"


class ExportVolume(msgspec.Struct, frozen=True):
    """Make the volume reachable from `node` (idempotent); the reply says how."""

    volume_id: str
    node: str


class UnexportVolume(msgspec.Struct, frozen=True):
    """The volume no longer reachable from nodes (idempotent: a volume not exported answers Ack)."""

    volume_id: str


class AttachVolume(msgspec.Struct, frozen=True):
    """CLC -> CC: attach the volume to the instance from `export`; the reply is the instance's status."""

    instance_id: str
    volume_id: str
    device: str  # as the user named it (/dev/sdf); the guest sees the next free virtio disk
    export: VolumeExport


class DetachVolume(msgspec.Struct, frozen=True):
    """CLC -> CC: detach the volume from the instance (idempotent); `force`: take the disk away even if the
    guest does not let go of it."""

    instance_id: str
    volume_id: str
    force: bool = False


class NcAttachVolume(msgspec.Struct, frozen=True):
    instance_id: str
    volume_id: str
    device: str
    export: VolumeExport


class NcDetachVolume(msgspec.Struct, frozen=True):
    instance_id: str
    volume_id: str
    force: bool = False


ATTACH_REPLIES: dict[type, type] = {
    ExportVolume: VolumeExport,
    UnexportVolume: Ack,
    AttachVolume: InstanceStatus,
    DetachVolume: InstanceStatus,
    NcAttachVolume: InstanceStatus,
    NcDetachVolume: InstanceStatus,
}


# --- One poll call per node (issue 14, 1,000 nodes): a node's instances and its resources in one answer,
# both taken in the same turn of the NC's loop (the resources count exactly the instances listed). A CC polling
# 1,000 nodes makes 1,000 calls a round instead of 2,000; an NC without it answers BadMessage and its CC
# falls back to NcDescribeInstances + NcDescribeResource.


class NcDescribeNode(msgspec.Struct, frozen=True):
    pass


class NodeReport(msgspec.Struct, frozen=True):
    instances: list[InstanceStatus]
    resources: NodeResources


POLL_REPLIES: dict[type, type] = {NcDescribeNode: NodeReport}


SC_REPLIES: dict[type, type] = {
    CreateVolume: VolumeStatus,
    DeleteVolume: VolumeStatus,
    GrowVolume: VolumeStatus,
    DescribeVolumes: VolumesReply,
    ExportVolume: VolumeExport,
    UnexportVolume: Ack,
}


# ---------------------------------------------------------------------------------------------------------
# CLC -> SC: snapshots kept in Walrus (issue 10, snapshots). The SC streams a volume into Walrus as chunks
# named by their SHA-256 plus one manifest (euca/protocol/snapshot_manifest.py), and makes volumes from
# them. It reaches Walrus as a cloud component with the system account's credentials, which the CLC hands
# it with each message (`SnapshotStore`, over this mutual-TLS link only); the SC keeps them in memory only.

SnapshotTaskState = Literal["pending", "completed", "error", "unknown"]


class SnapshotStore(msgspec.Struct, frozen=True):
    """Where snapshots live and as whom the SC writes them: Walrus's S3 endpoint (with its path prefix), the
    system account's bucket, and the system account's key (SigV4, `region`)."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_key: str
    region: str


class SnapshotStatus(msgspec.Struct, frozen=True):
    """One snapshot upload as the SC knows it; progress is chunks done of the volume's chunks. `unknown`:
    the SC never started it (or forgot it)."""

    snapshot_id: str
    state: SnapshotTaskState
    volume_id: str = ""
    size_gb: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    bytes_uploaded: int = 0
    reason: str | None = None


class CreateSnapshot(msgspec.Struct, frozen=True):
    """Snapshot `volume_id` as `snapshot_id`, uploading only the chunks the `parent` snapshot (the volume's
    last completed one, if any) does not hold at the same offset. Answers at once (`pending`); idempotent
    per snapshot id."""

    snapshot_id: str
    volume_id: str
    store: SnapshotStore
    parent: str | None = None


class DescribeSnapshotTasks(msgspec.Struct, frozen=True):
    snapshot_ids: list[str] = []  # empty: all the SC knows


class SnapshotsReply(msgspec.Struct, frozen=True):
    snapshots: list[SnapshotStatus]


class RestoreVolume(msgspec.Struct, frozen=True):
    """Make volume `volume_id` of `size_gb` GiB from snapshot `snapshot_id`'s chunks (CreateVolume with a
    SnapshotId). Answers `creating` at once; DescribeVolumes reports it `available` (or `error`) after.
    Idempotent per volume id."""

    volume_id: str
    size_gb: int
    snapshot_id: str
    store: SnapshotStore


class CopySnapshot(msgspec.Struct, frozen=True):
    """Write a manifest for `snapshot_id` naming the same chunks as `source_id`'s (CopySnapshot within the
    region: no chunk travels). Answers `completed`, or a fault when the source has no manifest."""

    source_id: str
    snapshot_id: str
    store: SnapshotStore


class SweepSnapshots(msgspec.Struct, frozen=True):
    """Delete the manifests of `dead` snapshots (deleted, or ended in error), then every chunk object no
    remaining manifest names. The CLC sends it only while no snapshot is being written."""

    store: SnapshotStore
    dead: list[str] = []


class SweepReply(msgspec.Struct, frozen=True):
    manifests_deleted: int = 0
    chunks_deleted: int = 0
    bytes_freed: int = 0


SC_REPLIES.update(
    {
        CreateSnapshot: SnapshotStatus,
        DescribeSnapshotTasks: SnapshotsReply,
        RestoreVolume: VolumeStatus,
        CopySnapshot: SnapshotStatus,
        SweepSnapshots: SweepReply,
    }
)


# Message -> the struct its successful reply decodes to.
REPLIES: dict[type, type] = {
    DescribeResources: ResourcesReply,
    DescribeInstances: InstancesReply,
    RunInstances: InstancesReply,
    TerminateInstances: InstancesReply,
    RebootInstances: Ack,
    GetConsoleOutput: ConsoleOutput,
    PutInstanceMetadata: Ack,
    NcDescribeResource: NodeResources,
    NcDescribeInstances: InstancesReply,
    NcRunInstance: InstanceStatus,
    NcRunInstances: InstancesReply,
    NcTerminateInstance: InstanceStatus,
    NcRebootInstance: Ack,
    NcGetConsoleOutput: ConsoleOutput,
    **SC_REPLIES,
    **ATTACH_REPLIES,
    **POLL_REPLIES,
}

MESSAGES: dict[str, type] = {cls.__name__: cls for cls in REPLIES}

# Which listener answers which messages.
CC_MESSAGES = frozenset(
    {
        DescribeResources,
        DescribeInstances,
        RunInstances,
        TerminateInstances,
        RebootInstances,
        GetConsoleOutput,
        PutInstanceMetadata,
        AttachVolume,
        DetachVolume,
    }
)
NC_MESSAGES = frozenset(
    {
        NcDescribeResource,
        NcDescribeInstances,
        NcRunInstance,
        NcRunInstances,
        NcTerminateInstance,
        NcRebootInstance,
        NcGetConsoleOutput,
        NcAttachVolume,
        NcDetachVolume,
        NcDescribeNode,
    }
)
SC_MESSAGES = frozenset(SC_REPLIES)


class BadMessage(Exception):
    """A request this side cannot decode: unknown message name or a body that is not the message."""


class ClusterFault(CodedError):
    """A fault to send back (server side) or one received (client side)."""


_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}


def _decoder(cls: type) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(cls)
    if dec is None:
        dec = _decoders[cls] = msgspec.json.Decoder(cls)
    return dec


def encode_request(message: msgspec.Struct) -> tuple[str, bytes]:
    """The path and body of a call carrying `message`."""
    name = type(message).__name__
    if name not in MESSAGES:
        raise TypeError(f"{name} is not a cluster message")
    return PATH_PREFIX + name, _encoder.encode(message)


def decode_request(path: str, body: bytes) -> msgspec.Struct:
    """The message a request carries (server side). `path` may be the full path or the part after a mount."""
    name = path.rsplit("/", 1)[-1]
    cls = MESSAGES.get(name)
    if cls is None:
        raise BadMessage(f"unknown cluster message {name!r}")
    try:
        message: msgspec.Struct = _decoder(cls).decode(body)
    except msgspec.ValidationError as e:
        raise BadMessage(f"{name}: {e}") from e
    except msgspec.DecodeError as e:
        raise BadMessage(f"{name}: body is not JSON: {e}") from e
    except RecursionError as e:  # msgspec's own nesting limit: a body no message can be
        raise BadMessage(f"{name}: body is nested too deeply") from e
    return message


def encode_reply(reply: msgspec.Struct) -> bytes:
    return _encoder.encode(reply)


def encode_fault(code: str, message: str) -> bytes:
    return _encoder.encode(Fault(code, message))


def decode_reply(message_type: type, status: int, body: bytes) -> msgspec.Struct:
    """The reply to a `message_type` call (client side); raises ClusterFault for a fault answer."""
    if status != 200:
        try:
            fault = _decoder(Fault).decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            raise ClusterFault("BadReply", f"HTTP {status}: {body[:200]!r}", status) from None
        raise ClusterFault(fault.code, fault.message, status)
    try:
        reply: msgspec.Struct = _decoder(REPLIES[message_type]).decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as e:
        raise ClusterFault("BadReply", f"{message_type.__name__}: {e}", 502) from e
    return reply


def vm_type_fits(vm: VmType, node: NodeResources) -> bool:
    """The fit test every scheduling policy shares: cores, memory and disk all free on an up node."""
    return (
        node.state == "up"
        and vm.cores <= node.cores_free
        and vm.memory_mb <= node.memory_mb_free
        and vm.disk_gb <= node.disk_gb_free
    )


def slots(vm: VmType, cores: int, memory_mb: int, disk_gb: int) -> int:
    """How many instances of `vm` fit in the given amounts (what 'free / max' counts per node)."""
    counts = [cores // vm.cores if vm.cores else 0, memory_mb // vm.memory_mb if vm.memory_mb else 0]
    if vm.disk_gb:
        counts.append(disk_gb // vm.disk_gb)
    return max(0, min(counts))


def mac_for_instance(instance_id: str) -> str:
    """Eucalyptus's MAC: d0:0d followed by the first four bytes of the instance id's hex digits."""
    digits = instance_id.split("-", 1)[-1][:8].ljust(8, "0")
    return "d0:0d:" + ":".join(digits[i : i + 2] for i in range(0, 8, 2))
