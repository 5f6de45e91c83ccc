"""POST Object (browser-based upload with an HTML form): authenticate from the form fields, check the policy,
stream the file part into storage the way PutObject does. Wire formats live in euca/protocol/s3_post.py."""

from __future__ import annotations

import time
from dataclasses import replace

from euca.core.auth import PayloadStream
from euca.core.http import Response
from euca.core.https import is_secure
from euca.core.identity import Principal
from euca.protocol import s3
from euca.protocol.s3 import S3Error, sse_c
from euca.protocol.s3 import post as s3_post
from euca.protocol.s3.headers import check_metadata_size, check_storage_and_encryption
from euca.roles.walrus import acl as acls
from euca.roles.walrus import encryption, ownership
from euca.roles.walrus.access import decide_form_upload
from euca.roles.walrus.authorize import authorise_form, check_form_session
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.encrypted_io import EncryptingStream
from euca.roles.walrus.objects import store_object
from euca.roles.walrus.service import WalrusService
from euca.roles.walrus.write_extras import encryption_for_write, sse_headers

READ_SIZE = 262144


class _FileStream:
    """The file part of the form as a body stream for Storage.write_stream: parsed as it is read."""

    def __init__(self, source: PayloadStream, parser: s3_post.MultipartParser, pending: list[s3_post.Event]):
        self.source = source
        self.parser = parser
        self.pending = pending
        self.ended = False

    async def read(self, max_bytes: int = READ_SIZE) -> bytes:
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, s3_post.FileData):
                    return event.data
                if isinstance(event, s3_post.FileEnd):
                    self.ended = True
            if self.ended:
                return b""
            chunk = await self.source.read(READ_SIZE)
            if not chunk:
                self.parser.finish()
                return b""
            self.pending = self.parser.feed(chunk)


async def _read_fields(
    source: PayloadStream, parser: s3_post.MultipartParser
) -> tuple[list[s3_post.Field], s3_post.FileStart, list[s3_post.Event]]:
    """Read up to the start of the file part: (fields, the file part, events already parsed after it)."""
    fields: list[s3_post.Field] = []
    while True:
        chunk = await source.read(READ_SIZE)
        if not chunk:
            raise S3Error(
                "InvalidArgument",
                "POST requires exactly one file upload per request.",
                400,
                ArgumentName="file",
                ArgumentValue="0",
            )
        events = parser.feed(chunk)
        for i, event in enumerate(events):
            if isinstance(event, s3_post.Field):
                fields.append(event)
            elif isinstance(event, s3_post.FileStart):
                return fields, event, events[i + 1 :]


async def _principal(
    svc: WalrusService, cred: s3_post.PostCredentials, token: str | None = None
) -> Principal | None:
    if cred.method == "anonymous":
        return None
    key = await svc.identity.access_key(cred.access_key_id)
    if key is None or not key.active:
        raise S3Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            403,
            AWSAccessKeyId=cred.access_key_id,
        )
    s3_post.check_signature(cred, key.secret_key)
    check_form_session(svc, key, token)
    return key.principal


