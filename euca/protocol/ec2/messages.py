"""Typed EC2 requests and results: the values handlers take and return.

Field names are the model's member names in snake_case (`rename="pascal"` maps them back), so a request
Struct converts straight from the tree wire.decode_input() builds and a result Struct renders through the
output shape. Only the members euca reads or answers are declared; a request member the client sends that is
not declared here is accepted by the wire decoder (it is in the model) and ignored.

One module on purpose (~600 lines of declarations, no logic): the Structs of every EC2 action euca answers,
by resource, so a handler and its test import one namespace (`messages as m`).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from euca.protocol.ec2.filters import Filter


class Wire(msgspec.Struct, rename="pascal", kw_only=True):
    pass


# -- shared pieces ---------------------------------------------------------------------------------------


class Tag(Wire):
    key: str | None = None
    value: str | None = None


class TagSpecification(Wire):
    resource_type: str | None = None
    tags: list[Tag] = []


class AttributeValue(Wire):
    value: str | None = None


# -- regions and zones -----------------------------------------------------------------------------------


class DescribeRegionsRequest(Wire):
    region_names: list[str] = []
    filters: list[Filter] = []
    all_regions: bool = False
    dry_run: bool = False


class Region(Wire):
    region_name: str
    endpoint: str
    opt_in_status: str = "opt-in-not-required"


class DescribeRegionsResult(Wire):
    regions: list[Region]


class DescribeAvailabilityZonesRequest(Wire):
    zone_names: list[str] = []
    zone_ids: list[str] = []
    filters: list[Filter] = []
    all_availability_zones: bool = False
    dry_run: bool = False


class AvailabilityZoneMessage(Wire):
    message: str


class AvailabilityZone(Wire):
    zone_name: str
    state: str
    region_name: str
    zone_id: str | None = None
    zone_type: str | None = "availability-zone"
    opt_in_status: str | None = "opt-in-not-required"
    group_name: str | None = None
    network_border_group: str | None = None
    messages: list[AvailabilityZoneMessage] = []


class DescribeAvailabilityZonesResult(Wire):
    availability_zones: list[AvailabilityZone]


class DescribeAccountAttributesRequest(Wire):
    attribute_names: list[str] = []
    dry_run: bool = False


class AccountAttributeValue(Wire):
    attribute_value: str


class AccountAttribute(Wire):
    attribute_name: str
    attribute_values: list[AccountAttributeValue]


class DescribeAccountAttributesResult(Wire):
    account_attributes: list[AccountAttribute]


# -- key pairs -------------------------------------------------------------------------------------------


class CreateKeyPairRequest(Wire):
    key_name: str
    key_type: str | None = None
    key_format: str | None = None
    tag_specifications: list[TagSpecification] = []
    dry_run: bool = False


class KeyPair(Wire):
    """CreateKeyPair's result: the private key is shown this once and never kept."""

    key_name: str
    key_fingerprint: str
    key_material: str
    key_pair_id: str
    tags: list[Tag] | None = None


class ImportKeyPairRequest(Wire):
    key_name: str
    public_key_material: bytes
    tag_specifications: list[TagSpecification] = []
    dry_run: bool = False


class ImportKeyPairResult(Wire):
    key_name: str
    key_fingerprint: str
    key_pair_id: str
    tags: list[Tag] | None = None


class DescribeKeyPairsRequest(Wire):
    key_names: list[str] = []
    key_pair_ids: list[str] = []
    filters: list[Filter] = []
    include_public_key: bool = False
    dry_run: bool = False


class KeyPairInfo(Wire):
    key_pair_id: str
    key_name: str
    key_fingerprint: str
    key_type: str
    create_time: datetime
    public_key: str | None = None
    tags: list[Tag] | None = None


class DescribeKeyPairsResult(Wire):
    key_pairs: list[KeyPairInfo]


class DeleteKeyPairRequest(Wire):
    key_name: str | None = None
    key_pair_id: str | None = None
    dry_run: bool = False


class DeleteKeyPairResult(Wire):
    # The model's member is `Return`; `return` cannot be a Python name.
    ok: bool = msgspec.field(default=True, name="Return")
    key_pair_id: str | None = None


# -- tags ------------------------------------------------------------------------------------------------


