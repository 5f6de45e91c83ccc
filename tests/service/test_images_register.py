"""Bundled images end to end against a running euca: bundle -> upload -> RegisterImage (which reads and
verifies the manifest from Walrus as the caller) -> download manifest for a node -> the node pipeline ->
the exact original bytes. Tampered manifests, missing parts and unreadable buckets are refused at
RegisterImage with InvalidManifest saying what is wrong.

The bundling, uploading and registering go through `euca bundle-image`, `euca upload-bundle`,
`euca register` and `euca install-image` with a sourced eucarc's environment, or boto3 and the aws CLI.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import msgspec
import pytest
import trio
from click.testing import CliRunner

from euca.cli import main
from euca.core.identity import Identity
from euca.core.pki import CloudCA
from euca.core.roles import RoleContext
from euca.core.store import open_store
from euca.images.pipeline import PartDigestError, source_from_download_manifest, unbundle_image
from euca.protocol import bundle as b
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.images.bundles import download_manifest_for
from helpers.image_bundles import Signer, admin_signer, new_account_signer, random_file, upload

MiB = 1024 * 1024


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def error_of(excinfo: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


@pytest.fixture(scope="module")
def admin(euca: Any) -> Signer:
    return admin_signer(euca)


@pytest.fixture(scope="module")
def other(euca: Any) -> Signer:
    return new_account_signer(euca)


@pytest.fixture(scope="module")
def ec2(euca: Any) -> Any:
    return euca.client("ec2")


@pytest.fixture(scope="module")
def s3(euca: Any) -> Any:
    return euca.client("s3")


def client_as(euca: Any, signer: Signer, service: str) -> Any:
    credentials = type(euca.admin)(signer.access_key, signer.secret_key, "", "")
    return euca.client(service, creds=credentials)


# -- the node's side: a download manifest from the CLC, then the pipeline -----------------------------------


class Node:
    """What a node controller does with an image: ask the CLC for a download manifest (here the CLC code runs
    in this thread on its own connection to the state store, as a CLC on another host would), check it, and
    run the pipeline over HTTP against Walrus."""

    def __init__(self, euca: Any):
        cfg = euca.ctx.config
        self.store = open_store(cfg.store.url, cfg.data_path, cfg.store.synchronous)
        self.ca = CloudCA.load_or_create(cfg.data_path / "pki")
        self.clc = RoleContext(
            config=cfg,
            store=self.store,
            identity=Identity(self.store),
            ca=self.ca,
            components=euca.ctx.components,
            endpoints={"walrus": euca.ctx.endpoints["walrus"]},
        )
        key_pem, self.cert_pem = self.ca.issue("node-under-test")
        self.key = b.load_private_key(key_pem)
        self.cert = b.load_certificate(self.cert_pem)

    def download_manifest(self, image_id: str) -> bytes:
        return trio.run(lambda: download_manifest_for(self.clc, image_id, self.cert_pem))

    def fetch(self, image_id: str, destination: Path) -> Path:
        async def run() -> None:
            data = await download_manifest_for(self.clc, image_id, self.cert_pem)
            manifest = b.parse_download_manifest(data)
            b.verify_download_manifest(
                manifest, self.ca.cert, node_cert=self.cert, now=dt.datetime.now(dt.UTC)
            )
            source = source_from_download_manifest(manifest, self.key)
            async with httpx.AsyncClient(timeout=60) as client:
                await unbundle_image(source, destination, client=client)

        trio.run(run)
        return destination


@pytest.fixture(scope="module")
def node(euca: Any) -> Iterator[Node]:
    n = Node(euca)
    yield n
    n.store.close()


def run_cli(euca: Any, signer: Signer, *args: str) -> str:
    """A `euca` command with the environment of the signer's sourced eucarc (URLs of this test server)."""
    env = signer.env()
    env["S3_URL"] = euca.url.rstrip("/") + "/services/objectstorage"
    env["EC2_URL"] = euca.url.rstrip("/") + "/services/compute"
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def image_id_from(output: str) -> str:
    found = re.search(r"^IMAGE\t(e[mkr]i-[0-9a-f]{8})$", output, re.M)
    assert found, output
    return found.group(1)


# -- credentials ----------------------------------------------------------------------------------------


