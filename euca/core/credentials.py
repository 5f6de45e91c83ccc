"""Credentials directories: what a user sources or points the AWS tools at.

<data_dir>/credentials/<account>/<user>/
    eucarc              sourceable: EC2_URL, S3_URL, AWS_IAM_URL/EUARE_URL, AWS_STS_URL/TOKEN_URL, AWS_* and
                        euca2ools' names
    aws-credentials     an AWS CLI/boto3 shared credentials file, profile [euca]
    aws-config          an AWS CLI/boto3 config file: region and endpoint_url for profile euca, and its
                        services section (IAM at /services/Euare, STS at /services/Tokens); with https.port,
                        profile euca-https: the same on HTTPS, ca_bundle the cloud certificate
    cloud-cert.pem      the cloud certificate (for bundling: EUCALYPTUS_CERT)
    cert.pem, pk.pem    the user's X.509 certificate, issued by the cloud CA and registered in the identity
                        store, and its private key (EC2_CERT, EC2_PRIVATE_KEY: bundles are signed with it)
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from euca.core.config import Config
from euca.core.identity import AccessKey, Identity
from euca.core.pki import CloudCA

PROFILE = "euca"


def _write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    # Created with its final mode (a private key is never readable by others, not even for a moment).
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_credentials(
    directory: Path,
    key: AccessKey,
    *,
    ec2_url: str,
    s3_url: str,
    region: str,
    cloud_cert_pem: bytes,
    extra_files: dict[str, bytes] | None = None,
    https_url: str | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    p = key.principal
    (directory / "cloud-cert.pem").write_bytes(cloud_cert_pem)
    for name, data in (extra_files or {}).items():
        _write(directory / name, data)
    eucarc = f"""# euca credentials for {p.user_name} in account {p.account_name} ({p.account_id})
