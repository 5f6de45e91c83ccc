"""Joining the cloud, CLC side: one-time tokens, and POST /services/cluster/join that redeems them.

`euca admin register-node` / `register-cluster` call `make_join_token(...)` and print the token. The
component on the other host runs `euca --role nc --join TOKEN` (euca.core.components.join_cloud): it sends
the token's id and secret with a CSR for a key it just made; this endpoint checks the token (known, secret
matches, not used, not expired), signs a certificate for the CSR's key with the subject the admin
registered (the CSR's own subject is ignored; an NC's certificate also names the cluster it was registered
in), marks the token used and answers with the certificate, the CA certificate and, for an NC, the
cluster's node image key sealed for the CSR's key.

Tokens are kept hashed (SHA-256 of the secret); the token itself pins the CA certificate's SHA-256, so the
joiner can check the answer even though this port is plain HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from euca.core.components import (
    CLUSTER_MEMBER_ROLES,
    JOIN_PATH,
    JoinReply,
    JoinRequest,
    JoinToken,
    encode_join_token,
    seal,
)
from euca.core.http import Request, Response
from euca.core.pki import CloudCA, cert_sha256
from euca.core.roles import RoleContext
from euca.core.store import Store, Tx
from euca.protocol.cluster import encode_fault
from euca.protocol.errors import CodedError
from euca.roles.clc.schema import JOIN_TOKENS, apply

log = logging.getLogger("euca.clc.join")

JOIN_ROLES = ("cc", "nc", "sc")
TOKEN_TTL = 24 * 3600.0
MAX_BODY = 64 * 1024
JSON = [("Content-Type", "application/json")]


def migrate(store: Store) -> None:
    """The tokens table (the admin CLI makes tokens on a store no CLC may have opened yet)."""
    apply(store, JOIN_TOKENS)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def make_join_token(
    store: Store,
    ca: CloudCA,
    role: str,
    name: str,
    *,
    clc_url: str,
    hosts: Iterable[str] = (),
    cluster: str | None = None,
    ttl: float = TOKEN_TTL,
) -> str:
    """A one-time token for component `name` of `role` to join with (valid `ttl` seconds). `clc_url` is
    where the joiner reaches this CLC (http://host:8773); `hosts` go into the certificate's
    subjectAltName; `cluster` (an NC's, required there) too, so the NC answers that cluster's CC only.
    Synchronous (the admin CLI runs it on the store directly)."""
    if role not in JOIN_ROLES:
        raise ValueError(f"role must be one of {', '.join(JOIN_ROLES)}, not {role!r}")
    if not name:
        raise ValueError("a component needs a name")
    if role in CLUSTER_MEMBER_ROLES and not cluster:
        raise ValueError(f"a {role} joins a cluster: name it")
    if role not in CLUSTER_MEMBER_ROLES and cluster is not None:
        raise ValueError(f"a {role} certificate names no cluster (its name is the cluster)")
    migrate(store)
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    hosts_json = json.dumps([h for h in hosts if h])

    def insert(tx: Tx) -> None:
        tx.execute(
            "INSERT INTO cluster_join_tokens(token_id, secret_sha256, role, name, hosts, cluster, created, "
            "expires) VALUES(?,?,?,?,?,?,?,?)",
            (token_id, _secret_hash(secret), role, name, hosts_json, cluster, now, now + ttl),
        )

    store.write_sync(insert)
    log.info(
        "join token made role=%s name=%s%s token=%s expires_in=%ds",
        role,
        name,
        f" cluster={cluster}" if cluster else "",
        token_id,
        int(ttl),
    )
    return encode_join_token(JoinToken(clc_url.rstrip("/"), ca.sha256, token_id, secret, role, name, cluster))


def revoke_join_tokens(store: Store, role: str, name: str) -> int:
    """Forget the unused tokens of a component (on deregister). Returns how many."""
    migrate(store)
    return store.write_sync(
        lambda tx: tx.execute(
            "DELETE FROM cluster_join_tokens WHERE role=? AND name=? AND used IS NULL", (role, name)
        )
    )


def revoke_cluster_join_tokens(store: Store, cluster: str) -> int:
    """Forget the unused tokens of a cluster's CC/SC and of its nodes (on deregister-cluster): none of them
    can join a cluster that is gone, nor one registered later under the same name. Returns how many."""
    migrate(store)
    return store.write_sync(
        lambda tx: tx.execute(
            "DELETE FROM cluster_join_tokens WHERE used IS NULL AND "
            "((role IN ('cc', 'sc') AND name=?) OR (role='nc' AND cluster=?))",
            (cluster, cluster),
        )
    )


class JoinRefused(CodedError):
    """A join request refused (bad token, expired, used, wrong role ...)."""

    default_status = 403


@dataclass(frozen=True)
class Redeemed:
    role: str
    name: str
    cluster: str | None
    cert_pem: bytes


def _redeem(tx: Tx, request: JoinRequest, ca: CloudCA, client: str, now: float) -> Redeemed:
    row: sqlite3.Row | None = tx.one(
        "SELECT * FROM cluster_join_tokens WHERE token_id=?", (request.token_id,)
    )
    if row is None or not hmac.compare_digest(row["secret_sha256"], _secret_hash(request.secret)):
        raise JoinRefused("InvalidToken", "the join token is not known here")
    if row["used"] is not None:
        raise JoinRefused("InvalidToken", "the join token was used already; make a new one")
    if row["expires"] < now:
        raise JoinRefused("ExpiredToken", "the join token has expired; make a new one")
    try:
        cert_pem = ca.sign_csr(
            request.csr_pem.encode(),
            row["role"],
            row["name"],
            json.loads(row["hosts"]),
            cluster=row["cluster"],
        )
    except ValueError as e:
        # Refused before the token is spent: the joiner may retry with a good CSR.
        raise JoinRefused("BadMessage", str(e), 400) from None
    tx.execute(
        "UPDATE cluster_join_tokens SET used=?, used_by=?, cert_sha256=? WHERE token_id=?",
        (now, client, cert_sha256(cert_pem), request.token_id),
    )
    return Redeemed(row["role"], row["name"], row["cluster"], cert_pem)


class JoinApp:
    """The CLC's join endpoint, mounted on the CLC port: POST /services/cluster/join."""

    name = "clc"
    services: frozenset[str] = frozenset()
    path_prefixes: tuple[str, ...] = (JOIN_PATH.rsplit("/", 1)[0],)

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        migrate(ctx.store)

    def claims(self, request: Request) -> bool:
        return False

    async def handle(self, request: Request) -> Response:
        client = request.client[0]
        if request.path != "/" + JOIN_PATH.rsplit("/", 1)[1]:
            return _fault(404, "NotFound", f"nothing at {request.context.get('raw_path', request.path)}")
        if request.method != "POST":
            return _fault(405, "BadMessage", "join with POST")
        try:
            body = await request.body.read_all(MAX_BODY)
            join = msgspec.json.decode(body, type=JoinRequest)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
            # RecursionError: msgspec's nesting limit, on a body nested a thousand deep (no join request is).
            return _fault(400, "BadMessage", f"not a join request: {e}")
        ca = self.ctx.ca
        try:
            redeemed = await self.ctx.store.write(lambda tx: _redeem(tx, join, ca, client, time.time()))
        except JoinRefused as e:
            log.warning(
                "join refused client=%s token=%s code=%s %s", client, join.token_id[:32], e.code, e.message
            )
            return _fault(e.status, e.code, e.message)
        node_cert: str | None = None
        node_key: str | None = None
        components = self.ctx.components
        if redeemed.role == "nc" and components.has_node_image:
            joiner_key = x509.load_pem_x509_certificate(redeemed.cert_pem).public_key()
            assert isinstance(joiner_key, rsa.RSAPublicKey)  # sign_csr takes RSA keys only
            node_cert = components.node_image_cert_pem.decode()
            node_key = base64.b64encode(seal(joiner_key, components.node_image_key_pem)).decode()
        reply = JoinReply(
            role=redeemed.role,
            name=redeemed.name,
            cert_pem=redeemed.cert_pem.decode(),
            ca_cert_pem=ca.cert_pem.decode(),
            node_image_cert_pem=node_cert,
            node_image_key_sealed=node_key,
        )
        log.info(
            "component joined role=%s name=%s%s client=%s",
            redeemed.role,
            redeemed.name,
            f" cluster={redeemed.cluster}" if redeemed.cluster else "",
            client,
        )
        return Response(200, list(JSON), msgspec.json.encode(reply))


def _fault(status: int, code: str, message: str) -> Response:
    return Response(status, list(JSON), encode_fault(code, message))
