"""Real bundles for service tests: bundled with a credentials directory's certificate and key (as a user
does after sourcing eucarc), uploaded with boto3, registered with boto3.

    signer = Signer.from_credentials(euca.data_dir / "credentials" / "eucalyptus" / "admin")
    result = signer.bundle(image_path, tmp_path / "bundle")
    location = upload(s3_client, bucket, result)
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from euca.images.bundler import BundleResult, bundle_image
from euca.protocol import bundle as b


@dataclass(frozen=True)
class Signer:
    """A user's bundling identity: account id, certificate and private key, the cloud certificate."""

    directory: Path
    account_id: str
    cert_pem: bytes
    key_pem: bytes
    cloud_cert_pem: bytes
    access_key: str
    secret_key: str

    @classmethod
    def from_credentials(cls, directory: Path) -> Signer:
        env = eucarc(directory)
        return cls(
            directory,
            env["EC2_USER_ID"],
            (directory / "cert.pem").read_bytes(),
            (directory / "pk.pem").read_bytes(),
            (directory / "cloud-cert.pem").read_bytes(),
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
        )

    def bundle(self, image: Path, destination: Path, **options: Any) -> BundleResult:
        options.setdefault("compresslevel", 1)
        return bundle_image(
            image,
            destination,
            user=options.pop("user", self.account_id),
            cloud_cert=options.pop("cloud_cert", b.load_certificate(self.cloud_cert_pem)),
            user_cert=b.load_certificate(self.cert_pem),
            user_key=options.pop("user_key", b.load_private_key(self.key_pem)),
            **options,
        )

    def env(self) -> dict[str, str]:
        """The environment a sourced eucarc gives (with absolute paths)."""
        env = eucarc(self.directory)
        env["EC2_CERT"] = str(self.directory / "cert.pem")
        env["EC2_PRIVATE_KEY"] = str(self.directory / "pk.pem")
        env["EUCALYPTUS_CERT"] = str(self.directory / "cloud-cert.pem")
        return env


def eucarc(directory: Path) -> dict[str, str]:
    env = {}
    for line in (directory / "eucarc").read_text().splitlines():
        if line.startswith("export ") and "${" not in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value
    return env


def admin_signer(euca: Any) -> Signer:
    return Signer.from_credentials(euca.data_dir / "credentials" / "eucalyptus" / "admin")


def new_account_signer(euca: Any) -> Signer:
    """A fresh account made with `euca admin create-account` (which writes its credentials directory)."""
    from euca.cli import main

    name = "img" + uuid.uuid4().hex[:10]
    result = CliRunner().invoke(main, ["--data-dir", str(euca.data_dir), "admin", "create-account", name])
    assert result.exit_code == 0, result.output
    return Signer.from_credentials(euca.data_dir / "credentials" / name / "admin")


def upload(s3: Any, bucket: str, result: BundleResult, prefix: str = "", *, create: bool = True) -> str:
    """Parts, then the manifest, into bucket/prefix; the ImageLocation."""
    if create:
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    for part in result.part_paths:
        s3.upload_file(str(part), bucket, prefix + part.name)
    s3.put_object(Bucket=bucket, Key=prefix + result.manifest_path.name, Body=result.manifest)
    return f"{bucket}/{prefix}{result.manifest_path.name}"


def random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            f.write(chunk)
            left -= len(chunk)
    return path
