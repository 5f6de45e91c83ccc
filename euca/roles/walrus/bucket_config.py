"""Handlers of a bucket's configuration: versioning, ACL, tags, policy (and its status), public access block,
CORS rules. Each updates the store and the service's cache of the bucket."""

from __future__ import annotations

import logging

from euca.core.http import Response
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import cors as s3_cors
from euca.protocol.s3 import policy as s3_policy
from euca.roles.walrus import acl as acls
from euca.roles.walrus import meta, object_lock, ownership
from euca.roles.walrus.access import BucketPolicy, refuse_public_acl
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.responses import empty, xml
from euca.roles.walrus.service import WalrusService

log = logging.getLogger("euca.walrus")

# -- versioning ---------------------------------------------------------------------------------------


async def get_bucket_versioning(svc: WalrusService, call: S3Call, ep: s3.GetBucketVersioning) -> Response:
    b = svc.authorized_bucket(call, ep)
    return xml(s3.render_versioning(b.versioning))


async def put_bucket_versioning(svc: WalrusService, call: S3Call, ep: s3.PutBucketVersioning) -> Response:
    b = svc.authorized_bucket(call, ep)
    status = s3.parse_versioning_body(await call.xml_body())
    if status != "Enabled" and object_lock.lock_enabled(svc, b.name):
        raise S3Error(
            "InvalidBucketState",
            "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.",
        )
    await svc.write_config(lambda tx: meta.update_bucket(tx, b.name, versioning=status))
    b.versioning = status
    log.info("versioning bucket=%s status=%s", b.name, status)
    return empty(200)


# -- ACL ----------------------------------------------------------------------------------------------


async def get_bucket_acl(svc: WalrusService, call: S3Call, ep: s3.GetBucketAcl) -> Response:
    b = svc.authorized_bucket(call, ep)
    acl = ownership.owner_only(b) if ownership.acls_disabled(svc, b.name) else b.acl
    return xml(s3.render_acl(acls.to_policy(acl)))


async def put_bucket_acl(svc: WalrusService, call: S3Call, ep: s3.PutBucketAcl) -> Response:
    b = svc.authorized_bucket(call, ep)
    ownership.refuse_acl(svc, b.name, ep.acl, body_acl=not ep.acl)
    acl = await svc.acl_from_request(call, ep.acl, (b.owner_id, b.owner_name), None)
    refuse_public_acl(svc, b.name, acl["grants"])
    await svc.write_config(lambda tx: meta.update_bucket(tx, b.name, acl=acl))
    b.acl = acl
    log.info("put-bucket-acl bucket=%s grants=%d", b.name, len(acl["grants"]))
    return empty(200)


# -- tags ---------------------------------------------------------------------------------------------


async def get_bucket_tagging(svc: WalrusService, call: S3Call, ep: s3.GetBucketTagging) -> Response:
    b = svc.authorized_bucket(call, ep)
    if not b.tags:
        raise S3Error("NoSuchTagSet", BucketName=b.name)
    return xml(s3.render_tagging(dict(sorted(b.tags.items()))))  # S3 lists tags sorted by key


async def put_bucket_tagging(svc: WalrusService, call: S3Call, ep: s3.PutBucketTagging) -> Response:
    b = svc.authorized_bucket(call, ep)
    tags = s3.parse_tagging_body(await call.xml_body(), limit=50)
    await svc.write_config(lambda tx: meta.update_bucket(tx, b.name, tags=tags))
    b.tags = tags
    return empty(204)


async def delete_bucket_tagging(svc: WalrusService, call: S3Call, ep: s3.DeleteBucketTagging) -> Response:
    b = svc.authorized_bucket(call, ep)
    await svc.write_config(lambda tx: meta.update_bucket(tx, b.name, tags=None))
    b.tags = None
    return empty(204)


# -- policy and public access block -------------------------------------------------------------------


def _rules(svc: WalrusService, bucket: str) -> BucketPolicy:
    """A copy of the bucket's access rules, to change and then store."""
    entry = svc.policies.get(bucket)
    return entry.copy() if entry is not None else BucketPolicy()


async def _store_rules(svc: WalrusService, bucket: str, entry: BucketPolicy) -> None:
    await svc.write_config(lambda tx: meta.save_policy(tx, bucket, entry.text, entry.public_access_block))
    svc.policies[bucket] = entry


