"""The instance tables (clc_reservations, clc_instances) and the instance rules: the only module that reads
or writes them.

The instance table is the CLC's record; the CCs run the instances. RunInstances records the instances pending
(record_launch) in the same store transaction that places them, before any CC hears of them; from then on
what CCs answer (apply_statuses) and what the poller reconciles (apply_reconciliation) move them forward,
and terminated ones are forgotten after a while (forget_terminated). An account sees only its own instances.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.cluster import STATE_CODES
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.instances.reconcile import RANK, Known, Reconciliation
from euca.roles.clc.tags import records as tags
from euca.roles.clc.usage import records as usage
from euca.roles.clc.volumes import records as volumes
from euca.roles.clc.volumes.records import Attachment, InstancePlace

INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
# SQLite's bound-parameter limit, with room for the other parameters of a statement.
CHUNK = 500

# Why an instance ended, as EC2 reports it (StateReason code and message).
USER_SHUTDOWN = ("Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown")
NODE_LOST = ("Server.InternalError", "The instance's node stopped reporting it")
LAUNCH_FAILED = "Server.InternalError"
NO_CAPACITY = "Server.InsufficientInstanceCapacity"


@dataclass(frozen=True)
class ClcInstance:
    """The CLC's record of one instance (the NC keeps its own, of the domain it runs)."""

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
    groups: list[str] = field(default_factory=list)  # security group names, as launched
    group_ids: list[str] = field(default_factory=list)  # their ids, in the same order
    public_ip: str | None = None  # from the address pool (addresses.records)
    tags: dict[str, str] = field(default_factory=dict)
    volumes: list[Attachment] = field(default_factory=list)  # EBS volumes attached (volumes.records)
    disable_api_termination: bool = False
    shutdown_behavior: str = "terminate"
    iam_instance_profile: tuple[str, str] | None = None  # (arn, id): launched with an instance profile

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
    "i.terminated_at, i.disable_api_termination, i.shutdown_behavior, r.client_token, r.groups, r.group_ids"
    ", p.profile_arn, p.profile_id"  # instance profiles (issue 12)
)
_FROM = (
    "FROM clc_instances i JOIN clc_reservations r ON r.reservation_id = i.reservation_id"
    " LEFT JOIN clc_instance_profiles p ON p.instance_id = i.instance_id"  # instance profiles (issue 12)
)


def _record(
    row: sqlite3.Row,
    tagged: dict[str, str] | None = None,
    public_ip: str | None = None,
    attached: list[Attachment] | None = None,
) -> ClcInstance:
    return ClcInstance(
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
        group_ids=_groups_decoder.decode(row["group_ids"]),
        public_ip=public_ip,
        tags=tagged or {},
        volumes=attached or [],
        disable_api_termination=bool(row["disable_api_termination"]),
        shutdown_behavior=row["shutdown_behavior"],
        iam_instance_profile=(row["profile_arn"], row["profile_id"]) if row["profile_arn"] else None,
    )


def load_instances(
    tx: Tx,
    account_id: str | None,
    *,
    with_tags: bool = True,
    ids: Sequence[str] | None = None,
    after_seq: int | None = None,
    limit: int | None = None,
) -> list[ClcInstance]:
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
        for start in range(0, len(ids), CHUNK):
            chunk = list(ids[start : start + CHUNK])
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
    tagged: dict[str, dict[str, str]] = {}
    if with_tags and rows:
        if account_id is None:
            for owner in {r["account_id"] for r in rows}:
                tagged.update(
                    tags.tags_of(tx, owner, (r["instance_id"] for r in rows if r["account_id"] == owner))
                )
        else:
            tagged = tags.tags_of(tx, account_id, (r["instance_id"] for r in rows))
    ids_found = [r["instance_id"] for r in rows]
    public = addresses.public_ips_of(tx, ids_found)
    attached = volumes.attachments_of_instances(tx, ids_found) if with_tags else {}
    return [
        _record(r, tagged.get(r["instance_id"]), public.get(r["instance_id"]), attached.get(r["instance_id"]))
        for r in rows
    ]


