"""The cloud's certificate authority: a CA key and certificate made at first start.

Bundled images encrypt their key for the cloud certificate, components get certificates issued by this CA,
and users get X.509 certificates for bundling (euca2ools' EC2_CERT / EUCALYPTUS_CERT).

Only the CLC host holds the CA key. A host that joined the cloud (`euca --role nc --join TOKEN`) has the
CA certificate alone: `CloudCA.from_cert` gives a CA that verifies but cannot issue.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_BITS = 2048
COMPONENT_DAYS = 3650
# A node's certificate names its cluster in a subjectAltName URI (signed by the CA like the rest, so the NC
# cannot be told another cluster): the NC takes calls only from the CC whose CN is that cluster.
CLUSTER_URI_PREFIX = "urn:euca:cluster:"


class NoCAKey(Exception):
    """This host has the cloud certificate but not its key (it joined the cloud): it cannot issue."""


class NoCloudCA(Exception):
    """There is no cloud CA here and this host must not make one (it joins an existing cloud)."""


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, readable by the owner only."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate atomically (a crash never leaves half a PEM)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_write_private = write_private  # the name other modules used before it was public


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


_key_pem = key_pem


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def cert_sha256(cert: x509.Certificate | bytes) -> str:
    """The SHA-256 of a certificate's DER encoding, lowercase hex (what join tokens pin)."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether `cert` carries the signature of `ca_cert`'s key (and names it as issuer)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # InvalidSignature, an issuer name mismatch, a key type that cannot have signed it
        return False
    return True


def component_subject(role: str, name: str) -> x509.Name:
    """O=euca, OU=<role>, CN=<name>: what a cluster listener checks (the OU) before it decodes a call."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "euca"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def _san(hosts: Iterable[str], cluster: str | None = None) -> x509.SubjectAlternativeName | None:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h and h not in ("0.0.0.0", "::")):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if cluster:
        names.append(x509.UniformResourceIdentifier(CLUSTER_URI_PREFIX + cluster))
    return x509.SubjectAlternativeName(names) if names else None


def cert_cluster(cert: x509.Certificate) -> str | None:
    """The cluster a component certificate attests (its `urn:euca:cluster:<name>` SAN), or None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(CLUSTER_URI_PREFIX) and len(uri) > len(CLUSTER_URI_PREFIX):
            return uri[len(CLUSTER_URI_PREFIX) :]
    return None