async def post_object(svc: WalrusService, call: S3Call, ep: s3.PostObject) -> Response:
    b = svc.bucket(ep.bucket)
    parser = s3_post.MultipartParser(s3_post.boundary_of(ep.content_type))
    source = call.payload()
    fields, file_start, pending = await _read_fields(source, parser)
    form = s3_post.Form(fields)
    key = s3_post.object_key(form, file_start.filename)
    cred = s3_post.credentials(form)
    # The signature first: nothing a stranger wrote (the policy document) is decoded before it is checked.
    principal = await _principal(svc, cred, form.get("x-amz-security-token"))
    policy = s3_post.parse_policy(cred.policy) if cred.method != "anonymous" else None
    if policy is not None:
        values = dict(form.items())
        values["bucket"] = b.name
        values["key"] = key
        s3_post.check_policy(policy, values, time.time())
    canned = form.get("acl")
    if canned is not None and canned not in s3.CANNED_ACLS:
        raise S3Error(
            "InvalidArgument", f"Invalid canned ACL {canned!r}", ArgumentName="acl", ArgumentValue=canned
        )
    tagging = form.get("tagging")
    tags = s3.parse_tagging_body(tagging.encode()) if tagging is not None else None
    # The endpoint's permission (WRITE on the bucket) is held by the form's signer, not by the (unsigned)
    # request, and the bucket's policy judges the upload as that signer's PutObject of the form's key (the
    # dispatch could not: the request names no key and carries no signature).
    access = await decide_form_upload(svc, call, b.name, key, principal, s3.AclRequest(canned, []), tags)
    if not acls.allowed(b.acl, principal, ep.permission.name, access):
        raise S3Error("AccessDenied")
    await authorise_form(svc, replace(call, access=access), principal, b.name, key)
    owner = (
        (principal.canonical_id, principal.account_name)
        if principal is not None
        else (b.owner_id, b.owner_name)
    )
    owner, acl_request = ownership.writer(svc, b, owner, s3.AclRequest(canned, []))
    acl = await svc.acl_for(acl_request, owner, (b.owner_id, b.owner_name))
    # The form's fields stand for the headers of a PUT: the same limits apply.
    check_storage_and_encryption(form)
    headers = s3.ObjectHeaders(
        content_type=form.get("content-type"),
        content_encoding=form.get("content-encoding"),
        content_disposition=form.get("content-disposition"),
        cache_control=form.get("cache-control"),
        expires=form.get("expires"),
        website_redirect=form.get("x-amz-website-redirect-location"),
        meta={name[11:]: value for name, value in form.items() if name.startswith("x-amz-meta-")},
    )
    check_metadata_size(headers.meta)

    rng = policy.length_range if policy is not None else None
    max_size = min(rng[1], s3.MAX_PUT_SIZE) if rng is not None else s3.MAX_PUT_SIZE
    checksum = s3_post.form_checksum(form)
    algorithm = checksum[0] if checksum else None
    # Encryption as a PUT asks for it (the form's x-amz-server-side-encryption* fields or the bucket default).
    customer = sse_c.parse_customer_key(form)
    s3.lock_headers.refuse_sse_c_in_clear(form, secure=is_secure(call.request))
    sse_c.refuse_with_sse(form, customer)
    sse = encryption_for_write(svc, b, form.get("x-amz-server-side-encryption"))
    extras: dict[str, object] = {encryption.SSE: sse} if sse else {}
    sealing = encryption.sealing_for_write(svc.cloud_key, extras, customer)
    piece = sealing.piece() if sealing is not None else None
    file_stream = _FileStream(source, parser, pending)
    sealed = EncryptingStream(file_stream, piece, algorithm) if piece is not None else None
    written = await svc.storage.write_stream(
        sealed or file_stream, None if sealed else algorithm, max_size=max_size
    )
    if sealed is not None and sealing is not None and piece is not None:
        sealed.finish(written)
        extras[encryption.SSE_KEY] = encryption.sealed_record(sealing, [piece.nonce])
    try:
        s3_post.check_length(policy, written.size)
        if checksum is not None and (written.checksum is None or written.checksum.b64() != checksum[1]):
            raise S3Error(
                "BadDigest", f"The {checksum[0]} you specified did not match the calculated checksum."
            )
    except S3Error:
        await svc.storage.remove(written.files)
        raise
    row = await store_object(svc, b, key, written, owner, headers, algorithm, acl, tags, extras)

    out = [s3.etag_header(row.etag), *s3.version_id_headers(b.versioning, row.version_id)]
    out += sse_headers(row.headers)
    if row.checksum:
        out += s3.checksum_headers(row.checksum_algorithm, row.checksum)
    redirect = form.get("success_action_redirect") or form.get("redirect")
    if redirect and (redirect.startswith("http://") or redirect.startswith("https://")):
        out.append(("Location", s3_post.redirect_location(redirect, b.name, key, row.etag)))
        return Response(303, out, b"")
    status = s3_post.success_status(form.get("success_action_status"))
    if status == 201:
        host = call.request.headers.get("host") or ""
        location = f"http://{host}/{b.name}/{key}" if host else f"/{b.name}/{key}"
        body = s3_post.render_post_response(location, b.name, key, row.etag)
        return Response(201, [("Content-Type", "application/xml"), *out], body)
    return Response(status, out, b"")
