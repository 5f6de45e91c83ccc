"""Handlers of the bucket settings that came with issue 11: lifecycle configuration, ownership controls,
object lock configuration, server access logging, default encryption. Each is one JSON value per bucket
(`WalrusService.setting` / `save_setting`); the rules that act on objects are in `ownership.py`,
`object_lock.py` and `lifecycle.py`."""

from __future__ import annotations

import logging

from euca.core.http import Response
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.ownership import grants_beyond_owner
from euca.roles.walrus.responses import empty, xml
from euca.roles.walrus.service import WalrusService

log = logging.getLogger("euca.walrus")

# -- lifecycle ------------------------------------------------------------------------------------------------


async def put_bucket_lifecycle(
    svc: WalrusService, call: S3Call, ep: s3.PutBucketLifecycleConfiguration
) -> Response:
    b = svc.authorized_bucket(call, ep)
    rules = s3.lifecycle.parse_lifecycle_body(await call.xml_body())
    await svc.save_setting(b.name, "lifecycle", rules)
    log.info("put-bucket-lifecycle bucket=%s rules=%d", b.name, len(rules))
    return empty(200)


async def get_bucket_lifecycle(
    svc: WalrusService, call: S3Call, ep: s3.GetBucketLifecycleConfiguration
) -> Response:
    b = svc.authorized_bucket(call, ep)
    rules = svc.setting(b.name, "lifecycle")
    if not rules:
        raise S3Error("NoSuchLifecycleConfiguration", BucketName=b.name)
    return xml(s3.lifecycle.render_lifecycle(rules))


async def delete_bucket_lifecycle(svc: WalrusService, call: S3Call, ep: s3.DeleteBucketLifecycle) -> Response:
    b = svc.authorized_bucket(call, ep)
    await svc.save_setting(b.name, "lifecycle", None)
    return empty(204)


# -- ownership controls ---------------------------------------------------------------------------------------


async def put_ownership_controls(
    svc: WalrusService, call: S3Call, ep: s3.PutBucketOwnershipControls
) -> Response:
    b = svc.authorized_bucket(call, ep)
    value = s3.bucket_settings.parse_ownership_controls(await call.xml_body())
    if value == "BucketOwnerEnforced" and grants_beyond_owner(b.acl, b.owner_id):
        raise S3Error("InvalidBucketAclWithObjectOwnership")
    await svc.save_setting(b.name, "ownership", value)
    log.info("put-bucket-ownership-controls bucket=%s ownership=%s", b.name, value)
    return empty(200)


async def get_ownership_controls(
    svc: WalrusService, call: S3Call, ep: s3.GetBucketOwnershipControls
) -> Response:
    b = svc.authorized_bucket(call, ep)
    value = svc.setting(b.name, "ownership")
    if value is None:
        raise S3Error("OwnershipControlsNotFoundError", BucketName=b.name)
    return xml(s3.bucket_settings.render_ownership_controls(value))


async def delete_ownership_controls(
    svc: WalrusService, call: S3Call, ep: s3.DeleteBucketOwnershipControls
) -> Response:
    b = svc.authorized_bucket(call, ep)
    await svc.save_setting(b.name, "ownership", None)
    return empty(204)


# -- object lock configuration -------------------------------------------------------------------------------


async def put_object_lock_configuration(
    svc: WalrusService, call: S3Call, ep: s3.PutObjectLockConfiguration
) -> Response:
    b = svc.authorized_bucket(call, ep)
    conf = s3.object_lock.parse_lock_configuration(await call.xml_body())
    if svc.setting(b.name, "object_lock") is None and b.versioning != "Enabled":
        # S3 lets object lock be turned on for an existing bucket once its versioning is enabled.
        raise S3Error(
            "InvalidBucketState",
            "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
        )
    await svc.save_setting(b.name, "object_lock", conf.to_dict())
    log.info("put-object-lock-configuration bucket=%s mode=%s", b.name, conf.mode or "-")
    return empty(200)


async def get_object_lock_configuration(
    svc: WalrusService, call: S3Call, ep: s3.GetObjectLockConfiguration
) -> Response:
    b = svc.authorized_bucket(call, ep)
    value = svc.setting(b.name, "object_lock")
    if value is None:
        raise S3Error("ObjectLockConfigurationNotFoundError", BucketName=b.name)
    return xml(s3.object_lock.render_lock_configuration(s3.object_lock.LockConfiguration.from_dict(value)))


# -- server access logging ------------------------------------------------------------------------------------


async def put_bucket_logging(svc: WalrusService, call: S3Call, ep: s3.PutBucketLogging) -> Response:
    b = svc.authorized_bucket(call, ep)
    conf = s3.bucket_settings.parse_logging(await call.xml_body())
    if conf is not None:
        target = svc.buckets.get(conf["bucket"])
        if target is None:
            raise S3Error("InvalidTargetBucketForLogging", TargetBucket=conf["bucket"])
        if target.owner_id != b.owner_id:
            raise S3Error(
                "InvalidTargetBucketForLogging",
                "The owner for the bucket to be logged and the target bucket must be the same.",
                TargetBucket=conf["bucket"],
            )
    await svc.save_setting(b.name, "logging", conf)
    return empty(200)


async def get_bucket_logging(svc: WalrusService, call: S3Call, ep: s3.GetBucketLogging) -> Response:
    b = svc.authorized_bucket(call, ep)
    return xml(s3.bucket_settings.render_logging(svc.setting(b.name, "logging")))


# -- default encryption ---------------------------------------------------------------------------------------


async def put_bucket_encryption(svc: WalrusService, call: S3Call, ep: s3.PutBucketEncryption) -> Response:
    b = svc.authorized_bucket(call, ep)
    conf = s3.bucket_settings.parse_encryption(await call.xml_body())
    await svc.save_setting(b.name, "encryption", conf)
    return empty(200)


async def get_bucket_encryption(svc: WalrusService, call: S3Call, ep: s3.GetBucketEncryption) -> Response:
    b = svc.authorized_bucket(call, ep)
    conf = svc.setting(b.name, "encryption")
    if conf is None:
        raise S3Error("ServerSideEncryptionConfigurationNotFoundError", BucketName=b.name)
    return xml(s3.bucket_settings.render_encryption(conf))


async def delete_bucket_encryption(
    svc: WalrusService, call: S3Call, ep: s3.DeleteBucketEncryption
) -> Response:
    b = svc.authorized_bucket(call, ep)
    await svc.save_setting(b.name, "encryption", None)
    return empty(204)
