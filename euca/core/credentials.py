"""Credentials directories: what a user sources or points the AWS tools at.

<data_dir>/credentials/<account>/<user>/
    eucarc              sourceable: EC2_URL, S3_URL, AWS_* and euca2ools' names
    aws-credentials     an AWS CLI/boto3 shared credentials file, profile [euca]
    aws-config          an AWS CLI/boto3 config file: region and endpoint_url for profile euca
    cloud-cert.pem      the cloud certificate (for bundling)
"""

from __future__ import annotations

import os
from pathlib import Path

from euca.core.identity import AccessKey

PROFILE = "euca"


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
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
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    p = key.principal
    (directory / "cloud-cert.pem").write_bytes(cloud_cert_pem)
    for name, data in (extra_files or {}).items():
        target = directory / name
        target.write_bytes(data)
        os.chmod(target, 0o600)
    eucarc = f"""# euca credentials for {p.user_name} in account {p.account_name} ({p.account_id})
EUCA_KEY_DIR=$(cd "$(dirname "${{BASH_SOURCE:-$0}}")" && pwd -P)
export EC2_URL={ec2_url}/services/compute
export S3_URL={s3_url}/services/objectstorage
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
    if extra_files and "cert.pem" in extra_files:
        eucarc += "export EC2_CERT=${EUCA_KEY_DIR}/cert.pem\nexport EC2_PRIVATE_KEY=${EUCA_KEY_DIR}/pk.pem\n"
    _write(directory / "eucarc", eucarc)
    _write(
        directory / "aws-credentials",
        f"[{PROFILE}]\naws_access_key_id = {key.access_key_id}\naws_secret_access_key = {key.secret_key}\n",
    )
    _write(
        directory / "aws-config",
        f"[profile {PROFILE}]\nregion = {region}\nendpoint_url = {ec2_url}\n"
        "s3 =\n    addressing_style = path\n",
    )
    return directory
