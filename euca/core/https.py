"""The users' APIs on HTTPS beside HTTP (issue 13): the listener's certificate and the secure mark.

The supervisor serves every plain app of its process (EC2, S3, IAM, STS, the join endpoint) a second time on
`https.port` through one Dispatcher, as on the plain port. The certificate is the operator's (`https.cert`,
`https.key`) or one the cloud CA issues for the names clients use (public_host, localhost, 127.0.0.1, the
listen host, the S3 virtual-host domains and their subdomains), kept in data_dir/pki/https/ and issued again
when missing, another CA's, short-lived, revoked or not naming a host it should. Clients verify it with the
cloud certificate (cloud-cert.pem in every credentials directory: AWS_CA_BUNDLE, aws-config `ca_bundle`).

A request that came over this listener carries `request.context["secure"] = True`: what S3 decides from the
transport (`aws:SecureTransport` in bucket policies, SSE-C refused in clear) reads it.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509

from euca.core.config import Config
from euca.core.http import Request, Response
from euca.core.pki import CloudCA, write_private, write_public
from euca.core.roles import Dispatcher

CERT_DIR = "pki/https"
SECURE = "secure"  # the request.context key
RENEW_BEFORE = dt.timedelta(days=30)


def is_secure(request: Request) -> bool:
    """Whether the request came over TLS (the HTTPS listener)."""
    # "peer" is set by every TLS listener (the cluster listeners too), as euca.core.authorize reads it.
    return bool(request.context.get(SECURE)) or "peer" in request.context


def certificate_hosts(config: Config) -> list[str]:
    hosts = [config.public_host, "localhost", "127.0.0.1", config.https.host or config.clc.listen.host]
    for domain in config.walrus.domains:
        hosts += [domain, f"*.{domain}"]
    return [h for h in dict.fromkeys(hosts) if h and h not in ("0.0.0.0", "::")]


def certificate_files(config: Config, ca: CloudCA) -> tuple[Path, Path]:
    """(certificate chain, key) PEM paths, issuing them from the cloud CA when needed (NoCAKey on a host
    that has neither the CA key nor the operator's files)."""
    if config.https.cert:
        return config.path(config.https.cert), config.path(config.https.key)
    directory = config.data_path / CERT_DIR
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    hosts = certificate_hosts(config)
    if not _still_good(ca, cert_path, key_path, hosts):
        key_pem, cert_pem = ca.issue_component("https", config.public_host, hosts)
        directory.mkdir(parents=True, exist_ok=True)
        write_private(key_path, key_pem)
        write_public(cert_path, cert_pem + ca.cert_pem)
    return cert_path, key_path


def _still_good(ca: CloudCA, cert_path: Path, key_path: Path, hosts: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    if not key_path.exists() or not ca.verify_issued(cert) or cert.serial_number in ca.revocations().serials:
        return False
    names = {str(n.value) for n in san}
    fresh = cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + RENEW_BEFORE
    return fresh and all(h in names for h in hosts)


def server_context(config: Config, ca: CloudCA) -> ssl.SSLContext:
    """The listener's TLS context: no client certificate asked for (requests are signed as on HTTP)."""
    cert_path, key_path = certificate_files(config, ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


class SecureDispatcher:
    """The plain apps' Dispatcher, marking each request as having come over TLS."""

    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher

    async def __call__(self, request: Request) -> Response:
        request.context[SECURE] = True
        return await self.dispatcher(request)
