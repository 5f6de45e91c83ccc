"""The default machine image in the cloud: the boot image (euca.images.bootimage) bundled, uploaded to the
admin account's bucket `euca-default-images` and registered (eki, eri, emi; public) through the EC2 and S3
APIs, as any user would, once; its ids are recorded in a state file so later starts only read them.
euca.onebox runs it at the first start of a process with both the CLC and Walrus (`default_image` key)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

import httpx
import trio

from euca.core.s3client import S3Client, S3ClientError
from euca.images import bootimage
from euca.images.bootimage import BootImage, BootImageUnavailable
from euca.images.bundler import BundleInputError, bundle_image
from euca.images.upload import BundleFiles, Ec2ApiError, UploadError, ec2_call, register_bundle, upload_bundle
from euca.protocol.bundle import BundleError, load_certificate, load_private_key
from euca.protocol.sigv4 import SigningKey

log = logging.getLogger("euca.bootimage")

DEFAULT_IMAGE_BUCKET = "euca-default-images"
STATE_FILE = "default-image.json"
EC2_PATH = "/services/compute"
S3_PATH = "/services/objectstorage"
REGISTER_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


@dataclass(frozen=True)
class DefaultImage:
    machine_id: str
    kernel_id: str
    ramdisk_id: str
    kernel_version: str


@dataclass(frozen=True)
class Uploader:
    """Who registers the default image and where: the admin's key, certificate and the cloud certificate."""

    ec2_url: str
    s3_url: str
    access_key_id: str
    secret_key: str
    region: str
    account_id: str
    user_cert_pem: bytes
    user_key_pem: bytes
    cloud_cert_pem: bytes


def image_names(kernel_version: str) -> dict[str, str]:
    return {
        "kernel": f"euca-default-kernel-{kernel_version}",
        "ramdisk": f"euca-default-ramdisk-{kernel_version}",
        "machine": f"euca-default-{kernel_version}",
    }


async def _owned_images_named(http: httpx.AsyncClient, up: Uploader, names: Iterable[str]) -> dict[str, str]:
    """name -> image id of the caller's images with these names (left from an interrupted earlier run)."""
    key = SigningKey(up.access_key_id, up.secret_key, up.region, "ec2")
    params = {"Owner.1": "self", "Filter.1.Name": "name"}
    for i, name in enumerate(names, 1):
        params[f"Filter.1.Value.{i}"] = name
    body = await ec2_call(http, up.ec2_url, key, "DescribeImages", params)
    found = {}
    for item in ElementTree.fromstring(body).iter():
        if item.tag.rpartition("}")[2] != "item":
            continue
        fields = {child.tag.rpartition("}")[2]: (child.text or "") for child in item}
        if "imageId" in fields and "name" in fields:
            found[fields["name"]] = fields["imageId"]
    return found


async def _bundle_upload_register(
    http: httpx.AsyncClient,
    up: Uploader,
    image_file: Path,
    image_type: str,
    name: str,
    prefix: str,
    work: Path,
    *,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
) -> str:
    destination = work / image_type
    result = await trio.to_thread.run_sync(
        lambda: bundle_image(
            image_file,
            destination,
            user=up.account_id,
            cloud_cert=load_certificate(up.cloud_cert_pem),
            user_cert=load_certificate(up.user_cert_pem),
            user_key=load_private_key(up.user_key_pem),
            image_type=image_type,
            kernel_id=kernel_id,
            ramdisk_id=ramdisk_id,
            compresslevel=1,
        )
    )
    s3 = S3Client(http, up.s3_url, SigningKey(up.access_key_id, up.secret_key, up.region, "s3"))
    location = await upload_bundle(
        s3, DEFAULT_IMAGE_BUCKET, prefix, BundleFiles(result.manifest_path, result.part_paths)
    )
    ec2_key = SigningKey(up.access_key_id, up.secret_key, up.region, "ec2")
    image_id = await register_bundle(
        http,
        up.ec2_url,
        ec2_key,
        location,
        name,
        architecture="x86_64",
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        description=f"euca default {image_type} image (Debian cloud kernel, busybox initramfs)",
    )
    log.info("default image %s registered image_id=%s location=%s", image_type, image_id, location)
    return image_id


