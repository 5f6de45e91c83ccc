"""Handlers of the service and of buckets themselves: list, create, head, delete, location."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from euca.core.http import Response
from euca.core.store import Tx
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import meta
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.meta import BucketRow
from euca.roles.walrus.ownership import grants_beyond_owner
from euca.roles.walrus.responses import empty, xml
from euca.roles.walrus.service import WalrusService

log = logging.getLogger("euca.walrus")


async def list_buckets(svc: WalrusService, call: S3Call, ep: s3.ListBuckets) -> Response:
    if call.principal is None:
        # Anonymous owns no buckets: an empty list, as Ceph RGW answers (s3-tests expects it).
        return xml(s3.render_list_buckets(s3.Owner("anonymous", ""), []))
    p = svc.authenticated(call)
    after = _bucket_after(ep.continuation_token) if ep.continuation_token else None
    mine = sorted(
        (
            b
            for b in svc.buckets.values()
            if b.owner_id == p.canonical_id
            and (ep.prefix is None or b.name.startswith(ep.prefix))
            and (after is None or b.name > after)
            and (ep.bucket_region is None or (b.location or svc.region) == ep.bucket_region)
        ),
        key=lambda b: b.name,
    )
    token = None
    if ep.max_buckets is not None and len(mine) > ep.max_buckets:
        mine = mine[: ep.max_buckets]
        token = _token_after(mine[-1].name)
    entries = [s3.BucketEntry(b.name, b.created, b.location or svc.region) for b in mine]
    owner = s3.Owner(p.canonical_id, p.account_name)
    return xml(s3.render_list_buckets(owner, entries, token, ep.prefix))


# A continuation token is the last name listed, encoded (opaque to clients, as S3's are).
def _token_after(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _bucket_after(token: str) -> str:
    try:
        name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if _token_after(name) == token:
            return name
    except (ValueError, UnicodeDecodeError):
        pass
    raise S3Error(
        "InvalidArgument",
        "The continuation token provided is incorrect",
        ArgumentName="continuation-token",
        ArgumentValue=token,
    )


async def create_bucket(svc: WalrusService, call: S3Call, ep: s3.CreateBucket) -> Response:
    p = svc.authenticated(call)
    if not s3.valid_bucket_name(ep.bucket):
        raise S3Error("InvalidBucketName", BucketName=ep.bucket)
    location = s3.parse_create_bucket_body(await call.xml_body()) or ""
    existing = svc.buckets.get(ep.bucket)
    if existing is not None:
        if existing.owner_id != p.canonical_id:
            raise S3Error("BucketAlreadyExists", BucketName=ep.bucket)
        if (location or svc.region) != (existing.location or svc.region):
            raise S3Error("BucketAlreadyOwnedByYou", BucketName=ep.bucket)
        # S3's default region answers 200 to its owner re-creating a bucket where it is, and resets its ACL
        # (to the one this request asks for: private without one); nothing else changes.
        acl = await svc.acl_for(ep.acl, (p.canonical_id, p.account_name))
        await svc.write_config(lambda tx: meta.update_bucket(tx, existing.name, acl=acl))
        existing.acl = acl
        log.info("create-bucket again bucket=%s owner=%s: acl reset", existing.name, p.account_name)
        return empty(200, [("Location", f"/{existing.name}")])
    acl = await svc.acl_for(ep.acl, (p.canonical_id, p.account_name))
    if ep.object_ownership == "BucketOwnerEnforced" and grants_beyond_owner(acl, p.canonical_id):
        raise S3Error("InvalidBucketAclWithObjectOwnership")
    row = BucketRow(
        name=ep.bucket,
        owner_id=p.canonical_id,
        owner_name=p.account_name,
        created=time.time(),
        location=location,
        versioning="Enabled" if ep.object_lock else "",  # object lock needs versioning, and keeps it on
        acl=acl,
        tags=None,
    )
    settings: dict[str, Any] = {}
    if ep.object_ownership is not None:
        settings["ownership"] = ep.object_ownership
    if ep.object_lock:
        settings["object_lock"] = {}

    def insert(tx: Tx) -> BucketRow | None:
        clash = meta.insert_bucket(tx, row)
        if clash is None:
            for name, value in settings.items():
                meta.save_setting(tx, row.name, name, value)
        return clash

    clash = await svc.write_config(insert)
    if clash is not None:
        code = "BucketAlreadyOwnedByYou" if clash.owner_id == p.canonical_id else "BucketAlreadyExists"
        raise S3Error(code, BucketName=ep.bucket)
    svc.buckets[row.name] = row
    if settings:
        svc.settings[row.name] = settings
    log.info("create-bucket bucket=%s owner=%s location=%s", row.name, p.account_name, location or "-")
    return empty(200, [("Location", f"/{row.name}")])


async def head_bucket(svc: WalrusService, call: S3Call, ep: s3.HeadBucket) -> Response:
    b = svc.authorized_bucket(call, ep)
    return empty(200, [("x-amz-bucket-region", b.location or svc.region)])


async def delete_bucket(svc: WalrusService, call: S3Call, ep: s3.DeleteBucket) -> Response:
    svc.authorized_bucket(call, ep)
    # The bucket's policy, public access block and CORS rules go with it, in the same transaction.
    files = await svc.write(lambda tx: meta.delete_bucket(tx, ep.bucket), ep.bucket, None, config=True)
    svc.buckets.pop(ep.bucket, None)
    svc.policies.pop(ep.bucket, None)
    svc.cors_rules.pop(ep.bucket, None)
    svc.settings.pop(ep.bucket, None)
    svc.config_changed()
    await svc.storage.remove(files)
    log.info("delete-bucket bucket=%s", ep.bucket)
    return empty(204)


async def get_bucket_location(svc: WalrusService, call: S3Call, ep: s3.GetBucketLocation) -> Response:
    b = svc.authorized_bucket(call, ep)
    return xml(s3.render_location(b.location))
