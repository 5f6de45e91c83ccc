"""Image bundles in Walrus: reading and proving a bundle manifest at RegisterImage, and the download
manifests that let one node fetch an image's parts (Eucalyptus 4's way). No table of its own: what is kept
of a bundle is kept by images/records.py."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import trio

from euca.core.roles import RoleContext
from euca.core.s3client import ObjectInfo, S3Client, S3ClientError, object_url
from euca.protocol.bundle import (
    MAX_MANIFEST_BYTES,
    BundleError,
    BundleManifest,
    build_download_manifest,
    certificate_fingerprint,
    load_certificate,
    manifest_key_iv,
    parse_manifest,
    verify_manifest,
)
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.wire import Ec2Error
from euca.protocol.sigv4 import SigningKey, presign_url
from euca.roles.clc.app import Ec2Call
from euca.roles.clc.images import records

log = logging.getLogger("euca.clc")

# Walrus' S3 path prefix (the CLC and Walrus may share a port; the prefix routes without guessing).
WALRUS_PATH = "/services/objectstorage"
# Part HEADs in flight at once while registering.
PART_CHECK_CONCURRENCY = 8
# How long a node's presigned part URLs stay valid.
DOWNLOAD_URL_SECONDS = 4 * 3600
WALRUS_TIMEOUT = 60.0


@dataclass(frozen=True)
class ManifestFacts:
    image_type: str  # machine | kernel | ramdisk
    architecture: str | None
    kernel_id: str | None
    ramdisk_id: str | None
    manifest: bytes | None = None  # the verified manifest's bytes
    access_key_id: str | None = None


def walrus_endpoint(ctx: RoleContext) -> str:
    """Walrus' S3 endpoint as this process reaches it: the listener of an in-process Walrus, else the
    configured one."""
    base = ctx.config.clc.walrus_url or ctx.endpoints.get("walrus") or ctx.config.endpoint_url("walrus")
    return base.rstrip("/") + WALRUS_PATH


def _invalid(message: str) -> Ec2Error:
    return Ec2Error("InvalidManifest", message)


def _unreadable(error: S3ClientError, what: str, bucket: str, key: str) -> Ec2Error:
    if error.status == 0:
        log.warning("walrus unreachable for RegisterImage error=%s", error)
        return Ec2Error("Unavailable", "The object storage service cannot be reached; try again later.", 503)
    where = f"{bucket}/{key}"
    if error.code == "NoSuchBucket":
        return _invalid(f"Cannot read the {what} {where}: the bucket {bucket} does not exist.")
    if error.code in ("NoSuchKey", "NotFound"):
        return _invalid(f"Cannot read the {what} {where}: it does not exist.")
    if error.code == "AccessDenied":
        return _invalid(f"Cannot read the {what} {where}: access denied to your credentials.")
    return _invalid(f"Cannot read the {what} {where}: {error.code}: {error.message}")


def _part_key(manifest_key: str, filename: str) -> str:
    directory = manifest_key.rpartition("/")[0]
    return f"{directory}/{filename}" if directory else filename


async def _caller_key(call: Ec2Call) -> SigningKey:
    key = await call.ctx.identity.access_key(call.principal.access_key_id)
    if key is None or not key.active:
        raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials")
    return SigningKey(key.access_key_id, key.secret_key, call.ctx.config.region, "s3")


async def _check_signature(call: Ec2Call, manifest: BundleManifest) -> None:
    if not manifest.signed:
        raise _invalid("The manifest is unsigned: bundle it with your certificate and private key.")
    certs = await call.ctx.identity.account_certificates(call.account_id)
    if not certs:
        raise _invalid(
            f"Account {call.account_id} has no signing certificate to verify the manifest with "
            "(euca admin write-credentials issues one)."
        )
    for cert in certs:
        try:
            verify_manifest(manifest, load_certificate(cert.pem.encode("ascii")))
            return
        except BundleError:
            continue
    raise _invalid(
        "The manifest signature does not verify against any signing certificate of your account: "
        "the manifest was changed after it was signed, or signed with another key."
    )


async def _check_parts(s3: S3Client, bucket: str, manifest_key: str, manifest: BundleManifest) -> None:
    """Every part is there and readable by the caller, and their sizes add up to the manifest's bundled size."""
    limiter = trio.CapacityLimiter(PART_CHECK_CONCURRENCY)
    found: list[ObjectInfo | S3ClientError | None] = [None] * len(manifest.parts)

    async def head(i: int, key: str) -> None:
        async with limiter:
            try:
                found[i] = await s3.head_object(bucket, key)
            except S3ClientError as e:
                found[i] = e

    async with trio.open_nursery() as nursery:
        for part in manifest.parts:
            nursery.start_soon(head, part.index, _part_key(manifest_key, part.filename))
    total = 0
    for part, result in zip(manifest.parts, found, strict=True):
        if isinstance(result, S3ClientError):
            raise _unreadable(result, f"part {part.index}", bucket, _part_key(manifest_key, part.filename))
        assert result is not None
        total += result.size
    if total != manifest.bundled_size:
        raise _invalid(
            f"The parts in {bucket} hold {total} bytes but the manifest says the bundle is "
            f"{manifest.bundled_size} bytes: a part was replaced or truncated."
        )