class CloudCA:
    def __init__(self, directory: Path):
        self.dir = directory
        self.key_path = directory / "cloud-pk.pem"
        self.cert_path = directory / "cloud-cert.pem"
        self._key: rsa.RSAPrivateKey | None = None
        self.cert: x509.Certificate

    @property
    def key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            raise NoCAKey(f"this host has no cloud CA key ({self.key_path}): it joined the cloud")
        return self._key

    @key.setter
    def key(self, value: rsa.RSAPrivateKey) -> None:
        self._key = value

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / "cloud-pk.pem").exists() and (directory / "cloud-cert.pem").exists()

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "euca cloud", *, create: bool = True) -> CloudCA:
        """The CA in `directory`, made there first if missing. With create=False a missing CA raises
        NoCloudCA (a host joining a cloud must never make a CA of its own)."""
        ca = cls(directory)
        if cls.exists(directory):
            key = serialization.load_pem_private_key(ca.key_path.read_bytes(), None)
            assert isinstance(key, rsa.RSAPrivateKey)
            ca.key = key
            ca.cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
            return ca
        if not create:
            raise NoCloudCA(f"no cloud CA in {directory}")
        directory.mkdir(parents=True, exist_ok=True)
        ca.key = new_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "euca"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        ca.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(ca.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256())
        )
        write_private(ca.key_path, key_pem(ca.key))
        write_public(ca.cert_path, ca.cert.public_bytes(serialization.Encoding.PEM))
        return ca

    @classmethod
    def from_cert(cls, cert_path: Path) -> CloudCA:
        """A CA known by its certificate only (a joined host): verifies, cannot issue."""
        ca = cls(cert_path.parent)
        ca.cert_path = cert_path
        ca.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return ca

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def sha256(self) -> str:
        """The CA certificate's SHA-256 (DER), hex: what a join token carries."""
        return cert_sha256(self.cert)

    def issue(self, common_name: str, organization: str = "euca", days: int = 3650) -> tuple[bytes, bytes]:
        """A new key and a certificate for it signed by the cloud CA: (key PEM, cert PEM)."""
        key = new_key()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return key_pem(key), cert.public_bytes(serialization.Encoding.PEM)

    def issue_component_cert(
        self,
        public_key: rsa.RSAPublicKey,
        role: str,
        name: str,
        hosts: Iterable[str] = (),
        *,
        cluster: str | None = None,
        tls: bool = True,
        days: int = COMPONENT_DAYS,
    ) -> bytes:
        """A component certificate (PEM) for `public_key`: O=euca, OU=role, CN=name, SAN = hosts (and
        `urn:euca:cluster:<cluster>` for a node: the cluster whose CC alone may call it).

        tls=True: a TLS identity (clientAuth + serverAuth). tls=False: an encryption-only certificate
        (the cluster's node image certificate, which download manifest keys are encrypted for).
        """
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(component_subject(role, name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=tls,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=not tls,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if tls:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        san = _san(hosts, cluster)
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        if tls:
            self._record_issued(IssuedRecord(cert.serial_number, role, name, cluster, time.time()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue_component(
        self,
        role: str,
        name: str,
        hosts: Iterable[str] = (),
        *,
        cluster: str | None = None,
        tls: bool = True,
    ) -> tuple[bytes, bytes]:
        """A new key and its component certificate: (key PEM, cert PEM)."""
        key = new_key()
        return key_pem(key), self.issue_component_cert(
            key.public_key(), role, name, hosts, cluster=cluster, tls=tls
        )

    def sign_csr(
        self,
        csr_pem: bytes,
        role: str,
        name: str,
        hosts: Iterable[str] = (),
        *,
        cluster: str | None = None,
    ) -> bytes:
        """A component certificate for the key in a CSR. Only the key is taken from the CSR (its signature
        proves the requester holds it); the subject (and cluster) are the ones the CLC registered, not
        what the CSR asks."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise ValueError(f"not a PEM certificate request: {e}") from None
        if not csr.is_signature_valid:
            raise ValueError("the certificate request's signature does not verify")
        public_key = csr.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < KEY_BITS:
            raise ValueError(f"the certificate request must carry an RSA key of at least {KEY_BITS} bits")
        return self.issue_component_cert(public_key, role, name, hosts, cluster=cluster)

    def verify_issued(self, cert: x509.Certificate) -> bool:
        """Whether `cert` carries this CA's signature."""
        return issued_by(cert, self.cert)

    # -- revocation ---------------------------------------------------------------------------------

    @property
    def issued_path(self) -> Path:
        return self.dir / ISSUED_INDEX

    @property
    def crl_path(self) -> Path:
        return self.dir / CRL_FILE

    def _record_issued(self, record: IssuedRecord) -> None:
        # One line appended with O_APPEND and fsynced: the CLC (joins) and `euca admin` may both issue.
        fd = os.open(self.issued_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, msgspec.json.encode(record) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def issued_records(self) -> list[IssuedRecord]:
        try:
            lines = self.issued_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(msgspec.json.decode(line, type=IssuedRecord))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a line torn by a crash mid-append
        return records

    def revocations(self) -> RevocationList:
        try:
            return read_crl(self.crl_path.read_bytes(), self.cert)
        except FileNotFoundError:
            return EMPTY_REVOCATIONS

    def revoke(self, serials: Iterable[int]) -> RevocationList:
        """Add `serials` to the CRL (a new number, signed, written atomically). Returns the new list."""
        current = self.revocations()
        wanted = current.serials | frozenset(serials)
        if wanted == current.serials and current.pem:
            return current
        pem = make_crl(self.cert, self.key, wanted, current.number + 1)
        write_public(self.crl_path, pem)
        return read_crl(pem, self.cert)

    def component_serials(
        self, role: str, name: str | None = None, *, cluster: str | None = None
    ) -> set[int]:
        """Serials of the TLS certificates issued to `role` named `name` (and/or members of `cluster`)."""
        return {
            r.serial
            for r in self.issued_records()
            if r.role == role
            and (name is None or r.name == name)
            and (cluster is None or r.cluster == cluster)
        }


# ---------------------------------------------------------------------------------------------------------
# Revocation (issue 13): the CA's record of the component certificates it issued, and its CRL.
#
# Every component certificate the CA signs is recorded in <ca dir>/issued.jsonl (serial, OU, CN, cluster),
# so `euca admin deregister-*` can revoke a component by its registered name without holding its
# certificate. The revocation list itself is a real X.509 CRL signed by the CA (<ca dir>/crl.pem): roles on
# other hosts are handed it (with the CLC's polls, see ARCHITECTURE.md) and check its signature and number.

ISSUED_INDEX = "issued.jsonl"
CRL_FILE = "crl.pem"
CRL_DAYS = 3650  # a CRL is replaced on every revocation; its nextUpdate is not a freshness promise here


class IssuedRecord(msgspec.Struct, frozen=True):
    serial: int
    role: str
    name: str
    cluster: str | None = None
    issued: float = 0.0


class RevocationList(msgspec.Struct, frozen=True):
    """A CRL as read and verified: its number, the revoked serials, and its PEM (what is handed on)."""

    number: int
    serials: frozenset[int]
    pem: bytes


EMPTY_REVOCATIONS = RevocationList(0, frozenset(), b"")


def make_crl(
    ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey, serials: Iterable[int], number: int
) -> bytes:
    """A CRL (PEM) signed by the CA listing `serials`, with CRL number `number` (newer lists: higher)."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def read_crl(pem: bytes, ca_cert: x509.Certificate) -> RevocationList:
    """Parse and verify a CRL against the CA. ValueError when it is not a CRL or not the CA's."""
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError as e:
        raise ValueError(f"not a PEM CRL: {e}") from None
    public_key = ca_cert.public_key()
    if crl.issuer != ca_cert.subject or not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the CRL is not issued by the cloud CA")
    if not crl.is_signature_valid(public_key):
        raise ValueError("the CRL's signature does not verify against the cloud CA")
    try:
        number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        number = 0
    return RevocationList(number, frozenset(r.serial_number for r in crl), pem)


def cert_serial(cert: x509.Certificate | bytes) -> int:
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    return int(cert.serial_number)
