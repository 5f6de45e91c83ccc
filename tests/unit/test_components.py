"""Component identity: certificates from the cloud CA, the files under pki/components, TLS contexts, join
tokens and the sealed node image key, and which CA a host opens (a joined host never makes its own)."""

from __future__ import annotations

import base64
import ipaddress
import json
import ssl
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from euca.core.components import (
    NODE_IMAGE_ROLE,
    Components,
    JoinError,
    JoinReply,
    JoinToken,
    MissingComponent,
    check_join_reply,
    encode_join_token,
    ensure_components,
    make_csr,
    open_cloud_ca,
    parse_join_token,
    seal,
    subject_fields,
    unseal,
)
from euca.core.config import load_config
from euca.core.pki import CloudCA, NoCAKey, NoCloudCA, cert_cluster, issued_by, new_key
from euca.core.supervisor import Supervisor, listener_tls_role


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CloudCA:
    return CloudCA.load_or_create(tmp_path_factory.mktemp("ca") / "pki")


def _name(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    return str(cert.subject.get_attributes_for_oid(oid)[0].value)


def test_component_certificate_fields(ca: CloudCA) -> None:
    key_pem, cert_pem = ca.issue_component("nc", "node-7", ["10.0.0.7", "node7.example"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert _name(cert, NameOID.ORGANIZATION_NAME) == "euca"
    assert subject_fields(cert) == ("nc", "node-7")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert san.get_values_for_type(x509.DNSName) == ["node7.example"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert issued_by(cert, ca.cert)
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.public_key() == cert.public_key()


def test_a_node_certificate_names_its_cluster(ca: CloudCA) -> None:
    """The cluster is a subjectAltName URI the CA signs: a node cannot claim another cluster."""
    _, cert_pem = ca.issue_component("nc", "node-7", ["10.0.0.7"], cluster="cluster01")
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:euca:cluster:cluster01"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert cert_cluster(cert) == "cluster01" and subject_fields(cert) == ("nc", "node-7")
    # Without hosts the SAN holds the cluster alone; without a cluster there is none to read.
    only = x509.load_pem_x509_certificate(ca.issue_component("nc", "node-8", cluster="c2")[1])
    assert cert_cluster(only) == "c2"
    assert cert_cluster(x509.load_pem_x509_certificate(ca.issue_component("nc", "node-9")[1])) is None
    # A CSR is signed with the cluster the CLC registered, whatever the CSR says.
    key = new_key()
    signed = ca.sign_csr(make_csr(key, "nc", "node-1"), "nc", "node-1", ["127.0.0.1"], cluster="cluster02")
    assert cert_cluster(x509.load_pem_x509_certificate(signed)) == "cluster02"


def test_cluster_of_reads_this_hosts_certificate(ca: CloudCA, tmp_path: Path) -> None:
    components = Components(tmp_path / "components")
    with pytest.raises(MissingComponent):
        components.cluster_of("nc")
    ensure_components(components, ca, [("nc", "node-1", []), ("cc", "cluster01", [])], cluster="cluster01")
    assert components.cluster_of("nc") == "cluster01"
    assert components.cluster_of("cc") is None  # a CC's name is its cluster


def test_ensure_components_binds_the_local_node_to_its_cluster(ca: CloudCA, tmp_path: Path) -> None:
    """One-box / CA host: the local NC's certificate names the configured cluster; one issued before the
    certificate carried it (or naming another cluster) is issued again, with the same name."""
    components = Components(tmp_path / "components")
    assert ensure_components(components, ca, [("nc", "node-1", [])]) == ["nc"]
    assert components.cluster_of("nc") is None  # what an older start left
    roles = [("cc", "cluster01", []), ("nc", "node-1", [])]
    assert ensure_components(components, ca, roles, cluster="cluster01") == ["cc", "nc"]
    assert components.cluster_of("nc") == "cluster01" and components.name("nc") == "node-1"
    assert ensure_components(components, ca, roles, cluster="cluster01") == []
    assert ensure_components(components, ca, roles, cluster="cluster02") == ["nc"]  # cc: renamed separately
    assert components.cluster_of("nc") == "cluster02"


def test_node_image_certificate_is_for_encryption_only(ca: CloudCA) -> None:
    _, cert_pem = ca.issue_component(NODE_IMAGE_ROLE, "cluster01", tls=False)
    cert = x509.load_pem_x509_certificate(cert_pem)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment and not usage.digital_signature
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_sign_csr_takes_the_key_not_the_subject(ca: CloudCA) -> None:
    key = new_key()
    csr = make_csr(key, "clc", "i-want-to-be-the-clc")
    cert = x509.load_pem_x509_certificate(ca.sign_csr(csr, "nc", "node-1", ["127.0.0.1"]))
    assert subject_fields(cert) == ("nc", "node-1")
    assert cert.public_key() == key.public_key()
    with pytest.raises(ValueError):
        ca.sign_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "nc", "x"
        )
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(ec_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(ValueError, match="RSA"):
        ca.sign_csr(ec_csr, "nc", "x")


def test_ensure_components_issues_once_and_replaces_stale(ca: CloudCA, tmp_path: Path) -> None:
    components = Components(tmp_path / "components")
    roles = [("clc", "clc", ["127.0.0.1"]), ("cc", "cluster01", ["127.0.0.1"])]
    assert ensure_components(components, ca, roles, node_image=True) == ["clc", "cc", NODE_IMAGE_ROLE]
    assert components.ca_cert_pem == ca.cert_pem
    assert ensure_components(components, ca, roles, node_image=True) == []
    assert components.name("cc") == "cluster01"
    # The cluster was renamed in the configuration: its certificate follows.
    assert ensure_components(components, ca, [("cc", "cluster02", [])]) == ["cc"]
    assert components.name("cc") == "cluster02"
    # Certificates of another CA (a data dir restored next to a new CA) are replaced.
    other = CloudCA.load_or_create(tmp_path / "other-pki")
    assert ensure_components(components, other, roles, node_image=True) == ["clc", "cc", NODE_IMAGE_ROLE]
    assert components.ca_cert_pem == other.cert_pem
    assert (components.key_path("cc").stat().st_mode & 0o777) == 0o600
    assert (components.node_image_key_path.stat().st_mode & 0o777) == 0o600
    key = components.node_image_key()
    assert key.public_key() == components.node_image_cert().public_key()


def test_contexts(ca: CloudCA, tmp_path: Path) -> None:
    components = Components(tmp_path / "components")
    with pytest.raises(MissingComponent, match="--join"):
        components.server_context("nc")
    ensure_components(components, ca, [("nc", "node-1", [])])
    server = components.server_context("nc")
    assert server.verify_mode == ssl.CERT_REQUIRED
    client = components.client_context("nc")
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname is False
    assert components.server_context("nc") is server  # made once
    with pytest.raises(MissingComponent):
        components.client_context("clc")


def test_ca_without_key(ca: CloudCA, tmp_path: Path) -> None:
    with pytest.raises(NoCloudCA):
        CloudCA.load_or_create(tmp_path / "empty", create=False)
    assert not (tmp_path / "empty").exists()
    cert_only = CloudCA.from_cert(ca.cert_path)
    assert not cert_only.has_key and cert_only.sha256 == ca.sha256
    with pytest.raises(NoCAKey):
        cert_only.issue_component("nc", "x")


def test_seal_round_trip() -> None:
    key = new_key()
    blob = seal(key.public_key(), b"the node image key")
    assert b"the node image key" not in blob
    assert unseal(key, blob) == b"the node image key"
    with pytest.raises(ValueError):
        unseal(new_key(), blob)


def test_join_token_round_trip() -> None:
    token = JoinToken("http://10.0.0.1:8773", "ab" * 32, "0123456789abcdef", "s3cret", "nc", "node-1", "c1")
    text = encode_join_token(token)
    assert text.startswith("euca1.") and "=" not in text
    assert parse_join_token(f"  {text}\n") == token
    # A token printed before tokens named the cluster (no such field) still reads.
    fields = {f: getattr(token, f) for f in ("url", "ca_sha256", "token_id", "secret", "role", "name")}
    older = "euca1." + base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    assert parse_join_token(older) == msgspec.structs.replace(token, cluster=None)
    with pytest.raises(JoinError):
        parse_join_token("not-a-token")
    with pytest.raises(JoinError):
        parse_join_token(text[:-5])


def test_fresh_host_makes_a_ca(tmp_path: Path) -> None:
    cfg = load_config(None, {"data_dir": str(tmp_path)})
    ca = open_cloud_ca(cfg)
    assert ca.has_key and (tmp_path / "pki" / "cloud-pk.pem").exists()
    assert open_cloud_ca(cfg).sha256 == ca.sha256


def test_joined_host_never_makes_a_ca(ca: CloudCA, tmp_path: Path) -> None:
    """A host holding only the CA certificate and its own nc identity (what --join leaves) starts with
    the CA certificate alone, and refuses a role it has no certificate for."""
    cfg = load_config(None, {"data_dir": str(tmp_path)})  # nc.name unset: the host name would be guessed
    components = Components.for_config(cfg)
    components.write_ca_cert(ca.cert_pem)
    key, cert = ca.issue_component("nc", "node-1")
    components.write_identity("nc", key, cert)

    supervisor = Supervisor(cfg, ["nc"])
    ctx = supervisor.open_context()
    try:
        assert not ctx.ca.has_key and ctx.ca.sha256 == ca.sha256
        assert ctx.components.name("nc") == "node-1"
        assert ctx.config.nc.name == "node-1"  # the NC reports itself under the name it registered with
        assert not (tmp_path / "pki" / "cloud-pk.pem").exists()
        assert not (tmp_path / "credentials").exists()  # the admin's credentials live on the CLC host
    finally:
        ctx.store.close()
    with pytest.raises(MissingComponent):
        Supervisor(cfg, ["cc", "nc"]).open_context()
    assert not (tmp_path / "pki" / "cloud-pk.pem").exists()


def test_one_box_issues_every_role_it_runs(tmp_path: Path) -> None:
    cfg = load_config(None, {"data_dir": str(tmp_path), "nc.name": "node-1", "cc.cluster": "c1"})
    ctx = Supervisor(cfg, ["clc", "walrus", "cc", "nc"]).open_context()
    try:
        assert ctx.ca.has_key
        assert {r: ctx.components.name(r) for r in ("clc", "cc", "nc")} == {
            "clc": "clc",
            "cc": "c1",
            "nc": "node-1",
        }
        assert ctx.components.cluster_of("nc") == "c1"  # the local NC answers the local CC only
        assert not ctx.components.has("walrus")
        assert ctx.components.has_node_image
        assert subject_fields(ctx.components.node_image_cert())[0] == NODE_IMAGE_ROLE
    finally:
        ctx.store.close()


class _App:
    def __init__(self, tls: bool):
        self.tls = tls


def test_listener_tls_role() -> None:
    address = ("0.0.0.0", 8774)
    assert listener_tls_role(address, [("clc", _App(False)), ("walrus", _App(False))]) is None  # type: ignore[list-item]
    assert listener_tls_role(address, [("cc", _App(True))]) == "cc"  # type: ignore[list-item]
    with pytest.raises(ValueError, match="different listen ports"):
        listener_tls_role(address, [("cc", _App(True)), ("clc", _App(False))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="own listen port"):
        listener_tls_role(address, [("cc", _App(True)), ("nc", _App(True))])  # type: ignore[list-item]


def test_admin_commands_on_a_joined_host_make_no_ca(ca: CloudCA, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from euca.cli import main

    components = Components(tmp_path / "pki" / "components")
    components.write_ca_cert(ca.cert_pem)
    key, cert = ca.issue_component("nc", "node-1")
    components.write_identity("nc", key, cert)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "admin", "create-account", "acme"])
    assert result.exit_code != 0 and "run this command on the CLC host" in result.output
    assert not (tmp_path / "pki" / "cloud-pk.pem").exists()


def test_the_joiner_checks_the_cluster_its_certificate_names(ca: CloudCA) -> None:
    key = new_key()
    token = JoinToken("http://h:8773", ca.sha256, "00ff", "s", "nc", "node-1", "cluster01")

    def reply(cluster: str | None) -> JoinReply:
        cert = ca.sign_csr(make_csr(key, "nc", "node-1"), "nc", "node-1", cluster=cluster)
        return JoinReply("nc", "node-1", cert.decode(), ca.cert_pem.decode())

    cert, _ = check_join_reply(token, key, reply("cluster01"))
    assert cert_cluster(x509.load_pem_x509_certificate(cert)) == "cluster01"
    for wrong in ("cluster02", None):
        with pytest.raises(JoinError, match="names cluster"):
            check_join_reply(token, key, reply(wrong))