class CreateTagsRequest(Wire):
    resources: list[str]
    tags: list[Tag]
    dry_run: bool = False


class DeleteTagsRequest(Wire):
    resources: list[str]
    tags: list[Tag] | None = None
    dry_run: bool = False


class DescribeTagsRequest(Wire):
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class TagDescription(Wire):
    resource_id: str
    resource_type: str
    key: str
    value: str


class DescribeTagsResult(Wire):
    tags: list[TagDescription]
    next_token: str | None = None


# -- instance types --------------------------------------------------------------------------------------


class DescribeInstanceTypesRequest(Wire):
    instance_types: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class VCpuInfo(Wire):
    default_v_cpus: int = msgspec.field(name="DefaultVCpus")
    default_cores: int | None = None
    default_threads_per_core: int | None = None


class MemoryInfo(Wire):
    size_in_mib: int = msgspec.field(name="SizeInMiB")


class DiskInfo(Wire):
    size_in_gb: int = msgspec.field(name="SizeInGB")
    count: int = 1
    type: str = "hdd"


class InstanceStorageInfo(Wire):
    total_size_in_gb: int = msgspec.field(name="TotalSizeInGB")
    disks: list[DiskInfo] = []


class ProcessorInfo(Wire):
    supported_architectures: list[str] = []


class InstanceTypeInfo(Wire):
    instance_type: str
    v_cpu_info: VCpuInfo = msgspec.field(name="VCpuInfo")
    memory_info: MemoryInfo
    current_generation: bool = True
    instance_storage_supported: bool = True
    instance_storage_info: InstanceStorageInfo | None = None
    processor_info: ProcessorInfo | None = None
    supported_root_device_types: list[str] = []
    supported_virtualization_types: list[str] = []
    supported_usage_classes: list[str] = []
    hypervisor: str | None = None


class DescribeInstanceTypesResult(Wire):
    instance_types: list[InstanceTypeInfo]
    next_token: str | None = None


# -- images ----------------------------------------------------------------------------------------------


class EbsBlockDevice(Wire):
    snapshot_id: str | None = None
    volume_size: int | None = None
    delete_on_termination: bool | None = None
    volume_type: str | None = None


class BlockDeviceMapping(Wire):
    device_name: str | None = None
    virtual_name: str | None = None
    ebs: EbsBlockDevice | None = None
    no_device: str | None = None


class RegisterImageRequest(Wire):
    name: str
    image_location: str | None = None
    architecture: str | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    description: str | None = None
    root_device_name: str | None = None
    virtualization_type: str | None = None
    block_device_mappings: list[BlockDeviceMapping] = []
    tag_specifications: list[TagSpecification] = []
    dry_run: bool = False


class RegisterImageResult(Wire):
    image_id: str


class DescribeImagesRequest(Wire):
    image_ids: list[str] = []
    owners: list[str] = []
    executable_users: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    include_deprecated: bool = False
    dry_run: bool = False


class ProductCode(Wire):
    product_code_id: str
    product_code_type: str = "marketplace"


class Image(Wire):
    image_id: str
    state: str
    owner_id: str
    creation_date: str
    public: bool
    architecture: str
    image_type: str
    name: str
    image_location: str | None = None
    description: str | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    platform: str | None = None
    root_device_type: str = "instance-store"
    root_device_name: str | None = None
    virtualization_type: str | None = None
    image_owner_alias: str | None = None
    hypervisor: str | None = None
    block_device_mappings: list[BlockDeviceMapping] = []
    product_codes: list[ProductCode] | None = None
    tags: list[Tag] | None = None


class DescribeImagesResult(Wire):
    images: list[Image]
    next_token: str | None = None


class DeregisterImageRequest(Wire):
    image_id: str
    dry_run: bool = False


class DeregisterImageResult(Wire):
    ok: bool = msgspec.field(default=True, name="Return")


class DescribeImageAttributeRequest(Wire):
    image_id: str
    attribute: str
    dry_run: bool = False


class LaunchPermission(Wire):
    user_id: str | None = None
    group: str | None = None


class ImageAttribute(Wire):
    image_id: str
    description: AttributeValue | None = None
    kernel_id: AttributeValue | None = None
    ramdisk_id: AttributeValue | None = None
    launch_permissions: list[LaunchPermission] | None = None
    product_codes: list[ProductCode] | None = None
    block_device_mappings: list[BlockDeviceMapping] | None = None


