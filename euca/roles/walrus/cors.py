"""Bucket CORS: storage of the rules, the ?cors handlers, the preflight OPTIONS answer, and the Access-Control-*
headers added to every response for a request that carries an Origin."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from euca.core.http import Request, Response
from euca.core.store import Tx
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import cors as s3_cors

if TYPE_CHECKING:
    from euca.roles.walrus.handlers import Call, Walrus


def _load(tx: Tx) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in tx.all("SELECT bucket, rules FROM walrus_bucket_cors")]


def _save(tx: Tx, bucket: str, rules: list[s3_cors.Rule] | None) -> None:
    if rules is None:
        tx.execute("DELETE FROM walrus_bucket_cors WHERE bucket=?", (bucket,))
    else:
        tx.execute("INSERT INTO walrus_bucket_cors(bucket, rules) VALUES(?,?) "
                   "ON CONFLICT(bucket) DO UPDATE SET rules=excluded.rules", (bucket, json.dumps(rules)))


class Cors:
    def __init__(self, walrus: Walrus):
        self.walrus = walrus
        self.rules: dict[str, list[s3_cors.Rule]] = {}

    def routes(self) -> dict[type, object]:
        return {
            s3_cors.PutBucketCors: self.put_bucket_cors,
            s3_cors.GetBucketCors: self.get_bucket_cors,
            s3_cors.DeleteBucketCors: self.delete_bucket_cors,
            s3_cors.Preflight: self.preflight,
        }

    async def load(self) -> None:
        self.rules = {b: json.loads(r) for b, r in await self.walrus.store.read(_load)}

    async def put_bucket_cors(self, call: Call, ep: s3_cors.PutBucketCors) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        rules = s3_cors.parse_cors_body(await call.xml_body())
        await self.walrus.write_config(lambda tx: _save(tx, b.name, rules))
        self.rules[b.name] = rules
        return Response(200, [], b"")

    async def get_bucket_cors(self, call: Call, ep: s3_cors.GetBucketCors) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        rules = self.rules.get(b.name)
        if rules is None:
            raise S3Error("NoSuchCORSConfiguration", "The CORS configuration does not exist", 404,
                          BucketName=b.name)
        return Response(200, [("Content-Type", "application/xml")], s3_cors.render_cors(rules))

    async def delete_bucket_cors(self, call: Call, ep: s3_cors.DeleteBucketCors) -> Response:
        b = self.walrus.bucket_owner(call, ep.bucket)
        await self.walrus.write_config(lambda tx: _save(tx, b.name, None))
        self.rules.pop(b.name, None)
        return Response(204, [], b"")

    async def preflight(self, call: Call, ep: s3_cors.Preflight) -> Response:
        headers = call.request.headers
        origin = headers.get("origin")
        method = headers.get("access-control-request-method")
        if not origin:
            raise S3Error("BadRequest", "Insufficient information. Origin request header needed.", 400)
        if not method:
            raise S3Error("BadRequest", "Invalid Access-Control-Request-Method: null", 400)
        self.walrus.bucket(ep.bucket)
        rules = self.rules.get(ep.bucket)
        allowed = s3_cors.match(rules, origin, method.upper(),
                                s3_cors.request_header_names(headers.get("access-control-request-headers"))) \
            if rules else None
        if allowed is None:
            raise S3Error("AccessForbidden", "CORSResponse: This CORS request is not allowed. This is usually "
                          "because the evalution of Origin, request method / Access-Control-Request-Method or "
                          "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.", 403)
        return Response(200, allowed, b"")

    def decorate(self, request: Request, bucket: str | None, response: Response) -> None:
        """Add the Access-Control-* headers of the matching rule to an actual (non-preflight) request's response."""
        origin = request.headers.get("origin")
        if not origin or bucket is None or request.method == "OPTIONS":
            return
        rules = self.rules.get(bucket)
        if not rules:
            return
        method = (request.headers.get("access-control-request-method") or request.method).upper()
        allowed = s3_cors.match(rules, origin, method, [])
        if allowed:
            response.headers.extend(allowed)

    async def forget(self, bucket: str) -> None:
        if self.rules.pop(bucket, None) is not None:
            await self.walrus.write_config(lambda tx: _save(tx, bucket, None))
