"""Handlers of a bucket's listings: objects (v1 and v2), object versions, multipart uploads."""

from __future__ import annotations

import base64

from euca.core.http import Response
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import meta
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.meta import ObjectRow
from euca.roles.walrus.responses import xml
from euca.roles.walrus.service import WalrusService


def _entry(o: ObjectRow) -> s3.ObjectEntry:
    return s3.ObjectEntry(
        o.key,
        o.last_modified,
        o.etag,
        o.size,
        s3.Owner(o.owner_id, o.owner_name),
        o.version_id,
        o.is_latest,
        o.delete_marker,
        o.checksum_algorithm,
        o.checksum_type,
    )


def _refuse_unordered_with_delimiter(call: S3Call, delimiter: str) -> None:
    # Ceph RGW's allow-unordered listing cannot roll up common prefixes; it refuses the combination.
    if delimiter and "allow-unordered=true" in call.request.query.split("&"):
        raise S3Error(
            "InvalidArgument",
            "allow-unordered cannot be used with a delimiter",
            ArgumentName="allow-unordered",
        )


async def list_objects(svc: WalrusService, call: S3Call, ep: s3.ListObjects) -> Response:
    svc.authorized_bucket(call, ep)
    _refuse_unordered_with_delimiter(call, ep.delimiter)
    raw = await svc.store.read(
        lambda tx: meta.list_objects(tx, ep.bucket, ep.prefix, ep.delimiter, ep.marker, ep.max_keys)
    )
    listing = s3.Listing([_entry(o) for o in raw.rows], raw.prefixes, raw.truncated, raw.last)
    return xml(s3.render_list_objects(ep, listing))


async def list_objects_v2(svc: WalrusService, call: S3Call, ep: s3.ListObjectsV2) -> Response:
    svc.authorized_bucket(call, ep)
    _refuse_unordered_with_delimiter(call, ep.delimiter)
    after = ep.start_after
    if ep.continuation_token is not None:
        try:
            after = base64.urlsafe_b64decode(ep.continuation_token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise S3Error(
                "InvalidArgument",
                "The continuation token provided is incorrect",
                ArgumentName="continuation-token",
            ) from None
    raw = await svc.store.read(
        lambda tx: meta.list_objects(tx, ep.bucket, ep.prefix, ep.delimiter, after, ep.max_keys)
    )
    listing = s3.Listing([_entry(o) for o in raw.rows], raw.prefixes, raw.truncated, raw.last)
    token = None
    if raw.truncated and raw.last is not None:
        token = base64.urlsafe_b64encode(raw.last.encode()).decode()
    return xml(s3.render_list_objects_v2(ep, listing, token))


async def list_object_versions(svc: WalrusService, call: S3Call, ep: s3.ListObjectVersions) -> Response:
    svc.authorized_bucket(call, ep)
    raw = await svc.store.read(
        lambda tx: meta.list_versions(
            tx, ep.bucket, ep.prefix, ep.delimiter, ep.key_marker, ep.version_id_marker, ep.max_keys
        )
    )
    listing = s3.Listing(
        [_entry(o) for o in raw.rows], raw.prefixes, raw.truncated, raw.last, raw.last_version
    )
    return xml(s3.render_list_versions(ep, listing))


async def list_multipart_uploads(svc: WalrusService, call: S3Call, ep: s3.ListMultipartUploads) -> Response:
    svc.authorized_bucket(call, ep)
    uploads, prefixes, truncated = await svc.store.read(
        lambda tx: meta.list_uploads(
            tx, ep.bucket, ep.prefix, ep.delimiter, ep.key_marker, ep.upload_id_marker, ep.max_uploads
        )
    )
    entries = [
        s3.UploadEntry(
            u.key, u.upload_id, u.initiated, s3.Owner(u.owner_id, u.owner_name), u.checksum_algorithm
        )
        for u in uploads
    ]
    return xml(s3.render_list_uploads(ep, entries, prefixes, truncated))