async def register_default_image(
    up: Uploader, image: BootImage, *, work_dir: Path | None = None
) -> DefaultImage:
    """Bundle, upload (bucket euca-default-images, prefix <kernel version>/) and register the kernel, the
    ramdisk and the machine image (root.img booting with them), all public. Images of the same names the
    account already has are reused, so an interrupted run picks up where it stopped."""
    names = image_names(image.kernel_version)
    prefix = f"{image.kernel_version}/"
    ec2_key = SigningKey(up.access_key_id, up.secret_key, up.region, "ec2")
    async with httpx.AsyncClient(timeout=REGISTER_TIMEOUT) as http:
        existing = await _owned_images_named(http, up, names.values())
        ids: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="euca-default-image-", dir=work_dir) as tmp:
            for image_type, file in (
                ("kernel", image.vmlinuz),
                ("ramdisk", image.initrd),
                ("machine", image.root),
            ):
                name = names[image_type]
                if name in existing:
                    ids[image_type] = existing[name]
                    log.info("default image %s already registered image_id=%s", image_type, ids[image_type])
                    continue
                ids[image_type] = await _bundle_upload_register(
                    http,
                    up,
                    file,
                    image_type,
                    name,
                    prefix,
                    Path(tmp),
                    kernel_id=ids.get("kernel") if image_type == "machine" else None,
                    ramdisk_id=ids.get("ramdisk") if image_type == "machine" else None,
                )
        for image_id in ids.values():
            await ec2_call(
                http,
                up.ec2_url,
                ec2_key,
                "ModifyImageAttribute",
                {"ImageId": image_id, "LaunchPermission.Add.1.Group": "all"},
            )
    return DefaultImage(ids["machine"], ids["kernel"], ids["ramdisk"], image.kernel_version)


async def ensure_default_image(
    up: Uploader, state_file: Path, *, cache_root: Path | None = None, work_dir: Path | None = None
) -> DefaultImage | None:
    """The default image, registered once: on the first call it is built (or taken from the cache), bundled,
    uploaded and registered, and its ids are written to `state_file`; later calls read them from there (an
    admin who deregisters it is not overruled). None, with one log line, when it cannot be had. Never raises
    for a failure: a cloud without its default image still runs."""
    try:
        done = DefaultImage(**json.loads(state_file.read_text()))
        log.info(
            "default image registered earlier emi=%s eki=%s eri=%s",
            done.machine_id,
            done.kernel_id,
            done.ramdisk_id,
        )
        return done
    except (OSError, ValueError, TypeError):
        pass
    try:
        image = await trio.to_thread.run_sync(
            lambda: bootimage.build_boot_image(
                cache_root, progress=lambda line: log.info("boot image: %s", line)
            )
        )
    except BootImageUnavailable as e:
        log.info("default image skipped: no kernel (%s)", e)
        return None
    try:
        registered = await register_default_image(up, image, work_dir=work_dir)
    except (Ec2ApiError, S3ClientError, UploadError, BundleError, BundleInputError, OSError) as e:
        log.warning("default image not registered: %s", e)
        return None
    except Exception as e:  # a cloud without its default image still runs; say why and go on
        log.warning("default image not registered: %s: %s", type(e).__name__, e)
        return None
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(asdict(registered), indent=1) + "\n")
    os.replace(tmp, state_file)
    log.info(
        "default image ready emi=%s eki=%s eri=%s kernel=%s",
        registered.machine_id,
        registered.kernel_id,
        registered.ramdisk_id,
        registered.kernel_version,
    )
    return registered
