"""Handlers of multipart uploads: create, upload a part (or copy one), complete, abort, list the parts."""

from __future__ import annotations

import logging
import time
import uuid

from euca.core.http import Response
from euca.core.store import Tx
from euca.protocol import s3
from euca.protocol.s3 import S3Error, sse_c
from euca.roles.walrus import cipher, completion, encryption, meta, ownership
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.encrypted_io import PieceCipher, copy_plain
from euca.roles.walrus.meta import ObjectRow, PartRow, UploadRow
from euca.roles.walrus.objects import copy_source, written_version_headers
from euca.roles.walrus.responses import empty, xml
from euca.roles.walrus.service import WalrusService
from euca.roles.walrus.write_extras import sse_headers, stored_extras

log = logging.getLogger("euca.walrus")

# Kept in a multipart object's stored headers: the upload it was completed from, and its parts' checksums.
UPLOAD_ID, PART_CHECKSUMS = "upload_id", "part_checksums"


async def create_multipart_upload(svc: WalrusService, call: S3Call, ep: s3.CreateMultipartUpload) -> Response:
    b = svc.authorized_bucket(call, ep)
    owner, acl_request = svc.owner_for(call, b), ep.acl
    headers = ep.headers.to_dict()
    customer = encryption.customer_key(call)
    if b.name in svc.settings or ep.lock or ep.sse or customer:
        sse_c.refuse_with_sse(call.request.headers, customer)
        owner, acl_request = ownership.writer(svc, b, owner, acl_request)
        extras = stored_extras(svc, b, ep.lock, ep.sse)
        # One data key per upload (wrapped in its headers); each part is encrypted with its own nonce.
        sealing = encryption.sealing_for_write(svc.cloud_key, extras, customer)
        if sealing is not None:
            extras[encryption.SSE_KEY] = sealing.record
        headers.update(extras)
    if ep.checksum_type == "FULL_OBJECT" and ep.checksum_algorithm in ("SHA1", "SHA256"):
        raise S3Error(
            "InvalidRequest",
            "The FULL_OBJECT checksum type cannot be used with the "
            f"{ep.checksum_algorithm.lower()} checksum algorithm.",
        )
    ctype = ep.checksum_type
    if ep.checksum_algorithm and ctype is None:
        ctype = "FULL_OBJECT" if ep.checksum_algorithm == "CRC64NVME" else "COMPOSITE"
    acl = await svc.acl_for(acl_request, owner, (b.owner_id, b.owner_name))
    upload = UploadRow(
        upload_id=uuid.uuid4().hex,
        bucket=b.name,
        key=ep.key,
        initiated=time.time(),
        owner_id=owner[0],
        owner_name=owner[1],
        headers=headers,
        acl=acl,
        tags=ep.tagging or None,
        checksum_algorithm=ep.checksum_algorithm,
        checksum_type=ctype,
    )
    await svc.store.write(lambda tx: meta.create_upload(tx, upload))
    log.info("multipart-create bucket=%s key=%s upload=%s", b.name, ep.key, upload.upload_id)
    out = s3.upload_checksum_headers(ep.checksum_algorithm, ctype) + sse_headers(headers)
    return xml(s3.render_initiate_multipart(b.name, ep.key, upload.upload_id), headers=out)


async def upload_part(svc: WalrusService, call: S3Call, ep: s3.UploadPart) -> Response:
    b = svc.authorized_bucket(call, ep)
    upload = await svc.store.read(lambda tx: meta.get_upload(tx, b.name, ep.key, ep.upload_id))
    algorithm = upload.checksum_algorithm or ep.checksum.algorithm
    if (
        ep.checksum.algorithm
        and upload.checksum_algorithm
        and ep.checksum.algorithm != upload.checksum_algorithm
    ):
        raise S3Error(
            "InvalidRequest",
            f"Checksum Type mismatch occurred, expected checksum Type: "
            f"{upload.checksum_algorithm.lower()}, actual checksum Type: {ep.checksum.algorithm.lower()}",
        )
    piece = part_cipher(svc, call, upload)
    written = await svc.receive(
        call, ep.checksum, algorithm, ep.content_length, s3.MAX_PUT_SIZE, cipher=piece
    )
    checksum = written.checksum.b64() if written.checksum else None
    assert written.storage_id is not None  # parts are always files
    part = PartRow(
        part_number=ep.part_number,
        size=written.size,
        etag=written.md5,
        storage_id=written.storage_id,
        checksum=checksum,
        last_modified=time.time(),
        sse=cipher.b64(piece.nonce) if piece is not None else None,
    )
    removed = await svc.commit_part(
        lambda tx: meta.put_part(tx, b.name, ep.key, ep.upload_id, part), written.files
    )
    await svc.storage.remove(removed)
    log.info(
        "multipart-part bucket=%s key=%s upload=%s part=%d size=%d",
        b.name,
        ep.key,
        ep.upload_id,
        ep.part_number,
        written.size,
    )
    headers = [s3.etag_header(written.md5), *sse_headers(upload.headers)]
    if checksum and algorithm:
        headers += s3.checksum_headers(algorithm, checksum)
    return empty(200, headers)


