"""The keys and certificates an image bundle involves, issued by a throwaway cloud CA: the cloud's (bundles
are encrypted to it), a user's (who signs the manifest) and a node's (that fetches and decrypts)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from euca.core.pki import CloudCA
from euca.protocol import bundle as b


class BundleKeys:
    def __init__(self, ca: CloudCA):
        self.cloud_key, self.cloud_cert = ca.key, ca.cert
        key_pem, cert_pem = ca.issue("user-000000000042")
        self.user_key: rsa.RSAPrivateKey = b.load_private_key(key_pem)
        self.user_cert: x509.Certificate = b.load_certificate(cert_pem)
        key_pem, cert_pem = ca.issue("node-1")
        self.node_key: rsa.RSAPrivateKey = b.load_private_key(key_pem)
        self.node_cert: x509.Certificate = b.load_certificate(cert_pem)