def test_credentials_directory_holds_a_registered_certificate(euca: Any, admin: Signer) -> None:
    env = (admin.directory / "eucarc").read_text()
    for name in ("EC2_CERT", "EC2_PRIVATE_KEY", "EUCALYPTUS_CERT", "EC2_USER_ID", "S3_URL", "EC2_URL"):
        assert f"export {name}=" in env
    cert = b.load_certificate(admin.cert_pem)
    key = b.load_private_key(admin.key_pem)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    cert.verify_directly_issued_by(b.load_certificate(admin.cloud_cert_pem))
    registered = euca.ctx.identity.list_certificates("eucalyptus", "admin")
    assert b.certificate_fingerprint(cert) in [c.fingerprint for c in registered if c.active]
    # Only certificates are kept: nothing in the store looks like a private key.
    assert all("PRIVATE KEY" not in c.pem for c in registered)
    assert (admin.directory / "pk.pem").stat().st_mode & 0o077 == 0


# -- round trips ----------------------------------------------------------------------------------------


def sparse_random_file(path: Path, size: int, every: int = 5 * MiB, block: int = MiB) -> Path:
    """Mostly holes, with a random block every `every` bytes: big, but quick to bundle and to move."""
    import os

    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, every):
            f.seek(offset)
            f.write(os.urandom(min(block, size - offset)))
    return path


@pytest.mark.parametrize("size", [1, 3 * MiB + 17, 25 * MiB + 123], ids=["1B", "3MiB+17", "25MiB+123"])
def test_round_trip_through_the_cli(euca: Any, admin: Signer, node: Node, tmp_path: Path, size: int) -> None:
    image = random_file(tmp_path / "disk.img", size)
    bucket = unique("rt")
    run_cli(
        euca,
        admin,
        "bundle-image",
        "-i",
        str(image),
        "-d",
        str(tmp_path / "b"),
        "--compress-level",
        "1",
        "--no-progress",
    )
    manifest = tmp_path / "b" / "disk.img.manifest.xml"
    parts = b.parse_manifest(manifest.read_bytes()).parts
    if size > 20 * MiB:
        assert len(parts) == 3 and (tmp_path / "b" / "disk.img.part.02").stat().st_size % b.PART_SIZE != 0
    out = run_cli(
        euca, admin, "upload-bundle", "-b", f"{bucket}/images/v1", "-m", str(manifest), "--no-progress"
    )
    assert f"Uploaded {bucket}/images/v1/disk.img.manifest.xml" in out
    image_id = image_id_from(
        run_cli(euca, admin, "register", f"{bucket}/images/v1/disk.img.manifest.xml", "-n", unique("rt"))
    )
    assert image_id.startswith("emi-")
    fetched = node.fetch(image_id, tmp_path / "fetched.img")
    assert fetched.stat().st_size == size
    assert sha256(fetched) == sha256(image)