class LaunchPermissionModifications(Wire):
    add: list[LaunchPermission] = []
    remove: list[LaunchPermission] = []


class ModifyImageAttributeRequest(Wire):
    image_id: str
    attribute: str | None = None
    operation_type: str | None = None
    user_ids: list[str] = []
    user_groups: list[str] = []
    product_codes: list[str] = []
    value: str | None = None
    description: AttributeValue | None = None
    launch_permission: LaunchPermissionModifications | None = None
    organization_arns: list[str] = []
    organizational_unit_arns: list[str] = []
    imds_support: AttributeValue | None = None
    dry_run: bool = False


class ResetImageAttributeRequest(Wire):
    image_id: str
    attribute: str
    dry_run: bool = False


# -- instances -------------------------------------------------------------------------------------------


class Placement(Wire):
    availability_zone: str | None = None
    group_name: str | None = None
    tenancy: str | None = None


# Instance profiles (issue 12): what RunInstances names and DescribeInstances shows.
class IamInstanceProfileSpecification(Wire):
    arn: str | None = None
    name: str | None = None


class IamInstanceProfile(Wire):
    arn: str | None = None
    id: str | None = None


class RunInstancesRequest(Wire):
    min_count: int
    max_count: int
    image_id: str | None = None
    instance_type: str | None = None
    key_name: str | None = None
    security_groups: list[str] = []
    security_group_ids: list[str] = []
    user_data: str | None = None  # base64 text (botocore encodes it)
    placement: Placement | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    client_token: str | None = None
    subnet_id: str | None = None
    private_ip_address: str | None = None
    additional_info: str | None = None
    tag_specifications: list[TagSpecification] = []
    disable_api_termination: bool = False
    instance_initiated_shutdown_behavior: str | None = None
    dry_run: bool = False
    iam_instance_profile: IamInstanceProfileSpecification | None = None  # instance profiles (issue 12)


class InstanceState(Wire):
    code: int
    name: str


class GroupIdentifier(Wire):
    group_name: str | None = None
    group_id: str | None = None


class StateReason(Wire):
    code: str | None = None
    message: str | None = None


class Monitoring(Wire):
    state: str = "disabled"


class EbsInstanceBlockDevice(Wire):
    attach_time: datetime | None = None
    delete_on_termination: bool | None = None
    status: str | None = None
    volume_id: str | None = None


class InstanceBlockDeviceMapping(Wire):
    device_name: str | None = None
    ebs: EbsInstanceBlockDevice | None = None


class Instance(Wire):
    instance_id: str
    image_id: str
    state: InstanceState
    instance_type: str
    launch_time: datetime
    placement: Placement
    ami_launch_index: int = 0
    private_dns_name: str | None = None
    public_dns_name: str | None = None
    state_transition_reason: str | None = None
    key_name: str | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    monitoring: Monitoring | None = None
    private_ip_address: str | None = None
    public_ip_address: str | None = None
    architecture: str | None = None
    root_device_type: str | None = None
    root_device_name: str | None = None
    virtualization_type: str | None = None
    hypervisor: str | None = None
    client_token: str | None = None
    ebs_optimized: bool | None = None
    security_groups: list[GroupIdentifier] = []
    state_reason: StateReason | None = None
    tags: list[Tag] | None = None
    block_device_mappings: list[InstanceBlockDeviceMapping] = []
    iam_instance_profile: IamInstanceProfile | None = None  # instance profiles (issue 12)


class Reservation(Wire):
    reservation_id: str
    owner_id: str
    groups: list[GroupIdentifier] = []
    instances: list[Instance] = []
    requester_id: str | None = None


class DescribeInstancesRequest(Wire):
    instance_ids: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class DescribeInstancesResult(Wire):
    reservations: list[Reservation]
    next_token: str | None = None


class TerminateInstancesRequest(Wire):
    instance_ids: list[str]
    dry_run: bool = False


class InstanceStateChange(Wire):
    instance_id: str
    current_state: InstanceState
    previous_state: InstanceState


class TerminateInstancesResult(Wire):
    terminating_instances: list[InstanceStateChange]