async def upload_part_copy(svc: WalrusService, call: S3Call, ep: s3.UploadPartCopy) -> Response:
    b = svc.authorized_bucket(call, ep)
    upload = await svc.store.read(lambda tx: meta.get_upload(tx, b.name, ep.key, ep.upload_id))
    piece = part_cipher(svc, call, upload)
    _, src = await copy_source(svc, call, ep.source)
    source_key = encryption.object_key(svc.cloud_key, src, encryption.source_customer_key(call))
    rng = s3.parse_copy_range(ep.source_range, src.size)
    first, last = rng if rng is not None else (0, src.size - 1)
    length = max(0, last - first + 1)
    if source_key is not None or piece is not None:
        key, nonces = source_key or (None, None)
        written = await copy_plain(
            svc.storage, encryption.pieces(src, first, length, nonces), key, piece, upload.checksum_algorithm
        )
    else:
        written = await svc.storage.copy(svc.sources(src, first, length), upload.checksum_algorithm)
    assert written.storage_id is not None
    checksum = written.checksum.b64() if written.checksum else None
    now = time.time()
    part = PartRow(
        part_number=ep.part_number,
        size=written.size,
        etag=written.md5,
        storage_id=written.storage_id,
        checksum=checksum,
        last_modified=now,
        sse=cipher.b64(piece.nonce) if piece is not None else None,
    )
    removed = await svc.commit_part(
        lambda tx: meta.put_part(tx, b.name, ep.key, ep.upload_id, part), written.files
    )
    await svc.storage.remove(removed)
    checks = {upload.checksum_algorithm: checksum} if checksum and upload.checksum_algorithm else {}
    return xml(
        s3.render_copy_result("CopyPartResult", written.md5, now, checks), headers=sse_headers(upload.headers)
    )


async def complete_multipart_upload(
    svc: WalrusService, call: S3Call, ep: s3.CompleteMultipartUpload
) -> Response:
    """Rules (the parts listed, the write conditions) -> the object's ETag and checksum (pure) -> where its
    bytes are kept -> the commit that hands the parts' files from the upload to the object."""
    b = svc.authorized_bucket(call, ep)
    # An x-amz-checksum-* header of a completion is the whole object's checksum, checked below.
    requested = s3.parse_complete_body(await call.xml_body(document_checksum=False))

    def load(tx: Tx) -> tuple[UploadRow, list[PartRow]]:
        return meta.get_upload(tx, b.name, ep.key, ep.upload_id), meta.list_parts(tx, ep.upload_id)

    try:
        upload, stored = await svc.store.read(load)
    except S3Error as e:
        if e.code != "NoSuchUpload":
            raise
        return await _completed_before(svc, b, ep, e)
    algo = upload.checksum_algorithm
    chosen = completion.chosen_parts(requested, stored, ep.upload_id, algo)
    await svc.check_write_conditions(b.name, ep.key, ep.conditions)

    etag = completion.multipart_etag(chosen)
    checksum = completion.multipart_checksum(algo, upload.checksum_type, chosen)
    completion.check_final_checksum(s3.parse_checksum(call.request.headers), algo, checksum)
    sizes = [p.size for p in chosen]

    record = upload.headers.get(encryption.SSE_KEY)
    if record is not None:
        # Each part has its own nonce under the upload's key: the object keeps its parts as they are (a
        # concatenation would need them decrypted and encrypted again), whatever their number.
        if any(p.sse is None for p in chosen):
            raise S3Error("InternalError", "an encrypted upload has a part without its nonce")
        extra_headers: dict[str, object] = {encryption.SSE_KEY: {**record, "nonces": [p.sse for p in chosen]}}
    else:
        extra_headers = {}
    if record is not None or completion.kept_as_parts(chosen):
        # The object is kept as its part files (already synced when each part was acknowledged): nothing
        # is copied, and the commit below hands the files from the upload to the object.
        segments: list[str] | None = [p.storage_id for p in chosen]
        storage_id, files = None, []
    else:
        written = await svc.storage.copy([(p.storage_id, 0, p.size) for p in chosen], None, hash_md5=False)
        segments, storage_id, files = None, written.storage_id, written.files

    row = ObjectRow(
        key=ep.key,
        version_id="",
        size=sum(sizes),
        etag=etag,
        last_modified=time.time(),
        storage_id=storage_id,
        owner_id=upload.owner_id,
        owner_name=upload.owner_name,
        # The upload id and the parts' checksums stay with the object: a repeated completion is answered
        # from them, and GetObjectAttributes lists the parts' checksums.
        headers={
            **upload.headers,
            UPLOAD_ID: ep.upload_id,
            PART_CHECKSUMS: [p.checksum for p in chosen],
            **extra_headers,
        },
        checksum_algorithm=algo if checksum else None,
        checksum_type=upload.checksum_type if checksum else None,
        checksum=checksum,
        parts=sizes,
        acl=upload.acl,
        tags=upload.tags,
        segments=segments,
    )
    chosen_ids = {p.storage_id for p in chosen}

    def commit(tx: Tx) -> list[str]:
        meta.get_upload(tx, b.name, ep.key, ep.upload_id)
        now = {p.part_number: p.storage_id for p in meta.list_parts(tx, ep.upload_id)}
        if any(now.get(p.part_number) != p.storage_id for p in chosen):
            # A part was uploaded again while we validated: the files we checked are no longer its.
            raise S3Error("InvalidPart", UploadId=ep.upload_id)
        parts = [f for f in meta.finish_upload(tx, ep.upload_id) if segments is None or f not in chosen_ids]
        return meta.put_object(tx, b.name, row) + parts

    removed = await svc.commit(commit, files, b.name, ep.key)
    await svc.storage.remove(removed)
    log.info(
        "multipart-complete bucket=%s key=%s upload=%s parts=%d size=%d etag=%s",
        b.name,
        ep.key,
        ep.upload_id,
        len(chosen),
        row.size,
        etag,
    )
    location = f"/{b.name}/{ep.key}"
    checks = {algo: checksum} if checksum and algo else {}
    body = s3.render_complete_multipart(location, b.name, ep.key, etag, checks, upload.checksum_type)
    return xml(body, headers=written_version_headers(b, row.version_id) + sse_headers(row.headers))


