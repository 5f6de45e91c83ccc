"""Handlers of objects: PUT, GET/HEAD, DELETE (one or many), copy, and an object's ACL and tags."""

from __future__ import annotations

import logging
import time

from euca.core.http import FileBody, FileSegments, Response
from euca.core.store import Tx
from euca.protocol import s3
from euca.protocol.s3 import S3Error, sse_c
from euca.roles.walrus import acl as acls
from euca.roles.walrus import encryption, meta, object_lock, ownership
from euca.roles.walrus.access import (
    ACL_ONLY,
    check_expected_owner,
    decide_copy_source,
    decide_each_delete,
    decide_listing_of,
    refuse_public_acl,
)
from euca.roles.walrus.authorize import refused_by_identity
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.encrypted_io import copy_plain, open_plain
from euca.roles.walrus.encryption import SSE_KEY
from euca.roles.walrus.meta import BucketRow, ObjectRow
from euca.roles.walrus.responses import empty, xml
from euca.roles.walrus.service import WalrusService, valid_version_id
from euca.roles.walrus.storage import Storage, Written
from euca.roles.walrus.write_extras import expiration_headers, sse_headers, stored_extras

log = logging.getLogger("euca.walrus")

# -- PUT ----------------------------------------------------------------------------------------------------


async def put_object(svc: WalrusService, call: S3Call, ep: s3.PutObject) -> Response:
    b = svc.authorized_bucket(call, ep)
    owner, acl_request = svc.owner_for(call, b), ep.acl
    customer = encryption.customer_key(call)
    extras: dict[str, object] = {}
    sealing = None
    if b.name in svc.settings or ep.lock or ep.sse or customer:  # ownership, object lock, encryption
        sse_c.refuse_with_sse(call.request.headers, customer)
        owner, acl_request = ownership.writer(svc, b, owner, acl_request)
        extras = stored_extras(svc, b, ep.lock, ep.sse)
        sealing = encryption.sealing_for_write(svc.cloud_key, extras, customer)
    await svc.check_write_conditions(b.name, ep.key, ep.conditions)
    acl = await svc.acl_for(acl_request, owner, (b.owner_id, b.owner_name))
    piece = sealing.piece() if sealing is not None else None
    written = await svc.receive(
        call,
        ep.checksum,
        ep.checksum.algorithm,
        ep.content_length,
        s3.MAX_PUT_SIZE,
        inline=True,
        cipher=piece,
    )
    if sealing is not None and piece is not None:
        extras[encryption.SSE_KEY] = encryption.sealed_record(sealing, [piece.nonce])
    row = await store_object(
        svc, b, ep.key, written, owner, ep.headers, ep.checksum.algorithm, acl, ep.tagging, extras
    )
    headers = [s3.etag_header(row.etag), *written_version_headers(b, row.version_id)]
    if row.checksum:
        headers += s3.checksum_headers(row.checksum_algorithm, row.checksum)
    if extras or b.name in svc.settings:
        headers += sse_headers(row.headers) + expiration_headers(svc, b, row)
    return empty(200, headers)


def written_version_headers(b: BucketRow, version_id: str) -> list[tuple[str, str]]:
    """The x-amz-version-id of a write's answer (PutObject, CopyObject, CompleteMultipartUpload): none for the
    null version, which is what a write makes in a versioning-suspended bucket, as S3 answers."""
    return [] if version_id == "null" else s3.version_id_headers(b.versioning, version_id)