class RebootInstancesRequest(Wire):
    instance_ids: list[str]
    dry_run: bool = False


class StopInstancesRequest(Wire):
    instance_ids: list[str]
    force: bool = False
    hibernate: bool = False
    dry_run: bool = False


class StartInstancesRequest(Wire):
    instance_ids: list[str]
    additional_info: str | None = None
    dry_run: bool = False


class GetConsoleOutputRequest(Wire):
    instance_id: str
    latest: bool | None = None
    dry_run: bool = False


class GetConsoleOutputResult(Wire):
    instance_id: str
    output: str | None = None  # base64 of the console bytes (botocore decodes it)
    timestamp: datetime | None = None


class GetPasswordDataRequest(Wire):
    instance_id: str
    dry_run: bool = False


class GetPasswordDataResult(Wire):
    instance_id: str
    password_data: str
    timestamp: datetime


class DescribeInstanceStatusRequest(Wire):
    instance_ids: list[str] = []
    filters: list[Filter] = []
    include_all_instances: bool = False
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class InstanceStatusDetails(Wire):
    name: str
    status: str
    impaired_since: datetime | None = None


class InstanceStatusSummary(Wire):
    status: str
    details: list[InstanceStatusDetails] = []


class InstanceStatus(Wire):
    instance_id: str
    availability_zone: str
    instance_state: InstanceState
    instance_status: InstanceStatusSummary
    system_status: InstanceStatusSummary


class DescribeInstanceStatusResult(Wire):
    instance_statuses: list[InstanceStatus]
    next_token: str | None = None


# Action -> its request type. An action of the model missing here is answered UnsupportedOperation.
REQUEST_TYPES: dict[str, type[Wire]] = {
    "DescribeRegions": DescribeRegionsRequest,
    "DescribeAvailabilityZones": DescribeAvailabilityZonesRequest,
    "DescribeAccountAttributes": DescribeAccountAttributesRequest,
    "CreateKeyPair": CreateKeyPairRequest,
    "ImportKeyPair": ImportKeyPairRequest,
    "DescribeKeyPairs": DescribeKeyPairsRequest,
    "DeleteKeyPair": DeleteKeyPairRequest,
    "CreateTags": CreateTagsRequest,
    "DeleteTags": DeleteTagsRequest,
    "DescribeTags": DescribeTagsRequest,
    "DescribeInstanceTypes": DescribeInstanceTypesRequest,
    "RegisterImage": RegisterImageRequest,
    "DescribeImages": DescribeImagesRequest,
    "DeregisterImage": DeregisterImageRequest,
    "DescribeImageAttribute": DescribeImageAttributeRequest,
    "ModifyImageAttribute": ModifyImageAttributeRequest,
    "ResetImageAttribute": ResetImageAttributeRequest,
    "RunInstances": RunInstancesRequest,
    "DescribeInstances": DescribeInstancesRequest,
    "TerminateInstances": TerminateInstancesRequest,
    "RebootInstances": RebootInstancesRequest,
    "StopInstances": StopInstancesRequest,
    "StartInstances": StartInstancesRequest,
    "GetConsoleOutput": GetConsoleOutputRequest,
    "GetPasswordData": GetPasswordDataRequest,
    "DescribeInstanceStatus": DescribeInstanceStatusRequest,
}


# -- security groups and addresses (issue 9) -------------------------------------------------------------
# Kept in a block of their own, with their REQUEST_TYPES entries below it.


class IpRange(Wire):
    cidr_ip: str | None = None
    description: str | None = None


class Ipv6Range(Wire):
    cidr_ipv6: str | None = None
    description: str | None = None


class PrefixListId(Wire):
    prefix_list_id: str | None = None
    description: str | None = None


class UserIdGroupPair(Wire):
    user_id: str | None = None
    group_id: str | None = None
    group_name: str | None = None
    description: str | None = None
    vpc_id: str | None = None


class IpPermission(Wire):
    ip_protocol: str | None = None
    from_port: int | None = None
    to_port: int | None = None
    ip_ranges: list[IpRange] = []
    ipv6_ranges: list[Ipv6Range] = []
    prefix_list_ids: list[PrefixListId] = []
    user_id_group_pairs: list[UserIdGroupPair] = []


