"""`euca bundle-image` and `euca unbundle` (euca.images.cli), driven through click with euca2ools' env vars."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from euca.core.pki import CloudCA
from euca.images.cli import bundle_image_command, unbundle_command
from euca.protocol import bundle as b


def test_bundle_then_unbundle(tmp_path: Path) -> None:
    ca = CloudCA.load_or_create(tmp_path / "ca")
    key_pem, cert_pem = ca.issue("user-000000000042")
    (tmp_path / "pk.pem").write_bytes(key_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    image = tmp_path / "vmlinuz"
    image.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    env = {
        "EC2_CERT": str(tmp_path / "cert.pem"),
        "EC2_PRIVATE_KEY": str(tmp_path / "pk.pem"),
        "EUCALYPTUS_CERT": str(ca.cert_path),
        "EC2_USER_ID": "000000000042",
    }
    runner = CliRunner()
    result = runner.invoke(
        bundle_image_command,
        [
            "-i",
            str(image),
            "-d",
            str(tmp_path / "bundle"),
            "--kernel",
            "true",
            "-r",
            "x86_64",
            "--no-progress",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    manifest_path = tmp_path / "bundle" / "vmlinuz.manifest.xml"
    assert f"Wrote manifest {manifest_path}" in result.output
    m = b.parse_manifest(manifest_path.read_bytes())
    b.verify_manifest(m, b.load_certificate(cert_pem))
    assert m.image_type == "kernel" and m.user == "000000000042"

    result = runner.invoke(
        unbundle_command,
        [
            "-m",
            str(manifest_path),
            "-d",
            str(tmp_path / "out"),
            "-c",
            str(tmp_path / "cert.pem"),
            "--no-progress",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "vmlinuz").read_bytes() == image.read_bytes()

    # A corrupt part: a clear one-line error, no output file.
    part = tmp_path / "bundle" / m.parts[0].filename
    data = bytearray(part.read_bytes())
    data[0] ^= 0x01  # a flipped bit always changes the part (an overwritten byte may already hold that value)
    part.write_bytes(bytes(data))
    result = runner.invoke(
        unbundle_command, ["-m", str(manifest_path), "-d", str(tmp_path / "out2"), "--no-progress"], env=env
    )
    assert result.exit_code == 1 and "PartDigestError" in result.output
    assert os.listdir(tmp_path / "out2") == []


def test_bundle_image_reports_missing_inputs(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bundle_image_command, ["-i", str(tmp_path / "nope")], env={"EC2_USER_ID": "1"}
    )
    assert result.exit_code == 2 and "--cert" in result.output