def test_round_trip_over_100_mib_with_install_image(
    euca: Any, admin: Signer, node: Node, ec2: Any, tmp_path: Path
) -> None:
    size = 110 * MiB + 4321
    image = sparse_random_file(tmp_path / "big.img", size)
    name = unique("big")
    out = run_cli(
        euca,
        admin,
        "install-image",
        "-i",
        str(image),
        "-b",
        unique("big"),
        "-n",
        name,
        "-r",
        "x86_64",
        "--compress-level",
        "1",
        "--no-progress",
    )
    image_id = image_id_from(out)
    (described,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert described["Name"] == name and described["ImageType"] == "machine"
    manifest = b.parse_download_manifest(node.download_manifest(image_id))
    assert manifest.size == size and len(manifest.parts) >= 3
    fetched = node.fetch(image_id, tmp_path / "fetched.img")
    assert sha256(fetched) == sha256(image)


def test_download_manifest_is_for_one_node_and_uses_the_registered_manifest(
    euca: Any, admin: Signer, node: Node, ec2: Any, s3: Any, tmp_path: Path
) -> None:
    image = random_file(tmp_path / "img", 2 * MiB)
    result = admin.bundle(image, tmp_path / "b", part_size=512 * 1024)
    bucket = unique("dm")
    location = upload(s3, bucket, result)
    image_id = ec2.register_image(Name=unique("dm"), ImageLocation=location)["ImageId"]
    data = node.download_manifest(image_id)
    manifest = b.parse_download_manifest(data)
    b.verify_download_manifest(manifest, node.ca.cert, node_cert=node.cert)
    # Wrapped for this node only: another node's key cannot open it, and it is refused for another node.
    other_key_pem, other_cert_pem = node.ca.issue("another-node")
    with pytest.raises(b.KeyUnwrapError):
        b.download_key_iv(manifest, b.load_private_key(other_key_pem))
    with pytest.raises(b.ManifestSignatureError):
        b.verify_download_manifest(manifest, node.ca.cert, node_cert=b.load_certificate(other_cert_pem))
    # The plain key is nowhere in it.
    key, _ = b.manifest_key_iv(result_manifest := b.parse_manifest(result.manifest), node.ca.key)
    assert key.hex().encode() not in data and key not in data
    assert [p.digest for p in manifest.parts] == [p.digest for p in result_manifest.parts]
    # Presigned part URLs work without credentials, until they expire.
    response = httpx.get(manifest.parts[0].url)
    assert response.status_code == 200
    assert hashlib.sha1(response.content).hexdigest() == manifest.parts[0].digest

    # Replacing the manifest in the bucket after registration changes nothing: the verified copy is used.
    s3.put_object(Bucket=bucket, Key=location.split("/", 1)[1], Body=b"<manifest>garbage</manifest>")
    fetched = node.fetch(image_id, tmp_path / "fetched")
    assert sha256(fetched) == sha256(image)
    # A part replaced after registration is caught by its SHA1 on the node; nothing is left behind.
    s3.put_object(
        Bucket=bucket, Key=result.part_paths[1].name, Body=b"x" * result.part_paths[1].stat().st_size
    )
    with pytest.raises(PartDigestError):
        node.fetch(image_id, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()

    ec2.deregister_image(ImageId=image_id)
    with pytest.raises(Ec2Error) as err:
        node.download_manifest(image_id)
    assert err.value.code == "InvalidAMIID.NotFound"


# -- RegisterImage refusals -----------------------------------------------------------------------------


class TamperBase:
    """A 1 MiB bundle cut in 256 KiB parts, uploaded under base/ in a bucket of the admin's."""

    def __init__(self, euca: Any, admin: Signer, s3: Any, tmp: Path):
        self.image = random_file(tmp / "tamper.img", MiB + 5)
        self.key_iv = b.new_key_and_iv()
        self.result = admin.bundle(self.image, tmp / "b", part_size=256 * 1024, key_iv=self.key_iv)
        self.bucket = unique("tamper")
        self.location = upload(s3, self.bucket, self.result, "base/")
        self.manifest = self.result.manifest
        self.s3 = s3

    def put(self, manifest: bytes, name: str | None = None) -> str:
        key = f"base/{name or unique('case')}.manifest.xml"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=manifest)
        return f"{self.bucket}/{key}"


@pytest.fixture(scope="module")
def tamper(euca: Any, admin: Signer, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> TamperBase:
    return TamperBase(euca, admin, s3, tmp_path_factory.mktemp("tamper"))


def _sub(pattern: str, replace: Callable[[re.Match[bytes]], bytes]) -> Callable[[bytes], bytes]:
    def edit(manifest: bytes) -> bytes:
        changed, n = re.subn(pattern.encode(), replace, manifest, count=1)
        assert n == 1 and changed != manifest, pattern
        return changed

    return edit


def _flip_hex(text: bytes) -> bytes:
    last = text[-1:]
    return text[:-1] + (b"0" if last != b"0" else b"1")


def _drop_last_part(manifest: bytes) -> bytes:
    count = int(re.search(rb'<parts count="(\d+)">', manifest).group(1))  # type: ignore[union-attr]
    manifest = re.sub(rb'<part index="%d">.*?</part>' % (count - 1), b"", manifest)
    return manifest.replace(b'<parts count="%d">' % count, b'<parts count="%d">' % (count - 1))


def _swap_first_filenames(manifest: bytes) -> bytes:
    names = re.findall(rb"<filename>([^<]+)</filename>", manifest)
    return manifest.replace(names[0], b"@@", 1).replace(names[1], names[0], 1).replace(b"@@", names[1], 1)


TAMPERS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "signature": (
        _sub(
            r"<signature>([0-9a-f]+)</signature>",
            lambda m: b"<signature>" + _flip_hex(m.group(1)) + b"</signature>",
        ),
        "signature does not verify",
    ),
    "unsigned": (
        _sub(r"<signature>[0-9a-f]+</signature>", lambda m: b"<signature>UNSIGNED</signature>"),
        "unsigned",
    ),
    "no-signature": (_sub(r"<signature>[0-9a-f]+</signature>", lambda m: b""), "unsigned"),
    "image-digest": (
        _sub(
            r'(<digest algorithm="SHA1">)([0-9a-f]{40})(</digest><size>)',
            lambda m: m.group(1) + _flip_hex(m.group(2)) + m.group(3),
        ),
        "signature does not verify",
    ),
    "size": (
        _sub(r"<size>(\d+)</size>", lambda m: b"<size>%d</size>" % (int(m.group(1)) + 1)),
        "signature does not verify",
    ),
    "bundled-size": (
        _sub(
            r"<bundled_size>(\d+)</bundled_size>",
            lambda m: b"<bundled_size>%d</bundled_size>" % (int(m.group(1)) - 16),
        ),
        "signature does not verify",
    ),
    "part-digest": (
        _sub(
            r'(<part index="0"><filename>[^<]+</filename><digest algorithm="SHA1">)([0-9a-f]{40})',
            lambda m: m.group(1) + _flip_hex(m.group(2)),
        ),
        "signature does not verify",
    ),
    "part-dropped": (_drop_last_part, "signature does not verify"),
    "parts-swapped": (_swap_first_filenames, "signature does not verify"),
    "ec2-key": (
        _sub(
            r'(<ec2_encrypted_key algorithm="AES-128-CBC">)([0-9a-f]+)',
            lambda m: m.group(1) + _flip_hex(m.group(2)),
        ),
        "signature does not verify",
    ),
    "ec2-iv": (
        _sub(r"(<ec2_encrypted_iv>)([0-9a-f]+)", lambda m: m.group(1) + _flip_hex(m.group(2))),
        "signature does not verify",
    ),
    "user-key": (
        _sub(
            r'(<user_encrypted_key algorithm="AES-128-CBC">)([0-9a-f]+)',
            lambda m: m.group(1) + _flip_hex(m.group(2)),
        ),
        "signature does not verify",
    ),
    "image-type": (
        _sub(r"<type>machine</type>", lambda m: b"<type>kernel</type>"),
        "signature does not verify",
    ),
    "architecture": (
        _sub(r"<architecture>x86_64</architecture>", lambda m: b"<architecture>i386</architecture>"),
        "signature does not verify",
    ),
    "name": (
        _sub(r"<name>tamper.img</name>", lambda m: b"<name>other.img</name>"),
        "signature does not verify",
    ),
    "user": (_sub(r"<user>(\d+)</user>", lambda m: b"<user>000000000001</user>"), "not for your account"),
    "not-xml": (lambda m: m[: len(m) // 2], "cannot be parsed"),
    "bad-type": (_sub(r"<type>machine</type>", lambda m: b"<type>toaster</type>"), "cannot be parsed"),
}


def test_the_untampered_bundle_registers(ec2: Any, tamper: TamperBase) -> None:
    image_id = ec2.register_image(Name=unique("untampered"), ImageLocation=tamper.location)["ImageId"]
    ec2.deregister_image(ImageId=image_id)


@pytest.mark.parametrize("case", list(TAMPERS))
def test_tampered_manifest_is_refused(ec2: Any, tamper: TamperBase, case: str) -> None:
    edit, message = TAMPERS[case]
    location = tamper.put(edit(tamper.manifest))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.register_image(Name=unique(case), ImageLocation=location)
    code, text = error_of(err)
    assert code == "InvalidManifest", text
    assert message in text, text


def _resigned(tamper: TamperBase, admin: Signer, **changes: Any) -> bytes:
    """The base manifest with fields changed and signed again with the admin's key (a 'valid' lie)."""
    contents = msgspec.structs.replace(tamper.result.contents, **changes)
    cloud = b.load_certificate(admin.cloud_cert_pem)
    return b.build_manifest(
        contents,
        key=tamper.key_iv[0],
        iv=tamper.key_iv[1],
        cloud_cert=cloud,
        user_cert=b.load_certificate(admin.cert_pem),
        user_key=b.load_private_key(admin.key_pem),
    )


def test_signed_lies_are_refused(ec2: Any, admin: Signer, tamper: TamperBase, tmp_path: Path) -> None:
    def refused(location: str) -> str:
        with pytest.raises(botocore.exceptions.ClientError) as err:
            ec2.register_image(Name=unique("lie"), ImageLocation=location)
        code, text = error_of(err)
        assert code == "InvalidManifest", text
        return text

    # Parts whose sizes do not add up to what the manifest says.
    text = refused(
        tamper.put(_resigned(tamper, admin, bundled_size=tamper.result.contents.bundled_size + 16))
    )
    assert "hold" in text and "bytes" in text
    # A part listed that is not there.
    extra = b.BundlePart(len(tamper.result.contents.parts), "tamper.img.part.99", "0" * 40)
    text = refused(tamper.put(_resigned(tamper, admin, parts=(*tamper.result.contents.parts, extra))))
    assert f"part {extra.index}" in text and "does not exist" in text
    # Signed by a key whose certificate is not registered for the account.
    ca = CloudCA.load_or_create(tmp_path / "stranger-ca")
    key_pem, cert_pem = ca.issue("stranger")
    stranger = b.build_manifest(
        tamper.result.contents,
        key=tamper.key_iv[0],
        iv=tamper.key_iv[1],
        cloud_cert=b.load_certificate(admin.cloud_cert_pem),
        user_cert=b.load_certificate(cert_pem),
        user_key=b.load_private_key(key_pem),
    )
    assert "signature does not verify" in refused(tamper.put(stranger))
    # The bundle key wrapped for another cloud's certificate (signed by the right user).
    foreign = b.build_manifest(
        tamper.result.contents,
        key=tamper.key_iv[0],
        iv=tamper.key_iv[1],
        cloud_cert=ca.cert,
        user_cert=b.load_certificate(admin.cert_pem),
        user_key=b.load_private_key(admin.key_pem),
    )
    assert "not encrypted for this cloud" in refused(tamper.put(foreign))
    # A manifest for another account, signed by this user.
    assert "not for your account" in refused(tamper.put(_resigned(tamper, admin, user="000000000007")))


def test_missing_part_manifest_and_bucket(ec2: Any, admin: Signer, s3: Any, tmp_path: Path) -> None:
    result = admin.bundle(random_file(tmp_path / "m.img", MiB), tmp_path / "b", part_size=256 * 1024)
    bucket = unique("missing")
    location = upload(s3, bucket, result)
    s3.delete_object(Bucket=bucket, Key=result.part_paths[2].name)
    cases = {
        location: f"part 2 {bucket}/{result.part_paths[2].name}: it does not exist",
        f"{bucket}/nothing.manifest.xml": "it does not exist",
        f"{unique('nobucket')}/m.img.manifest.xml": "does not exist",
    }
    for where, message in cases.items():
        with pytest.raises(botocore.exceptions.ClientError) as err:
            ec2.register_image(Name=unique("missing"), ImageLocation=where)
        code, text = error_of(err)
        assert code == "InvalidManifest" and message in text, text
    # Malformed locations are the request's fault.
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.register_image(Name=unique("missing"), ImageLocation="just-a-bucket")
    assert error_of(err)[0] == "InvalidParameterValue"


def test_bucket_the_caller_cannot_read(
    euca: Any, admin: Signer, other: Signer, s3: Any, tmp_path: Path
) -> None:
    ec2_other = client_as(euca, other, "ec2")
    # The other account's own bundle, put by the admin into the admin's private bucket.
    result = other.bundle(random_file(tmp_path / "o.img", 300 * 1024), tmp_path / "b")
    bucket = unique("private")
    location = upload(s3, bucket, result)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2_other.register_image(Name=unique("denied"), ImageLocation=location)
    code, text = error_of(err)
    assert code == "InvalidManifest" and "access denied" in text, text
    # The manifest made readable, the parts still private: refused on the part.
    s3.put_object_acl(Bucket=bucket, Key=location.split("/", 1)[1], ACL="public-read")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2_other.register_image(Name=unique("denied"), ImageLocation=location)
    code, text = error_of(err)
    assert code == "InvalidManifest" and "part 0" in text and "access denied" in text, text
    # Uploaded to its own bucket it registers, as the other account's image.
    own = upload(client_as(euca, other, "s3"), unique("own"), result)
    image_id = ec2_other.register_image(Name=unique("own"), ImageLocation=own)["ImageId"]
    (image,) = ec2_other.describe_images(ImageIds=[image_id])["Images"]
    assert image["OwnerId"] == other.account_id
    # And the admin cannot register the other account's manifest as its own, even when it can read it.
    s3_other = client_as(euca, other, "s3")
    s3_other.put_bucket_acl(Bucket=own.split("/")[0], ACL="public-read")
    for part in result.part_paths:
        s3_other.put_object_acl(Bucket=own.split("/")[0], Key=part.name, ACL="public-read")
    s3_other.put_object_acl(Bucket=own.split("/")[0], Key=own.split("/", 1)[1], ACL="public-read")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        euca.client("ec2").register_image(Name=unique("theft"), ImageLocation=own)
    code, text = error_of(err)
    assert code == "InvalidManifest" and "not for your account" in text, text


def test_disabled_certificate_no_longer_verifies(euca: Any, other: Signer, tmp_path: Path) -> None:
    ec2_other = client_as(euca, other, "ec2")
    result = other.bundle(random_file(tmp_path / "c.img", 1000), tmp_path / "b")
    location = upload(client_as(euca, other, "s3"), unique("cert"), result)
    fingerprint = b.certificate_fingerprint(b.load_certificate(other.cert_pem))
    (cert,) = [c for c in euca.ctx.identity.list_certificates() if c.fingerprint == fingerprint]
    data_dir = str(euca.data_dir)
    runner = CliRunner()
    assert (
        runner.invoke(
            main, ["--data-dir", data_dir, "admin", "disable-certificate", cert.certificate_id]
        ).exit_code
        == 0
    )
    try:
        with pytest.raises(botocore.exceptions.ClientError) as err:
            ec2_other.register_image(Name=unique("nocert"), ImageLocation=location)
        code, text = error_of(err)
        assert code == "InvalidManifest" and "no signing certificate" in text, text
    finally:
        runner.invoke(main, ["--data-dir", data_dir, "admin", "enable-certificate", cert.certificate_id])
    ec2_other.register_image(Name=unique("cert"), ImageLocation=location)


# -- kernels and ramdisks -------------------------------------------------------------------------------


def test_kernel_ramdisk_and_a_machine_image_using_them(
    euca: Any, admin: Signer, other: Signer, node: Node, ec2: Any, s3: Any, tmp_path: Path
) -> None:
    bucket = unique("boot")
    kernel_file = random_file(tmp_path / "vmlinuz", 700 * 1024 + 3)
    ramdisk_file = random_file(tmp_path / "initrd.img", 300 * 1024)
    kernel_loc = upload(s3, bucket, admin.bundle(kernel_file, tmp_path / "k", image_type="kernel"))
    ramdisk_loc = upload(s3, bucket, admin.bundle(ramdisk_file, tmp_path / "r", image_type="ramdisk"))
    kernel_id = ec2.register_image(Name=unique("kernel"), ImageLocation=kernel_loc)["ImageId"]
    ramdisk_id = ec2.register_image(Name=unique("ramdisk"), ImageLocation=ramdisk_loc)["ImageId"]
    assert kernel_id.startswith("eki-") and ramdisk_id.startswith("eri-")
    described = {i["ImageId"]: i for i in ec2.describe_images(ImageIds=[kernel_id, ramdisk_id])["Images"]}
    assert described[kernel_id]["ImageType"] == "kernel" and described[ramdisk_id]["ImageType"] == "ramdisk"

    # Kernel and ramdisk named in the manifest are recorded.
    machine = admin.bundle(
        random_file(tmp_path / "root.img", MiB),
        tmp_path / "m",
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        architecture="i386",
    )
    machine_loc = upload(s3, bucket, machine)
    machine_id = ec2.register_image(Name=unique("machine"), ImageLocation=machine_loc)["ImageId"]
    (image,) = ec2.describe_images(ImageIds=[machine_id])["Images"]
    assert image["ImageId"].startswith("emi-")
    assert (image["KernelId"], image["RamdiskId"], image["Architecture"]) == (kernel_id, ramdisk_id, "i386")
    assert image["VirtualizationType"] == "paravirtual"
    found = ec2.describe_images(Filters=[{"Name": "kernel-id", "Values": [kernel_id]}])["Images"]
    assert [i["ImageId"] for i in found] == [machine_id]

    # Request values override the manifest's, as in AWS.
    kernel2 = ec2.register_image(Name=unique("kernel2"), ImageLocation=kernel_loc)["ImageId"]
    override = ec2.register_image(
        Name=unique("override"), ImageLocation=machine_loc, KernelId=kernel2, Architecture="x86_64"
    )["ImageId"]
    (image,) = ec2.describe_images(ImageIds=[override])["Images"]
    assert (image["KernelId"], image["RamdiskId"], image["Architecture"]) == (kernel2, ramdisk_id, "x86_64")

    # Ids that do not exist (in the manifest or the request), or of the wrong type, are refused.
    ghost = upload(
        s3,
        bucket,
        admin.bundle(tmp_path / "root.img", tmp_path / "g", prefix="ghost", kernel_id="eki-0000dead"),
    )
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.register_image(Name=unique("ghost"), ImageLocation=ghost)
    assert error_of(err)[0] == "InvalidAMIID.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.register_image(Name=unique("ghost"), ImageLocation=machine_loc, RamdiskId="eri-0000beef")
    assert error_of(err)[0] == "InvalidAMIID.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.register_image(Name=unique("wrong"), ImageLocation=machine_loc, KernelId=ramdisk_id)
    assert error_of(err)[0] == "InvalidParameterValue"
    # Another account's private kernel is not there for this one.
    other_kernel_loc = upload(
        client_as(euca, other, "s3"),
        unique("okern"),
        other.bundle(kernel_file, tmp_path / "ok", image_type="kernel"),
    )
    other_kernel = client_as(euca, other, "ec2").register_image(
        Name=unique("ok"), ImageLocation=other_kernel_loc
    )["ImageId"]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.register_image(Name=unique("ok"), ImageLocation=machine_loc, KernelId=other_kernel)
    assert error_of(err)[0] == "InvalidAMIID.NotFound"

    # A node gets the kernel's exact bytes too.
    fetched = node.fetch(kernel_id, tmp_path / "fetched-kernel")
    assert sha256(fetched) == sha256(kernel_file)


# -- the aws CLI ----------------------------------------------------------------------------------------


def test_aws_cli_register_describe_modify(
    euca: Any, admin: Signer, other: Signer, s3: Any, tmp_path: Path
) -> None:
    location = upload(s3, unique("cli"), admin.bundle(random_file(tmp_path / "c.img", 5000), tmp_path / "b"))
    name = unique("cli")
    image_id = json.loads(
        euca.aws(
            "ec2",
            "register-image",
            "--name",
            name,
            "--image-location",
            location,
            "--description",
            "from the aws CLI",
            "--output",
            "json",
        ).stdout
    )["ImageId"]
    images = json.loads(
        euca.aws("ec2", "describe-images", "--filters", f"Name=name,Values={name}", "--output", "json").stdout
    )["Images"]
    assert [(i["ImageId"], i["ImageLocation"], i["Description"]) for i in images] == [
        (image_id, location, "from the aws CLI")
    ]
    euca.aws(
        "ec2",
        "modify-image-attribute",
        "--image-id",
        image_id,
        "--launch-permission",
        f"Add=[{{UserId={other.account_id}}}]",
    )
    perms = json.loads(
        euca.aws(
            "ec2",
            "describe-image-attribute",
            "--image-id",
            image_id,
            "--attribute",
            "launchPermission",
            "--output",
            "json",
        ).stdout
    )["LaunchPermissions"]
    assert perms == [{"UserId": other.account_id}]
    seen = client_as(euca, other, "ec2").describe_images(ExecutableUsers=["self"])["Images"]
    assert image_id in [i["ImageId"] for i in seen]
    failed = euca.aws(
        "ec2",
        "register-image",
        "--name",
        unique("cli"),
        "--image-location",
        f"{location.split('/')[0]}/absent.manifest.xml",
        check=False,
    )
    assert failed.returncode != 0 and "InvalidManifest" in failed.stderr
    euca.aws("ec2", "deregister-image", "--image-id", image_id)