class CreateSecurityGroupRequest(Wire):
    group_name: str
    description: str
    vpc_id: str | None = None
    tag_specifications: list[TagSpecification] = []
    dry_run: bool = False


class CreateSecurityGroupResult(Wire):
    group_id: str
    tags: list[Tag] | None = None


class DeleteSecurityGroupRequest(Wire):
    group_id: str | None = None
    group_name: str | None = None
    dry_run: bool = False


class DeleteSecurityGroupResult(Wire):
    ok: bool = msgspec.field(default=True, name="Return")
    group_id: str | None = None


class DescribeSecurityGroupsRequest(Wire):
    group_ids: list[str] = []
    group_names: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class SecurityGroup(Wire):
    group_id: str
    group_name: str
    owner_id: str
    description: str
    ip_permissions: list[IpPermission] = []
    ip_permissions_egress: list[IpPermission] = []
    security_group_arn: str | None = None
    tags: list[Tag] | None = None


class DescribeSecurityGroupsResult(Wire):
    security_groups: list[SecurityGroup]
    next_token: str | None = None


class SecurityGroupPermissionsRequest(Wire):
    """What AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress share."""

    group_id: str | None = None
    group_name: str | None = None
    ip_protocol: str | None = None
    from_port: int | None = None
    to_port: int | None = None
    cidr_ip: str | None = None
    source_security_group_name: str | None = None
    source_security_group_owner_id: str | None = None
    ip_permissions: list[IpPermission] = []
    dry_run: bool = False


class AuthorizeSecurityGroupIngressRequest(SecurityGroupPermissionsRequest):
    tag_specifications: list[TagSpecification] = []


class RevokeSecurityGroupIngressRequest(SecurityGroupPermissionsRequest):
    security_group_rule_ids: list[str] = []


class SecurityGroupEgressRequest(Wire):
    """Authorize/RevokeSecurityGroupEgress: VPC calls, refused for EC2-Classic groups."""

    group_id: str
    ip_permissions: list[IpPermission] = []
    dry_run: bool = False


class AuthorizeSecurityGroupEgressRequest(SecurityGroupEgressRequest):
    tag_specifications: list[TagSpecification] = []


class RevokeSecurityGroupEgressRequest(SecurityGroupEgressRequest):
    security_group_rule_ids: list[str] = []


class ReferencedSecurityGroup(Wire):
    group_id: str | None = None
    user_id: str | None = None


class SecurityGroupRule(Wire):
    security_group_rule_id: str
    group_id: str
    group_owner_id: str
    is_egress: bool
    ip_protocol: str
    from_port: int | None = None
    to_port: int | None = None
    cidr_ipv4: str | None = None
    referenced_group_info: ReferencedSecurityGroup | None = None
    description: str | None = None
    security_group_rule_arn: str | None = None
    tags: list[Tag] | None = None


class AuthorizeSecurityGroupIngressResult(Wire):
    ok: bool = msgspec.field(default=True, name="Return")
    security_group_rules: list[SecurityGroupRule] = []


class RevokedSecurityGroupRule(Wire):
    security_group_rule_id: str
    group_id: str
    is_egress: bool
    ip_protocol: str
    from_port: int | None = None
    to_port: int | None = None
    cidr_ipv4: str | None = None
    referenced_group_id: str | None = None
    description: str | None = None


class RevokeSecurityGroupIngressResult(Wire):
    ok: bool = msgspec.field(default=True, name="Return")
    revoked_security_group_rules: list[RevokedSecurityGroupRule] = []


class DescribeSecurityGroupRulesRequest(Wire):
    security_group_rule_ids: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class DescribeSecurityGroupRulesResult(Wire):
    security_group_rules: list[SecurityGroupRule]
    next_token: str | None = None


class AllocateAddressRequest(Wire):
    domain: str | None = None
    address: str | None = None
    tag_specifications: list[TagSpecification] = []
    dry_run: bool = False


class AllocateAddressResult(Wire):
    public_ip: str
    domain: str
    allocation_id: str | None = None


class AssociateAddressRequest(Wire):
    instance_id: str | None = None
    public_ip: str | None = None
    allocation_id: str | None = None
    allow_reassociation: bool | None = None
    network_interface_id: str | None = None
    private_ip_address: str | None = None
    dry_run: bool = False