async def store_object(
    svc: WalrusService,
    b: BucketRow,
    key: str,
    written: Written,
    owner: tuple[str, str],
    headers: s3.ObjectHeaders,
    algorithm: str | None,
    acl: acls.Acl,
    tags: dict[str, str] | None,
    extras: dict[str, object] | None = None,
) -> ObjectRow:
    """Make a written file the object `key` (PutObject and POST Object); the file is removed on failure.
    `extras`: stored beside the headers (object lock fields, server-side encryption)."""
    checksum = written.checksum.b64() if written.checksum else None
    stored = headers.to_dict()
    if extras:
        stored.update(extras)
    row = ObjectRow(
        key=key,
        version_id="",
        size=written.size,
        etag=written.md5,
        last_modified=time.time(),
        storage_id=written.storage_id,
        owner_id=owner[0],
        owner_name=owner[1],
        headers=stored,
        checksum_algorithm=algorithm,
        checksum_type="FULL_OBJECT" if checksum else None,
        checksum=checksum,
        parts=None,
        acl=acl,
        tags=tags or None,
        data=written.data,
    )
    removed = await svc.commit(lambda tx: meta.put_object(tx, b.name, row), written.files, b.name, key)
    await svc.storage.remove(removed)
    log.info(
        "put bucket=%s key=%s size=%d etag=%s version=%s", b.name, key, row.size, row.etag, row.version_id
    )
    return row


# -- GET and HEAD -------------------------------------------------------------------------------------------


def object_headers(
    svc: WalrusService, b: BucketRow, o: ObjectRow, checksum_mode: bool
) -> list[tuple[str, str]]:
    """The response headers of a GET or HEAD of `o` (before any range)."""
    rendered = o.rendered
    if rendered is None:
        stored = s3.ObjectHeaders.from_dict(o.headers)
        rendered = s3.stored_object_headers(o.etag, o.last_modified, stored, len(o.tags) if o.tags else 0)
        rendered += sse_headers(o.headers) + object_lock.lock_response_headers(o.headers)
        o.rendered = rendered  # a cached row serves many GETs
    headers = [*rendered, *s3.version_id_headers(b.versioning, o.version_id)]
    if b.name in svc.settings:
        headers += expiration_headers(svc, b, o)
    if checksum_mode:
        headers += s3.checksum_headers(o.checksum_algorithm, o.checksum, o.checksum_type)
    return headers


async def get_object(svc: WalrusService, call: S3Call, ep: s3.GetObject | s3.HeadObject) -> Response:
    """GET and HEAD."""
    for _ in range(3):
        response = await _get_object(svc, call, ep)
        if response is not None:
            return response
    raise S3Error("InternalError", "the object kept changing while it was being read")


