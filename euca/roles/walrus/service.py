"""The Walrus service object: what every handler works with besides its request.

It holds the store, the identity service and the storage engine; the in-memory caches (every bucket with its
policy, public access block and CORS rules; recently read objects); the change counters shared with the other
S3 processes; and the helpers handlers share: the access checks, the writes that keep the caches coherent, the
commits that make an object version visible, reading a request body into storage.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from euca.core.identity import Identity, Principal
from euca.core.store import Store, Tx
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import cors as s3_cors
from euca.protocol.s3 import policy as s3_policy
from euca.roles.walrus import acl as acls
from euca.roles.walrus import meta
from euca.roles.walrus.access import BucketPolicy
from euca.roles.walrus.cache import ObjectCache
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.changes import CONFIG, OBJECTS, Changes
from euca.roles.walrus.encrypted_io import EncryptingStream, PieceCipher
from euca.roles.walrus.meta import BucketRow, ObjectRow
from euca.roles.walrus.storage import ByteStore, Source, Written

if TYPE_CHECKING:
    from euca.core.store.listen import Watch

log = logging.getLogger("euca.walrus")
T = TypeVar("T")


class OnBucket(Protocol):
    """An endpoint on one bucket: the bucket's name and, from the endpoint's class, what the caller must hold."""

    @property
    def bucket(self) -> str: ...

    @property
    def permission(self) -> s3.Permission: ...


# What Walrus's writes announce through the store (heard by Walrus on other hosts): object rows, and buckets
# with their policies, CORS rules and settings.
OBJECT_CHANGES = "walrus.objects"
CONFIG_CHANGES = "walrus.config"


def _announced(tx: Tx, fn: Callable[[Tx], T], names: tuple[str, ...]) -> T:
    result = fn(tx)
    for name in names:
        tx.announce(name)
    return result


class WalrusService:
    def __init__(self, store: Store, identity: Identity, storage: ByteStore, region: str):
        self.store = store
        self.identity = identity
        self.storage = storage
        self.region = region
        # Every bucket, in memory: the process(es) serving S3 own the Walrus tables, so the cache is the truth
        # after start; with walrus.workers, `changes` tells each process of the others' writes (see sync()).
        self.buckets: dict[str, BucketRow] = {}
        # The access rules (policy, public access block) and CORS rules of the buckets that have them.
        self.policies: dict[str, BucketPolicy] = {}
        self.cors_rules: dict[str, list[s3_cors.Rule]] = {}
        # The settings of each bucket that has any (lifecycle, ownership, object_lock, logging, encryption).
        self.settings: dict[str, dict[str, Any]] = {}
        # The length of a lifecycle "day" (walrus.lifecycle_day_seconds; shorter only in tests).
        self.lifecycle_day = 86400.0
        self.objects = ObjectCache()
        # The key that wraps SSE-S3 data keys (encryption.load_cloud_key; set by whoever builds the service).
        self.cloud_key = b""
        self.changes: Changes | None = None
        # Writes committed through other store objects: Walrus on other hosts sharing a PostgreSQL store
        # (watch_other_hosts; None on SQLite, one host's, whose processes share `changes`).
        self.remote_objects: Watch | None = None
        self.remote_config: Watch | None = None
        self._config_wanted = 0
        self._config_loaded = 0
        self._reload_lock = trio.Lock()

    # -- caches and change counters ---------------------------------------------------------------------

    def watch_other_hosts(self) -> None:
        """Hear of the writes of Walrus processes on other hosts (through the store: PostgreSQL only)."""
        self.remote_objects = self.store.watch(OBJECT_CHANGES)
        self.remote_config = self.store.watch(CONFIG_CHANGES)

    @property
    def watching(self) -> bool:
        """Whether other processes may write the Walrus tables (sync() before each request)."""
        return self.changes is not None or self.remote_config is not None

    async def load(self) -> None:
        if self.remote_config is not None:
            self.remote_config.changed()  # what is announced from here on comes after this read

        def read(
            tx: Tx,
        ) -> tuple[
            list[BucketRow],
            list[tuple[str, str | None, str | None]],
            list[tuple[str, str]],
            list[tuple[str, str, Any]],
        ]:
            return meta.load_buckets(tx), meta.load_policies(tx), meta.load_cors(tx), meta.load_settings(tx)

        buckets, policies, cors, settings = await self.store.read(read)
        self.buckets = {b.name: b for b in buckets}
        self.policies = {}
        for bucket, text, pab in policies:
            entry = BucketPolicy(text, None, json.loads(pab) if pab else None)
            if text:
                try:
                    entry.policy = s3_policy.parse_policy(text, bucket, strict=False)
                except S3Error:
                    log.warning("bucket=%s: stored policy no longer parses; ignored", bucket)
            self.policies[bucket] = entry
        self.cors_rules = {b: json.loads(r) for b, r in cors}
        self.settings = {}
        for bucket, name, value in settings:
            self.settings.setdefault(bucket, {})[name] = value

    async def sync(self) -> None:
        """Before a request, with several processes serving S3: take in the others' committed writes (drop the
        object cache; reload buckets, policies and CORS rules)."""
        objects, config = self.changes.poll() if self.changes is not None else (False, False)
        if self.remote_objects is not None and self.remote_objects.changed():
            objects = True
        if self.remote_config is not None and self.remote_config.changed():
            config = True
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
        if self.watching:
            # A reload begun before our commit would bring back the old state: load once more.
            self._config_wanted += 1

    # -- bucket settings ----------------------------------------------------------------------------------

    def setting(self, bucket: str, name: str) -> Any:
        """One setting of a bucket (None: not set)."""
        return self.settings.get(bucket, {}).get(name)

    async def save_setting(self, bucket: str, name: str, value: Any) -> None:
        """Store one setting of a bucket (None removes it) and keep the cache in step."""
        await self.write_config(lambda tx: meta.save_setting(tx, bucket, name, value))
        if value is None:
            self.settings.get(bucket, {}).pop(name, None)
        else:
            self.settings.setdefault(bucket, {})[name] = value

    # -- writes -----------------------------------------------------------------------------------------

    async def write_config(self, fn: Callable[[Tx], T]) -> T:
        """A metadata write of buckets (their settings, policies, CORS rules): other processes reload them."""
        try:
            return await self.store.write(lambda tx: _announced(tx, fn, (CONFIG_CHANGES,)))
        finally:
            self.config_changed()

    async def write(
        self,
        fn: Callable[[Tx], T],
        bucket: str,
        key: str | None,
        *,
        durable: bool = False,
        config: bool = False,
    ) -> T:
        """A metadata write that changes object `key` (every key of the bucket if None): the object cache
        forgets it before the write starts and again once it is committed. With `config`, it changes the
        bucket too (other hosts reload the buckets; the caller calls config_changed())."""
        self._forget(bucket, key)
        names = (OBJECT_CHANGES, CONFIG_CHANGES) if config else (OBJECT_CHANGES,)
        try:
            return await self.store.write(lambda tx: _announced(tx, fn, names), durable=durable)
        finally:
            self._forget(bucket, key)
            if self.changes is not None:
                self.changes.bump(OBJECTS)

    def _forget(self, bucket: str, key: str | None) -> None:
        if key is None:
            self.objects.clear()
        else:
            self.objects.forget(bucket, key)

    async def commit(self, fn: Callable[[Tx], T], written: list[str], bucket: str, key: str) -> T:
        """Make an object version visible: a durable metadata write (the bytes of an inline object go with it);
        if it fails, the files written for it are removed (nothing becomes visible).

        The new files stay locked (in flight, storage.py) until the write is over, so the sweep never takes a
        file this commit may still make visible; files this commit stops referring to, which the caller
        removes afterwards, are swept if the process dies before it does."""
        return await self._commit_files(lambda: self.write(fn, bucket, key, durable=True), written)

    async def commit_part(self, fn: Callable[[Tx], T], written: list[str]) -> T:
        """Record an uploaded part (durably: it is acknowledged); its file is removed if that fails."""
        return await self._commit_files(lambda: self.store.write(fn, durable=True), written)

    async def _commit_files(self, write: Callable[[], Awaitable[T]], written: list[str]) -> T:
        try:
            if not self.storage.claim(written):
                log.warning("commit refused: its file(s) waited too long and were given up: %s", written)
                raise S3Error("InternalError")
            result = await write()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.storage.remove(written)
            raise
        self.storage.release(written)
        return result

    async def receive(
        self,
        call: S3Call,
        cs: s3.ChecksumRequest,
        algorithm: str | None,
        content_length: int | None,
        max_size: int,
        *,
        inline: bool = False,
        cipher: PieceCipher | None = None,
    ) -> Written:
        """The request body, written to storage (or kept in memory, `inline`) and checked against the
        Content-MD5 and x-amz-checksum-* the client sent; BadDigest (and nothing kept) if it does not match.
        A body announced over `max_size` is refused before any of it is asked for (no 100 Continue).
        With `cipher`, the bytes are kept encrypted (encrypted_io.py); the hashes are the plaintext's."""
        if content_length is not None and content_length > max_size:
            raise S3Error("EntityTooLarge", ProposedSize=str(content_length), MaxSizeAllowed=str(max_size))
        stream = call.payload()
        sealed = EncryptingStream(stream, cipher, algorithm) if cipher is not None else None
        written = await self.storage.write_stream(
            sealed or stream,
            None if sealed else algorithm,
            expected_size=content_length,
            max_size=max_size,
            inline=inline,
        )
        plain_md5 = sealed.finish(written) if sealed is not None else written.md5
        try:
            if cs.content_md5 is not None and base64.b64decode(cs.content_md5) != bytes.fromhex(plain_md5):
                raise S3Error(
                    "BadDigest",
                    ExpectedDigest=cs.content_md5,
                    CalculatedDigest=base64.b64encode(bytes.fromhex(plain_md5)).decode(),
                )
            expected = cs.value
            if expected is None and cs.trailer is not None:
                expected = stream.trailers.get(cs.trailer)
            if expected is not None and written.checksum is not None and expected != written.checksum.b64():
                raise S3Error(
                    "BadDigest", f"The {cs.algorithm} you specified did not match the calculated checksum."
                )
        except BaseException:
            await self.storage.remove(written.files)
            raise
        return written

    # -- access checks ----------------------------------------------------------------------------------

    def bucket(self, name: str) -> BucketRow:
        b = self.buckets.get(name)
        if b is None:
            raise S3Error("NoSuchBucket", BucketName=name)
        return b

    @staticmethod
    def permit(call: S3Call, acl: acls.Acl | None, permission: str) -> None:
        """AccessDenied unless the caller holds `permission` through `acl` (under the call's access decision)."""
        if not acls.allowed(acl, call.principal, permission, call.access):
            raise S3Error("AccessDenied")

    def authorized_bucket(self, call: S3Call, ep: OnBucket) -> BucketRow:
        """The endpoint's bucket (NoSuchBucket first), once the caller holds what the endpoint's class requires
        of it (`permission`): the bucket's ownership, or an ACL permission on the bucket, either of which a
        policy grant stands in for. A permission on the object needs only the bucket here: the handler checks
        the object's own ACL (permit(call, o.acl, ep.permission.name)) once it has read the object."""
        b = self.buckets.get(ep.bucket)
        if b is None:
            raise S3Error("NoSuchBucket", BucketName=ep.bucket)
        permission = ep.permission
        if permission.of == "bucket":
            if permission.name == "OWNER":
                p = call.principal
                if not (p is not None and p.canonical_id == b.owner_id) and not call.access.policy_grant:
                    raise S3Error("AccessDenied")
            elif not acls.allowed(b.acl, call.principal, permission.name, call.access):
                raise S3Error("AccessDenied")
        return b

    @staticmethod
    def authenticated(call: S3Call) -> Principal:
        if call.principal is None:
            raise S3Error("AccessDenied")
        return call.principal

    @staticmethod
    def owner_for(call: S3Call, b: BucketRow) -> tuple[str, str]:
        """Who owns what the call writes: its principal, or the bucket owner for an anonymous write."""
        p = call.principal
        return (p.canonical_id, p.account_name) if p is not None else (b.owner_id, b.owner_name)

    # -- ACLs from requests -------------------------------------------------------------------------------

    async def resolve_grants(self, grants: list[s3.Grant]) -> list[s3.Grant]:
        out = []
        for g in grants:
            if g.grantee_type == "CanonicalUser":
                account = await self.identity.account_by_canonical_id(g.grantee)
                if account is None:
                    raise S3Error(
                        "InvalidArgument",
                        "Invalid id",
                        ArgumentName="CanonicalUser/ID",
                        ArgumentValue=g.grantee,
                    )
                out.append(s3.Grant(g.permission, g.grantee_type, g.grantee, account.name))
            elif g.grantee_type == "Group":
                if g.grantee not in (s3.ALL_USERS, s3.AUTHENTICATED_USERS, s3.LOG_DELIVERY):
                    raise S3Error(
                        "InvalidArgument",
                        "Invalid group uri",
                        ArgumentName="Group/URI",
                        ArgumentValue=g.grantee,
                    )
                out.append(g)
            else:
                raise S3Error("UnresolvableGrantByEmailAddress", EmailAddress=g.grantee)
        return out

    async def acl_for(
        self, req: s3.AclRequest, owner: tuple[str, str], bucket_owner: tuple[str, str] | None = None
    ) -> acls.Acl:
        """The ACL a request's x-amz-acl / x-amz-grant-* headers ask for (private if none)."""
        if req.grants:
            return acls.from_grants(owner[0], owner[1], await self.resolve_grants(req.grants))
        return acls.canned(req.canned or "private", owner[0], owner[1], bucket_owner)

    async def acl_from_request(
        self, call: S3Call, req: s3.AclRequest, owner: tuple[str, str], bucket_owner: tuple[str, str] | None
    ) -> acls.Acl:
        """The ACL of a PUT ?acl: from its headers, or from its AccessControlPolicy body."""
        body = await call.xml_body() if not req else b""
        if req:
            return await self.acl_for(req, owner, bucket_owner)
        policy = s3.parse_acl_body(body)
        if policy.owner_id and policy.owner_id != owner[0]:
            raise S3Error("AccessDenied")
        return acls.from_grants(owner[0], owner[1], await self.resolve_grants(policy.grants))

    # -- objects ----------------------------------------------------------------------------------------

    async def fetch(
        self, bucket: str, key: str, version_id: str | None, *, with_data: bool = False
    ) -> ObjectRow:
        """The version asked for (latest if None); NoSuchKey/NoSuchVersion/delete-marker errors as S3."""
        o = await self.store.read(
            lambda tx: meta.get_object(tx, bucket, key, version_id, with_data=with_data)
        )
        return self.live(o, bucket, key, version_id)

    @staticmethod
    def live(o: ObjectRow | None, bucket: str, key: str, version_id: str | None) -> ObjectRow:
        if o is None:
            if version_id is not None:
                if version_id != "null" and not valid_version_id(version_id):
                    raise S3Error(
                        "InvalidArgument",
                        "Invalid version id specified",
                        ArgumentName="versionId",
                        ArgumentValue=version_id,
                    )
                raise S3Error("NoSuchVersion", Key=key, VersionId=version_id)
            raise S3Error("NoSuchKey", Key=key)
        if o.delete_marker:
            hdrs = s3.delete_marker_headers(o.version_id)
            if version_id is not None:
                raise S3Error(
                    "MethodNotAllowed",
                    headers=hdrs + [("Allow", "DELETE")],
                    Method="GET",
                    ResourceType="DeleteMarker",
                )
            raise S3Error("NoSuchKey", headers=hdrs, Key=key)
        return o

    async def check_write_conditions(self, bucket: str, key: str, cond: s3.Conditions) -> None:
        """If-Match / If-None-Match of a write, against the key's current version."""
        if cond.if_none_match is None and cond.if_match is None:
            return
        o = await self.store.read(lambda tx: meta.get_object(tx, bucket, key))
        if o is None or o.delete_marker:
            if cond.if_match is not None:
                raise S3Error("NoSuchKey", Key=key)
            return
        s3.evaluate_conditions(cond, o.etag, o.last_modified, mode="write")

    @staticmethod
    def sources(o: ObjectRow, offset: int, length: int) -> list[Source]:
        """Where a byte range of a live object's content is, for Storage.copy."""
        if o.storage_id is not None:
            return [(o.storage_id, offset, length)]
        if o.segments is not None:
            return [*byte_ranges(o.segments, o.parts or [], offset, length)]
        if o.data is None:
            raise S3Error("InternalError", "inline object read without its bytes")
        return [(o.data, offset, length)]


def byte_ranges(items: list[T], sizes: list[int], first: int, length: int) -> list[tuple[T, int, int]]:
    """(item, offset, count) for the byte range [first, first+length) of the concatenation of pieces of `sizes`
    (one item each, e.g. a part's storage id)."""
    out = []
    start = 0
    for item, size in zip(items, sizes, strict=True):
        lo, hi = max(first, start), min(first + length, start + size)
        if lo < hi:
            out.append((item, lo - start, hi - lo))
        start += size
    return out


def valid_version_id(v: str) -> bool:
    return len(v) == 32 and all(c in "0123456789abcdef" for c in v)
