"""DescribeInstanceAttribute and ModifyInstanceAttribute (issue 10).

Attributes read from the instance's record: instanceType, kernel, ramdisk, userData (base64, as EC2 answers
it), disableApiTermination, instanceInitiatedShutdownBehavior, rootDeviceName, blockDeviceMapping (the EBS
volumes attached), groupSet, and the VPC/EBS-optimisation ones a Classic instance answers with their fixed
values (productCodes, sourceDestCheck, ebsOptimized, enaSupport, sriovNetSupport, disableApiStop).

What may change: disableApiTermination (TerminateInstances then refuses it: OperationNotPermitted) at any
time; instanceInitiatedShutdownBehavior (`stop` for EBS-backed instances only: an instance-store instance
ends when its guest powers off); the DeleteOnTermination of an attached volume (blockDeviceMapping); instanceType, kernel,
ramdisk and userData only while the instance is stopped (IncorrectInstanceState otherwise: instance-store
instances never stop, so until EBS-backed instances arrive they are never changed).
"""

from __future__ import annotations

import base64
import binascii
import logging

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.images import records as images
from euca.roles.clc.instance_types import records as instance_types
from euca.roles.clc.instances import records
from euca.roles.clc.instances.launch import MAX_USER_DATA, check_shutdown_behavior
from euca.roles.clc.instances.records import ClcInstance
from euca.roles.clc.instances.render import block_device_mappings, group_identifiers
from euca.roles.clc.volumes import records as volumes

log = logging.getLogger("euca.clc")

ROOT_DEVICE = "/dev/sda1"


def _value(text: str | None) -> m.AttributeValue:
    return m.AttributeValue(value=text)


def _flag(value: bool) -> m.AttributeBooleanValue:
    return m.AttributeBooleanValue(value=value)


async def describe_instance_attribute(
    call: Ec2Call, req: m.DescribeInstanceAttributeRequest
) -> m.InstanceAttribute:
    (instance_id,) = records.check_instance_ids([req.instance_id])

    def read(tx: Tx) -> tuple[ClcInstance, bytes]:
        found = records.load_instances(tx, call.account_id, ids=[instance_id])
        if not found:
            raise records.not_found([instance_id])
        user_data = records.user_data_of(tx, instance_id) if req.attribute == "userData" else b""
        return found[0], user_data

    r, user_data = await call.ctx.store.read(read)
    out = m.InstanceAttribute(instance_id=instance_id)
    a = req.attribute
    if a == "instanceType":
        out.instance_type = _value(r.instance_type)
    elif a == "kernel":
        out.kernel_id = _value(r.kernel_id)
    elif a == "ramdisk":
        out.ramdisk_id = _value(r.ramdisk_id)
    elif a == "userData":
        out.user_data = _value(base64.b64encode(user_data).decode() if user_data else None)
    elif a == "disableApiTermination":
        out.disable_api_termination = _flag(r.disable_api_termination)
    elif a == "instanceInitiatedShutdownBehavior":
        out.instance_initiated_shutdown_behavior = _value(r.shutdown_behavior)
    elif a == "rootDeviceName":
        out.root_device_name = _value(r.root_device_name or ROOT_DEVICE)
    elif a == "blockDeviceMapping":
        out.block_device_mappings = block_device_mappings(r)
    elif a == "groupSet":
        out.groups = group_identifiers(r)
    elif a == "productCodes":
        out.product_codes = []
    elif a == "sourceDestCheck":
        out.source_dest_check = _flag(True)
    elif a == "ebsOptimized":
        out.ebs_optimized = _flag(False)
    elif a == "enaSupport":
        out.ena_support = _flag(False)
    elif a == "disableApiStop":
        out.disable_api_stop = _flag(False)
    elif a == "sriovNetSupport":
        out.sriov_net_support = _value(None)
    else:
        raise Ec2Error("InvalidParameterValue", f"Value ({a}) for parameter attribute is invalid.")
    return out


