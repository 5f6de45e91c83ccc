"""Component identity: the certificates the CLC, CCs and NCs authenticate each other with.

Every component holds a key and a certificate issued by the cloud CA with O=euca, OU=<role>,
CN=<registered name>. Files, under <data_dir>/pki/components/:

    cloud-cert.pem                     the CA certificate peers are verified against
    <role>-key.pem, <role>-cert.pem    this host's identity for each role it runs (clc, cc, nc, sc)
    node-image-key.pem, -cert.pem      the cluster's node image key: download manifests carry the image key
                                       encrypted for this certificate (as Eucalyptus's node-cert.pem, which
                                       all NCs of a cluster share), so the CLC can encrypt before the CC
                                       picks a node

On a host with the CA key (one-box, the CLC host) the supervisor issues what is missing at start
(`ensure_components`). Another host joins: `euca admin register-node` on the CLC host prints a join
token; `euca --role nc --join TOKEN` sends a CSR and the token to the CLC (POST /services/cluster/join)
and gets back its certificate and the CA certificate (`join_cloud`). The token pins the CA certificate's
SHA-256, so the joiner checks what it got even over plain HTTP; the node image key comes back encrypted
for the joiner's own key.

TLS: both sides verify the peer's chain to the cloud certificate. Host names are not checked (nodes are
registered by address, and addresses change); the listener checks the caller's OU instead
(euca/core/cluster_app.py) and the caller checks the listener's (euca/core/cluster_client.py).

A node's certificate also names its cluster (SAN URI `urn:euca:cluster:<name>`, `cluster_of("nc")`): its
NC takes calls only from the CC whose CN is that cluster, not from any CC of the cloud.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from euca.core.pki import (
    CRL_FILE,
    EMPTY_REVOCATIONS,
    CloudCA,
    RevocationList,
    cert_cluster,
    cert_sha256,
    component_subject,
    issued_by,
    key_pem,
    new_key,
    read_crl,
    write_private,
    write_public,
)

if TYPE_CHECKING:
    from euca.core.config import Config

log = logging.getLogger("euca.components")

COMPONENTS_DIR = "pki/components"
# Roles that hold a TLS identity (walrus answers users only, on the plain port).
COMPONENT_ROLES = ("clc", "cc", "nc", "sc")
# Roles whose certificate names the cluster they belong to (a CC's and SC's CN is the cluster itself).
CLUSTER_MEMBER_ROLES = ("nc",)
NODE_IMAGE_ROLE = "node-image"  # OU of the node image certificate (encryption only, no TLS use)

JOIN_PATH = "/services/cluster/join"
JOIN_TOKEN_PREFIX = "euca1."


class MissingComponent(Exception):
    """This host has no certificate for the role (it has not joined the cloud as that role)."""


class JoinError(Exception):
    """Joining the cloud failed; the message says why (for the operator)."""


# ---------------------------------------------------------------------------------------------------------
# Names


def component_name(config: Config, role: str) -> str:
    """The name a component registers under by default: the cluster for a CC (and SC), the node's name
    (config nc.name, else the host name) for an NC, the role itself for the CLC."""
    if role in ("cc", "sc"):
        return config.cc.cluster
    if role == "nc":
        return config.nc.name or socket.gethostname()
    return role


def component_hosts(config: Config, role: str) -> list[str]:
    """Addresses to put in the certificate's subjectAltName: the public host and a specific listen host."""
    hosts = [config.public_host]
    listen = config.listen_for(role).host if role in ("clc", "cc", "nc", "sc") else ""
    if listen and listen not in ("0.0.0.0", "::"):
        hosts.append(listen)
    return hosts


def subject_fields(cert: x509.Certificate) -> tuple[str, str]:
    """(OU, CN) of a certificate's subject."""

    def first(oid: x509.ObjectIdentifier) -> str:
        attrs = cert.subject.get_attributes_for_oid(oid)
        value = attrs[0].value if attrs else ""
        return value if isinstance(value, str) else value.decode()

    return first(NameOID.ORGANIZATIONAL_UNIT_NAME), first(NameOID.COMMON_NAME)


@dataclass(frozen=True)
class ComponentIdentity:
    role: str
    name: str
    key_path: Path
    cert_path: Path


# ---------------------------------------------------------------------------------------------------------
# Revocation (issue 13)