class AssociateAddressResult(Wire):
    association_id: str | None = None


class DisassociateAddressRequest(Wire):
    public_ip: str | None = None
    association_id: str | None = None
    dry_run: bool = False


class ReleaseAddressRequest(Wire):
    public_ip: str | None = None
    allocation_id: str | None = None
    network_border_group: str | None = None
    dry_run: bool = False


class DescribeAddressesRequest(Wire):
    public_ips: list[str] = []
    allocation_ids: list[str] = []
    filters: list[Filter] = []
    dry_run: bool = False


class Address(Wire):
    public_ip: str
    domain: str
    allocation_id: str | None = None
    association_id: str | None = None
    instance_id: str | None = None
    private_ip_address: str | None = None
    network_interface_owner_id: str | None = None
    tags: list[Tag] | None = None


class DescribeAddressesResult(Wire):
    addresses: list[Address]


REQUEST_TYPES.update(
    {
        "CreateSecurityGroup": CreateSecurityGroupRequest,
        "DeleteSecurityGroup": DeleteSecurityGroupRequest,
        "DescribeSecurityGroups": DescribeSecurityGroupsRequest,
        "AuthorizeSecurityGroupIngress": AuthorizeSecurityGroupIngressRequest,
        "RevokeSecurityGroupIngress": RevokeSecurityGroupIngressRequest,
        "AuthorizeSecurityGroupEgress": AuthorizeSecurityGroupEgressRequest,
        "RevokeSecurityGroupEgress": RevokeSecurityGroupEgressRequest,
        "DescribeSecurityGroupRules": DescribeSecurityGroupRulesRequest,
        "AllocateAddress": AllocateAddressRequest,
        "AssociateAddress": AssociateAddressRequest,
        "DisassociateAddress": DisassociateAddressRequest,
        "ReleaseAddress": ReleaseAddressRequest,
        "DescribeAddresses": DescribeAddressesRequest,
    }
)


# -- volumes (issue 10) ----------------------------------------------------------------------------------
# Kept in a block of their own, with their REQUEST_TYPES entries below it.


class CreateVolumeRequest(Wire):
    availability_zone: str | None = None
    availability_zone_id: str | None = None
    size: int | None = None
    snapshot_id: str | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    multi_attach_enabled: bool | None = None
    outpost_arn: str | None = None
    tag_specifications: list[TagSpecification] = []
    client_token: str | None = None
    dry_run: bool = False


class VolumeAttachment(Wire):
    volume_id: str | None = None
    instance_id: str | None = None
    device: str | None = None
    state: str | None = None
    attach_time: datetime | None = None
    delete_on_termination: bool | None = None


# -- attaching volumes (issue 10) --


class AttachVolumeRequest(Wire):
    device: str
    instance_id: str
    volume_id: str
    dry_run: bool = False


class DetachVolumeRequest(Wire):
    volume_id: str
    device: str | None = None
    force: bool = False
    instance_id: str | None = None
    dry_run: bool = False


class Volume(Wire):
    """CreateVolume's result and DescribeVolumes' items."""

    volume_id: str
    size: int
    availability_zone: str
    state: str
    create_time: datetime
    volume_type: str
    snapshot_id: str = ""
    encrypted: bool = False
    multi_attach_enabled: bool = False
    iops: int | None = None
    attachments: list[VolumeAttachment] = []
    tags: list[Tag] | None = None


class DescribeVolumesRequest(Wire):
    volume_ids: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class DescribeVolumesResult(Wire):
    volumes: list[Volume]
    next_token: str | None = None


class DeleteVolumeRequest(Wire):
    volume_id: str
    dry_run: bool = False


class DescribeVolumeStatusRequest(Wire):
    volume_ids: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class VolumeStatusDetails(Wire):
    name: str
    status: str


class VolumeStatusInfo(Wire):
    status: str
    details: list[VolumeStatusDetails] = []


class VolumeStatusItem(Wire):
    volume_id: str
    availability_zone: str
    volume_status: VolumeStatusInfo


class DescribeVolumeStatusResult(Wire):
    volume_statuses: list[VolumeStatusItem]
    next_token: str | None = None