EUCA_KEY_DIR=$(cd "$(dirname "${{BASH_SOURCE:-$0}}")" && pwd -P)
export EC2_URL={ec2_url}/services/compute
export S3_URL={s3_url}/services/objectstorage
export AWS_IAM_URL={ec2_url}/services/Euare
export EUARE_URL={ec2_url}/services/Euare
export AWS_STS_URL={ec2_url}/services/Tokens
export TOKEN_URL={ec2_url}/services/Tokens
export AWS_ACCESS_KEY_ID={key.access_key_id}
export AWS_SECRET_ACCESS_KEY={key.secret_key}
export AWS_DEFAULT_REGION={region}
export AWS_REGION={region}
export EC2_ACCESS_KEY={key.access_key_id}
export EC2_SECRET_KEY={key.secret_key}
export EC2_USER_ID={p.account_id}
export EUCALYPTUS_CERT=${{EUCA_KEY_DIR}}/cloud-cert.pem
export AWS_SHARED_CREDENTIALS_FILE=${{EUCA_KEY_DIR}}/aws-credentials
export AWS_CONFIG_FILE=${{EUCA_KEY_DIR}}/aws-config
export AWS_PROFILE={PROFILE}
"""
    # The cloud CA verifies the HTTPS listener's certificate (https.port): the AWS tools read AWS_CA_BUNDLE.
    eucarc += "export AWS_CA_BUNDLE=${EUCA_KEY_DIR}/cloud-cert.pem\n"
    if https_url:
        eucarc += f"export EUCA_HTTPS_URL={https_url}\n"
    if extra_files and "cert.pem" in extra_files:
        eucarc += "export EC2_CERT=${EUCA_KEY_DIR}/cert.pem\nexport EC2_PRIVATE_KEY=${EUCA_KEY_DIR}/pk.pem\n"
    _write(directory / "eucarc", eucarc)
    _write(
        directory / "aws-credentials",
        f"[{PROFILE}]\naws_access_key_id = {key.access_key_id}\naws_secret_access_key = {key.secret_key}\n",
    )
    _write(
        directory / "aws-config",
        # ca_bundle: the cloud CA verifies the certificate of https.port's listener (used only for https:// URLs).
        f"[profile {PROFILE}]\nregion = {region}\nendpoint_url = {ec2_url}\n"
        f"ca_bundle = {directory.resolve() / 'cloud-cert.pem'}\n"
        f"services = {PROFILE}-services\n"
        "s3 =\n    addressing_style = path\n"
        # Endpoints per service (IAM and STS under Eucalyptus's paths; the rest at the root).
        f"\n[services {PROFILE}-services]\n"
        f"iam =\n    endpoint_url = {ec2_url}/services/Euare\n"
        f"sts =\n    endpoint_url = {ec2_url}/services/Tokens\n"
        f"ec2 =\n    endpoint_url = {ec2_url}/services/compute\n"
        f"s3 =\n    endpoint_url = {s3_url}\n" + _https_profile(directory, region, https_url),
    )
    return directory


def _https_profile(directory: Path, region: str, https_url: str | None) -> str:
    """Profile `euca-https` (issue 13): the same services on the HTTPS listener, verified with the cloud CA."""
    if not https_url:
        return ""
    return (
        f"\n[profile {PROFILE}-https]\nregion = {region}\nendpoint_url = {https_url}\n"
        f"ca_bundle = {directory.resolve() / 'cloud-cert.pem'}\n"
        f"services = {PROFILE}-https-services\n"
        "s3 =\n    addressing_style = path\n"
        f"\n[services {PROFILE}-https-services]\n"
        f"iam =\n    endpoint_url = {https_url}/services/Euare\n"
        f"sts =\n    endpoint_url = {https_url}/services/Tokens\n"
        f"ec2 =\n    endpoint_url = {https_url}/services/compute\n"
        f"s3 =\n    endpoint_url = {https_url}\n"
    )


def _reusable_certificate(directory: Path, identity: Identity, key: AccessKey) -> dict[str, bytes] | None:
    """The certificate and key already in `directory`, if the certificate is still registered and active for
    this user and the key is its key (so rewriting a directory does not pile up certificates)."""
    try:
        cert_pem = (directory / "cert.pem").read_bytes()
        key_pem = (directory / "pk.pem").read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        private = serialization.load_pem_private_key(key_pem, None)
    except (OSError, ValueError, TypeError):
        return None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ) != private.public_key().public_bytes(serialization.Encoding.PEM, public):
        return None
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    p = key.principal
    registered = identity.list_certificates(p.account_name, p.user_name)
    if not any(c.fingerprint == fingerprint and c.active for c in registered):
        return None
    return {"cert.pem": cert_pem, "pk.pem": key_pem}


def write_user_credentials(
    config: Config, identity: Identity, ca: CloudCA, key: AccessKey, directory: Path | None = None
) -> Path:
    """The complete credentials directory of `key`'s user (default <data_dir>/credentials/<account>/<user>):
    the access key, a signing certificate issued by the cloud CA and registered for the user (the one already
    there is kept while it is registered and active), its private key, and the cloud certificate.
    Synchronous: for `euca admin` and the first start."""
    p = key.principal
    directory = directory or config.data_path / "credentials" / p.account_name / p.user_name
    files = _reusable_certificate(directory, identity, key)
    if files is None:
        key_pem, cert_pem = ca.issue(p.user_name, organization=f"{p.account_name} {p.account_id}")
        identity.add_certificate(p.account_name, p.user_name, cert_pem)
        files = {"cert.pem": cert_pem, "pk.pem": key_pem}
    return write_credentials(
        directory,
        key,
        ec2_url=config.endpoint_url("clc"),
        s3_url=config.endpoint_url("walrus"),
        region=config.region,
        cloud_cert_pem=ca.cert_pem,
        extra_files=files,
        https_url=f"https://{config.public_host}:{config.https.port}" if config.https.port > 0 else None,
    )