async def _get_object(svc: WalrusService, call: S3Call, ep: s3.GetObject | s3.HeadObject) -> Response | None:
    """GET or HEAD; None when the object's files went away under us (it was just replaced): read again."""
    # GetObject and HeadObject require READ on the object (their `permission`), checked once it is read: the
    # hottest path spells it out rather than going through authorized_bucket.
    b = svc.bucket(ep.bucket)
    is_head = isinstance(ep, s3.HeadObject)
    o = svc.objects.get(b.name, ep.key) if ep.version_id is None else None
    if o is None:
        generation = svc.objects.generation
        o = await svc.store.read(
            lambda tx: meta.get_object(tx, b.name, ep.key, ep.version_id, with_data=True)
        )
        if o is not None and ep.version_id is None:
            svc.objects.fill(b.name, ep.key, o, generation)
    if (o is None or o.delete_marker) and not await may_learn_missing(svc, call, b, ep.key):
        raise S3Error("AccessDenied")
    o = svc.live(o, b.name, ep.key, ep.version_id)
    svc.permit(call, o.acl if b.name not in svc.settings else ownership.object_acl(svc, b, o), "READ")
    if ep.conditions:
        try:
            s3.evaluate_conditions(ep.conditions, o.etag, o.last_modified)
        except S3Error as e:
            if e.code == "NotModified":
                e.headers.append(("Last-Modified", s3.http_date(o.last_modified)))
            raise
    # The data key of an encrypted version (SSE-C: the request's key must be the one it was stored with).
    customer = encryption.customer_key(call)
    sealed = encryption.object_key(svc.cloud_key, o, customer) if customer or SSE_KEY in o.headers else None
    headers = object_headers(svc, b, o, ep.checksum_mode)
    status, first, length = 200, 0, o.size
    if ep.part_number is not None or ep.range is not None:  # the whole object (most GETs) needs no span
        span = s3.select_span(o.size, o.parts, ep.part_number, ep.range)
        status, first, length = span.status, span.first, span.length
        headers += span.headers
        if status == 206 and ep.checksum_mode:
            headers = s3.without_checksum_headers(headers)
    if ep.overrides:
        headers = s3.apply_overrides(headers, ep.overrides)
    if is_head:
        return Response(status, headers, b"", head_length=length)
    if sealed is not None:
        key, nonces = sealed
        plain = await open_plain(svc.storage, encryption.pieces(o, first, length, nonces), key)
        if plain is None:
            svc.objects.forget(b.name, ep.key)
            return None
        return Response(status, [*headers, ("Content-Length", str(length))], plain)
    if o.data is not None:
        data = o.data if first == 0 and length == len(o.data) else o.data[first : first + length]
        return Response(status, headers, data)
    # Only the files the range covers are opened (a path lookup in a warm directory: cheaper here than a
    # thread hop). Once open, a concurrent overwrite cannot take them away; one removed before (the
    # object was just replaced) sends us back to read the new version.
    ranges = svc.sources(o, first, length)
    storage = svc.storage
    if not isinstance(storage, Storage):  # bytes in a backend cluster: streamed from it, piece by piece
        stream = await storage.open_stream([(str(source), offset, n) for source, offset, n in ranges])
        if stream is None:
            svc.objects.forget(b.name, ep.key)
            return None
        return Response(status, [*headers, ("Content-Length", str(length))], stream)
    fds = storage.open_all([str(source) for source, _, _ in ranges])
    if fds is None:
        svc.objects.forget(b.name, ep.key)
        return None
    pieces = [FileBody(fd, offset, n) for fd, (_, offset, n) in zip(fds, ranges, strict=True)]
    if status == 206 and pieces[0].offset:
        storage.advise_range(pieces[0].fd, pieces[0].offset, pieces[0].length)
    if len(pieces) == 1:
        return Response(status, headers, pieces[0])
    return Response(status, headers, FileSegments(pieces))


async def may_learn_missing(svc: WalrusService, call: S3Call, b: BucketRow, key: str) -> bool:
    """Whether the caller may learn that `key` has no object (none, or a delete marker is its current version):
    S3 answers 404 to a caller who may list the bucket at that prefix (s3:ListBucket with s3:prefix the key,
    or READ on the bucket's ACL), 403 to others, whatever they may do with objects that exist."""
    rules = svc.policies.get(b.name)
    access = ACL_ONLY if rules is None else await decide_listing_of(svc, call, b.name, rules, key)
    return acls.allowed(b.acl, call.principal, "READ", access)


# -- DELETE -------------------------------------------------------------------------------------------------


async def delete_object(svc: WalrusService, call: S3Call, ep: s3.DeleteObject) -> Response:
    b = svc.authorized_bucket(call, ep)
    owner = svc.owner_for(call, b)
    if ep.version_id is not None and ep.version_id != "null" and not valid_version_id(ep.version_id):
        raise S3Error(
            "InvalidArgument",
            "Invalid version id specified",
            ArgumentName="versionId",
            ArgumentValue=ep.version_id,
        )
    if ep.conditions.if_match is not None:
        o = await svc.store.read(lambda tx: meta.get_object(tx, b.name, ep.key, ep.version_id))
        if o is None or o.delete_marker:
            raise S3Error("NoSuchKey", Key=ep.key)
        s3.evaluate_conditions(ep.conditions, o.etag, o.last_modified, mode="write")
    locked = ep.version_id is not None and object_lock.lock_enabled(svc, b.name)
    bypass = locked and ep.bypass_governance and await object_lock.may_bypass(svc, call, b, ep.key)

    def work(tx: Tx) -> meta.Deleted:
        now = time.time()
        if locked:
            o = meta.get_object(tx, b.name, ep.key, ep.version_id)
            if o is not None:
                object_lock.check_version_delete(o.headers, bypass, now)
        return meta.delete_object(tx, b.name, ep.key, ep.version_id, owner[0], owner[1], now)

    d = await svc.write(work, b.name, ep.key)
    await svc.storage.remove(d.removed)
    log.info("delete bucket=%s key=%s version=%s marker=%s", b.name, ep.key, d.version_id, d.delete_marker)
    return empty(204, s3.delete_headers(d.version_id, d.delete_marker))