class Revocations:
    """The cloud CA's CRL as this host knows it (<components>/crl.pem), for the cluster listeners and
    callers to check a peer's serial against on every call.

    The file is read again whenever its size or mtime changes (one stat per check), so a CRL written by
    `euca admin deregister-*` on this host, or accepted from the CLC's poll in another role of this host's
    process, holds at once for every role here. `accept` takes a CRL from a peer: it must verify against
    the cloud CA and be newer (a higher CRL number) than the one held; an older one is ignored."""

    def __init__(self, path: Path, ca_cert_path: Path):
        self.path = path
        self.ca_cert_path = ca_cert_path
        self._stamp: tuple[int, int] | None = None
        self._current = EMPTY_REVOCATIONS

    def current(self) -> RevocationList:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._current = None, EMPTY_REVOCATIONS
            return self._current
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                ca_cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
                self._current = read_crl(self.path.read_bytes(), ca_cert)
            except (OSError, ValueError) as e:
                # Never fail open on a damaged file silently: keep what was held, say so.
                log.error("revocation list unreadable path=%s error=%s", self.path, e)
            self._stamp = stamp
        return self._current

    def is_revoked(self, serial: int) -> bool:
        return serial in self.current().serials

    @property
    def pem(self) -> bytes:
        """The CRL to hand on (b"": none yet)."""
        return self.current().pem

    def accept(self, pem: bytes) -> bool:
        """Keep `pem` if it is the cloud CA's and newer than ours. True when it replaced ours."""
        if not pem or pem == self.current().pem:
            return False
        try:
            ca_cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            offered = read_crl(pem, ca_cert)
        except (OSError, ValueError) as e:
            log.warning("revocation list refused error=%s", e)
            return False
        if offered.number <= self.current().number:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_public(self.path, pem)
        log.info("revocation list updated number=%d revoked=%d", offered.number, len(offered.serials))
        return True


# ---------------------------------------------------------------------------------------------------------
# The files


