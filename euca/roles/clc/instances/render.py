"""How an instance reads in EC2 answers (DescribeInstances, RunInstances): the Instance and Reservation
structures."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from euca.protocol.ec2 import messages as m
from euca.roles.clc.instances.records import ClcInstance
from euca.roles.clc.tags.render import tag_list


def dns_name(ip: str | None) -> str:
    return f"euca-{ip.replace('.', '-')}.eucalyptus.internal" if ip else ""


def public_dns_name(ip: str | None) -> str:
    """Eucalyptus's public names: euca-A-B-C-D under its DNS domain (`localhost` by default)."""
    return f"euca-{ip.replace('.', '-')}.eucalyptus.localhost" if ip else ""


def group_identifiers(r: ClcInstance) -> list[m.GroupIdentifier]:
    """The instance's security groups, by id and name (ids None only for records older than group ids)."""
    ids: list[str | None] = [*r.group_ids]
    ids += [None] * (len(r.groups) - len(ids))
    return [
        m.GroupIdentifier(group_name=name, group_id=gid) for name, gid in zip(r.groups, ids, strict=False)
    ]


def to_instance(r: ClcInstance) -> m.Instance:
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
        private_dns_name=dns_name(r.private_ip),
        public_dns_name=public_dns_name(r.public_ip),
        state_transition_reason=r.reason or "",
        key_name=r.key_name,
        kernel_id=r.kernel_id,
        ramdisk_id=r.ramdisk_id,
        monitoring=m.Monitoring(state="disabled"),
        private_ip_address=r.private_ip,
        public_ip_address=r.public_ip,
        architecture=r.architecture,
        root_device_type="instance-store",
        root_device_name="/dev/sda1",
        virtualization_type="paravirtual" if r.kernel_id else "hvm",
        client_token=r.client_token or "",
        ebs_optimized=False,
        security_groups=group_identifiers(r),
        state_reason=reason,
        tags=tag_list(r.tags),
        block_device_mappings=block_device_mappings(r),
        iam_instance_profile=iam_instance_profile(r),
    )


def iam_instance_profile(r: ClcInstance) -> m.IamInstanceProfile | None:
    """The instance profile it was launched with (issue 12)."""
    if r.iam_instance_profile is None:
        return None
    arn, profile_id = r.iam_instance_profile
    return m.IamInstanceProfile(arn=arn, id=profile_id)


# An attachment's state as an instance's block device mapping shows it (`terminating`: its instance ended).
_EBS_STATUS = {"terminating": "detaching"}


def block_device_mappings(r: ClcInstance) -> list[m.InstanceBlockDeviceMapping]:
    """The EBS volumes attached to the instance (its root is instance-store: not listed, as in EC2)."""
    return [
        m.InstanceBlockDeviceMapping(
            device_name=a.device,
            ebs=m.EbsInstanceBlockDevice(
                attach_time=datetime.fromtimestamp(a.attach_time, UTC),
                delete_on_termination=a.delete_on_termination,
                status=_EBS_STATUS.get(a.state, a.state),
                volume_id=a.volume_id,
            ),
        )
        for a in r.volumes
    ]


def to_reservations(records: Iterable[ClcInstance]) -> list[m.Reservation]:
    """Instances grouped by reservation, reservations in the order their first instance comes."""
    grouped: dict[str, list[ClcInstance]] = {}
    for r in records:
        grouped.setdefault(r.reservation_id, []).append(r)
    return [
        m.Reservation(
            reservation_id=rid,
            owner_id=members[0].account_id,
            requester_id=None,
            groups=group_identifiers(members[0]),
            instances=[to_instance(r) for r in members],
        )
        for rid, members in grouped.items()
    ]