async def delete_objects(svc: WalrusService, call: S3Call, ep: s3.DeleteObjects) -> Response:
    rules = svc.policies.get(ep.bucket)
    # A bucket with a policy judges each key as its own DeleteObject (below): a Deny on bucket/* or on a key
    # holds here too, and an Allow on them grants. Without one, the bucket's ACL decides for the request.
    b = svc.authorized_bucket(call, ep) if rules is None else svc.bucket(ep.bucket)
    items, quiet = s3.parse_delete_objects_body(await call.xml_body())
    owner = svc.owner_for(call, b)
    now = time.time()
    locked = object_lock.lock_enabled(svc, b.name)
    # Which keys the caller may bypass GOVERNANCE retention on (s3:BypassGovernanceRetention, per key).
    bypassing: set[str] = set()
    if locked and ep.bypass_governance:
        for item in items:
            if item.key not in bypassing and await object_lock.may_bypass(svc, call, b, item.key):
                bypassing.add(item.key)
    refused: set[int] = set()
    if rules is not None:
        for index, item in enumerate(items):
            access = await decide_each_delete(svc, call, b.name, rules, item.key, item.version_id)
            if access is None or not acls.allowed(b.acl, call.principal, "WRITE", access):
                refused.add(index)
    refused |= await refused_by_identity(
        svc, call, b.name, items
    )  # the caller's identity policies (issue 12)

    def work(tx: Tx) -> tuple[list[s3.DeleteResult], list[str]]:
        results, removed = [], []
        for index, item in enumerate(items):
            if index in refused:
                results.append(s3.DeleteResult(item.key, item.version_id, error=S3Error("AccessDenied")))
                continue
            if (
                item.version_id is not None
                and item.version_id != "null"
                and not valid_version_id(item.version_id)
            ):
                results.append(s3.DeleteResult(item.key, item.version_id, error=S3Error("NoSuchVersion")))
                continue
            if locked and item.version_id is not None:
                o = meta.get_object(tx, b.name, item.key, item.version_id)
                if o is not None:
                    try:
                        object_lock.check_version_delete(o.headers, item.key in bypassing, now)
                    except S3Error as e:
                        results.append(s3.DeleteResult(item.key, item.version_id, error=e))
                        continue
            d = meta.delete_object(tx, b.name, item.key, item.version_id, owner[0], owner[1], now)
            removed += d.removed
            if item.version_id is not None:
                marker_version = item.version_id if d.delete_marker else None
                results.append(s3.DeleteResult(item.key, item.version_id, d.delete_marker, marker_version))
            else:
                marker_version = d.version_id if d.delete_marker else None
                results.append(s3.DeleteResult(item.key, None, d.delete_marker, marker_version))
        return results, removed

    results, removed = await svc.write(work, b.name, None)
    await svc.storage.remove(removed)
    log.info("delete-objects bucket=%s count=%d", b.name, len(items))
    return xml(s3.render_delete_result(results, quiet))


# -- copy ---------------------------------------------------------------------------------------------------