async def put_bucket_policy(svc: WalrusService, call: S3Call, ep: s3.PutBucketPolicy) -> Response:
    b = svc.authorized_bucket(call, ep)
    body = await call.xml_body()
    policy = s3_policy.parse_policy(body, b.name)
    entry = _rules(svc, b.name)
    if (entry.public_access_block or {}).get("BlockPublicPolicy") and s3_policy.is_public(policy):
        raise S3Error("AccessDenied")
    entry.text, entry.policy = body.decode(), policy
    await _store_rules(svc, b.name, entry)
    log.info("put-bucket-policy bucket=%s statements=%d", b.name, len(policy.statements))
    return Response(204, [], b"")


async def get_bucket_policy(svc: WalrusService, call: S3Call, ep: s3.GetBucketPolicy) -> Response:
    b = svc.authorized_bucket(call, ep)
    entry = svc.policies.get(b.name)
    if entry is None or entry.text is None:
        raise S3Error("NoSuchBucketPolicy", "The bucket policy does not exist", BucketName=b.name)
    return Response(200, [("Content-Type", "application/json")], entry.text.encode())


async def delete_bucket_policy(svc: WalrusService, call: S3Call, ep: s3.DeleteBucketPolicy) -> Response:
    b = svc.authorized_bucket(call, ep)
    entry = _rules(svc, b.name)
    entry.text, entry.policy = None, None
    await _store_rules(svc, b.name, entry)
    return Response(204, [], b"")


async def get_bucket_policy_status(
    svc: WalrusService, call: S3Call, ep: s3.GetBucketPolicyStatus
) -> Response:
    b = svc.authorized_bucket(call, ep)
    entry = svc.policies.get(b.name)
    public = entry is not None and entry.policy is not None and s3_policy.is_public(entry.policy)
    # The conformance suite also counts a bucket ACL granting to everyone / all authenticated users as public.
    public = public or any(
        g[1] == "Group" and g[2] in (s3.ALL_USERS, s3.AUTHENTICATED_USERS) for g in b.acl.get("grants", [])
    )
    return Response(200, [("Content-Type", "application/xml")], s3_policy.render_policy_status(public))


async def put_public_access_block(svc: WalrusService, call: S3Call, ep: s3.PutPublicAccessBlock) -> Response:
    b = svc.authorized_bucket(call, ep)
    conf = s3_policy.parse_public_access_block(await call.xml_body())
    entry = _rules(svc, b.name)
    entry.public_access_block = conf
    await _store_rules(svc, b.name, entry)
    return Response(200, [], b"")


async def get_public_access_block(svc: WalrusService, call: S3Call, ep: s3.GetPublicAccessBlock) -> Response:
    b = svc.authorized_bucket(call, ep)
    entry = svc.policies.get(b.name)
    if entry is None or entry.public_access_block is None:
        # As S3 answers for a bucket that has none (never put, or deleted); not the all-false defaults.
        raise S3Error(
            "NoSuchPublicAccessBlockConfiguration",
            "The public access block configuration was not found",
            404,
            BucketName=b.name,
        )
    conf = entry.public_access_block
    return Response(200, [("Content-Type", "application/xml")], s3_policy.render_public_access_block(conf))


async def delete_public_access_block(
    svc: WalrusService, call: S3Call, ep: s3.DeletePublicAccessBlock
) -> Response:
    b = svc.authorized_bucket(call, ep)
    entry = _rules(svc, b.name)
    entry.public_access_block = None
    await _store_rules(svc, b.name, entry)
    return Response(204, [], b"")


# -- CORS rules -----------------------------------------------------------------------------------------


async def put_bucket_cors(svc: WalrusService, call: S3Call, ep: s3.PutBucketCors) -> Response:
    b = svc.authorized_bucket(call, ep)
    rules = s3_cors.parse_cors_body(await call.xml_body())
    await svc.write_config(lambda tx: meta.save_cors(tx, b.name, rules))
    svc.cors_rules[b.name] = rules
    return Response(200, [], b"")


async def get_bucket_cors(svc: WalrusService, call: S3Call, ep: s3.GetBucketCors) -> Response:
    b = svc.authorized_bucket(call, ep)
    rules = svc.cors_rules.get(b.name)
    if rules is None:
        raise S3Error(
            "NoSuchCORSConfiguration", "The CORS configuration does not exist", 404, BucketName=b.name
        )
    return Response(200, [("Content-Type", "application/xml")], s3_cors.render_cors(rules))


async def delete_bucket_cors(svc: WalrusService, call: S3Call, ep: s3.DeleteBucketCors) -> Response:
    b = svc.authorized_bucket(call, ep)
    await svc.write_config(lambda tx: meta.save_cors(tx, b.name, None))
    svc.cors_rules.pop(b.name, None)
    return Response(204, [], b"")