class DescribeVolumeAttributeRequest(Wire):
    attribute: str
    volume_id: str
    dry_run: bool = False


class AttributeBooleanValue(Wire):
    value: bool | None = None


class DescribeVolumeAttributeResult(Wire):
    volume_id: str
    auto_enable_io: AttributeBooleanValue | None = msgspec.field(default=None, name="AutoEnableIO")
    product_codes: list[ProductCode] | None = None


class ModifyVolumeRequest(Wire):
    volume_id: str
    size: int | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    multi_attach_enabled: bool | None = None
    dry_run: bool = False


class VolumeModification(Wire):
    volume_id: str
    modification_state: str
    original_size: int
    target_size: int
    original_volume_type: str
    target_volume_type: str
    start_time: datetime
    progress: int
    status_message: str | None = None
    original_iops: int | None = None
    target_iops: int | None = None
    end_time: datetime | None = None


class ModifyVolumeResult(Wire):
    volume_modification: VolumeModification


class DescribeVolumesModificationsRequest(Wire):
    volume_ids: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class DescribeVolumesModificationsResult(Wire):
    volumes_modifications: list[VolumeModification]
    next_token: str | None = None


REQUEST_TYPES.update(
    {
        "CreateVolume": CreateVolumeRequest,
        "ModifyVolume": ModifyVolumeRequest,
        "DescribeVolumesModifications": DescribeVolumesModificationsRequest,
        "DescribeVolumes": DescribeVolumesRequest,
        "DeleteVolume": DeleteVolumeRequest,
        "DescribeVolumeStatus": DescribeVolumeStatusRequest,
        "DescribeVolumeAttribute": DescribeVolumeAttributeRequest,
    }
)

# Attaching volumes (issue 10).
REQUEST_TYPES.update({"AttachVolume": AttachVolumeRequest, "DetachVolume": DetachVolumeRequest})


# Instance attributes (issue 10).


class DescribeInstanceAttributeRequest(Wire):
    attribute: str
    instance_id: str
    dry_run: bool = False


class BlobAttributeValue(Wire):
    value: bytes | None = None


class EbsInstanceBlockDeviceSpecification(Wire):
    delete_on_termination: bool | None = None
    volume_id: str | None = None


class InstanceBlockDeviceMappingSpecification(Wire):
    device_name: str | None = None
    ebs: EbsInstanceBlockDeviceSpecification | None = None
    no_device: str | None = None
    virtual_name: str | None = None


class ModifyInstanceAttributeRequest(Wire):
    instance_id: str
    attribute: str | None = None
    value: str | None = None
    block_device_mappings: list[InstanceBlockDeviceMappingSpecification] = []
    disable_api_termination: AttributeBooleanValue | None = None
    instance_initiated_shutdown_behavior: AttributeValue | None = None
    instance_type: AttributeValue | None = None
    kernel: AttributeValue | None = None
    ramdisk: AttributeValue | None = None
    user_data: BlobAttributeValue | None = None
    groups: list[str] = []
    source_dest_check: AttributeBooleanValue | None = None
    ebs_optimized: AttributeBooleanValue | None = None
    ena_support: AttributeBooleanValue | None = None
    sriov_net_support: AttributeValue | None = None
    disable_api_stop: AttributeBooleanValue | None = None
    dry_run: bool = False


class InstanceAttribute(Wire):
    """DescribeInstanceAttribute's result: the instance id and the one attribute asked for."""

    instance_id: str
    block_device_mappings: list[InstanceBlockDeviceMapping] | None = None
    disable_api_termination: AttributeBooleanValue | None = None
    disable_api_stop: AttributeBooleanValue | None = None
    ebs_optimized: AttributeBooleanValue | None = None
    ena_support: AttributeBooleanValue | None = None
    groups: list[GroupIdentifier] | None = None
    instance_initiated_shutdown_behavior: AttributeValue | None = None
    instance_type: AttributeValue | None = None
    kernel_id: AttributeValue | None = None
    product_codes: list[ProductCode] | None = None
    ramdisk_id: AttributeValue | None = None
    root_device_name: AttributeValue | None = None
    source_dest_check: AttributeBooleanValue | None = None
    sriov_net_support: AttributeValue | None = None
    user_data: AttributeValue | None = None