async def copy_source(svc: WalrusService, call: S3Call, source: s3.CopySource) -> tuple[BucketRow, ObjectRow]:
    """The live version a copy reads (with an inline object's bytes), its x-amz-copy-source-if-* conditions
    evaluated. The caller must be able to GET it: READ on the version's ACL, under the source bucket's own
    policy and public access block (never the destination's decision, call.access, which only says the
    caller may write there)."""
    sb = svc.bucket(source.bucket)
    await check_expected_owner(svc, call, sb.name, "x-amz-source-expected-bucket-owner")
    access = await decide_copy_source(svc, call, source)
    o = await svc.store.read(
        lambda tx: meta.get_object(tx, sb.name, source.key, source.version_id, with_data=True)
    )
    if (o is None or o.delete_marker) and not await may_learn_missing(svc, call, sb, source.key):
        raise S3Error("AccessDenied")
    if o is not None and o.delete_marker and source.version_id is not None:
        raise S3Error(
            "InvalidRequest",
            "The source of a copy request may not specifically refer to a delete marker by version id.",
        )
    o = svc.live(o, sb.name, source.key, source.version_id)
    if not acls.allowed(ownership.object_acl(svc, sb, o), call.principal, "READ", access):
        raise S3Error("AccessDenied")
    if source.conditions:
        s3.evaluate_conditions(source.conditions, o.etag, o.last_modified, mode="copy")
    return sb, o


async def copy_object(svc: WalrusService, call: S3Call, ep: s3.CopyObject) -> Response:
    b = svc.authorized_bucket(call, ep)
    owner, acl_request = svc.owner_for(call, b), ep.acl
    customer = encryption.customer_key(call)
    extras: dict[str, object] = {}
    sealing = None
    if b.name in svc.settings or ep.lock or ep.sse or customer:
        sse_c.refuse_with_sse(call.request.headers, customer)
        owner, acl_request = ownership.writer(svc, b, owner, acl_request)
        extras = stored_extras(svc, b, ep.lock, ep.sse)
        sealing = encryption.sealing_for_write(svc.cloud_key, extras, customer)
    sb, src = await copy_source(svc, call, ep.source)
    source_key = encryption.object_key(svc.cloud_key, src, encryption.source_customer_key(call))
    same = sb.name == b.name and src.key == ep.key
    if (
        same
        and ep.metadata_directive == "COPY"
        and ep.source.version_id in (None, src.version_id)
        and ep.tagging_directive == "COPY"
        and not ep.checksum_algorithm
        and not ep.sse
        and customer is None
    ):
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to "
            "itself without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.",
        )
    # The copy has its own lock and encryption (this request's, or the destination bucket's defaults).
    headers = (
        object_lock.without_lock(src.headers) if ep.metadata_directive == "COPY" else ep.headers.to_dict()
    )
    headers = {
        k: v for k, v in headers.items() if k not in (*encryption.STORED, "upload_id", "part_checksums")
    }
    headers.update(extras)
    tags = src.tags if ep.tagging_directive == "COPY" else ep.tagging
    algorithm = ep.checksum_algorithm or src.checksum_algorithm
    multipart_src = "-" in src.etag
    reuse_checksum = algorithm == src.checksum_algorithm and src.checksum_type == "FULL_OBJECT"
    need_hash = multipart_src or (algorithm is not None and not reuse_checksum)
    if source_key is not None or sealing is not None:
        # Encrypted on either side: the plaintext streams through, decrypted and (re-)encrypted, hashed.
        need_hash, piece = True, sealing.piece() if sealing is not None else None
        key, nonces = source_key or (None, None)
        written = await copy_plain(
            svc.storage, encryption.pieces(src, 0, src.size, nonces), key, piece, algorithm, inline=True
        )
        if sealing is not None and piece is not None:
            headers[encryption.SSE_KEY] = encryption.sealed_record(sealing, [piece.nonce])
    else:
        written = await svc.storage.copy(
            svc.sources(src, 0, src.size), algorithm if need_hash else None, hash_md5=need_hash, inline=True
        )
    etag = written.md5 if need_hash else src.etag
    if written.checksum is not None:
        checksum: str | None = written.checksum.b64()
    else:
        checksum = src.checksum if reuse_checksum else None
    acl = await svc.acl_for(acl_request, owner, (b.owner_id, b.owner_name))
    now = time.time()
    row = ObjectRow(
        key=ep.key,
        version_id="",
        size=written.size,
        etag=etag,
        last_modified=now,
        storage_id=written.storage_id,
        owner_id=owner[0],
        owner_name=owner[1],
        headers=headers,
        checksum_algorithm=algorithm if checksum else None,
        checksum_type="FULL_OBJECT" if checksum else None,
        checksum=checksum,
        parts=None,
        acl=acl,
        tags=tags,
        data=written.data,
    )
    removed = await svc.commit(lambda tx: meta.put_object(tx, b.name, row), written.files, b.name, ep.key)
    await svc.storage.remove(removed)
    log.info(
        "copy bucket=%s key=%s from=%s/%s size=%d etag=%s", b.name, ep.key, sb.name, src.key, row.size, etag
    )
    out = written_version_headers(b, row.version_id)
    out += s3.copy_source_version_headers(sb.versioning, src.version_id)
    out += sse_headers(row.headers)
    checks = {algorithm: checksum} if checksum and algorithm else {}
    return xml(s3.render_copy_result("CopyObjectResult", etag, now, checks), headers=out)


