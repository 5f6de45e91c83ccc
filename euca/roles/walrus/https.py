"""Walrus on HTTPS beside plain HTTP (walrus.https_port), as Eucalyptus served its APIs: the certificate is the
operator's (walrus.tls_cert / tls_key) or one the cloud CA issues for public_host (and localhost), kept in
data_dir/walrus-https/ and issued again only when missing or no longer valid for the host. Clients verify it
with the cloud certificate (cloud-cert.pem in every credentials directory). No client certificate is asked
for; requests are signed as on HTTP. SSE-C requests are refused on plain HTTP (the key would cross the wire
in clear), and answered NotImplemented here (Walrus does not encrypt with customer keys).
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509

from euca.core.config import Config
from euca.core.pki import CloudCA, write_private, write_public

CERT_DIR = "walrus-https"


class NoCertificate(Exception):
    """No certificate was given and this host cannot issue one (it holds no CA key)."""


def certificate_files(config: Config, ca: CloudCA) -> tuple[Path, Path]:
    """(certificate, key) PEM paths of the HTTPS listener, issuing them from the cloud CA when needed."""
    w = config.walrus
    if w.tls_cert:
        return config.path(w.tls_cert), config.path(w.tls_key)
    directory = config.data_path / CERT_DIR
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    hosts = [config.public_host, "localhost", "127.0.0.1", *(f"*.{d}" for d in w.domains)]
    if not _still_good(cert_path, key_path, hosts):
        if not ca.has_key:
            raise NoCertificate(
                "this host has the cloud CA's certificate only: set walrus.tls_cert and walrus.tls_key"
            )
        directory.mkdir(parents=True, exist_ok=True)
        key_pem, cert_pem = ca.issue_component("walrus", config.public_host, hosts)
        write_private(key_path, key_pem)
        write_public(cert_path, cert_pem + ca.cert_pem)
    return cert_path, key_path


def _still_good(cert_path: Path, key_path: Path, hosts: list[str]) -> bool:
    if not cert_path.exists() or not key_path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    names = {str(n.value) for n in san}
    fresh = cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    return fresh and all(h in names for h in hosts)


def server_context(config: Config, ca: CloudCA) -> ssl.SSLContext:
    cert_path, key_path = certificate_files(config, ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context
