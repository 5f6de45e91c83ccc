"""How the volume table follows what a zone's SC reports (pure: records in, decisions out).

The CLC's row is the intent, the SC's the fact:
- creating: the SC has it available -> available; error -> error; does not have it -> ask it again
  (CreateVolume is idempotent; the first call may have been lost with a restart of either side);
- deleting: the SC does not have it -> forget the row; has it -> ask again to delete;
- available: the SC lost it -> error (logged); an SC saying error -> error; being modified: the SC has it
  at the target size -> the modification completes, smaller -> ask it again to grow;
- a volume the SC holds and the CLC does not know is reported (never deleted on a guess: a CLC store
  restored from an old backup must not cost volumes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from euca.protocol.cluster import InstanceStatus, VolumeStatus
from euca.roles.clc.volumes.records import Attachment, VolumeRecord


@dataclass
class VolumeReconciliation:
    # (volume id, new state, reason)
    updates: list[tuple[str, str, str | None]] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    # (volume id, size) to send CreateVolume again
    create_again: list[tuple[str, int]] = field(default_factory=list)
    delete_again: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    # ModifyVolume: grown on the SC (the modification completes), or to send GrowVolume again (id, size)
    grown: list[str] = field(default_factory=list)
    grow_again: list[tuple[str, int]] = field(default_factory=list)


def reconcile_volumes(
    known: Sequence[VolumeRecord], reported: Sequence[VolumeStatus]
) -> VolumeReconciliation:
    held = {s.volume_id: s for s in reported if s.state != "deleted"}
    out = VolumeReconciliation()
    for v in known:
        s = held.get(v.volume_id)
        if v.state == "creating":
            if s is None:
                out.create_again.append((v.volume_id, v.size_gib))
            elif s.state in ("available", "error"):
                out.updates.append((v.volume_id, s.state, s.reason))
        elif v.state == "deleting":
            if s is None:
                out.forget.append(v.volume_id)
            else:  # idempotent on the SC, and serialized with a delete in progress there
                out.delete_again.append(v.volume_id)
        elif v.state == "available":
            mod = v.modification
            if s is not None and mod is not None and mod.state == "modifying":
                if s.size_gb >= mod.target_size:
                    out.grown.append(v.volume_id)
                else:
                    out.grow_again.append((v.volume_id, mod.target_size))
            if s is None:
                out.updates.append((v.volume_id, "error", "the storage controller no longer has this volume"))
            elif s.state == "error":
                out.updates.append((v.volume_id, "error", s.reason))
    mine = {v.volume_id for v in known}
    out.unknown = sorted(i for i in held if i not in mine)
    return out


# An attachment still `attaching` that its node has not reported this long after AttachVolume was never made
# (the CLC stopped half way): it is ended, as a refused attach is.
ATTACH_TIMEOUT = 120.0


@dataclass
class AttachmentReconciliation:
    attached: list[str] = field(default_factory=list)  # attaching, and the node has it: attached
    finish: list[Attachment] = field(default_factory=list)  # over on the node: drop the export, then the row
    detach_again: list[Attachment] = field(default_factory=list)  # detaching, the node still has it


def reconcile_attachments(
    attachments: Sequence[Attachment],
    reported: Mapping[str, InstanceStatus],
    ended: set[str],
    now: float,
) -> AttachmentReconciliation:
    """How one cluster's attachments follow its full report (`reported`: every instance the CC knows, by
    id). `ended`: the instances the CLC has terminated (their domains, and disks, are gone)."""
    out = AttachmentReconciliation()
    for a in attachments:
        status = reported.get(a.instance_id)
        on_node = {v.volume_id: v.state for v in status.volumes} if status is not None else {}
        has = a.volume_id in on_node
        if a.instance_id in ended:
            out.finish.append(a)
        elif a.state == "attaching":
            if has:
                out.attached.append(a.volume_id)
            elif now - a.attach_time > ATTACH_TIMEOUT:
                out.finish.append(a)
        elif a.state == "detaching":
            if has:
                out.detach_again.append(a)
            elif status is not None:
                out.finish.append(a)
    return out