# -- an object's ACL and tags -------------------------------------------------------------------------------


async def get_object_acl(svc: WalrusService, call: S3Call, ep: s3.GetObjectAcl) -> Response:
    b = svc.authorized_bucket(call, ep)
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    acl = ownership.object_acl(svc, b, o)
    svc.permit(call, acl, ep.permission.name)
    return xml(
        s3.render_acl(acls.to_policy(acl or {})), headers=s3.version_id_headers(b.versioning, o.version_id)
    )


async def put_object_acl(svc: WalrusService, call: S3Call, ep: s3.PutObjectAcl) -> Response:
    b = svc.authorized_bucket(call, ep)
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    svc.permit(call, ownership.object_acl(svc, b, o), ep.permission.name)
    ownership.refuse_acl(svc, b.name, ep.acl, body_acl=not ep.acl)
    acl = await svc.acl_from_request(call, ep.acl, (o.owner_id, o.owner_name), (b.owner_id, b.owner_name))
    refuse_public_acl(svc, b.name, acl["grants"])
    await svc.write(
        lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, acl=acl), b.name, o.key
    )
    log.info("put-object-acl bucket=%s key=%s grants=%d", b.name, o.key, len(acl["grants"]))
    return empty(200, s3.version_id_headers(b.versioning, o.version_id))


async def get_object_tagging(svc: WalrusService, call: S3Call, ep: s3.GetObjectTagging) -> Response:
    b = svc.authorized_bucket(call, ep)
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    svc.permit(call, o.acl, ep.permission.name)
    tags = dict(sorted(o.tags.items())) if o.tags else {}  # S3 lists tags sorted by key
    return xml(s3.render_tagging(tags), headers=s3.version_id_headers(b.versioning, o.version_id))


async def put_object_tagging(svc: WalrusService, call: S3Call, ep: s3.PutObjectTagging) -> Response:
    b = svc.authorized_bucket(call, ep)
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    tags = s3.parse_tagging_body(await call.xml_body())
    await svc.write(
        lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, tags=tags), b.name, o.key
    )
    return empty(200, s3.version_id_headers(b.versioning, o.version_id))


async def delete_object_tagging(svc: WalrusService, call: S3Call, ep: s3.DeleteObjectTagging) -> Response:
    b = svc.authorized_bucket(call, ep)
    o = await svc.fetch(b.name, ep.key, ep.version_id)
    await svc.write(
        lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, tags=None), b.name, o.key
    )
    return empty(204, s3.version_id_headers(b.versioning, o.version_id))