def load_reservation(tx: Tx, reservation_id: str) -> list[ClcInstance]:
    rows = tx.all(
        f"SELECT {_INSTANCE_COLUMNS} {_FROM} WHERE i.reservation_id=? ORDER BY i.seq", (reservation_id,)
    )
    if not rows:
        return []
    tagged = tags.tags_of(tx, rows[0]["account_id"], (r["instance_id"] for r in rows))
    public = addresses.public_ips_of(tx, [r["instance_id"] for r in rows])
    return [_record(r, tagged.get(r["instance_id"]), public.get(r["instance_id"])) for r in rows]


# -- ids and the rules on them --------------------------------------------------------------------------


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


def owned(tx: Tx, account_id: str, ids: Sequence[str]) -> list[ClcInstance]:
    """The caller's instances with these ids, in the order asked; any missing one is NotFound."""
    found = {r.instance_id: r for r in load_instances(tx, account_id, with_tags=False, ids=ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise not_found(missing)
    return [found[i] for i in ids]


def existing_reservation(tx: Tx, account_id: str, token: str, digest: str) -> str | None:
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
class NewReservation:
    """One RunInstances request as placed: `count` instances of it in `cluster` (zone `zone`)."""

    account_id: str
    requester: str  # the caller's ARN
    client_token: str | None
    request_digest: str
    groups: list[str]  # security group names
    group_ids: list[str]  # their ids, in the same order
    image_id: str
    kernel_id: str | None
    ramdisk_id: str | None
    instance_type: str
    key_name: str | None
    user_data: bytes
    architecture: str | None
    zone: str
    cluster: str
    count: int
    tags: list[tuple[str, str]]
    disable_api_termination: bool = False


def record_launch(tx: Tx, new: NewReservation, now: float) -> tuple[str, list[str]]:
    """The reservation and its instances, pending, with their tags: (reservation id, instance ids)."""
    reservation_id = new_reservation_id(tx)
    tx.execute(
        "INSERT INTO clc_reservations(reservation_id, account_id, requester, client_token, request_digest, groups, "
        "group_ids, created) VALUES(?,?,?,?,?,?,?,?)",
        (
            reservation_id,
            new.account_id,
            new.requester,
            new.client_token,
            new.request_digest,
            msgspec.json.encode(new.groups).decode(),
            msgspec.json.encode(new.group_ids).decode(),
            now,
        ),
    )
    ids: list[str] = []
    for index in range(new.count):
        instance_id = new_instance_id(tx)
        ids.append(instance_id)
        tx.execute(
            "INSERT INTO clc_instances(instance_id, reservation_id, account_id, launch_index, image_id, kernel_id, "
            "ramdisk_id, instance_type, key_name, user_data, architecture, zone, cluster, state, launch_time, "
            "last_seen, disable_api_termination) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',?,?,?)",
            (
                instance_id,
                reservation_id,
                new.account_id,
                index,
                new.image_id,
                new.kernel_id,
                new.ramdisk_id,
                new.instance_type,
                new.key_name,
                new.user_data,
                new.architecture,
                new.zone,
                new.cluster,
                now,
                now,
                int(new.disable_api_termination),
            ),
        )
        tags.write_tags(tx, new.account_id, instance_id, "instance", new.tags)
    _tell_usage(tx, ids)
    return reservation_id, ids


def release_client_token(tx: Tx, reservation_id: str) -> None:
    """A failed launch frees its client token: the client's retry with it is a new attempt."""
    tx.execute("UPDATE clc_reservations SET client_token=NULL WHERE reservation_id=?", (reservation_id,))


# -- state changes ---------------------------------------------------------------------------------------


def mark_user_terminated(tx: Tx, instance: ClcInstance, reason: str, now: float) -> str:
    """The owner terminates a live instance: shutting-down while a CC runs it (the CC is told next, and
    again by the poller), terminated at once if it never reached one. Its new state."""
    state = "shutting-down" if instance.cluster else "terminated"
    tx.execute(
        "UPDATE clc_instances SET state=?, reason=?, state_reason_code=?, state_reason_message=?, "
        "terminated_at=? WHERE instance_id=?",
        (
            state,
            reason,
            USER_SHUTDOWN[0],
            USER_SHUTDOWN[1],
            now if state == "terminated" else None,
            instance.instance_id,
        ),
    )
    addresses.release_instances(tx, [instance.instance_id])
    _tell_usage(tx, [instance.instance_id])
    return state


def mark_terminated(tx: Tx, ids: Sequence[str], code: str, text: str, now: float) -> None:
    """These instances ended for `code` (a StateReason code); `text` says why."""
    message = f"{code}: {text}"
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        tx.execute(
            f"UPDATE clc_instances SET state='terminated', state_reason_code=?, state_reason_message=?, "
            f"reason=?, terminated_at=? WHERE state!='terminated' AND instance_id IN ({marks})",
            (code, message, message, now, *chunk),
        )
    addresses.release_instances(tx, ids)
    _tell_usage(tx, ids)


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
        if state in ("shutting-down", "terminated"):
            addresses.release_instances(tx, [s.instance_id])
        _tell_usage(tx, [s.instance_id])


def apply_reconciliation(tx: Tx, result: Reconciliation, now: float) -> None:
    """What reconcile() found for one cluster, written."""
    for u in result.updates:
        if u.state == "terminated":
            code, message = (
                ("Server.InternalError", f"Server.InternalError: {u.reason}") if u.reason else (None, None)
            )
            tx.execute(
                "UPDATE clc_instances SET state='terminated', node=?, private_ip=?, mac=?, "
                "terminated_at=COALESCE(terminated_at, ?), "
                "state_reason_code=COALESCE(?, state_reason_code), state_reason_message=COALESCE(?, state_reason_message), "
                "reason=COALESCE(?, reason) WHERE instance_id=?",
                (u.node, u.private_ip, u.mac, now, code, message, message, u.instance_id),
            )
        else:
            tx.execute(
                "UPDATE clc_instances SET state=?, node=?, private_ip=?, mac=? WHERE instance_id=?",
                (u.state, u.node, u.private_ip, u.mac, u.instance_id),
            )
    for chunk in _chunks(result.seen):
        marks = ",".join("?" * len(chunk))
        tx.execute(f"UPDATE clc_instances SET last_seen=? WHERE instance_id IN ({marks})", (now, *chunk))
    for chunk in _chunks(result.gone):
        marks = ",".join("?" * len(chunk))
        tx.execute(
            f"UPDATE clc_instances SET state='terminated', terminated_at=COALESCE(terminated_at, ?) "
            f"WHERE instance_id IN ({marks})",
            (now, *chunk),
        )
    mark_terminated(tx, result.lost, *NODE_LOST, now)
    ended = [u.instance_id for u in result.updates if u.state in ("shutting-down", "terminated")]
    addresses.release_instances(tx, [*ended, *result.gone])
    _tell_usage(tx, [*(u.instance_id for u in result.updates), *result.gone])


def forget_terminated(tx: Tx, before: float) -> list[str]:
    """Terminated instances that ended before `before` disappear, with their tags and empty reservations."""
    ids = [
        r["instance_id"]
        for r in tx.all(
            "SELECT instance_id FROM clc_instances WHERE state='terminated' AND terminated_at<?", (before,)
        )
    ]
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        tx.execute(f"DELETE FROM clc_instances WHERE instance_id IN ({marks})", chunk)
        tx.execute(f"DELETE FROM clc_instance_profiles WHERE instance_id IN ({marks})", chunk)  # issue 12
        tags.forget_resources(tx, chunk)
    if ids:
        tx.execute(
            "DELETE FROM clc_reservations WHERE NOT EXISTS ("
            "SELECT 1 FROM clc_instances i WHERE i.reservation_id = clc_reservations.reservation_id)"
        )
    return ids


# -- what other modules ask ------------------------------------------------------------------------------


def instance_visible(tx: Tx, instance_id: str, account_id: str) -> bool:
    return bool(
        tx.one("SELECT 1 FROM clc_instances WHERE instance_id=? AND account_id=?", (instance_id, account_id))
    )


TAG_KIND = tags.ResourceKind(("i",), "instance", "InvalidInstanceID.NotFound", instance_visible)


def known_instances(
    tx: Tx, cluster_name: str, *, since: float, ids: Sequence[str] | None = None
) -> list[Known]:
    """The cluster's instances that are alive, or ended recently enough that a late report still matters;
    only those of `ids` when given (the poller's watch asks about a batch, not about 10,000)."""
    sql = (
        "SELECT instance_id, state, node, private_ip, mac, last_seen FROM clc_instances "
        "WHERE cluster=? AND (state!='terminated' OR terminated_at>=?)"
    )
    if ids is None:
        rows = tx.all(sql, (cluster_name, since))
    else:
        rows = []
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += tx.all(f"{sql} AND instance_id IN ({marks})", (cluster_name, since, *chunk))
    return [
        Known(r["instance_id"], r["state"], r["node"], r["private_ip"], r["mac"], r["last_seen"])
        for r in rows
    ]


def in_transition(tx: Tx) -> dict[str, list[str]]:
    """cluster -> its instances on their way to running or to terminated."""
    moving: dict[str, list[str]] = {}
    for r in tx.all(
        "SELECT cluster, instance_id FROM clc_instances "
        "WHERE state IN ('pending', 'shutting-down') AND cluster IS NOT NULL"
    ):
        moving.setdefault(r["cluster"], []).append(r["instance_id"])
    return moving


def instance_state(tx: Tx, account_id: str, instance_id: str) -> str:
    """The state of the caller's instance (unknown or another account's: InvalidInstanceID.NotFound)."""
    (checked,) = check_instance_ids([instance_id])
    row = tx.one(
        "SELECT state FROM clc_instances WHERE instance_id=? AND account_id=?", (checked, account_id)
    )
    if row is None:
        raise not_found([instance_id])
    return str(row["state"])


def instance_place(tx: Tx, account_id: str, instance_id: str) -> InstancePlace:
    """Where the caller's instance runs and in what state (AttachVolume's checks)."""
    (checked,) = check_instance_ids([instance_id])
    row = tx.one(
        "SELECT instance_id, state, zone, cluster, node FROM clc_instances WHERE instance_id=? AND account_id=?",
        (checked, account_id),
    )
    if row is None:
        raise not_found([instance_id])
    return InstancePlace(row["instance_id"], row["state"], row["zone"], row["cluster"], row["node"])


# -- attributes (DescribeInstanceAttribute, ModifyInstanceAttribute) -----------------------------------------


def user_data_of(tx: Tx, instance_id: str) -> bytes:
    row = tx.one("SELECT user_data FROM clc_instances WHERE instance_id=?", (instance_id,))
    return bytes(row["user_data"]) if row is not None and row["user_data"] is not None else b""


def set_attributes(
    tx: Tx,
    instance_id: str,
    *,
    instance_type: str | None = None,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    user_data: bytes | None = None,
    disable_api_termination: bool | None = None,
    shutdown_behavior: str | None = None,
) -> None:
    """Change the attributes given (not None); the caller checked the rules (api/attributes.py)."""
    columns = {
        "instance_type": instance_type,
        "kernel_id": kernel_id,
        "ramdisk_id": ramdisk_id,
        "user_data": user_data,
        "disable_api_termination": None if disable_api_termination is None else int(disable_api_termination),
        "shutdown_behavior": shutdown_behavior,
    }
    changed = {k: v for k, v in columns.items() if v is not None}
    if changed:
        sets = ", ".join(f"{k}=?" for k in changed)
        tx.execute(f"UPDATE clc_instances SET {sets} WHERE instance_id=?", (*changed.values(), instance_id))


@dataclass(frozen=True)
class NetworkMember:
    """A live instance as the clusters' networks see it."""

    instance_id: str
    cluster: str
    group_ids: list[str]


def network_members(tx: Tx) -> list[NetworkMember]:
    """Every instance pending or running in a cluster, with its security groups (the network views)."""
    return [
        NetworkMember(r["instance_id"], r["cluster"], _groups_decoder.decode(r["group_ids"]))
        for r in tx.all(
            f"SELECT i.instance_id, i.cluster, r.group_ids {_FROM} "
            "WHERE i.state IN ('pending', 'running') AND i.cluster IS NOT NULL ORDER BY i.seq"
        )
    ]


@dataclass(frozen=True)
class LaunchFacts:
    """What an instance was launched with, for its metadata service (network_view.py)."""

    instance_id: str
    reservation_id: str
    account_id: str
    image_id: str
    kernel_id: str | None
    ramdisk_id: str | None
    instance_type: str
    launch_index: int
    key_name: str | None
    groups: list[str]  # security group names, as launched
    user_data: bytes | None  # None when not asked for


def launch_facts(
    tx: Tx, ids: Sequence[str] | None = None, *, with_user_data: bool = False
) -> list[LaunchFacts]:
    """Those of the live (pending, running) instances, of these ids or all; user data only when asked
    (the poll reads every live instance's facts to digest them, and user data is up to 16 KiB each)."""
    columns = (
        "i.instance_id, i.reservation_id, i.account_id, i.image_id, i.kernel_id, i.ramdisk_id, i.instance_type, "
        "i.launch_index, i.key_name, r.groups" + (", i.user_data" if with_user_data else "")
    )
    live = "i.state IN ('pending', 'running') AND i.cluster IS NOT NULL"
    if ids is None:
        rows = tx.all(f"SELECT {columns} {_FROM} WHERE {live} ORDER BY i.seq")
    else:
        rows = []
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows.extend(
                tx.all(f"SELECT {columns} {_FROM} WHERE {live} AND i.instance_id IN ({marks})", chunk)
            )
    return [
        LaunchFacts(
            instance_id=r["instance_id"],
            reservation_id=r["reservation_id"],
            account_id=r["account_id"],
            image_id=r["image_id"],
            kernel_id=r["kernel_id"],
            ramdisk_id=r["ramdisk_id"],
            instance_type=r["instance_type"],
            launch_index=r["launch_index"],
            key_name=r["key_name"],
            groups=_groups_decoder.decode(r["groups"]),
            user_data=bytes(r["user_data"]) if with_user_data else None,
        )
        for r in rows
    ]


def instances_using_group(tx: Tx, group_id: str) -> list[str]:
    """The instances not terminated yet that are in the security group (it cannot be deleted then)."""
    pattern = f'%"{group_id}"%'
    return [
        r["instance_id"]
        for r in tx.all(
            f"SELECT i.instance_id {_FROM} WHERE r.group_ids LIKE ? AND i.state!='terminated' ORDER BY i.seq",
            (pattern,),
        )
    ]


def alive_instances(tx: Tx, ids: Sequence[str]) -> set[str]:
    """Those of these instances that are not terminated yet (the others' addresses go back)."""
    alive: set[str] = set()
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        alive.update(
            r["instance_id"]
            for r in tx.all(
                f"SELECT instance_id FROM clc_instances WHERE state!='terminated' AND instance_id IN ({marks})",
                chunk,
            )
        )
    return alive


def reservations_without_group_ids(tx: Tx) -> list[tuple[str, str, list[str]]]:
    """(reservation id, account id, group names) of reservations recorded before group ids were."""
    return [
        (r["reservation_id"], r["account_id"], _groups_decoder.decode(r["groups"]))
        for r in tx.all(
            "SELECT reservation_id, account_id, groups FROM clc_reservations WHERE group_ids='[]' AND groups!='[]'"
        )
    ]


def set_reservation_group_ids(tx: Tx, reservation_id: str, group_ids: list[str]) -> None:
    tx.execute(
        "UPDATE clc_reservations SET group_ids=? WHERE reservation_id=?",
        (msgspec.json.encode(group_ids).decode(), reservation_id),
    )


def count_unterminated(tx: Tx, cluster_name: str) -> int:
    """How many of the cluster's instances are not terminated yet (a cluster is not deregistered then)."""
    return int(
        tx.scalar(
            "SELECT COUNT(*) FROM clc_instances WHERE cluster=? AND state!='terminated'", (cluster_name,)
        )
    )


def running_by_node(tx: Tx) -> dict[str, list[str]]:
    """node -> the ids of its instances not terminated yet, in launch order (`euca admin describe-nodes`)."""
    running: dict[str, list[str]] = {}
    for r in tx.all(
        "SELECT node, instance_id FROM clc_instances WHERE node IS NOT NULL AND state!='terminated' ORDER BY seq"
    ):
        running.setdefault(r["node"], []).append(r["instance_id"])
    return running


def _tell_usage(tx: Tx, ids: Sequence[str]) -> None:
    """The usage log hears these instances' states in this transaction (it logs each change once)."""
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows = tx.all(
            f"SELECT i.instance_id, i.state, i.account_id, r.requester, i.instance_type, i.zone {_FROM} "
            f"WHERE i.instance_id IN ({marks}) ORDER BY i.seq",
            chunk,
        )
        usage.instance_states(tx, (usage.InstanceFacts(*r) for r in rows))


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK)]


