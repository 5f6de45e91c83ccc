"""Elastic IPs through EC2: AllocateAddress, AssociateAddress, DisassociateAddress, ReleaseAddress,
DescribeAddresses.

Both ways of naming an address work: EC2-Classic's public address (PublicIp: what euca2ools and classic
scripts send) and today's allocation id (AllocationId, eipalloc-...: what boto3 code written for today's EC2
sends, `associate_address(AllocationId=..., InstanceId=...)`), with association ids (eipassoc-...) for
DisassociateAddress. So every address answers with both; its Domain is what AllocateAddress asked for
("standard", EC2-Classic's, by default). The instances sit above this package: the composition root hands
handlers() the instances' answer to "what state is this instance of this account in".
"""

from __future__ import annotations

from collections.abc import Callable

from euca.core.store import Tx
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.addresses import records
from euca.roles.clc.addresses.records import AddressRecord
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.tags import records as tags
from euca.roles.clc.tags.render import tag_list

# (tx, account id, instance id) -> the instance's state; unknown or another account's: InvalidInstanceID.NotFound.
InstanceState = Callable[[Tx, str, str], str]

DOMAINS = ("standard", "vpc")


def to_address(a: AddressRecord, *, verbose: bool = False) -> m.Address:
    instance_id = a.instance_id
    if verbose:  # Eucalyptus's admin view: who holds each address of the pool
        instance_id = "nobody" if a.account_id is None else f"{a.instance_id or 'available'} ({a.account_id})"
    return m.Address(
        public_ip=a.public_ip,
        domain=a.domain,
        allocation_id=a.allocation_id,
        association_id=a.association_id,
        instance_id=instance_id,
        tags=tag_list(a.tags),
    )


ADDRESS_FILTERS: FilterSet[AddressRecord] = FilterSet(
    {
        "public-ip": lambda a: a.public_ip,
        "allocation-id": lambda a: a.allocation_id,
        "association-id": lambda a: a.association_id,
        "instance-id": lambda a: a.instance_id,
        "domain": lambda a: a.domain,
    },
    tags=lambda a: a.tags,
)


async def allocate_address(call: Ec2Call, req: m.AllocateAddressRequest) -> m.AllocateAddressResult:
    domain = req.domain or "standard"
    if domain not in DOMAINS:
        raise Ec2Error("InvalidParameterValue", f"Invalid value '{domain}' for Domain: standard or vpc.")
    wanted = records.check_public_ip(req.address) if req.address else None
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "elastic-ip")
    made = await call.ctx.store.write(
        lambda tx: records.allocate(tx, call.account_id, domain, wanted, tag_pairs)
    )
    return m.AllocateAddressResult(
        public_ip=made.public_ip, domain=made.domain, allocation_id=made.allocation_id
    )


async def release_address(call: Ec2Call, req: m.ReleaseAddressRequest) -> None:
    def write(tx: Tx) -> None:
        address = records.find_owned(
            tx, call.account_id, public_ip=req.public_ip, allocation_id=req.allocation_id
        )
        records.release(tx, address)

    await call.ctx.store.write(write)


async def describe_addresses(call: Ec2Call, req: m.DescribeAddressesRequest) -> m.DescribeAddressesResult:
    ips = list(req.public_ips)
    # euca-describe-addresses verbose: the cloud admin sees every address of the pool and who holds it.
    verbose = call.principal.is_cloud_admin and "verbose" in ips
    if verbose:
        ips = [ip for ip in ips if ip != "verbose"]
    ips = [records.check_public_ip(ip) for ip in ips]
    owner = None if verbose else call.account_id
    found = await call.ctx.store.read(lambda tx: records.load_addresses(tx, owner))
    if ips or req.allocation_ids:
        have_ips = {a.public_ip for a in found}
        have_ids = {a.allocation_id for a in found}
        for ip in ips:
            if ip not in have_ips:
                raise Ec2Error("InvalidAddress.NotFound", f"Address '{ip}' not found.")
        for allocation_id in req.allocation_ids:
            if allocation_id not in have_ids:
                raise Ec2Error(
                    "InvalidAllocationID.NotFound", f"The allocation ID '{allocation_id}' does not exist"
                )
        found = [a for a in found if a.public_ip in ips or a.allocation_id in req.allocation_ids]
    found = ADDRESS_FILTERS.apply(req.filters, found)
    return m.DescribeAddressesResult(addresses=[to_address(a, verbose=verbose) for a in found])


class AddressesApi:
    """The handlers that ask the instances about an instance."""

    def __init__(self, instance_state: InstanceState):
        self.instance_state = instance_state

    async def associate_address(
        self, call: Ec2Call, req: m.AssociateAddressRequest
    ) -> m.AssociateAddressResult:
        if req.network_interface_id or req.private_ip_address:
            raise Ec2Error(
                "InvalidParameterCombination",
                "This cloud runs EC2-Classic: addresses are associated with instances, not network interfaces.",
            )
        if not req.instance_id:
            raise Ec2Error("MissingParameter", "The request must contain the parameter InstanceId")
        instance_id = req.instance_id
        auto = call.ctx.config.clc.auto_public_address

        def write(tx: Tx) -> str:
            address = records.find_owned(
                tx, call.account_id, public_ip=req.public_ip, allocation_id=req.allocation_id
            )
            state = self.instance_state(tx, call.account_id, instance_id)
            if state not in ("pending", "running"):
                raise Ec2Error(
                    "IncorrectInstanceState",
                    f"The instance '{instance_id}' is not in a valid state for this operation.",
                )
            association_id = records.associate(tx, address, instance_id, bool(req.allow_reassociation))
            moved_from = address.instance_id
            # Moved away from another instance (AllowReassociation): that one has lost its elastic IP, and
            # gets a public address from the pool again, as after DisassociateAddress.
            if moved_from and moved_from != instance_id and auto:
                self._public_address_again(tx, call.account_id, moved_from)
            return association_id

        association_id = await call.ctx.store.write(write)
        call.network_changed()
        return m.AssociateAddressResult(association_id=association_id)

    async def disassociate_address(self, call: Ec2Call, req: m.DisassociateAddressRequest) -> None:
        auto = call.ctx.config.clc.auto_public_address

        def write(tx: Tx) -> None:
            if req.association_id:
                address = records.find_association(tx, call.account_id, req.association_id)
            else:
                address = records.find_owned(tx, call.account_id, public_ip=req.public_ip, allocation_id=None)
            instance_id = records.disassociate(tx, address)
            if instance_id and auto:
                self._public_address_again(tx, call.account_id, instance_id)

        await call.ctx.store.write(write)
        call.network_changed()

    def _public_address_again(self, tx: Tx, account_id: str, instance_id: str) -> None:
        """As Eucalyptus: an instance that loses its elastic IP gets a public address from the pool again
        (while it runs)."""
        try:
            state = self.instance_state(tx, account_id, instance_id)
        except Ec2Error:
            return
        if state in ("pending", "running"):
            records.assign_system(tx, account_id, [instance_id])


def handlers(instance_state: InstanceState) -> dict[str, Handler]:
    api = AddressesApi(instance_state)
    return {
        "AllocateAddress": allocate_address,
        "AssociateAddress": api.associate_address,
        "DisassociateAddress": api.disassociate_address,
        "ReleaseAddress": release_address,
        "DescribeAddresses": describe_addresses,
    }
