"""Public addresses: records.py owns clc_addresses (the operator's pool, elastic IPs, the address each
instance was given at launch) and the address rules; api.py answers AllocateAddress, AssociateAddress,
DisassociateAddress, ReleaseAddress and DescribeAddresses, handed by euca/roles/clc/__init__.py the
instances' answer to "what state is this instance in"."""
