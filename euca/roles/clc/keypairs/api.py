"""Key pairs through EC2: CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair."""

from __future__ import annotations

from datetime import UTC, datetime

import trio

from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.keypairs import records
from euca.roles.clc.keypairs.records import KeyPairRecord
from euca.roles.clc.tags import records as tags
from euca.roles.clc.tags.render import tag_list


async def create_key_pair(call: Ec2Call, req: m.CreateKeyPairRequest) -> m.KeyPair:
    records.check_key_name(req.key_name)
    key_type = req.key_type or "rsa"
    if key_type not in ("rsa", "ed25519"):
        raise Ec2Error("InvalidParameterValue", f"Value ({key_type}) for parameter keyType is invalid.")
    if (req.key_format or "pem") != "pem":
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({req.key_format}) for parameter keyFormat is not supported."
        )
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "key-pair")
    if await call.ctx.store.read(lambda tx: records.name_taken(tx, call.account_id, req.key_name)):
        # refused before spending the CPU on a key
        raise Ec2Error("InvalidKeyPair.Duplicate", f"The keypair '{req.key_name}' already exists.")
    generated = await trio.to_thread.run_sync(records.generate_key, key_type)
    key_pair_id = await call.ctx.store.write(
        lambda tx: records.insert_key_pair(
            tx,
            call.account_id,
            req.key_name,
            key_type,
            generated.public_openssh,
            generated.fingerprint,
            tag_pairs,
        )
    )
    return m.KeyPair(
        key_name=req.key_name,
        key_fingerprint=generated.fingerprint,
        key_material=generated.private_pem,
        key_pair_id=key_pair_id,
        tags=[m.Tag(key=k, value=v) for k, v in tag_pairs] or None,
    )


async def import_key_pair(call: Ec2Call, req: m.ImportKeyPairRequest) -> m.ImportKeyPairResult:
    records.check_key_name(req.key_name)
    if not req.public_key_material:  # as EC2: no key at all is a missing parameter, not a bad key
        raise Ec2Error("MissingParameter", "The request must contain the parameter PublicKeyMaterial")
    key_type, public_key, fingerprint = records.load_public_key(req.public_key_material)
    tag_pairs = tags.tags_from_specifications(req.tag_specifications, "key-pair")
    key_pair_id = await call.ctx.store.write(
        lambda tx: records.insert_key_pair(
            tx, call.account_id, req.key_name, key_type, public_key, fingerprint, tag_pairs
        )
    )
    return m.ImportKeyPairResult(
        key_name=req.key_name,
        key_fingerprint=fingerprint,
        key_pair_id=key_pair_id,
        tags=[m.Tag(key=k, value=v) for k, v in tag_pairs] or None,
    )


KEY_PAIR_FILTERS: FilterSet[KeyPairRecord] = FilterSet(
    {
        "key-name": lambda k: k.name,
        "key-pair-id": lambda k: k.key_pair_id,
        "fingerprint": lambda k: k.fingerprint,
        "key-type": lambda k: k.key_type,
    },
    tags=lambda k: k.tags,
)


async def describe_key_pairs(call: Ec2Call, req: m.DescribeKeyPairsRequest) -> m.DescribeKeyPairsResult:
    keys = await call.ctx.store.read(lambda tx: records.load_key_pairs(tx, call.account_id))
    by_name = {k.name: k for k in keys}
    by_id = {k.key_pair_id: k for k in keys}
    for name in req.key_names:
        if name not in by_name:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    for kid in req.key_pair_ids:
        if kid not in by_id:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{kid}' does not exist")
    if req.key_names or req.key_pair_ids:
        keys = [k for k in keys if k.name in req.key_names or k.key_pair_id in req.key_pair_ids]
    keys = KEY_PAIR_FILTERS.apply(req.filters, keys)
    return m.DescribeKeyPairsResult(
        key_pairs=[
            m.KeyPairInfo(
                key_pair_id=k.key_pair_id,
                key_name=k.name,
                key_fingerprint=k.fingerprint,
                key_type=k.key_type,
                create_time=datetime.fromtimestamp(k.created, UTC),
                public_key=f"{k.public_key} {k.name}" if req.include_public_key else None,
                tags=tag_list(k.tags),
            )
            for k in keys
        ]
    )


async def delete_key_pair(call: Ec2Call, req: m.DeleteKeyPairRequest) -> m.DeleteKeyPairResult:
    if not req.key_name and not req.key_pair_id:
        raise Ec2Error("MissingParameter", "The request must contain the parameter KeyName or KeyPairId")
    deleted = await call.ctx.store.write(
        lambda tx: records.delete_key_pair(
            tx, call.account_id, key_pair_id=req.key_pair_id, name=req.key_name
        )
    )
    return m.DeleteKeyPairResult(key_pair_id=deleted)


HANDLERS: dict[str, Handler] = {
    "CreateKeyPair": create_key_pair,
    "ImportKeyPair": import_key_pair,
    "DescribeKeyPairs": describe_key_pairs,
    "DeleteKeyPair": delete_key_pair,
}
