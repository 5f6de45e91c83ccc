"""Bucket policies and public access blocks: storage, the ?policy/?policyStatus/?publicAccessBlock handlers, and the
access decision that combines a bucket's policy with its ACLs the way S3 does:
an explicit Deny in the policy refuses the request (even to the owner, except the owner managing the policy itself);
an Allow grants it to whoever it names (other accounts, anonymous); otherwise the ACL checks decide.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from euca.core.http import Response
from euca.core.store import Tx
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import policy as s3_policy
from euca.roles.walrus import acl as acls
from euca.roles.walrus import meta

if TYPE_CHECKING:
    from euca.roles.walrus.handlers import Call, Walrus

log = logging.getLogger("euca.walrus")

Route = Callable[["Call", Any], Awaitable[Response]]

_POLICY_MANAGEMENT = (s3_policy.PutBucketPolicy, s3_policy.GetBucketPolicy, s3_policy.DeleteBucketPolicy)
_PUBLIC_CANNED = ("public-read", "public-read-write", "authenticated-read")


@dataclass
class BucketPolicy:
    text: str | None = None
    policy: s3_policy.Policy | None = None
    public_access_block: dict[str, bool] | None = None


def _load(tx: Tx) -> list[tuple[str, str | None, str | None]]:
    return [(r[0], r[1], r[2]) for r in tx.all(
        "SELECT bucket, policy, public_access_block FROM walrus_bucket_policies")]


def _save(tx: Tx, bucket: str, entry: BucketPolicy) -> None:
    if entry.text is None and entry.public_access_block is None:
        tx.execute("DELETE FROM walrus_bucket_policies WHERE bucket=?", (bucket,))
        return
    pab = None if entry.public_access_block is None else json.dumps(entry.public_access_block)
    tx.execute("INSERT INTO walrus_bucket_policies(bucket, policy, public_access_block) VALUES(?,?,?) "
               "ON CONFLICT(bucket) DO UPDATE SET policy=excluded.policy, "
               "public_access_block=excluded.public_access_block", (bucket, entry.text, pab))


class Policies:
    def __init__(self, walrus: Walrus):
        self.walrus = walrus
        self.entries: dict[str, BucketPolicy] = {}

    def routes(self) -> dict[type, Route]:
        return {
            s3_policy.PutBucketPolicy: self.put_bucket_policy,
            s3_policy.GetBucketPolicy: self.get_bucket_policy,
            s3_policy.DeleteBucketPolicy: self.delete_bucket_policy,
            s3_policy.GetBucketPolicyStatus: self.get_bucket_policy_status,
            s3_policy.PutPublicAccessBlock: self.put_public_access_block,
            s3_policy.GetPublicAccessBlock: self.get_public_access_block,
            s3_policy.DeletePublicAccessBlock: self.delete_public_access_block,
        }

    async def load(self) -> None:
        self.entries = {}
        for bucket, text, pab in await self.walrus.store.read(_load):
            entry = BucketPolicy(text, None, json.loads(pab) if pab else None)
            if text:
                try:
                    entry.policy = s3_policy.parse_policy(text, bucket)
                except S3Error:
                    log.warning("bucket=%s: stored policy no longer parses; ignored", bucket)
            self.entries[bucket] = entry

    async def _store(self, bucket: str, entry: BucketPolicy) -> None:
        await self.walrus.write_config(lambda tx: _save(tx, bucket, entry))
        self.entries[bucket] = entry

    def _entry(self, bucket: str) -> BucketPolicy:
        e = self.entries.get(bucket)
        return BucketPolicy(e.text, e.policy, e.public_access_block) if e else BucketPolicy()

    # -- handlers -------------------------------------------------------------------------------------

    async def put_bucket_policy(self, call: Call, ep: s3_policy.PutBucketPolicy) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        body = await call.xml_body()
        policy = s3_policy.parse_policy(body, b.name)
        entry = self._entry(b.name)
        if (entry.public_access_block or {}).get("BlockPublicPolicy") and s3_policy.is_public(policy):
            raise S3Error("AccessDenied")
        entry.text, entry.policy = body.decode(), policy
        await self._store(b.name, entry)
        log.info("put-bucket-policy bucket=%s statements=%d", b.name, len(policy.statements))
        return Response(204, [], b"")

    async def get_bucket_policy(self, call: Call, ep: s3_policy.GetBucketPolicy) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        entry = self.entries.get(b.name)
        if entry is None or entry.text is None:
            raise S3Error("NoSuchBucketPolicy", "The bucket policy does not exist", BucketName=b.name)
        return Response(200, [("Content-Type", "application/json")], entry.text.encode())

    async def delete_bucket_policy(self, call: Call, ep: s3_policy.DeleteBucketPolicy) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        entry = self._entry(b.name)
        entry.text, entry.policy = None, None
        await self._store(b.name, entry)
        return Response(204, [], b"")

    async def get_bucket_policy_status(self, call: Call, ep: s3_policy.GetBucketPolicyStatus) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        entry = self.entries.get(b.name)
        public = entry is not None and entry.policy is not None and s3_policy.is_public(entry.policy)
        # The conformance suite also counts a bucket ACL granting to everyone / all authenticated users as public.
        public = public or any(g[1] == "Group" and g[2] in (s3.ALL_USERS, s3.AUTHENTICATED_USERS)
                               for g in b.acl.get("grants", []))
        return Response(200, [("Content-Type", "application/xml")], s3_policy.render_policy_status(public))

    async def put_public_access_block(self, call: Call, ep: s3_policy.PutPublicAccessBlock) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        conf = s3_policy.parse_public_access_block(await call.xml_body())
        entry = self._entry(b.name)
        entry.public_access_block = conf
        await self._store(b.name, entry)
        return Response(200, [], b"")

    async def get_public_access_block(self, call: Call, ep: s3_policy.GetPublicAccessBlock) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        entry = self.entries.get(b.name)
        # A bucket that never had one answers the all-false defaults (what the conformance suite expects) rather
        # than NoSuchPublicAccessBlockConfiguration.
        conf = entry.public_access_block if entry is not None and entry.public_access_block is not None else {}
        return Response(200, [("Content-Type", "application/xml")], s3_policy.render_public_access_block(conf))

    async def delete_public_access_block(self, call: Call, ep: s3_policy.DeletePublicAccessBlock) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        entry = self._entry(b.name)
        entry.public_access_block = None
        await self._store(b.name, entry)
        return Response(204, [], b"")

    # -- the access decision ------------------------------------------------------------------------------

    async def _context(self, call: Call, endpoint: Any, policy: s3_policy.Policy, action: str) -> s3_policy.Context:
        bucket = endpoint.bucket
        key = getattr(endpoint, "key", None)
        resource = f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")
        p = call.principal
        keys: dict[str, list[str]] = {"aws:sourceip": [call.request.client[0]] if hasattr(call.request, "client")
                                      else [], "aws:securetransport": ["false"]}
        q = s3.parse_query(call.request.query) if call.request.query else {}
        for name in ("prefix", "delimiter", "max-keys", "versionId"):
            if name in q:
                keys[f"s3:{name.lower()}"] = [q[name]]
        headers = call.request.headers
        for h in ("x-amz-acl", "x-amz-copy-source", "x-amz-metadata-directive", "x-amz-server-side-encryption",
                  "x-amz-grant-full-control", "x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp",
                  "x-amz-grant-write-acp", "x-amz-content-sha256", "x-amz-storage-class"):
            v = headers.get(h)
            if v is not None:
                keys[f"s3:{h}"] = [v]
        referer = headers.get("referer")
        if referer is not None:
            keys["aws:referer"] = [referer]
        user_agent = headers.get("user-agent")
        if user_agent is not None:
            keys["aws:useragent"] = [user_agent]
        if p is not None:
            keys["aws:username"] = [p.user_name]
            keys["aws:principalaccount"] = [p.account_id]
        request_tags = self._request_tags(call, endpoint)
        if request_tags is not None:
            for k, v in request_tags.items():
                keys[f"s3:requestobjecttag/{k.lower()}"] = [v]
            keys["s3:requestobjecttagkeys"] = list(request_tags)
        if key is not None and s3_policy.uses_key(policy, "s3:existingobjecttag/"):
            version = getattr(endpoint, "version_id", None)
            o = await self.walrus.store.read(lambda tx: meta.get_object(tx, bucket, key, version))
            for k, v in ((o.tags or {}) if o is not None and not o.delete_marker else {}).items():
                keys[f"s3:existingobjecttag/{k.lower()}"] = [v]
        ctx = s3_policy.Context(action, resource, p.account_id if p else None, p.arn if p else None, keys)
        return ctx

    @staticmethod
    def _request_tags(call: Call, endpoint: Any) -> dict[str, str] | None:
        tagging = getattr(endpoint, "tagging", None)
        if isinstance(tagging, dict) and tagging:
            return {str(k): str(v) for k, v in tagging.items()}
        return None

    def _block_public_acls(self, endpoint: Any) -> None:
        acl = getattr(endpoint, "acl", None)
        if not isinstance(acl, s3.AclRequest):
            return
        if acl.canned in _PUBLIC_CANNED or any(
                g.grantee_type == "Group" and g.grantee in (s3.ALL_USERS, s3.AUTHENTICATED_USERS) for g in acl.grants):
            raise S3Error("AccessDenied")

    async def guard(self, call: Call, endpoint: Any, route: Route) -> Response:
        """Run `route` under the bucket's policy: refuse on Deny, grant on Allow, else leave it to the ACLs."""
        bucket = getattr(endpoint, "bucket", None)
        entry = self.entries.get(bucket) if bucket is not None else None
        if entry is None:
            response = await route(call, endpoint)
            await self._forget_deleted(endpoint)
            return response
        pab = entry.public_access_block or {}
        if pab.get("BlockPublicAcls"):
            self._block_public_acls(endpoint)
        verdict = None
        action = s3_policy.action_of(endpoint)
        if entry.policy is not None and action is not None:
            verdict = s3_policy.evaluate(entry.policy, await self._context(call, endpoint, entry.policy, action))
            b = self.walrus.buckets.get(bucket or "")
            p = call.principal
            is_owner = b is not None and p is not None and p.canonical_id == b.owner_id
            if verdict == s3_policy.DENY and not (is_owner and isinstance(endpoint, _POLICY_MANAGEMENT)):
                raise S3Error("AccessDenied")
            if verdict == s3_policy.ALLOW and pab.get("RestrictPublicBuckets") and s3_policy.is_public(entry.policy) \
                    and not is_owner:
                verdict = None
        grant = acls.POLICY_GRANT.set(verdict == s3_policy.ALLOW)
        ignore = acls.IGNORE_PUBLIC_ACLS.set(bool(pab.get("IgnorePublicAcls")))
        try:
            response = await route(call, endpoint)
        finally:
            acls.POLICY_GRANT.reset(grant)
            acls.IGNORE_PUBLIC_ACLS.reset(ignore)
        await self._forget_deleted(endpoint)
        return response

    async def _forget_deleted(self, endpoint: Any) -> None:
        """A deleted bucket takes its policy with it (a new bucket of the same name starts without one)."""
        if isinstance(endpoint, s3.DeleteBucket):
            await self.walrus.cors.forget(endpoint.bucket)
        if isinstance(endpoint, s3.DeleteBucket) and endpoint.bucket in self.entries:
            self.entries.pop(endpoint.bucket, None)
            await self.walrus.write_config(
                lambda tx: tx.execute("DELETE FROM walrus_bucket_policies WHERE bucket=?", (endpoint.bucket,)))