def _bool(text: str, name: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise Ec2Error(
        "InvalidParameterValue", f"Value ({text}) for parameter {name} is invalid. Expected: true, false."
    )


def _user_data(req: m.ModifyInstanceAttributeRequest) -> bytes | None:
    """The new user data: raw bytes in UserData.Value (botocore base64-encodes the blob, the wire decodes
    it), or base64 text in Value with Attribute=userData."""
    if req.user_data is not None:
        data = req.user_data.value or b""
    elif req.attribute == "userData":
        try:
            data = base64.b64decode(req.value or "", validate=True)
        except (binascii.Error, ValueError):
            raise Ec2Error("InvalidParameterValue", "Invalid BASE64 encoding of user data.") from None
    else:
        return None
    if len(data) > MAX_USER_DATA:
        raise Ec2Error("InvalidParameterValue", f"User data is limited to {MAX_USER_DATA} bytes.")
    return data


def _only(req: m.ModifyInstanceAttributeRequest, name: str, structured: object) -> str | None:
    """An attribute's new value, given either as its own structure or as Attribute=name&Value=..."""
    if isinstance(structured, m.AttributeValue):
        return structured.value or ""
    if req.attribute == name:
        if req.value is None:
            raise Ec2Error("MissingParameter", "The request must contain the parameter value")
        return req.value
    return None


async def modify_instance_attribute(call: Ec2Call, req: m.ModifyInstanceAttributeRequest) -> None:
    (instance_id,) = records.check_instance_ids([req.instance_id])
    instance_type = _only(req, "instanceType", req.instance_type)
    kernel = _only(req, "kernel", req.kernel)
    ramdisk = _only(req, "ramdisk", req.ramdisk)
    shutdown = _only(req, "instanceInitiatedShutdownBehavior", req.instance_initiated_shutdown_behavior)
    protect: bool | None = None
    if req.disable_api_termination is not None:
        protect = bool(req.disable_api_termination.value)
    elif req.attribute == "disableApiTermination":
        protect = _bool(req.value or "", "disableApiTermination")
    user_data = _user_data(req)
    unsupported = [
        name
        for name, given in (
            ("groupSet", req.groups or req.attribute == "groupSet"),
            ("sourceDestCheck", req.source_dest_check is not None or req.attribute == "sourceDestCheck"),
            ("ebsOptimized", req.ebs_optimized is not None or req.attribute == "ebsOptimized"),
            ("enaSupport", req.ena_support is not None or req.attribute == "enaSupport"),
            ("sriovNetSupport", req.sriov_net_support is not None or req.attribute == "sriovNetSupport"),
            ("disableApiStop", req.disable_api_stop is not None or req.attribute == "disableApiStop"),
        )
        if given
    ]
    if unsupported:
        raise Ec2Error(
            "UnsupportedOperation",
            f"Modifying '{unsupported[0]}' is not supported for EC2-Classic instances.",
        )
    changes = [instance_type, kernel, ramdisk, shutdown, protect, user_data]
    if all(c is None for c in changes) and not req.block_device_mappings:
        raise Ec2Error("MissingParameter", "The request must contain an attribute to modify")
    if shutdown is not None and shutdown != "stop":
        check_shutdown_behavior(shutdown)

    def write(tx: Tx) -> None:
        (r,) = records.owned(tx, call.account_id, [instance_id])
        if shutdown == "stop":
            check_shutdown_behavior(shutdown, ebs=r.ebs)
        if any(c is not None for c in (instance_type, kernel, ramdisk, user_data)):
            if r.state != "stopped":
                raise Ec2Error(
                    "IncorrectInstanceState", f"The instance '{instance_id}' is not in the 'stopped' state."
                )
            if instance_type is not None and instance_type not in {
                v.name for v in instance_types.vm_types(tx)
            }:
                raise Ec2Error(
                    "InvalidParameterValue", f"Value ({instance_type}) for parameter instanceType is invalid."
                )
            for image_id, kind in ((kernel, "kernel"), (ramdisk, "ramdisk")):
                if image_id and images.visible_image(tx, image_id, call.account_id).image_type != kind:
                    raise Ec2Error("InvalidParameterValue", f"{image_id} is not a {kind} image.")
        for mapping in req.block_device_mappings:
            ebs = mapping.ebs
            if mapping.device_name is None or ebs is None or ebs.delete_on_termination is None:
                raise Ec2Error("InvalidParameterValue", "A block device mapping needs deviceName and ebs.")
            if not volumes.set_delete_on_termination(
                tx, instance_id, mapping.device_name, ebs.delete_on_termination
            ):
                raise Ec2Error(
                    "InvalidInstanceAttributeValue",
                    f"No device is currently mapped at {mapping.device_name}",
                )
        records.set_attributes(
            tx,
            instance_id,
            instance_type=instance_type,
            kernel_id=kernel,
            ramdisk_id=ramdisk,
            user_data=user_data,
            disable_api_termination=protect,
            shutdown_behavior=shutdown,
        )

    await call.ctx.store.write(write)
    log.info("instance attribute modified id=%s", instance_id)


HANDLERS: dict[str, Handler] = {
    "DescribeInstanceAttribute": describe_instance_attribute,
    "ModifyInstanceAttribute": modify_instance_attribute,
}
