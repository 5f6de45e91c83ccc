"""The cloud's certificate authority: a CA key and certificate made at first start.

Bundled images encrypt their key for the cloud certificate, components get certificates issued by this CA,
and users get X.509 certificates for bundling (euca2ools' EC2_CERT / EUCALYPTUS_CERT).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_BITS = 2048


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


class CloudCA:
    def __init__(self, directory: Path):
        self.dir = directory
        self.key_path = directory / "cloud-pk.pem"
        self.cert_path = directory / "cloud-cert.pem"
        self.key: rsa.RSAPrivateKey
        self.cert: x509.Certificate

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "euca cloud") -> CloudCA:
        ca = cls(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if ca.key_path.exists() and ca.cert_path.exists():
            key = serialization.load_pem_private_key(ca.key_path.read_bytes(), None)
            assert isinstance(key, rsa.RSAPrivateKey)
            ca.key = key
            ca.cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
            return ca
        ca.key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "euca"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
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
            .sign(ca.key, hashes.SHA256())
        )
        _write_private(ca.key_path, _key_pem(ca.key))
        ca.cert_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
        return ca

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, organization: str = "euca", days: int = 3650) -> tuple[bytes, bytes]:
        """A new key and a certificate for it signed by the cloud CA: (key PEM, cert PEM)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                                     x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)