class Components:
    """The component files of this host, and TLS contexts made from them."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ca_cert_path = directory / "cloud-cert.pem"
        self.node_image_key_path = directory / "node-image-key.pem"
        self.node_image_cert_path = directory / "node-image-cert.pem"
        self._server_contexts: dict[str, ssl.SSLContext] = {}
        self._client_contexts: dict[str, ssl.SSLContext] = {}
        # Each role's certificate file as its contexts loaded it (mtime, size): reload_changed's reference.
        self._loaded: dict[str, tuple[int, int]] = {}
        self.revocations = Revocations(directory / CRL_FILE, self.ca_cert_path)

    @classmethod
    def for_config(cls, config: Config) -> Components:
        return cls(config.data_path / COMPONENTS_DIR)

    def key_path(self, role: str) -> Path:
        return self.dir / f"{role}-key.pem"

    def cert_path(self, role: str) -> Path:
        return self.dir / f"{role}-cert.pem"

    def has(self, role: str) -> bool:
        return self.ca_cert_path.exists() and self.key_path(role).exists() and self.cert_path(role).exists()

    def identity(self, role: str) -> ComponentIdentity:
        if not self.has(role):
            raise MissingComponent(
                f"no {role} certificate in {self.dir}: on the CLC host run `euca admin register-node` "
                f"(or register-cluster) and start this host with --join TOKEN"
            )
        cert = x509.load_pem_x509_certificate(self.cert_path(role).read_bytes())
        _, name = subject_fields(cert)
        return ComponentIdentity(role, name, self.key_path(role), self.cert_path(role))

    def name(self, role: str) -> str:
        """The CN this host's `role` certificate carries: its registered name."""
        return self.identity(role).name

    def cluster_of(self, role: str) -> str | None:
        """The cluster this host's `role` certificate attests (an NC's: the cluster whose CC may call it),
        or None when it names none (a node joined before certificates carried the cluster)."""
        self.identity(role)  # MissingComponent if there is no certificate
        return cert_cluster(x509.load_pem_x509_certificate(self.cert_path(role).read_bytes()))

    @property
    def ca_cert_pem(self) -> bytes:
        return self.ca_cert_path.read_bytes()

    @property
    def ca_sha256(self) -> str:
        return cert_sha256(self.ca_cert_pem)

    @property
    def has_node_image(self) -> bool:
        return self.node_image_cert_path.exists()

    @property
    def node_image_cert_pem(self) -> bytes:
        """The certificate download manifests encrypt the image key for (the CLC reads this)."""
        if not self.node_image_cert_path.exists():
            raise MissingComponent(f"no node image certificate in {self.dir}")
        return self.node_image_cert_path.read_bytes()

    @property
    def node_image_key_pem(self) -> bytes:
        """The key that decrypts download manifests' image keys (the NC reads this)."""
        if not self.node_image_key_path.exists():
            raise MissingComponent(f"no node image key in {self.dir}")
        return self.node_image_key_path.read_bytes()

    def node_image_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.node_image_key_pem, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def node_image_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.node_image_cert_pem)

    # -- writing ------------------------------------------------------------------------------------

    def _mkdir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def write_ca_cert(self, pem: bytes) -> None:
        self._mkdir()
        write_public(self.ca_cert_path, pem)

    def write_identity(self, role: str, key: bytes, cert: bytes) -> None:
        self._mkdir()
        write_private(self.key_path(role), key)
        write_public(self.cert_path(role), cert)
        self._server_contexts.pop(role, None)
        self._client_contexts.pop(role, None)

    def write_node_image(self, key: bytes, cert: bytes) -> None:
        self._mkdir()
        write_private(self.node_image_key_path, key)
        write_public(self.node_image_cert_path, cert)

    # -- TLS ------------------------------------------------------------------------------------------

    def server_context(self, role: str) -> ssl.SSLContext:
        """For a listener of `role`: presents the role's certificate, requires a client certificate
        issued by the cloud CA (which OU may call is the app's check)."""
        ctx = self._server_contexts.get(role)
        if ctx is None:
            ident = self.identity(role)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._loaded.setdefault(role, self._stamp(role))
            ctx.load_cert_chain(ident.cert_path, ident.key_path)
            ctx.load_verify_locations(cafile=str(self.ca_cert_path))
            ctx.verify_mode = ssl.CERT_REQUIRED
            self._server_contexts[role] = ctx
        return ctx

    def client_context(self, role: str) -> ssl.SSLContext:
        """For a caller acting as `role`: presents the role's certificate, verifies the listener's chain
        to the cloud CA. Host names are not checked; ClusterClient checks the listener's OU."""
        ctx = self._client_contexts.get(role)
        if ctx is None:
            ident = self.identity(role)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(self.ca_cert_path))
            self._loaded.setdefault(role, self._stamp(role))
            ctx.load_cert_chain(ident.cert_path, ident.key_path)
            self._client_contexts[role] = ctx
        return ctx

    def _stamp(self, role: str) -> tuple[int, int]:
        try:
            st = self.cert_path(role).stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def reload_changed(self) -> list[str]:
        """Load again, into the contexts already handed out (listeners keep theirs), each role's certificate
        whose file changed since: a component re-registered on the CA host after its certificate was revoked
        (`euca admin register-*`, reissue_revoked_here) presents the new one from its next handshake without
        a restart. One stat per role; returns the roles reloaded."""
        reloaded = []
        for role, loaded in list(self._loaded.items()):
            stamp = self._stamp(role)
            if stamp == loaded or stamp == (0, 0):
                continue
            try:
                for contexts in (self._server_contexts, self._client_contexts):
                    if role in contexts:
                        contexts[role].load_cert_chain(self.cert_path(role), self.key_path(role))
            except (OSError, ssl.SSLError) as e:  # caught mid-write: the next check sees the whole pair
                log.warning("component certificate not reloaded role=%s: %s", role, e)
                continue
            self._loaded[role] = stamp
            reloaded.append(role)
            log.info("component certificate reloaded role=%s name=%s", role, self.name(role))
        return reloaded


# ---------------------------------------------------------------------------------------------------------
# Issuing on a host with the CA


