"""Walrus handlers: one coroutine per S3 endpoint type. They take the typed endpoint, talk to the metadata
layer (meta.py, through the state store) and the storage engine (storage.py), and return model values that
euca/protocol/s3.py renders. They never parse or render the wire format themselves."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from euca.core.auth import AuthResult, PayloadStream
from euca.core.http import FileBody, FileSegments, Request, Response
from euca.core.identity import Identity, Principal
from euca.core.store import Store, Tx
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus import acl as acls
from euca.roles.walrus import meta
from euca.roles.walrus.changes import CONFIG, OBJECTS, Changes
from euca.roles.walrus.cors import Cors
from euca.roles.walrus.meta import BucketRow, ObjectRow
from euca.roles.walrus.policy import Policies
from euca.roles.walrus.post_object import post_object
from euca.roles.walrus.storage import Checksum, Source, Storage, Written, checksum_of, combine_crc

log = logging.getLogger("euca.walrus")
T = TypeVar("T")

XML = "application/xml"
MAX_XML_BODY = 1024 * 1024
# A multipart object of up to this many parts is kept as its part files (a manifest); one of more parts is
# concatenated into one file at completion (a full GET opens every file it covers at once).
MAX_SEGMENTS = 256


@dataclass
class Call:
    """One request being served: the raw request (for its body), who made it, and how it was signed."""

    request: Request
    auth: AuthResult
    request_id: str

    @property
    def principal(self) -> Principal | None:
        return self.auth.principal

    def payload(self) -> PayloadStream:
        return self.auth.payload(self.request.body)

    async def xml_body(self) -> bytes:
        stream = self.payload()
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await stream.read(262144)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > MAX_XML_BODY:
                raise S3Error("MalformedXML", "The XML you provided was too large")
            parts.append(chunk)


def _xml(body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", XML), *(headers or [])], body)


def _empty(status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, list(headers or []), b"")


def _owner_of(p: Principal) -> tuple[str, str]:
    return p.canonical_id, p.account_name


class ObjectCache:
    """The latest versions of recently read objects (their rows, and an inline object's bytes), so that GET and
    HEAD of a hot key need no store read and no thread hop.

    Coherent because this process is the only writer of the Walrus tables (as for the bucket cache): every
    write of a key drops it before and after the store write (`forget`), and a read that overlapped a write
    does not fill the cache (`generation`, bumped by each forget, must be unchanged since the read began)."""

    def __init__(self, max_entries: int = 16384, max_bytes: int = 64 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.generation = 0
        self._rows: dict[tuple[str, str], ObjectRow] = {}
        self._bytes = 0

    def get(self, bucket: str, key: str) -> ObjectRow | None:
        return self._rows.get((bucket, key))

    def fill(self, bucket: str, key: str, row: ObjectRow, generation: int) -> None:
        if generation != self.generation or row.delete_marker:
            return
        size = len(row.data) if row.data is not None else 0
        if size > self.max_bytes // 64:
            return
        old = self._rows.pop((bucket, key), None)
        if old is not None and old.data is not None:
            self._bytes -= len(old.data)
        while self._rows and (len(self._rows) >= self.max_entries or self._bytes + size > self.max_bytes):
            # Oldest filled first out (dicts keep insertion order).
            evicted = self._rows.pop(next(iter(self._rows)))
            if evicted.data is not None:
                self._bytes -= len(evicted.data)
        self._rows[(bucket, key)] = row
        self._bytes += size

    def forget(self, bucket: str, key: str) -> None:
        self.generation += 1
        old = self._rows.pop((bucket, key), None)
        if old is not None and old.data is not None:
            self._bytes -= len(old.data)

    def clear(self) -> None:
        self.generation += 1
        self._rows.clear()
        self._bytes = 0


class Walrus:
    def __init__(self, store: Store, identity: Identity, storage: Storage, region: str):
        self.store = store
        self.identity = identity
        self.storage = storage
        self.region = region
        # Every bucket, in memory: the process(es) serving S3 own the Walrus tables, so the cache is the truth
        # after start; with walrus.workers, `changes` tells each process of the others' writes (see sync()).
        self.buckets: dict[str, BucketRow] = {}
        self.objects = ObjectCache()
        self.changes: Changes | None = None
        self._config_wanted = 0
        self._config_loaded = 0
        self._reload_lock = trio.Lock()
        self._routes: dict[type, Callable[[Call, Any], Awaitable[Response]]] = {
            s3.ListBuckets: self.list_buckets,
            s3.CreateBucket: self.create_bucket,
            s3.HeadBucket: self.head_bucket,
            s3.DeleteBucket: self.delete_bucket,
            s3.GetBucketLocation: self.get_bucket_location,
            s3.GetBucketVersioning: self.get_bucket_versioning,
            s3.PutBucketVersioning: self.put_bucket_versioning,
            s3.GetBucketAcl: self.get_bucket_acl,
            s3.PutBucketAcl: self.put_bucket_acl,
            s3.GetBucketTagging: self.get_bucket_tagging,
            s3.PutBucketTagging: self.put_bucket_tagging,
            s3.DeleteBucketTagging: self.delete_bucket_tagging,
            s3.ListObjects: self.list_objects,
            s3.ListObjectsV2: self.list_objects_v2,
            s3.ListObjectVersions: self.list_object_versions,
            s3.ListMultipartUploads: self.list_multipart_uploads,
            s3.DeleteObjects: self.delete_objects,
            s3.PutObject: self.put_object,
            s3.PostObject: lambda call, ep: post_object(self, call, ep),
            s3.GetObject: self.get_object,
            s3.HeadObject: self.get_object,
            s3.DeleteObject: self.delete_object,
            s3.CopyObject: self.copy_object,
            s3.CreateMultipartUpload: self.create_multipart_upload,
            s3.UploadPart: self.upload_part,
            s3.UploadPartCopy: self.upload_part_copy,
            s3.CompleteMultipartUpload: self.complete_multipart_upload,
            s3.AbortMultipartUpload: self.abort_multipart_upload,
            s3.ListParts: self.list_parts,
            s3.GetObjectAcl: self.get_object_acl,
            s3.PutObjectAcl: self.put_object_acl,
            s3.GetObjectTagging: self.get_object_tagging,
            s3.PutObjectTagging: self.put_object_tagging,
            s3.DeleteObjectTagging: self.delete_object_tagging,
        }
        self.policies = Policies(self)
        self._routes.update(self.policies.routes())
        self.cors = Cors(self)
        self._routes.update(self.cors.routes())  # type: ignore[arg-type]

    async def load(self) -> None:
        self.buckets = {b.name: b for b in await self.store.read(meta.load_buckets)}
        await self.policies.load()
        await self.cors.load()

    async def sync(self) -> None:
        """Before a request, with several processes serving S3: take in the others' committed writes (drop the
        object cache; reload buckets, policies and CORS rules)."""
        assert self.changes is not None
        objects, config = self.changes.poll()
        if objects:
            self.objects.clear()
        if config:
            self._config_wanted += 1
        if self._config_loaded < self._config_wanted:
            async with self._reload_lock:
                if self._config_loaded < self._config_wanted:
                    target = self._config_wanted
                    await self.load()
                    self._config_loaded = target

    def config_changed(self) -> None:
        """This process committed a change of a bucket, its policy or its CORS rules."""
        if self.changes is not None:
            self.changes.bump(CONFIG)
            # A reload begun before our commit would bring back the old state: load once more.
            self._config_wanted += 1

    async def write_config(self, fn: Callable[[Tx], T]) -> T:
        """A metadata write of buckets (their settings, policies, CORS rules): other processes reload them."""
        try:
            return await self.store.write(fn)
        finally:
            self.config_changed()

    async def dispatch(self, call: Call, endpoint: Any) -> Response:
        route = self._routes.get(type(endpoint))
        if route is None:
            what = endpoint.what if isinstance(endpoint, s3.Unsupported) else type(endpoint).__name__
            raise S3Error("NotImplemented", f"Walrus does not implement {what}")
        return await self.policies.guard(call, endpoint, route)

    # -- helpers ----------------------------------------------------------------------------------------

    def bucket(self, name: str) -> BucketRow:
        b = self.buckets.get(name)
        if b is None:
            raise S3Error("NoSuchBucket", BucketName=name)
        return b

    @staticmethod
    def require(ok: bool) -> None:
        if not ok and not acls.POLICY_GRANT.get():
            raise S3Error("AccessDenied")

    def bucket_access(self, call: Call, name: str, permission: str) -> BucketRow:
        b = self.bucket(name)
        self.require(acls.allowed(b.acl, call.principal, permission))
        return b

    def bucket_owner(self, call: Call, name: str) -> BucketRow:
        b = self.bucket(name)
        self.require(call.principal is not None and call.principal.canonical_id == b.owner_id)
        return b

    def authenticated(self, call: Call) -> Principal:
        if call.principal is None:
            raise S3Error("AccessDenied")
        return call.principal

    async def resolve_grants(self, grants: list[s3.Grant]) -> list[s3.Grant]:
        out = []
        for g in grants:
            if g.grantee_type == "CanonicalUser":
                account = await self.identity.account_by_canonical_id(g.grantee)
                if account is None:
                    raise S3Error("InvalidArgument", "Invalid id", ArgumentName="CanonicalUser/ID", ArgumentValue=g.grantee)
                out.append(s3.Grant(g.permission, g.grantee_type, g.grantee, account.name))
            elif g.grantee_type == "Group":
                if g.grantee not in (s3.ALL_USERS, s3.AUTHENTICATED_USERS, s3.LOG_DELIVERY):
                    raise S3Error("InvalidArgument", "Invalid group uri", ArgumentName="Group/URI",
                                  ArgumentValue=g.grantee)
                out.append(g)
            else:
                raise S3Error("UnresolvableGrantByEmailAddress", EmailAddress=g.grantee)
        return out

    async def acl_for(self, req: s3.AclRequest, owner: tuple[str, str],
                      bucket_owner: tuple[str, str] | None = None) -> acls.Acl:
        if req.grants:
            return acls.from_grants(owner[0], owner[1], await self.resolve_grants(req.grants))
        return acls.canned(req.canned or "private", owner[0], owner[1], bucket_owner)

    @staticmethod
    def version_headers(b: BucketRow, o: ObjectRow) -> list[tuple[str, str]]:
        if b.versioning or o.version_id != "null":
            return [("x-amz-version-id", o.version_id)]
        return []

    async def fetch(self, bucket: str, key: str, version_id: str | None, *, with_data: bool = False) -> ObjectRow:
        """The version asked for (latest if None); NoSuchKey/NoSuchVersion/delete-marker errors as S3."""
        o = await self.store.read(lambda tx: meta.get_object(tx, bucket, key, version_id, with_data=with_data))
        return self.live(o, bucket, key, version_id)

    @staticmethod
    def live(o: ObjectRow | None, bucket: str, key: str, version_id: str | None) -> ObjectRow:
        if o is None:
            if version_id is not None:
                if version_id != "null" and not _valid_version_id(version_id):
                    raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                                  ArgumentValue=version_id)
                raise S3Error("NoSuchVersion", Key=key, VersionId=version_id)
            raise S3Error("NoSuchKey", Key=key)
        if o.delete_marker:
            hdrs = [("x-amz-delete-marker", "true"), ("x-amz-version-id", o.version_id)]
            if version_id is not None:
                raise S3Error("MethodNotAllowed", headers=hdrs + [("Allow", "DELETE")], Method="GET",
                              ResourceType="DeleteMarker")
            raise S3Error("NoSuchKey", headers=hdrs, Key=key)
        return o

    async def write(self, fn: Callable[[Tx], Any], bucket: str, key: str | None, *, durable: bool = False) -> Any:
        """A metadata write that changes object `key` (every key of the bucket if None): the object cache
        forgets it before the write starts and again once it is committed."""
        self._forget(bucket, key)
        try:
            return await self.store.write(fn, durable=durable)
        finally:
            self._forget(bucket, key)
            if self.changes is not None:
                self.changes.bump(OBJECTS)

    def _forget(self, bucket: str, key: str | None) -> None:
        if key is None:
            self.objects.clear()
        else:
            self.objects.forget(bucket, key)

    async def commit(self, fn: Callable[[Tx], Any], written: list[str], bucket: str, key: str) -> Any:
        """Make an object version visible: a durable metadata write (the bytes of an inline object go with it);
        if it fails, the files written for it are removed (nothing becomes visible)."""
        try:
            return await self.write(fn, bucket, key, durable=True)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.storage.remove(written)
            raise

    async def commit_part(self, fn: Callable[[Tx], Any], written: list[str]) -> Any:
        """Record an uploaded part (durably: it is acknowledged); its file is removed if that fails."""
        try:
            return await self.store.write(fn, durable=True)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.storage.remove(written)
            raise

    @staticmethod
    def _sources(o: ObjectRow, offset: int, length: int) -> list[Source]:
        """Where a byte range of a live object's content is, for Storage.copy."""
        if o.storage_id is not None:
            return [(o.storage_id, offset, length)]
        if o.segments is not None:
            return list(_ranges(o.segments, o.parts or [], offset, length))
        if o.data is None:
            raise S3Error("InternalError", "inline object read without its bytes")
        return [(o.data, offset, length)]

    # -- service and buckets ------------------------------------------------------------------------------

    async def list_buckets(self, call: Call, ep: s3.ListBuckets) -> Response:
        if call.principal is None:
            # Anonymous owns no buckets: an empty list, as Ceph RGW answers (s3-tests expects it).
            return _xml(s3.render_list_buckets(s3.Owner("anonymous", ""), []))
        p = self.authenticated(call)
        mine = sorted((b for b in self.buckets.values() if b.owner_id == p.canonical_id), key=lambda b: b.name)
        return _xml(s3.render_list_buckets(s3.Owner(p.canonical_id, p.account_name),
                                           [s3.BucketEntry(b.name, b.created, b.location or self.region)
                                            for b in mine]))

    async def create_bucket(self, call: Call, ep: s3.CreateBucket) -> Response:
        p = self.authenticated(call)
        if not s3.valid_bucket_name(ep.bucket):
            raise S3Error("InvalidBucketName", BucketName=ep.bucket)
        location = s3.parse_create_bucket_body(await call.xml_body()) or ""
        existing = self.buckets.get(ep.bucket)
        if existing is not None:
            if existing.owner_id == p.canonical_id:
                raise S3Error("BucketAlreadyOwnedByYou", BucketName=ep.bucket)
            raise S3Error("BucketAlreadyExists", BucketName=ep.bucket)
        acl = await self.acl_for(ep.acl, _owner_of(p))
        row = BucketRow(ep.bucket, p.canonical_id, p.account_name, time.time(), location, "", acl, None)
        clash = await self.write_config(lambda tx: meta.insert_bucket(tx, row))
        if clash is not None:
            code = "BucketAlreadyOwnedByYou" if clash.owner_id == p.canonical_id else "BucketAlreadyExists"
            raise S3Error(code, BucketName=ep.bucket)
        self.buckets[row.name] = row
        log.info("create-bucket bucket=%s owner=%s location=%s", row.name, p.account_name, location or "-")
        return _empty(200, [("Location", f"/{row.name}")])

    async def head_bucket(self, call: Call, ep: s3.HeadBucket) -> Response:
        b = self.bucket_access(call, ep.bucket, "READ")
        return _empty(200, [("x-amz-bucket-region", b.location or self.region)])

    async def delete_bucket(self, call: Call, ep: s3.DeleteBucket) -> Response:
        self.bucket_owner(call, ep.bucket)
        files = await self.write(lambda tx: meta.delete_bucket(tx, ep.bucket), ep.bucket, None)
        self.buckets.pop(ep.bucket, None)
        self.config_changed()
        await self.storage.remove(files)
        log.info("delete-bucket bucket=%s", ep.bucket)
        return _empty(204)

    async def get_bucket_location(self, call: Call, ep: s3.GetBucketLocation) -> Response:
        b = self.bucket_owner(call, ep.bucket)
        return _xml(s3.render_location(b.location))

    async def get_bucket_versioning(self, call: Call, ep: s3.GetBucketVersioning) -> Response:
        b = self.bucket_owner(call, ep.bucket)
        return _xml(s3.render_versioning(b.versioning))

    async def put_bucket_versioning(self, call: Call, ep: s3.PutBucketVersioning) -> Response:
        b = self.bucket_owner(call, ep.bucket)
        status = s3.parse_versioning_body(await call.xml_body())
        await self.write_config(lambda tx: meta.update_bucket(tx, b.name, versioning=status))
        b.versioning = status
        log.info("versioning bucket=%s status=%s", b.name, status)
        return _empty(200)

    async def get_bucket_acl(self, call: Call, ep: s3.GetBucketAcl) -> Response:
        b = self.bucket_access(call, ep.bucket, "READ_ACP")
        return _xml(s3.render_acl(acls.to_policy(b.acl)))

    async def _acl_from_request(self, call: Call, req: s3.AclRequest, owner: tuple[str, str],
                                bucket_owner: tuple[str, str] | None) -> acls.Acl:
        body = await call.xml_body() if not req else b""
        if req:
            return await self.acl_for(req, owner, bucket_owner)
        policy = s3.parse_acl_body(body)
        if policy.owner_id and policy.owner_id != owner[0]:
            raise S3Error("AccessDenied")
        return acls.from_grants(owner[0], owner[1], await self.resolve_grants(policy.grants))

    async def put_bucket_acl(self, call: Call, ep: s3.PutBucketAcl) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE_ACP")
        acl = await self._acl_from_request(call, ep.acl, (b.owner_id, b.owner_name), None)
        await self.write_config(lambda tx: meta.update_bucket(tx, b.name, acl=acl))
        b.acl = acl
        log.info("put-bucket-acl bucket=%s grants=%d", b.name, len(acl["grants"]))
        return _empty(200)

    async def get_bucket_tagging(self, call: Call, ep: s3.GetBucketTagging) -> Response:
        b = self.bucket_owner(call, ep.bucket)
        if not b.tags:
            raise S3Error("NoSuchTagSet", BucketName=b.name)
        return _xml(s3.render_tagging(b.tags))

    async def put_bucket_tagging(self, call: Call, ep: s3.PutBucketTagging) -> Response:
        b = self.bucket_owner(call, ep.bucket)
        tags = s3.parse_tagging_body(await call.xml_body(), limit=50)
        await self.write_config(lambda tx: meta.update_bucket(tx, b.name, tags=tags))
        b.tags = tags
        return _empty(204)

    async def delete_bucket_tagging(self, call: Call, ep: s3.DeleteBucketTagging) -> Response:
        b = self.bucket_owner(call, ep.bucket)
        await self.write_config(lambda tx: meta.update_bucket(tx, b.name, tags=None))
        b.tags = None
        return _empty(204)

    # -- listings ----------------------------------------------------------------------------------------------

    @staticmethod
    def _entry(o: ObjectRow) -> s3.ObjectEntry:
        return s3.ObjectEntry(o.key, o.last_modified, o.etag, o.size, s3.Owner(o.owner_id, o.owner_name),
                              o.version_id, o.is_latest, o.delete_marker, o.checksum_algorithm, o.checksum_type)

    @staticmethod
    def _refuse_unordered_with_delimiter(call: Call, delimiter: str) -> None:
        # Ceph RGW's allow-unordered listing cannot roll up common prefixes; it refuses the combination.
        if delimiter and "allow-unordered=true" in call.request.query.split("&"):
            raise S3Error("InvalidArgument", "allow-unordered cannot be used with a delimiter",
                          ArgumentName="allow-unordered")

    async def list_objects(self, call: Call, ep: s3.ListObjects) -> Response:
        self.bucket_access(call, ep.bucket, "READ")
        self._refuse_unordered_with_delimiter(call, ep.delimiter)
        raw = await self.store.read(
            lambda tx: meta.list_objects(tx, ep.bucket, ep.prefix, ep.delimiter, ep.marker, ep.max_keys))
        listing = s3.Listing([self._entry(o) for o in raw.rows], raw.prefixes, raw.truncated, raw.last)
        return _xml(s3.render_list_objects(ep, listing))

    async def list_objects_v2(self, call: Call, ep: s3.ListObjectsV2) -> Response:
        self.bucket_access(call, ep.bucket, "READ")
        self._refuse_unordered_with_delimiter(call, ep.delimiter)
        after = ep.start_after
        if ep.continuation_token is not None:
            try:
                after = base64.urlsafe_b64decode(ep.continuation_token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                              ArgumentName="continuation-token") from None
        raw = await self.store.read(
            lambda tx: meta.list_objects(tx, ep.bucket, ep.prefix, ep.delimiter, after, ep.max_keys))
        listing = s3.Listing([self._entry(o) for o in raw.rows], raw.prefixes, raw.truncated, raw.last)
        token = None
        if raw.truncated and raw.last is not None:
            token = base64.urlsafe_b64encode(raw.last.encode()).decode()
        return _xml(s3.render_list_objects_v2(ep, listing, token))

    async def list_object_versions(self, call: Call, ep: s3.ListObjectVersions) -> Response:
        self.bucket_access(call, ep.bucket, "READ")
        raw = await self.store.read(lambda tx: meta.list_versions(
            tx, ep.bucket, ep.prefix, ep.delimiter, ep.key_marker, ep.version_id_marker, ep.max_keys))
        listing = s3.Listing([self._entry(o) for o in raw.rows], raw.prefixes, raw.truncated, raw.last,
                             raw.last_version)
        return _xml(s3.render_list_versions(ep, listing))

    async def list_multipart_uploads(self, call: Call, ep: s3.ListMultipartUploads) -> Response:
        self.bucket_access(call, ep.bucket, "READ")
        uploads, prefixes, truncated = await self.store.read(lambda tx: meta.list_uploads(
            tx, ep.bucket, ep.prefix, ep.delimiter, ep.key_marker, ep.upload_id_marker, ep.max_uploads))
        entries = [s3.UploadEntry(u.key, u.upload_id, u.initiated, s3.Owner(u.owner_id, u.owner_name),
                                  u.checksum_algorithm) for u in uploads]
        return _xml(s3.render_list_uploads(ep, entries, prefixes, truncated))

    # -- objects ----------------------------------------------------------------------------------------------

    async def _check_write_conditions(self, bucket: str, key: str, cond: s3.Conditions) -> None:
        if cond.if_none_match is None and cond.if_match is None:
            return
        o = await self.store.read(lambda tx: meta.get_object(tx, bucket, key))
        if o is None or o.delete_marker:
            if cond.if_match is not None:
                raise S3Error("NoSuchKey", Key=key)
            return
        s3.evaluate_conditions(cond, o.etag, o.last_modified, mode="write")

    async def _receive(self, call: Call, cs: s3.ChecksumRequest, algorithm: str | None,
                       content_length: int | None, max_size: int, *, inline: bool = False) -> Written:
        stream = call.payload()
        written = await self.storage.write_stream(stream, algorithm, expected_size=content_length, max_size=max_size,
                                                  inline=inline)
        try:
            if cs.content_md5 is not None and base64.b64decode(cs.content_md5) != bytes.fromhex(written.md5):
                raise S3Error("BadDigest", ExpectedDigest=cs.content_md5,
                              CalculatedDigest=base64.b64encode(bytes.fromhex(written.md5)).decode())
            expected = cs.value
            if expected is None and cs.trailer is not None:
                expected = stream.trailers.get(cs.trailer)
            if expected is not None and written.checksum is not None and expected != written.checksum.b64():
                raise S3Error("BadDigest", f"The {cs.algorithm} you specified did not match the calculated checksum.")
        except BaseException:
            await self.storage.remove(written.files)
            raise
        return written

    async def put_object(self, call: Call, ep: s3.PutObject) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        p = call.principal
        owner = _owner_of(p) if p is not None else (b.owner_id, b.owner_name)
        await self._check_write_conditions(b.name, ep.key, ep.conditions)
        acl = await self.acl_for(ep.acl, owner, (b.owner_id, b.owner_name))
        written = await self._receive(call, ep.checksum, ep.checksum.algorithm, ep.content_length, s3.MAX_PUT_SIZE,
                                      inline=True)
        row = await self.store_object(b, ep.key, written, owner, ep.headers, ep.checksum.algorithm, acl, ep.tagging)
        headers = [("ETag", s3.quote_etag(row.etag)), *self.version_headers(b, row)]
        if row.checksum:
            headers.append((f"x-amz-checksum-{(row.checksum_algorithm or '').lower()}", row.checksum))
        return _empty(200, headers)

    async def store_object(self, b: BucketRow, key: str, written: Written, owner: tuple[str, str],
                           headers: s3.ObjectHeaders, algorithm: str | None, acl: acls.Acl,
                           tags: dict[str, str] | None) -> ObjectRow:
        """Make a written file the object `key` (PutObject and POST Object); the file is removed on failure."""
        checksum = written.checksum.b64() if written.checksum else None
        row = ObjectRow(key, "", written.size, written.md5, time.time(), written.storage_id, owner[0], owner[1],
                        headers.to_dict(), algorithm, "FULL_OBJECT" if checksum else None, checksum,
                        None, acl, tags or None, data=written.data)
        removed = await self.commit(lambda tx: meta.put_object(tx, b.name, row), written.files, b.name, key)
        await self.storage.remove(removed)
        log.info("put bucket=%s key=%s size=%d etag=%s version=%s", b.name, key, row.size, row.etag, row.version_id)
        return row

    def _object_headers(self, b: BucketRow, o: ObjectRow, checksum_mode: bool) -> list[tuple[str, str]]:
        rendered = o.rendered
        if rendered is None:
            rendered = [
                ("ETag", s3.quote_etag(o.etag)),
                ("Last-Modified", s3.http_date(o.last_modified)),
                ("Accept-Ranges", "bytes"),
                *s3.object_response_headers(s3.ObjectHeaders.from_dict(o.headers)),
            ]
            if o.tags:
                rendered.append(("x-amz-tagging-count", str(len(o.tags))))
            o.rendered = rendered  # a cached row serves many GETs
        headers = [*rendered, *self.version_headers(b, o)]
        if checksum_mode and o.checksum and o.checksum_algorithm:
            headers.append((f"x-amz-checksum-{o.checksum_algorithm.lower()}", o.checksum))
            if o.checksum_type:
                headers.append(("x-amz-checksum-type", o.checksum_type))
        return headers

    async def get_object(self, call: Call, ep: s3.GetObject) -> Response:
        for _ in range(3):
            response = await self._get_object(call, ep)
            if response is not None:
                return response
        raise S3Error("InternalError", "the object kept changing while it was being read")

    async def _get_object(self, call: Call, ep: s3.GetObject) -> Response | None:
        """GET or HEAD; None when the object's files went away under us (it was just replaced): read again."""
        b = self.bucket(ep.bucket)
        is_head = isinstance(ep, s3.HeadObject)
        o = self.objects.get(b.name, ep.key) if ep.version_id is None else None
        if o is None:
            generation = self.objects.generation
            o = await self.store.read(
                lambda tx: meta.get_object(tx, b.name, ep.key, ep.version_id, with_data=True))
            if o is not None and ep.version_id is None:
                self.objects.fill(b.name, ep.key, o, generation)
        if o is None and not acls.allowed(b.acl, call.principal, "READ"):
            raise S3Error("AccessDenied")
        o = self.live(o, b.name, ep.key, ep.version_id)
        self.require(acls.allowed(o.acl, call.principal, "READ"))
        if ep.conditions:
            try:
                s3.evaluate_conditions(ep.conditions, o.etag, o.last_modified)
            except S3Error as e:
                if e.code == "NotModified":
                    e.headers.append(("Last-Modified", s3.http_date(o.last_modified)))
                raise
        headers = self._object_headers(b, o, ep.checksum_mode)
        status = 200
        first, length = 0, o.size
        if ep.part_number is not None:
            parts = o.parts or [o.size]
            if ep.part_number > len(parts):
                raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
            first = sum(parts[: ep.part_number - 1])
            length = parts[ep.part_number - 1]
            headers.append(("x-amz-mp-parts-count", str(len(parts))))
            if o.parts:
                status = 206
                headers.append(("Content-Range", f"bytes {first}-{first + length - 1}/{o.size}"))
        elif ep.range is not None:
            lo, hi = ep.range.resolve(o.size)
            first, length = lo, hi - lo + 1
            status = 206
            headers.append(("Content-Range", f"bytes {lo}-{hi}/{o.size}"))
        if status == 206 and ep.checksum_mode:
            headers = [h for h in headers if not h[0].startswith("x-amz-checksum-")]
        for name, value in ep.overrides:
            headers = [h for h in headers if h[0].lower() != name.lower()]
            headers.append((name, value))
        if is_head:
            return Response(status, headers, b"", head_length=length)
        if o.data is not None:
            data = o.data if first == 0 and length == len(o.data) else o.data[first : first + length]
            return Response(status, headers, data)
        # Only the files the range covers are opened (a path lookup in a warm directory: cheaper here than a
        # thread hop). Once open, a concurrent overwrite cannot take them away; one removed before (the
        # object was just replaced) sends us back to read the new version.
        ranges = self._sources(o, first, length)
        fds = self.storage.open_all([str(source) for source, _, _ in ranges])
        if fds is None:
            self.objects.forget(b.name, ep.key)
            return None
        pieces = [FileBody(fd, offset, n) for fd, (_, offset, n) in zip(fds, ranges, strict=True)]
        if len(pieces) == 1:
            return Response(status, headers, pieces[0])
        return Response(status, headers, FileSegments(pieces))

    async def delete_object(self, call: Call, ep: s3.DeleteObject) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        p = call.principal
        owner = _owner_of(p) if p is not None else (b.owner_id, b.owner_name)
        if ep.version_id is not None and ep.version_id != "null" and not _valid_version_id(ep.version_id):
            raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                          ArgumentValue=ep.version_id)
        if ep.conditions.if_match is not None:
            o = await self.store.read(lambda tx: meta.get_object(tx, b.name, ep.key, ep.version_id))
            if o is None or o.delete_marker:
                raise S3Error("NoSuchKey", Key=ep.key)
            s3.evaluate_conditions(ep.conditions, o.etag, o.last_modified, mode="write")
        d = await self.write(
            lambda tx: meta.delete_object(tx, b.name, ep.key, ep.version_id, owner[0], owner[1], time.time()),
            b.name, ep.key)
        await self.storage.remove(d.removed)
        log.info("delete bucket=%s key=%s version=%s marker=%s", b.name, ep.key, d.version_id, d.delete_marker)
        headers = []
        if d.version_id is not None:
            headers.append(("x-amz-version-id", d.version_id))
        if d.delete_marker:
            headers.append(("x-amz-delete-marker", "true"))
        return _empty(204, headers)

    async def delete_objects(self, call: Call, ep: s3.DeleteObjects) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        items, quiet = s3.parse_delete_objects_body(await call.xml_body())
        p = call.principal
        owner = _owner_of(p) if p is not None else (b.owner_id, b.owner_name)
        now = time.time()

        def work(tx: Tx) -> tuple[list[s3.DeleteResult], list[str]]:
            results, removed = [], []
            for item in items:
                if item.version_id is not None and item.version_id != "null" and not _valid_version_id(item.version_id):
                    results.append(s3.DeleteResult(item.key, item.version_id, error=S3Error("NoSuchVersion")))
                    continue
                d = meta.delete_object(tx, b.name, item.key, item.version_id, owner[0], owner[1], now)
                removed += d.removed
                if item.version_id is not None:
                    results.append(s3.DeleteResult(item.key, item.version_id, d.delete_marker,
                                                   item.version_id if d.delete_marker else None))
                else:
                    results.append(s3.DeleteResult(item.key, None, d.delete_marker,
                                                   d.version_id if d.delete_marker else None))
            return results, removed

        results, removed = await self.write(work, b.name, None)
        await self.storage.remove(removed)
        log.info("delete-objects bucket=%s count=%d", b.name, len(items))
        return _xml(s3.render_delete_result(results, quiet))

    async def _copy_source(self, call: Call, source: s3.CopySource) -> tuple[BucketRow, ObjectRow]:
        sb = self.bucket(source.bucket)
        o = await self.store.read(
            lambda tx: meta.get_object(tx, sb.name, source.key, source.version_id, with_data=True))
        if o is None and not acls.allowed(sb.acl, call.principal, "READ"):
            raise S3Error("AccessDenied")
        if o is not None and o.delete_marker and source.version_id is not None:
            raise S3Error("InvalidRequest", "The source of a copy request may not specifically refer to a delete marker by version id.")
        o = self.live(o, sb.name, source.key, source.version_id)
        self.require(acls.allowed(o.acl, call.principal, "READ"))
        if source.conditions:
            s3.evaluate_conditions(source.conditions, o.etag, o.last_modified, mode="copy")
        return sb, o

    async def copy_object(self, call: Call, ep: s3.CopyObject) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        p = call.principal
        owner = _owner_of(p) if p is not None else (b.owner_id, b.owner_name)
        sb, src = await self._copy_source(call, ep.source)
        same = sb.name == b.name and src.key == ep.key
        if same and ep.metadata_directive == "COPY" and ep.source.version_id in (None, src.version_id) \
                and ep.tagging_directive == "COPY" and not ep.checksum_algorithm:
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                          "itself without changing the object's metadata, storage class, website redirect location "
                          "or encryption attributes.")
        headers = src.headers if ep.metadata_directive == "COPY" else ep.headers.to_dict()
        tags = src.tags if ep.tagging_directive == "COPY" else ep.tagging
        algorithm = ep.checksum_algorithm or src.checksum_algorithm
        multipart_src = "-" in src.etag
        reuse_checksum = algorithm == src.checksum_algorithm and src.checksum_type == "FULL_OBJECT"
        need_hash = multipart_src or (algorithm is not None and not reuse_checksum)
        written = await self.storage.copy(self._sources(src, 0, src.size), algorithm if need_hash else None,
                                          hash_md5=need_hash, inline=True)
        etag = written.md5 if need_hash else src.etag
        if written.checksum is not None:
            checksum: str | None = written.checksum.b64()
        else:
            checksum = src.checksum if reuse_checksum else None
        acl = await self.acl_for(ep.acl, owner, (b.owner_id, b.owner_name))
        now = time.time()
        row = ObjectRow(ep.key, "", written.size, etag, now, written.storage_id, owner[0], owner[1], headers,
                        algorithm if checksum else None, "FULL_OBJECT" if checksum else None, checksum, None, acl, tags,
                        data=written.data)
        removed = await self.commit(lambda tx: meta.put_object(tx, b.name, row), written.files, b.name, ep.key)
        await self.storage.remove(removed)
        log.info("copy bucket=%s key=%s from=%s/%s size=%d etag=%s", b.name, ep.key, sb.name, src.key, row.size, etag)
        out = self.version_headers(b, row)
        if sb.versioning or src.version_id != "null":
            out.append(("x-amz-copy-source-version-id", src.version_id))
        checks = {algorithm: checksum} if checksum and algorithm else {}
        return _xml(s3.render_copy_result("CopyObjectResult", etag, now, checks), headers=out)

    # -- ACLs and tags on objects -------------------------------------------------------------------------------

    async def get_object_acl(self, call: Call, ep: s3.GetObjectAcl) -> Response:
        b = self.bucket(ep.bucket)
        o = await self.fetch(b.name, ep.key, ep.version_id)
        self.require(acls.allowed(o.acl, call.principal, "READ_ACP"))
        return _xml(s3.render_acl(acls.to_policy(o.acl or {})), headers=self.version_headers(b, o))

    async def put_object_acl(self, call: Call, ep: s3.PutObjectAcl) -> Response:
        b = self.bucket(ep.bucket)
        o = await self.fetch(b.name, ep.key, ep.version_id)
        self.require(acls.allowed(o.acl, call.principal, "WRITE_ACP"))
        acl = await self._acl_from_request(call, ep.acl, (o.owner_id, o.owner_name), (b.owner_id, b.owner_name))
        await self.write(lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, acl=acl), b.name, o.key)
        log.info("put-object-acl bucket=%s key=%s grants=%d", b.name, o.key, len(acl["grants"]))
        return _empty(200, self.version_headers(b, o))

    async def get_object_tagging(self, call: Call, ep: s3.GetObjectTagging) -> Response:
        b = self.bucket(ep.bucket)
        o = await self.fetch(b.name, ep.key, ep.version_id)
        self.require(acls.allowed(o.acl, call.principal, "READ"))
        return _xml(s3.render_tagging(o.tags or {}), headers=self.version_headers(b, o))

    async def put_object_tagging(self, call: Call, ep: s3.PutObjectTagging) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        o = await self.fetch(b.name, ep.key, ep.version_id)
        tags = s3.parse_tagging_body(await call.xml_body())
        await self.write(lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, tags=tags), b.name, o.key)
        return _empty(200, self.version_headers(b, o))

    async def delete_object_tagging(self, call: Call, ep: s3.DeleteObjectTagging) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        o = await self.fetch(b.name, ep.key, ep.version_id)
        await self.write(lambda tx: meta.set_object_fields(tx, b.name, o.key, o.version_id, tags=None), b.name, o.key)
        return _empty(204, self.version_headers(b, o))

    # -- multipart -------------------------------------------------------------------------------------------------

    async def create_multipart_upload(self, call: Call, ep: s3.CreateMultipartUpload) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        p = call.principal
        owner = _owner_of(p) if p is not None else (b.owner_id, b.owner_name)
        if ep.checksum_type == "FULL_OBJECT" and ep.checksum_algorithm in ("SHA1", "SHA256"):
            raise S3Error("InvalidRequest", "The FULL_OBJECT checksum type cannot be used with the "
                          f"{ep.checksum_algorithm.lower()} checksum algorithm.")
        ctype = ep.checksum_type
        if ep.checksum_algorithm and ctype is None:
            ctype = "FULL_OBJECT" if ep.checksum_algorithm == "CRC64NVME" else "COMPOSITE"
        acl = await self.acl_for(ep.acl, owner, (b.owner_id, b.owner_name))
        upload = meta.UploadRow(uuid.uuid4().hex, b.name, ep.key, time.time(), owner[0], owner[1],
                                ep.headers.to_dict(), acl, ep.tagging or None, ep.checksum_algorithm, ctype)
        await self.store.write(lambda tx: meta.create_upload(tx, upload))
        log.info("multipart-create bucket=%s key=%s upload=%s", b.name, ep.key, upload.upload_id)
        headers = []
        if ep.checksum_algorithm:
            headers += [("x-amz-checksum-algorithm", ep.checksum_algorithm), ("x-amz-checksum-type", ctype or "")]
        return _xml(s3.render_initiate_multipart(b.name, ep.key, upload.upload_id), headers=headers)

    async def upload_part(self, call: Call, ep: s3.UploadPart) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        upload = await self.store.read(lambda tx: meta.get_upload(tx, b.name, ep.key, ep.upload_id))
        algorithm = upload.checksum_algorithm or ep.checksum.algorithm
        if ep.checksum.algorithm and upload.checksum_algorithm and ep.checksum.algorithm != upload.checksum_algorithm:
            raise S3Error("InvalidRequest", f"Checksum Type mismatch occurred, expected checksum Type: "
                          f"{upload.checksum_algorithm.lower()}, actual checksum Type: {ep.checksum.algorithm.lower()}")
        written = await self._receive(call, ep.checksum, algorithm, ep.content_length, s3.MAX_PUT_SIZE)
        checksum = written.checksum.b64() if written.checksum else None
        assert written.storage_id is not None  # parts are always files
        part = meta.PartRow(ep.part_number, written.size, written.md5, written.storage_id, checksum, time.time())
        removed = await self.commit_part(lambda tx: meta.put_part(tx, b.name, ep.key, ep.upload_id, part),
                                         written.files)
        await self.storage.remove(removed)
        log.info("multipart-part bucket=%s key=%s upload=%s part=%d size=%d", b.name, ep.key, ep.upload_id,
                 ep.part_number, written.size)
        headers = [("ETag", s3.quote_etag(written.md5))]
        if checksum and algorithm:
            headers.append((f"x-amz-checksum-{algorithm.lower()}", checksum))
        return _empty(200, headers)

    async def upload_part_copy(self, call: Call, ep: s3.UploadPartCopy) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        upload = await self.store.read(lambda tx: meta.get_upload(tx, b.name, ep.key, ep.upload_id))
        _, src = await self._copy_source(call, ep.source)
        rng = s3.parse_copy_range(ep.source_range, src.size)
        first, last = rng if rng is not None else (0, src.size - 1)
        written = await self.storage.copy(self._sources(src, first, max(0, last - first + 1)),
                                          upload.checksum_algorithm)
        assert written.storage_id is not None
        checksum = written.checksum.b64() if written.checksum else None
        now = time.time()
        part = meta.PartRow(ep.part_number, written.size, written.md5, written.storage_id, checksum, now)
        removed = await self.commit_part(lambda tx: meta.put_part(tx, b.name, ep.key, ep.upload_id, part),
                                         written.files)
        await self.storage.remove(removed)
        checks = {upload.checksum_algorithm: checksum} if checksum and upload.checksum_algorithm else {}
        return _xml(s3.render_copy_result("CopyPartResult", written.md5, now, checks))

    async def complete_multipart_upload(self, call: Call, ep: s3.CompleteMultipartUpload) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")
        requested = s3.parse_complete_body(await call.xml_body())

        def load(tx: Tx) -> tuple[meta.UploadRow, list[meta.PartRow]]:
            return meta.get_upload(tx, b.name, ep.key, ep.upload_id), meta.list_parts(tx, ep.upload_id)

        upload, stored = await self.store.read(load)
        by_number = {p.part_number: p for p in stored}
        chosen: list[meta.PartRow] = []
        previous = 0
        for want in requested:
            if want.part_number < previous:
                raise S3Error("InvalidPartOrder")
            previous = want.part_number
        # A part number listed twice in a row (a part re-sent while the first upload was still going) counts
        # once, with its last entry, as Ceph RGW does.
        requested = [w for i, w in enumerate(requested)
                     if i + 1 == len(requested) or requested[i + 1].part_number != w.part_number]
        for i, want in enumerate(requested):
            have = by_number.get(want.part_number)
            if have is None or have.etag != want.etag:
                raise S3Error("InvalidPart", UploadId=ep.upload_id, PartNumber=str(want.part_number),
                              ETag=want.etag)
            algo = upload.checksum_algorithm
            if algo and want.checksums.get(algo) not in (None, have.checksum):
                raise S3Error("InvalidPart", UploadId=ep.upload_id, PartNumber=str(want.part_number))
            if i < len(requested) - 1 and have.size < s3.MIN_PART_SIZE:
                raise S3Error("EntityTooSmall", ProposedSize=str(have.size), MinSizeAllowed=str(s3.MIN_PART_SIZE),
                              PartNumber=str(want.part_number), ETag=want.etag)
            chosen.append(have)
        await self._check_write_conditions(b.name, ep.key, ep.conditions)
        n = len(chosen)
        etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen)).hexdigest() + f"-{n}"
        checksum = None
        algo = upload.checksum_algorithm
        if algo and all(p.checksum for p in chosen):
            raws = [base64.b64decode(p.checksum or "") for p in chosen]
            if upload.checksum_type == "FULL_OBJECT":
                checksum = base64.b64encode(combine_crc(algo, zip(raws, (p.size for p in chosen), strict=True))).decode()
            else:
                checksum = base64.b64encode(checksum_of(algo, b"".join(raws))).decode() + f"-{n}"
        sizes = [p.size for p in chosen]
        if n <= MAX_SEGMENTS:
            # The object is kept as its part files (already synced when each part was acknowledged): nothing
            # is copied, and the commit below hands the files from the upload to the object.
            segments: list[str] | None = [p.storage_id for p in chosen]
            storage_id, files = None, []
        else:
            written = await self.storage.copy([(p.storage_id, 0, p.size) for p in chosen], None, hash_md5=False)
            segments, storage_id, files = None, written.storage_id, written.files
        row = ObjectRow(ep.key, "", sum(sizes), etag, time.time(), storage_id, upload.owner_id,
                        upload.owner_name, upload.headers, algo if checksum else None,
                        upload.checksum_type if checksum else None, checksum, sizes, upload.acl,
                        upload.tags, segments=segments)
        chosen_ids = {p.storage_id for p in chosen}

        def commit(tx: Tx) -> list[str]:
            meta.get_upload(tx, b.name, ep.key, ep.upload_id)
            now = {p.part_number: p.storage_id for p in meta.list_parts(tx, ep.upload_id)}
            if any(now.get(p.part_number) != p.storage_id for p in chosen):
                # A part was uploaded again while we validated: the files we checked are no longer its.
                raise S3Error("InvalidPart", UploadId=ep.upload_id)
            parts = [f for f in meta.finish_upload(tx, ep.upload_id) if segments is None or f not in chosen_ids]
            return meta.put_object(tx, b.name, row) + parts

        removed = await self.commit(commit, files, b.name, ep.key)
        await self.storage.remove(removed)
        log.info("multipart-complete bucket=%s key=%s upload=%s parts=%d size=%d etag=%s", b.name, ep.key,
                 ep.upload_id, n, row.size, etag)
        location = f"/{b.name}/{ep.key}"
        checks = {algo: checksum} if checksum and algo else {}
        return _xml(s3.render_complete_multipart(location, b.name, ep.key, etag, checks, upload.checksum_type),
                    headers=self.version_headers(b, row))

    async def abort_multipart_upload(self, call: Call, ep: s3.AbortMultipartUpload) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")

        def work(tx: Tx) -> list[str]:
            meta.get_upload(tx, b.name, ep.key, ep.upload_id)
            return meta.finish_upload(tx, ep.upload_id)

        files = await self.store.write(work)
        await self.storage.remove(files)
        log.info("multipart-abort bucket=%s key=%s upload=%s", b.name, ep.key, ep.upload_id)
        return _empty(204)

    async def list_parts(self, call: Call, ep: s3.ListParts) -> Response:
        b = self.bucket_access(call, ep.bucket, "WRITE")

        def load(tx: Tx) -> tuple[meta.UploadRow, list[meta.PartRow]]:
            return (meta.get_upload(tx, b.name, ep.key, ep.upload_id),
                    meta.list_parts(tx, ep.upload_id, ep.part_number_marker, ep.max_parts + 1))

        upload, parts = await self.store.read(load)
        truncated = len(parts) > ep.max_parts
        parts = parts[: ep.max_parts]
        algo = upload.checksum_algorithm
        entries = [s3.PartEntry(p.part_number, p.last_modified, p.etag, p.size,
                                {algo: p.checksum} if algo and p.checksum else {}) for p in parts]
        return _xml(s3.render_list_parts(ep, s3.Owner(upload.owner_id, upload.owner_name), entries, truncated,
                                         algo, upload.checksum_type))


def _ranges(items: list[Any], sizes: list[int], first: int, length: int) -> list[tuple[Any, int, int]]:
    """(item, offset, count) for the byte range [first, first+length) of the concatenation of pieces of `sizes`
    (one item each, e.g. a part's fd or storage id)."""
    out = []
    start = 0
    for item, size in zip(items, sizes, strict=True):
        lo, hi = max(first, start), min(first + length, start + size)
        if lo < hi:
            out.append((item, lo - start, hi - lo))
        start += size
    return out


def _valid_version_id(v: str) -> bool:
    return len(v) == 32 and all(c in "0123456789abcdef" for c in v)


__all__ = ["Walrus", "Call", "Checksum"]