def part_cipher(svc: WalrusService, call: S3Call, upload: UploadRow) -> PieceCipher | None:
    """How a new part of `upload` is encrypted (None: plaintext): under the upload's data key, opened with the
    cloud key or with the customer key this request must carry again (another key, or none, is refused as S3
    refuses it), with a nonce of its own."""
    customer = encryption.customer_key(call)
    record = upload.headers.get(encryption.SSE_KEY)
    if record is None:
        if customer is not None:
            raise S3Error("InvalidRequest", encryption.NOT_APPLICABLE)
        return None
    key = encryption.open_record(
        svc.cloud_key,
        record,
        customer,
        missing="The multipart upload initiate requested encryption. Subsequent part requests must include "
        "the appropriate encryption parameters.",
        wrong=S3Error("InvalidRequest", encryption.UPLOAD_MISMATCH),
    )
    return PieceCipher(key, cipher.new_nonce(), record.get("by") == "customer")


async def _completed_before(
    svc: WalrusService, b: meta.BucketRow, ep: s3.CompleteMultipartUpload, missing: S3Error
) -> Response:
    """A CompleteMultipartUpload of an upload that is gone: if it was completed into a version of this key
    that still exists, S3 answers the completion again (200, the same result); otherwise NoSuchUpload."""
    o = await svc.store.read(lambda tx: meta.version_from_upload(tx, b.name, ep.key, ep.upload_id, UPLOAD_ID))
    if o is None:
        raise missing
    algo = o.checksum_algorithm
    checks = {algo: o.checksum} if o.checksum and algo else {}
    location = f"/{b.name}/{ep.key}"
    body = s3.render_complete_multipart(location, b.name, ep.key, o.etag, checks, o.checksum_type)
    log.info("multipart-complete again bucket=%s key=%s upload=%s", b.name, ep.key, ep.upload_id)
    return xml(body, headers=written_version_headers(b, o.version_id) + sse_headers(o.headers))


async def abort_multipart_upload(svc: WalrusService, call: S3Call, ep: s3.AbortMultipartUpload) -> Response:
    b = svc.authorized_bucket(call, ep)

    def work(tx: Tx) -> list[str]:
        meta.get_upload(tx, b.name, ep.key, ep.upload_id)
        return meta.finish_upload(tx, ep.upload_id)

    files = await svc.store.write(work)
    await svc.storage.remove(files)
    log.info("multipart-abort bucket=%s key=%s upload=%s", b.name, ep.key, ep.upload_id)
    return empty(204)


async def list_parts(svc: WalrusService, call: S3Call, ep: s3.ListParts) -> Response:
    b = svc.authorized_bucket(call, ep)

    def load(tx: Tx) -> tuple[UploadRow, list[PartRow]]:
        return (
            meta.get_upload(tx, b.name, ep.key, ep.upload_id),
            meta.list_parts(tx, ep.upload_id, ep.part_number_marker, ep.max_parts + 1),
        )

    upload, parts = await svc.store.read(load)
    truncated = len(parts) > ep.max_parts
    parts = parts[: ep.max_parts]
    algo = upload.checksum_algorithm
    entries = [
        s3.PartEntry(
            p.part_number, p.last_modified, p.etag, p.size, {algo: p.checksum} if algo and p.checksum else {}
        )
        for p in parts
    ]
    owner = s3.Owner(upload.owner_id, upload.owner_name)
    return xml(s3.render_list_parts(ep, owner, entries, truncated, algo, upload.checksum_type))