# -- instance profiles (issue 12): the profile an instance was launched with, and its role's credentials ----


@dataclass(frozen=True)
class ProfileAssociation:
    instance_id: str
    account_id: str
    profile_arn: str
    profile_id: str
    association_id: str
    state: str  # the instance's
    access_key_id: str | None  # the STS session the metadata service serves now
    issued: float | None
    expires: float | None
    associated: float  # the instance's launch


def record_profile(tx: Tx, account_id: str, instance_ids: list[str], arn: str, profile_id: str) -> None:
    for instance_id in instance_ids:
        tx.execute(
            "INSERT INTO clc_instance_profiles(instance_id, account_id, profile_arn, profile_id, association_id) "
            "VALUES(?,?,?,?,?)",
            (instance_id, account_id, arn, profile_id, "iip-assoc-" + secrets.token_hex(9)[:17]),
        )


def profile_associations(
    tx: Tx, instance_ids: list[str] | None = None, *, account_id: str | None = None, live: bool = True
) -> list[ProfileAssociation]:
    """The associations of these instances (None: all), only of live (pending, running) ones if `live`."""
    sql = (
        "SELECT p.instance_id, p.account_id, p.profile_arn, p.profile_id, p.association_id, i.state, "
        "p.access_key_id, p.issued, p.expires, i.launch_time FROM clc_instance_profiles p "
        "JOIN clc_instances i ON i.instance_id = p.instance_id WHERE 1=1"
    )
    args: list[object] = []
    if live:
        sql += " AND i.state IN ('pending', 'running')"
    if account_id is not None:
        sql += " AND p.account_id=?"
        args.append(account_id)
    rows = []
    if instance_ids is None:
        rows = tx.all(sql, tuple(args))
    else:
        for start in range(0, len(instance_ids), 500):
            chunk = instance_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows.extend(tx.all(f"{sql} AND p.instance_id IN ({marks})", (*args, *chunk)))
    return [ProfileAssociation(*tuple(r)) for r in rows]


def set_profile_credentials(
    tx: Tx, instance_id: str, access_key_id: str | None, issued: float | None, expires: float | None
) -> None:
    tx.execute(
        "UPDATE clc_instance_profiles SET access_key_id=?, issued=?, expires=? WHERE instance_id=?",
        (access_key_id, issued, expires, instance_id),
    )