REQUEST_TYPES.update(
    {
        "DescribeInstanceAttribute": DescribeInstanceAttributeRequest,
        "ModifyInstanceAttribute": ModifyInstanceAttributeRequest,
    }
)


# -- snapshots (issue 10) --------------------------------------------------------------------------------
# Kept in a block of their own, with their REQUEST_TYPES entries below it.


class CreateSnapshotRequest(Wire):
    volume_id: str
    description: str | None = None
    outpost_arn: str | None = None
    location: str | None = None
    tag_specifications: list[TagSpecification] = []
    dry_run: bool = False


class Snapshot(Wire):
    """CreateSnapshot's result and DescribeSnapshots' items."""

    snapshot_id: str
    volume_id: str
    state: str
    start_time: datetime
    progress: str
    owner_id: str
    description: str
    volume_size: int
    encrypted: bool = False
    state_message: str | None = None
    storage_tier: str = "standard"
    completion_time: datetime | None = None
    full_snapshot_size_in_bytes: int | None = None
    tags: list[Tag] | None = None


class DescribeSnapshotsRequest(Wire):
    snapshot_ids: list[str] = []
    owner_ids: list[str] = []
    restorable_by_user_ids: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None
    dry_run: bool = False


class DescribeSnapshotsResult(Wire):
    snapshots: list[Snapshot]
    next_token: str | None = None


class DeleteSnapshotRequest(Wire):
    snapshot_id: str
    dry_run: bool = False


class CreateVolumePermission(Wire):
    user_id: str | None = None
    group: str | None = None


class CreateVolumePermissionModifications(Wire):
    add: list[CreateVolumePermission] = []
    remove: list[CreateVolumePermission] = []


class DescribeSnapshotAttributeRequest(Wire):
    attribute: str
    snapshot_id: str
    dry_run: bool = False


class DescribeSnapshotAttributeResult(Wire):
    snapshot_id: str
    create_volume_permissions: list[CreateVolumePermission] | None = None
    product_codes: list[ProductCode] | None = None


class ModifySnapshotAttributeRequest(Wire):
    snapshot_id: str
    attribute: str | None = None
    create_volume_permission: CreateVolumePermissionModifications | None = None
    group_names: list[str] = []
    operation_type: str | None = None
    user_ids: list[str] = []
    dry_run: bool = False


class ResetSnapshotAttributeRequest(Wire):
    attribute: str
    snapshot_id: str
    dry_run: bool = False


class CopySnapshotRequest(Wire):
    source_region: str
    source_snapshot_id: str
    description: str | None = None
    destination_region: str | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    presigned_url: str | None = None
    destination_outpost_arn: str | None = None
    destination_availability_zone: str | None = None
    tag_specifications: list[TagSpecification] = []
    dry_run: bool = False


class CopySnapshotResult(Wire):
    snapshot_id: str
    tags: list[Tag] | None = None


REQUEST_TYPES.update(
    {
        "CreateSnapshot": CreateSnapshotRequest,
        "DescribeSnapshots": DescribeSnapshotsRequest,
        "DeleteSnapshot": DeleteSnapshotRequest,
        "DescribeSnapshotAttribute": DescribeSnapshotAttributeRequest,
        "ModifySnapshotAttribute": ModifySnapshotAttributeRequest,
        "ResetSnapshotAttribute": ResetSnapshotAttributeRequest,
        "CopySnapshot": CopySnapshotRequest,
    }
)


# Instance profile associations (issue 12): what DescribeIamInstanceProfileAssociations answers.
class DescribeIamInstanceProfileAssociationsRequest(Wire):
    association_ids: list[str] = []
    filters: list[Filter] = []
    max_results: int | None = None
    next_token: str | None = None


class IamInstanceProfileAssociation(Wire):
    association_id: str | None = None
    instance_id: str | None = None
    iam_instance_profile: IamInstanceProfile | None = None
    state: str | None = None
    timestamp: datetime | None = None


class DescribeIamInstanceProfileAssociationsResult(Wire):
    iam_instance_profile_associations: list[IamInstanceProfileAssociation] = []
    next_token: str | None = None


REQUEST_TYPES.update(
    {"DescribeIamInstanceProfileAssociations": DescribeIamInstanceProfileAssociationsRequest}
)
