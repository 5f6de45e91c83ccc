"""Images through EC2: RegisterImage, DescribeImages, DeregisterImage, Describe/Modify/ResetImageAttribute."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from euca.core.identity import ADMIN_ACCOUNT
from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error, format_timestamp
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.images import bundles, ebs, records
from euca.roles.clc.images.records import ImageRecord, LaunchChange
from euca.roles.clc.tags import records as tags
from euca.roles.clc.tags.render import tag_list

log = logging.getLogger("euca.clc")

IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
ACCOUNT_ID_RE = re.compile(r"^\d{12}$")


# -- RegisterImage ---------------------------------------------------------------------------------------


def _split_location(location: str) -> str:
    loc = location.strip().lstrip("/")
    bucket, slash, key = loc.partition("/")
    if not bucket or not slash or not key:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Invalid ImageLocation '{location}': expected bucket/prefix.manifest.xml",
        )
    return loc


async def register_image(
    call: Ec2Call, req: m.RegisterImageRequest, settle: ebs.SettleMappings | None = None
) -> m.RegisterImageResult:
    if not IMAGE_NAME_RE.match(req.name):
        raise Ec2Error(
            "InvalidAMIName.Malformed",
            "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, "
            "'(', ')', '.', '-', '/' and '_'",
        )
    if not req.image_location:
        if req.block_device_mappings and settle is not None:
            return await _register_ebs_image(call, req, settle)
        raise Ec2Error("MissingParameter", "The request must contain the parameter ImageLocation")
    location = _split_location(req.image_location)
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "image")
    records.check_architecture(req.architecture)

    def precheck(tx: Tx) -> None:
        # What the request alone gets wrong is answered before the manifest is read.
        records.check_boot_image(tx, req.kernel_id, "kernel", call.account_id)
        records.check_boot_image(tx, req.ramdisk_id, "ramdisk", call.account_id)
        records.check_name_free(tx, call.account_id, req.name)

    await call.ctx.store.read(precheck)
    facts = await bundles.inspect_manifest(call, location, req)
    architecture = facts.architecture or "x86_64"
    records.check_architecture(architecture)
    kernel_id = facts.kernel_id if facts.image_type == "machine" else None
    ramdisk_id = facts.ramdisk_id if facts.image_type == "machine" else None
    virtualization = req.virtualization_type or (
        "paravirtual" if kernel_id or facts.image_type != "machine" else "hvm"
    )
    if virtualization not in ("hvm", "paravirtual"):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({virtualization}) for parameter virtualizationType is invalid."
        )
    new = records.NewImage(
        account_id=call.account_id,
        image_type=facts.image_type,
        name=req.name,
        description=req.description,
        location=location,
        architecture=architecture,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        root_device_name=req.root_device_name or "/dev/sda1",
        virtualization_type=virtualization,
        manifest=facts.manifest,
        access_key_id=facts.access_key_id,
        tags=tag_pairs,
    )
    image_id = await call.ctx.store.write(lambda tx: records.insert_image(tx, new))
    log.info(
        "image registered image_id=%s account=%s location=%s type=%s",
        image_id,
        call.account_id,
        location,
        facts.image_type,
    )
    return m.RegisterImageResult(image_id=image_id)


async def _register_ebs_image(
    call: Ec2Call, req: m.RegisterImageRequest, settle: ebs.SettleMappings
) -> m.RegisterImageResult:
    """RegisterImage of an EBS-backed image: its root device is a snapshot (images/ebs.py)."""
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "image")
    records.check_architecture(req.architecture)
    root_device = ebs.check_device_name(req.root_device_name or ebs.DEFAULT_ROOT_DEVICE)
    virtualization = req.virtualization_type or ("paravirtual" if req.kernel_id else "hvm")
    if virtualization not in ("hvm", "paravirtual"):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({virtualization}) for parameter virtualizationType is invalid."
        )
    if req.ramdisk_id and not req.kernel_id:
        raise Ec2Error("InvalidParameterCombination", "A ramdisk needs a kernel: give KernelId too.")

    def write(tx: Tx) -> str:
        mappings = settle(tx, call.account_id, req.block_device_mappings)
        ebs.root_of(mappings, root_device)
        new = records.NewEbsImage(
            account_id=call.account_id,
            name=req.name,
            description=req.description,
            architecture=req.architecture or "x86_64",
            kernel_id=req.kernel_id,
            ramdisk_id=req.ramdisk_id,
            root_device_name=root_device,
            virtualization_type=virtualization,
            block_devices=mappings,
            tags=tag_pairs,
        )
        return records.insert_ebs_image(tx, new)

    image_id = await call.ctx.store.write(write)
    log.info("image registered image_id=%s account=%s root=ebs", image_id, call.account_id)
    return m.RegisterImageResult(image_id=image_id)


# -- DescribeImages --------------------------------------------------------------------------------------

IMAGE_FILTERS: FilterSet[ImageRecord] = FilterSet(
    {
        "architecture": lambda i: i.architecture,
        "description": lambda i: i.description,
        "image-id": lambda i: i.image_id,
        "image-type": lambda i: i.image_type,
        "is-public": lambda i: i.public,
        "kernel-id": lambda i: i.kernel_id,
        "manifest-location": lambda i: i.location,
        "name": lambda i: i.name,
        "owner-id": lambda i: i.account_id,
        "platform": lambda i: i.platform,
        "ramdisk-id": lambda i: i.ramdisk_id,
        "root-device-name": lambda i: i.root_device_name,
        "root-device-type": lambda i: i.root_device_type,
        "state": lambda i: i.state,
        "virtualization-type": lambda i: i.virtualization_type,
        "hypervisor": lambda i: "xen",
        "block-device-mapping.device-name": lambda i: [d.device for d in i.block_devices],
        "block-device-mapping.snapshot-id": lambda i: [
            d.snapshot_id for d in i.block_devices if d.snapshot_id
        ],
        "block-device-mapping.volume-size": lambda i: [
            str(d.size_gib) for d in i.block_devices if d.size_gib
        ],
        "block-device-mapping.volume-type": lambda i: [
            d.volume_type for d in i.block_devices if d.volume_type
        ],
        "block-device-mapping.delete-on-termination": lambda i: [
            str(d.delete_on_termination).lower() for d in i.block_devices if d.size_gib
        ],
    },
    tags=lambda i: i.tags,
)


def to_image(i: ImageRecord) -> m.Image:
    return m.Image(
        image_id=i.image_id,
        image_location=i.location,
        state=i.state,
        owner_id=i.account_id,
        creation_date=format_timestamp(datetime.fromtimestamp(i.created, UTC)),
        public=i.public,
        architecture=i.architecture,
        image_type=i.image_type,
        name=i.name,
        description=i.description,
        kernel_id=i.kernel_id,
        ramdisk_id=i.ramdisk_id,
        platform=i.platform,
        root_device_type=i.root_device_type,
        root_device_name=i.root_device_name,
        virtualization_type=i.virtualization_type,
        hypervisor="xen",
        tags=tag_list(i.tags),
        block_device_mappings=ebs.render_mappings(i),
    )


async def _owner_ids(call: Ec2Call, owners: list[str]) -> set[str]:
    ids: set[str] = set()
    for owner in owners:
        if owner == "self":
            ids.add(call.account_id)
        elif owner == "amazon":
            # The cloud's own images: those of the cloud administrators' account.
            admin = await call.ctx.identity.account_by_name(ADMIN_ACCOUNT)
            if admin is not None:
                ids.add(admin.account_id)
        elif ACCOUNT_ID_RE.match(owner):
            ids.add(owner)
        else:
            # Eucalyptus let an account name stand for the account (its image owner alias).
            account = await call.ctx.identity.account_by_name(owner)
            if account is None:
                raise Ec2Error("InvalidUserID.Malformed", f"Invalid user id: '{owner}'")
            ids.add(account.account_id)
    return ids


def _executable_by(image: ImageRecord, who: list[str], caller: str) -> bool:
    for w in who:
        if w == "all" and image.public:
            return True
        account = caller if w == "self" else w
        if image.account_id == account or account in image.launch_accounts:
            return True
    return False


async def describe_images(call: Ec2Call, req: m.DescribeImagesRequest) -> m.DescribeImagesResult:
    for image_id in req.image_ids:
        records.check_image_id(image_id)
    if req.image_ids and req.max_results is not None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter imageIdsSet cannot be used with the parameter maxResults",
        )
    images = await call.ctx.store.read(lambda tx: records.load_visible_images(tx, call.account_id))
    if req.image_ids:
        by_id = {i.image_id: i for i in images}
        missing = [i for i in req.image_ids if i not in by_id]
        if missing:
            raise Ec2Error("InvalidAMIID.NotFound", f"The image ids '[{', '.join(missing)}]' do not exist")
        images = [by_id[i] for i in dict.fromkeys(req.image_ids)]
    if req.owners:
        owners = await _owner_ids(call, req.owners)
        images = [i for i in images if i.account_id in owners]
    if req.executable_users:
        images = [i for i in images if _executable_by(i, req.executable_users, call.account_id)]
    images = IMAGE_FILTERS.apply(req.filters, images)
    page, token = paginate(images, lambda i: i.image_id, req.max_results, req.next_token, PageLimits(5, 1000))
    return m.DescribeImagesResult(images=[to_image(i) for i in page], next_token=token)


# -- DeregisterImage -------------------------------------------------------------------------------------


async def deregister_image(call: Ec2Call, req: m.DeregisterImageRequest) -> m.DeregisterImageResult:
    await call.ctx.store.write(lambda tx: records.delete_image(tx, req.image_id, call.account_id))
    log.info("image deregistered image_id=%s account=%s", req.image_id, call.account_id)
    return m.DeregisterImageResult()


# -- image attributes ------------------------------------------------------------------------------------

SUPPORTED_ATTRIBUTES = (
    "description",
    "kernel",
    "ramdisk",
    "launchPermission",
    "productCodes",
    "blockDeviceMapping",
)
# In the model, not kept by euca: answered UnsupportedOperation rather than InvalidParameterValue.
OTHER_MODEL_ATTRIBUTES = (
    "sriovNetSupport",
    "bootMode",
    "tpmSupport",
    "uefiData",
    "lastLaunchedTime",
    "imdsSupport",
    "deregistrationProtection",
)


def _check_attribute(name: str) -> None:
    if name in SUPPORTED_ATTRIBUTES:
        return
    if name in OTHER_MODEL_ATTRIBUTES:
        raise Ec2Error("UnsupportedOperation", f"The image attribute {name} is not supported by this cloud.")
    raise Ec2Error(
        "InvalidParameterValue", f"Value ({name}) for parameter attribute is invalid. Unknown attribute."
    )


def _launch_permissions(image: ImageRecord) -> list[m.LaunchPermission]:
    perms = [m.LaunchPermission(group="all")] if image.public else []
    perms.extend(m.LaunchPermission(user_id=a) for a in sorted(image.launch_accounts))
    return perms


async def describe_image_attribute(call: Ec2Call, req: m.DescribeImageAttributeRequest) -> m.ImageAttribute:
    _check_attribute(req.attribute)
    image = await call.ctx.store.read(lambda tx: records.visible_image(tx, req.image_id, call.account_id))
    attr = req.attribute
    if attr == "launchPermission":
        if image.account_id != call.account_id:
            raise Ec2Error("AuthFailure", f"Not authorized for image:{image.image_id}")
        return m.ImageAttribute(image_id=image.image_id, launch_permissions=_launch_permissions(image))
    if attr == "description":
        return m.ImageAttribute(
            image_id=image.image_id, description=m.AttributeValue(value=image.description)
        )
    if attr == "kernel":
        return m.ImageAttribute(image_id=image.image_id, kernel_id=m.AttributeValue(value=image.kernel_id))
    if attr == "ramdisk":
        return m.ImageAttribute(image_id=image.image_id, ramdisk_id=m.AttributeValue(value=image.ramdisk_id))
    if attr == "productCodes":
        return m.ImageAttribute(image_id=image.image_id, product_codes=[])
    return m.ImageAttribute(image_id=image.image_id, block_device_mappings=ebs.render_mappings(image))


def _launch_change(req: m.ModifyImageAttributeRequest) -> LaunchChange | None:
    change = LaunchChange()
    found = False

    def take(perms: list[m.LaunchPermission], adding: bool) -> None:
        for p in perms:
            if p.group is not None:
                if p.group != "all":
                    raise Ec2Error(
                        "InvalidAMIAttributeItemValue", f"Invalid attribute item value '{p.group}' for group"
                    )
                change.public = adding
            if p.user_id is not None:
                (change.add_accounts if adding else change.remove_accounts).add(p.user_id)

    if req.launch_permission is not None:
        found = True
        take(req.launch_permission.add, True)
        take(req.launch_permission.remove, False)
    if req.attribute == "launchPermission" or (req.attribute is None and (req.user_ids or req.user_groups)):
        found = True
        if req.operation_type not in ("add", "remove"):
            raise Ec2Error(
                "MissingParameter", "The request must contain the parameter OperationType (add or remove)"
            )
        perms = [m.LaunchPermission(user_id=u) for u in req.user_ids]
        perms += [m.LaunchPermission(group=g) for g in req.user_groups]
        if not perms:
            raise Ec2Error("MissingParameter", "The request must contain the parameter UserId or UserGroup")
        take(perms, req.operation_type == "add")
    return change if found else None


async def modify_image_attribute(call: Ec2Call, req: m.ModifyImageAttributeRequest) -> None:
    if req.product_codes or req.attribute == "productCodes":
        raise Ec2Error("UnsupportedOperation", "Product codes are not supported by this cloud.")
    if req.organization_arns or req.organizational_unit_arns or req.imds_support is not None:
        raise Ec2Error("UnsupportedOperation", "This image attribute is not supported by this cloud.")
    if req.attribute is not None and req.attribute not in ("launchPermission", "description"):
        _check_attribute(req.attribute)
        raise Ec2Error("InvalidParameterValue", f"The image attribute {req.attribute} cannot be modified.")
    launch = _launch_change(req)
    description: str | None = None
    if req.description is not None:
        description = req.description.value or ""
    elif req.attribute == "description":
        description = req.value or ""
    if launch is None and description is None:
        raise Ec2Error("MissingParameter", "The request must contain the parameter Attribute")
    accounts = (launch.add_accounts | launch.remove_accounts) if launch else set()
    for account_id in accounts:
        if not ACCOUNT_ID_RE.match(account_id) or await call.ctx.identity.account_by_id(account_id) is None:
            raise Ec2Error(
                "InvalidAMIAttributeItemValue", f"Invalid attribute item value '{account_id}' for userId"
            )
    await call.ctx.store.write(
        lambda tx: records.modify_image(
            tx, req.image_id, call.account_id, description=description, launch=launch
        )
    )


async def reset_image_attribute(call: Ec2Call, req: m.ResetImageAttributeRequest) -> None:
    if req.attribute != "launchPermission":
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({req.attribute}) for parameter attribute is invalid."
        )
    await call.ctx.store.write(lambda tx: records.reset_launch_permissions(tx, req.image_id, call.account_id))


def handlers(settle: ebs.SettleMappings) -> dict[str, Handler]:
    """The image handlers; `settle` checks block device mappings (EBS-backed images)."""

    async def register(call: Ec2Call, req: m.RegisterImageRequest) -> m.RegisterImageResult:
        return await register_image(call, req, settle)

    return {**HANDLERS, "RegisterImage": register}


HANDLERS: dict[str, Handler] = {
    "RegisterImage": register_image,
    "DescribeImages": describe_images,
    "DeregisterImage": deregister_image,
    "DescribeImageAttribute": describe_image_attribute,
    "ModifyImageAttribute": modify_image_attribute,
    "ResetImageAttribute": reset_image_attribute,
}
