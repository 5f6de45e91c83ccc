"""GetObjectAttributes: an object version's ETag, checksum, parts (with each part's checksum), storage class
and size, without its bytes."""

from __future__ import annotations

from euca.core.http import Response
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import encryption, meta, ownership
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.multipart import PART_CHECKSUMS
from euca.roles.walrus.objects import may_learn_missing
from euca.roles.walrus.responses import xml
from euca.roles.walrus.service import WalrusService


async def get_object_attributes(svc: WalrusService, call: S3Call, ep: s3.GetObjectAttributes) -> Response:
    b = svc.bucket(ep.bucket)
    o = await svc.store.read(lambda tx: meta.get_object(tx, b.name, ep.key, ep.version_id))
    if (o is None or o.delete_marker) and not await may_learn_missing(svc, call, b, ep.key):
        raise S3Error("AccessDenied")
    o = svc.live(o, b.name, ep.key, ep.version_id)
    svc.permit(call, ownership.object_acl(svc, b, o), "READ")
    # An SSE-C version answers only to its key, as for a HEAD (S3 asks GetObjectAttributes for it too).
    customer = encryption.customer_key(call)
    if customer is not None or encryption.SSE_KEY in o.headers:
        encryption.object_key(svc.cloud_key, o, customer)
    parts = None
    if o.parts is not None and "-" in o.etag:
        checksums = o.headers.get(PART_CHECKSUMS) or [None] * len(o.parts)
        parts = [
            (i + 1, size, checksums[i] if i < len(checksums) else None) for i, size in enumerate(o.parts)
        ]
    attrs = s3.bucket_settings.ObjectAttributes(
        etag=o.etag,
        size=o.size,
        checksum_algorithm=o.checksum_algorithm,
        checksum=o.checksum,
        checksum_type=o.checksum_type,
        parts=parts,
        wanted=ep.attributes,
    )
    headers = [s3.last_modified_header(o.last_modified), *s3.version_id_headers(b.versioning, o.version_id)]
    return xml(
        s3.bucket_settings.render_object_attributes(attrs, ep.max_parts, ep.part_number_marker),
        headers=headers,
    )
