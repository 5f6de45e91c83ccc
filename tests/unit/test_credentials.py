"""Users' signing certificates in the identity store and credentials directories (euca.core.identity,
euca.core.credentials, `euca admin write-credentials`), on a real SQLite store and a real cloud CA."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from euca.cli import main
from euca.core.config import load_config
from euca.core.credentials import write_user_credentials
from euca.core.identity import Identity, IdentityError
from euca.core.pki import CloudCA
from euca.core.store import Store
from euca.protocol import bundle as b


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Identity, CloudCA, Path]]:
    store = Store(tmp_path / "state.db")
    identity = Identity(store)
    identity.create_account("acme")
    yield identity, CloudCA.load_or_create(tmp_path / "pki"), tmp_path
    store.close()


def test_certificates_are_recorded_without_keys(setup: tuple[Identity, CloudCA, Path]) -> None:
    identity, ca, _ = setup
    key_pem, cert_pem = ca.issue("admin")
    cert = identity.add_certificate("acme", "admin", cert_pem)
    assert cert.active and cert.user_name == "admin" and len(cert.certificate_id) == 32
    assert cert.fingerprint == b.certificate_fingerprint(b.load_certificate(cert_pem))
    assert "PRIVATE" not in cert.pem
    with pytest.raises(IdentityError, match="already registered"):
        identity.add_certificate("acme", "admin", cert_pem)
    with pytest.raises(IdentityError, match="not a PEM"):
        identity.add_certificate("acme", "admin", key_pem)
    with pytest.raises(IdentityError, match="no user"):
        identity.add_certificate("acme", "nobody", ca.issue("x")[1])
    with pytest.raises(IdentityError, match="no account"):
        identity.add_certificate("nope", "admin", ca.issue("y")[1])

    account_id = identity.list_accounts()[0].account_id
    assert [c.certificate_id for c in trio.run(identity.account_certificates, account_id)] == [
        cert.certificate_id
    ]
    identity.set_certificate_active(cert.certificate_id, False)
    assert trio.run(identity.account_certificates, account_id) == []
    assert [c.active for c in identity.list_certificates("acme", "admin")] == [False]
    identity.delete_certificate(cert.certificate_id)
    assert identity.list_certificates("acme") == []
    with pytest.raises(IdentityError):
        identity.set_certificate_active(cert.certificate_id, True)


def test_credentials_directory(setup: tuple[Identity, CloudCA, Path]) -> None:
    identity, ca, tmp = setup
    config = load_config(None, {"data_dir": str(tmp), "public_host": "cloud.example"})
    key = identity.create_access_key("acme")
    directory = write_user_credentials(config, identity, ca, key)
    assert directory == tmp / "credentials" / "acme" / "admin"
    eucarc = (directory / "eucarc").read_text()
    assert "export EC2_URL=http://cloud.example:8773/services/compute" in eucarc
    assert f"export EC2_USER_ID={key.principal.account_id}" in eucarc
    for line in (
        "EC2_CERT=${EUCA_KEY_DIR}/cert.pem",
        "EC2_PRIVATE_KEY=${EUCA_KEY_DIR}/pk.pem",
        "EUCALYPTUS_CERT=${EUCA_KEY_DIR}/cloud-cert.pem",
    ):
        assert f"export {line}" in eucarc
    for name in ("pk.pem", "eucarc", "aws-credentials"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    cert = b.load_certificate((directory / "cert.pem").read_bytes())
    cert.verify_directly_issued_by(ca.cert)
    (registered,) = identity.list_certificates("acme", "admin")
    assert registered.fingerprint == b.certificate_fingerprint(cert)
    # What pk.pem signs (as a bundle manifest is signed) verifies against the registered certificate.
    signature = b.sign_sha1(b"data", b.load_private_key((directory / "pk.pem").read_bytes()))
    public = b.load_certificate(registered.pem.encode()).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(bytes.fromhex(signature), b"data", padding.PKCS1v15(), hashes.SHA1())

    # Writing again keeps the registered certificate; once it is disabled a new one is issued.
    write_user_credentials(config, identity, ca, key)
    assert [c.fingerprint for c in identity.list_certificates("acme", "admin")] == [registered.fingerprint]
    identity.set_certificate_active(registered.certificate_id, False)
    write_user_credentials(config, identity, ca, key)
    certs = identity.list_certificates("acme", "admin")
    assert len(certs) == 2 and certs[1].active
    assert (
        b.certificate_fingerprint(b.load_certificate((directory / "cert.pem").read_bytes()))
        == certs[1].fingerprint
    )


def test_admin_write_credentials_command(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    assert runner.invoke(main, [*data, "admin", "create-account", "acme"]).exit_code == 0
    assert runner.invoke(main, [*data, "admin", "create-user", "--account", "acme", "bob"]).exit_code == 0
    result = runner.invoke(
        main, [*data, "admin", "write-credentials", "acme", "bob", "--dir", str(tmp_path / "bob")]
    )
    assert result.exit_code == 0, result.output
    assert "ACCESSKEY\t" in result.output  # bob had no key: one was made
    assert {"cert.pem", "pk.pem", "cloud-cert.pem", "eucarc"} <= {
        p.name for p in (tmp_path / "bob").iterdir()
    }
    again = runner.invoke(
        main, [*data, "admin", "write-credentials", "acme", "bob", "--dir", str(tmp_path / "bob")]
    )
    assert again.exit_code == 0 and "ACCESSKEY" not in again.output
    listed = runner.invoke(main, [*data, "admin", "list-certificates", "--account", "acme"]).output
    rows = [line.split("\t") for line in listed.splitlines()]
    assert sorted((r[2], r[4]) for r in rows) == [("admin", "Active"), ("bob", "Active")]
    failed = runner.invoke(main, [*data, "admin", "write-credentials", "nosuch"])
    assert failed.exit_code != 0 and "no account nosuch" in failed.output