async def inspect_manifest(call: Ec2Call, location: str, req: m.RegisterImageRequest) -> ManifestFacts:
    """What the bundle manifest at `location` ("bucket/key") says about the image, once it is proven good.

    The manifest and the parts are read from Walrus with the caller's own access key, so Walrus decides what
    the caller may read. The manifest must name the caller's account, be signed by one of the account's
    registered certificates, carry a bundle key wrapped for this cloud's certificate, and every part it lists
    must be there. Anything else is refused as InvalidManifest with what was wrong.
    """
    bucket, _, key = location.partition("/")
    signing = await _caller_key(call)
    async with httpx.AsyncClient(timeout=WALRUS_TIMEOUT) as http:
        s3 = S3Client(http, walrus_endpoint(call.ctx), signing)
        try:
            data = await s3.get_object(bucket, key, max_bytes=MAX_MANIFEST_BYTES)
        except S3ClientError as e:
            if e.code == "EntityTooLarge":
                raise _invalid(
                    f"The manifest {location} is larger than {MAX_MANIFEST_BYTES} bytes."
                ) from None
            raise _unreadable(e, "manifest", bucket, key) from None
        try:
            manifest = parse_manifest(data)
        except BundleError as e:
            raise _invalid(f"The manifest {location} cannot be parsed: {e}") from None
        if manifest.user != call.account_id:
            raise _invalid(
                f"The manifest was bundled for account {manifest.user[:40]!r}, not for your account {call.account_id}."
            )
        await _check_signature(call, manifest)
        try:
            await trio.to_thread.run_sync(lambda: manifest_key_iv(manifest, call.ctx.ca.key, holder="ec2"))
        except BundleError:
            raise _invalid(
                "The bundle key is not encrypted for this cloud's certificate: bundle with the cloud-cert.pem "
                "of your credentials (EUCALYPTUS_CERT)."
            ) from None
        await _check_parts(s3, bucket, key, manifest)
    log.info(
        "manifest verified location=%s account=%s type=%s parts=%d size=%d",
        location,
        call.account_id,
        manifest.image_type,
        len(manifest.parts),
        manifest.size,
    )
    return ManifestFacts(
        image_type=manifest.image_type,
        architecture=req.architecture or manifest.architecture,
        kernel_id=req.kernel_id or _boot_id(manifest.kernel_id),
        ramdisk_id=req.ramdisk_id or _boot_id(manifest.ramdisk_id),
        manifest=data,
        access_key_id=signing.access_key_id,
    )


def _boot_id(value: str | None) -> str | None:
    # Old Eucalyptus bundles marked kernel/ramdisk bundles with kernel_id/ramdisk_id "true": not an image id.
    return None if value in (None, "true", "false") else value


# -- download manifests: how a node gets an image --------------------------------------------------------


async def download_manifest_for(
    ctx: RoleContext,
    image_id: str,
    node_cert_pem: bytes,
    *,
    expires_in: int = DOWNLOAD_URL_SECONDS,
    now: float | None = None,
) -> bytes:
    """A download manifest of a registered bundle image for one node (Eucalyptus 4's way).

    The bundle key and IV are unwrapped with the cloud key and wrapped again for `node_cert_pem` only; each
    part gets a GET URL presigned with the image owner's access key (the one it was registered with while it
    stays active), valid `expires_in` seconds; the whole is signed with the cloud key
    (euca.protocol.bundle.build_download_manifest). The node checks it with verify_download_manifest and
    feeds it to euca.images.pipeline.source_from_download_manifest. Launch permission is the caller's check.
    Raises Ec2Error (InvalidAMIID.NotFound, InvalidManifest) or BundleError for a bad node certificate.
    """
    node_cert = load_certificate(node_cert_pem)
    bundle = await ctx.store.read(lambda tx: records.load_bundle(tx, image_id))
    if bundle is None:
        raise records.not_found(image_id)
    if bundle.manifest is None or not bundle.location:
        raise _invalid(f"Image {image_id} has no verified bundle manifest recorded; register it again.")
    manifest = parse_manifest(bundle.manifest)
    keys = await ctx.identity.account_access_keys(bundle.account_id)
    if not keys:
        raise _invalid(f"The owner of {image_id} has no active access key to give nodes access to its parts.")
    owner_key = next((k for k in keys if k.access_key_id == bundle.access_key_id), keys[0])
    signing = SigningKey(owner_key.access_key_id, owner_key.secret_key, ctx.config.region, "s3")
    bucket, _, manifest_key = bundle.location.partition("/")
    endpoint = walrus_endpoint(ctx)
    at = time.time() if now is None else now
    urls = [
        presign_url(
            "GET",
            object_url(endpoint, bucket, _part_key(manifest_key, p.filename)),
            signing,
            expires=expires_in,
            now=at,
        )
        for p in manifest.parts
    ]
    expires = datetime.fromtimestamp(at + expires_in, UTC)
    data: bytes = await trio.to_thread.run_sync(
        lambda: build_download_manifest(
            manifest,
            image_id=image_id,
            part_urls=urls,
            cloud_key=ctx.ca.key,
            node_cert=node_cert,
            expires=expires,
        )
    )
    log.info(
        "download manifest issued image_id=%s node=%s parts=%d expires_in=%d",
        image_id,
        certificate_fingerprint(node_cert)[:16],
        len(urls),
        expires_in,
    )
    return data