def _valid_for(ca: CloudCA, cert_path: Path, role: str, name: str | None, cluster: str | None = None) -> bool:
    """Whether the certificate file exists, was issued by `ca`, names `role` (and `name` if given) and
    attests exactly `cluster` (None: no cluster)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    if not ca.verify_issued(cert) or cert.serial_number in ca.revocations().serials:
        return False  # another CA's, or revoked (the component was deregistered): issue a new one
    ou, cn = subject_fields(cert)
    if cert_cluster(cert) != cluster:
        return False
    return ou == role and (name is None or cn == name)


def ensure_components(
    components: Components,
    ca: CloudCA,
    roles: Iterable[tuple[str, str, list[str]]],
    *,
    cluster: str | None = None,
    node_image: bool = False,
    node_image_name: str = "cluster",
) -> list[str]:
    """Issue what is missing or stale (another CA's, another name's) for `roles` = (role, name, hosts).
    An NC's certificate names `cluster` (one issued before, without it or with another, is re-issued).
    Needs the CA key. Returns what was issued, e.g. ["cc", "node-image"]."""
    issued: list[str] = []
    if not components.ca_cert_path.exists() or components.ca_cert_pem != ca.cert_pem:
        components.write_ca_cert(ca.cert_pem)
    for role, name, hosts in roles:
        member_of = cluster if role in CLUSTER_MEMBER_ROLES else None
        if components.has(role) and _valid_for(ca, components.cert_path(role), role, name, member_of):
            continue
        key, cert = ca.issue_component(role, name, hosts, cluster=member_of)
        components.write_identity(role, key, cert)
        issued.append(role)
        log.info(
            "component certificate issued role=%s name=%s%s",
            role,
            name,
            f" cluster={member_of}" if member_of else "",
        )
    if node_image and not (
        components.node_image_key_path.exists()
        and _valid_for(ca, components.node_image_cert_path, NODE_IMAGE_ROLE, None)
    ):
        key, cert = ca.issue_component(NODE_IMAGE_ROLE, node_image_name, tls=False)
        components.write_node_image(key, cert)
        issued.append(NODE_IMAGE_ROLE)
        log.info("node image key issued name=%s", node_image_name)
    return issued


def reissue_revoked_here(config: Config, role: str, name: str, *, cluster: str | None = None) -> bool:
    """On the CA's host, when this host runs `role` registered as `name` and its certificate is revoked
    (it was deregistered), issue it a new one now that it is registered again: its running process
    reloads it (Components.reload_changed), as a joined host re-joins with its new token. Returns whether a
    certificate was issued."""
    ca = open_cloud_ca(config)
    components = Components.for_config(config)
    if not ca.has_key or not components.has(role):
        return False
    cert = x509.load_pem_x509_certificate(components.cert_path(role).read_bytes())
    ou, cn = subject_fields(cert)
    if ou != role or cn != name or cert.serial_number not in ca.revocations().serials:
        return False
    member_of = cluster if cluster is not None else cert_cluster(cert)  # a node may come back in another
    return bool(
        ensure_components(components, ca, [(role, name, component_hosts(config, role))], cluster=member_of)
    )


def revoke_component(
    config: Config, role: str, name: str | None = None, *, cluster: str | None = None
) -> list[int]:
    """Revoke every certificate the CA issued to `role` named `name` (or, with `cluster`, to the members of
    that cluster), on the CA's host (`euca admin deregister-*`). The new CRL is written beside the CA and
    into this host's components, where this host's roles see it at their next check; the CLC hands it to
    the other hosts with its polls. Returns the serials newly revoked."""
    ca = open_cloud_ca(config)
    serials = ca.component_serials(role, name, cluster=cluster)
    # A component whose certificate was issued before the CA kept its index: its certificate is in this
    # host's components when it runs here (a one-box).
    components = Components.for_config(config)
    if components.has(role):
        cert = x509.load_pem_x509_certificate(components.cert_path(role).read_bytes())
        ou, cn = subject_fields(cert)
        if ou == role and (name is None or cn == name) and (cluster is None or cert_cluster(cert) == cluster):
            serials.add(int(cert.serial_number))
    before = ca.revocations().serials
    new = sorted(serials - before)
    if not new:
        return []
    revoked = ca.revoke(new)
    if components.ca_cert_path.exists():  # this host runs roles: they see the new list at their next check
        components.revocations.accept(revoked.pem)
    log.warning(
        "component certificates revoked role=%s name=%s%s serials=%s crl=%d",
        role,
        name or "*",
        f" cluster={cluster}" if cluster else "",
        ",".join(format(s, "x") for s in new),
        revoked.number,
    )
    return new


def open_cloud_ca(config: Config) -> CloudCA:
    """The cloud CA of this host: the full CA where its key lives, else (a joined host) the CA certificate
    alone. A new CA is made only on a host that has not joined another cloud."""
    pki = config.data_path / "pki"
    components = Components.for_config(config)
    if CloudCA.exists(pki):
        return CloudCA.load_or_create(pki)
    if components.ca_cert_path.exists():
        return CloudCA.from_cert(components.ca_cert_path)
    return CloudCA.load_or_create(pki)


# ---------------------------------------------------------------------------------------------------------
# Join tokens and the join exchange (wire values; the CLC side is euca/roles/clc/join.py)


class JoinToken(msgspec.Struct, frozen=True):
    """What `euca admin register-node` prints (base64url JSON behind a version prefix)."""

    url: str  # the CLC's base URL, where POST /services/cluster/join answers
    ca_sha256: str  # SHA-256 of the CA certificate (DER), hex: the joiner checks what it receives
    token_id: str
    secret: str  # the CLC keeps only its SHA-256
    role: str
    name: str
    cluster: str | None = None  # an NC's cluster, which its certificate will name (None in older tokens)


class JoinRequest(msgspec.Struct, frozen=True):
    token_id: str
    secret: str
    csr_pem: str


class JoinReply(msgspec.Struct, frozen=True):
    role: str
    name: str
    cert_pem: str
    ca_cert_pem: str
    # An NC also gets the cluster's node image key, sealed for the key of its CSR (see `seal`).
    node_image_cert_pem: str | None = None
    node_image_key_sealed: str | None = None  # base64


def encode_join_token(token: JoinToken) -> str:
    raw = msgspec.json.encode(token)
    return JOIN_TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_join_token(text: str) -> JoinToken:
    text = text.strip()
    if not text.startswith(JOIN_TOKEN_PREFIX):
        raise JoinError("not a euca join token (it starts with 'euca1.')")
    body = text[len(JOIN_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return msgspec.json.decode(raw, type=JoinToken)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError) as e:
        raise JoinError(f"the join token is damaged: {e}") from None


def seal(public_key: rsa.RSAPublicKey, data: bytes) -> bytes:
    """Encrypt `data` for the holder of `public_key`: an AES-256-GCM key wrapped with RSA-OAEP(SHA-256).
    Layout: 2-byte length of the wrapped key, wrapped key, 12-byte nonce, ciphertext+tag."""
    key = AESGCM.generate_key(256)
    nonce = os.urandom(12)
    wrapped = public_key.encrypt(
        key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    return len(wrapped).to_bytes(2, "big") + wrapped + nonce + AESGCM(key).encrypt(nonce, data, None)


def unseal(private_key: rsa.RSAPrivateKey, blob: bytes) -> bytes:
    n = int.from_bytes(blob[:2], "big")
    wrapped, nonce, sealed = blob[2 : 2 + n], blob[2 + n : 14 + n], blob[14 + n :]
    key = private_key.decrypt(
        wrapped, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    return AESGCM(key).decrypt(nonce, sealed, None)


def make_csr(key: rsa.RSAPrivateKey, role: str, name: str) -> bytes:
    """A CSR for `key` (the CLC takes only the key from it; the subject is informative)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(component_subject(role, name))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def check_join_reply(
    token: JoinToken, key: rsa.RSAPrivateKey, reply: JoinReply
) -> tuple[bytes, bytes | None]:
    """Verify what the CLC sent against the token and our key; returns (cert PEM, node image key PEM).
    Raises JoinError when anything does not match (a man in the middle, the wrong cloud)."""
    ca_pem = reply.ca_cert_pem.encode()
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(reply.cert_pem.encode())
    except ValueError as e:
        raise JoinError(f"the CLC's answer holds no valid certificate: {e}") from None
    if cert_sha256(ca_cert) != token.ca_sha256.lower():
        raise JoinError(
            "the CA certificate the CLC sent does not match the token's SHA-256: refusing to join "
            f"(got {cert_sha256(ca_cert)}, token says {token.ca_sha256})"
        )
    if not issued_by(cert, ca_cert):
        raise JoinError("the certificate the CLC sent is not signed by the cloud CA")
    if cert.public_key() != key.public_key():
        raise JoinError("the certificate the CLC sent is not for this host's key")
    ou, _ = subject_fields(cert)
    if ou != token.role:
        raise JoinError(f"the certificate the CLC sent is for role {ou!r}, not {token.role!r}")
    if token.cluster is not None and cert_cluster(cert) != token.cluster:
        raise JoinError(
            f"the certificate the CLC sent names cluster {cert_cluster(cert)!r}, not {token.cluster!r}"
        )
    node_key: bytes | None = None
    if reply.node_image_cert_pem is not None and reply.node_image_key_sealed is not None:
        node_cert = x509.load_pem_x509_certificate(reply.node_image_cert_pem.encode())
        if not issued_by(node_cert, ca_cert):
            raise JoinError("the node image certificate is not signed by the cloud CA")
        try:
            node_key = unseal(key, base64.b64decode(reply.node_image_key_sealed))
            loaded = serialization.load_pem_private_key(node_key, None)
        except Exception as e:
            raise JoinError(f"the node image key cannot be opened: {e}") from None
        if not isinstance(loaded, rsa.RSAPrivateKey) or loaded.public_key() != node_cert.public_key():
            raise JoinError("the node image key does not match its certificate")
    return reply.cert_pem.encode(), node_key


def _retire_local_ca(config: Config, joined_sha256: str) -> None:
    """A CA this host made for itself before it joined (it ran standalone once) would win over the joined
    cloud's at the next start and re-issue the identities: move it aside, keeping the files."""
    pki = config.data_path / "pki"
    if not CloudCA.exists(pki):
        return
    local = CloudCA.load_or_create(pki, create=False)
    if local.sha256 == joined_sha256.lower():
        return  # this host is the CLC's own (one data dir): nothing to retire
    suffix = f".before-join-{int(time.time())}"
    for path in (local.key_path, local.cert_path):
        path.rename(path.with_name(path.name + suffix))
    log.warning("local cloud CA moved aside ca=%s files=%s/*%s", local.sha256[:16], pki, suffix)


def join_cloud(config: Config, token_text: str, *, timeout: float = 30.0) -> ComponentIdentity:
    """Join the cloud with a token from `euca admin register-node`/`register-cluster`: make a key, send a
    CSR to the CLC, check the answer against the token, store the files. Synchronous (run before the
    supervisor starts). Returns the identity now on disk."""
    import httpx

    from euca.protocol.cluster import Fault

    token = parse_join_token(token_text)
    components = Components.for_config(config)
    token_record = components.dir / f"{token.role}-join-token"
    if components.has(token.role):
        ident = components.identity(token.role)
        joined_with = token_record.read_text().strip() if token_record.exists() else None
        serial = x509.load_pem_x509_certificate(ident.cert_path.read_bytes()).serial_number
        if (
            components.ca_sha256 == token.ca_sha256.lower()
            and ident.name == token.name
            # A node joined before certificates named the cluster joins again with a new token to get it.
            and (token.cluster is None or components.cluster_of(token.role) == token.cluster)
            # A host deregistered and registered again has a new token: its old certificate was revoked.
            and (joined_with is None or joined_with == token.token_id)
            and not components.revocations.is_revoked(serial)
        ):
            log.info("already joined role=%s name=%s", token.role, token.name)
            return ident
    key = new_key()
    request = JoinRequest(token.token_id, token.secret, make_csr(key, token.role, token.name).decode())
    url = token.url.rstrip("/") + JOIN_PATH
    log.info("joining cloud url=%s role=%s name=%s", token.url, token.role, token.name)
    try:
        # The answer is checked against the CA hash the token pins, so TLS verification of the CLC's
        # port (plain HTTP by default) adds nothing here; there is no CA to verify against yet anyway.
        response = httpx.post(
            url,
            content=msgspec.json.encode(request),
            headers={"Content-Type": "application/json"},
            timeout=timeout,
            verify=False,
        )
    except httpx.HTTPError as e:
        raise JoinError(f"cannot reach the CLC at {url}: {e}") from None
    if response.status_code != 200:
        try:
            fault = msgspec.json.decode(response.content, type=Fault)
            detail = f"{fault.code}: {fault.message}"
        except (msgspec.DecodeError, msgspec.ValidationError):
            detail = response.text[:200]
        raise JoinError(f"the CLC refused to join: HTTP {response.status_code} {detail}")
    try:
        reply = msgspec.json.decode(response.content, type=JoinReply)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise JoinError(f"the CLC's answer is not a join reply: {e}") from None
    cert_pem, node_key = check_join_reply(token, key, reply)
    _retire_local_ca(config, token.ca_sha256)
    components.write_ca_cert(reply.ca_cert_pem.encode())
    components.write_identity(token.role, key_pem(key), cert_pem)
    write_public(token_record, token.token_id.encode())
    if node_key is not None and reply.node_image_cert_pem is not None:
        components.write_node_image(node_key, reply.node_image_cert_pem.encode())
    log.info(
        "joined cloud role=%s name=%s%s ca=%s",
        token.role,
        reply.name,
        f" cluster={token.cluster}" if token.cluster else "",
        token.ca_sha256[:16],
    )
    return components.identity(token.role)
