"""Machine, kernel and ramdisk images: register, describe, deregister, attributes and launch permissions.

An image is visible to its owner, to every account when public, and to the accounts it was shared with
(launch permissions). Only the owner changes or removes it.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import trio

from euca.core.identity import ADMIN_ACCOUNT
from euca.core.roles import RoleContext
from euca.core.s3client import ObjectInfo, S3Client, object_url
from euca.core.s3client import S3ClientError as S3Error  # the clc helper renames its uses
from euca.core.store import Store, Tx
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
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error, format_timestamp
from euca.protocol.sigv4 import SigningKey, presign_url
from euca.roles.clc import tags as tagging
from euca.roles.clc.app import Call

log = logging.getLogger("euca.clc")

ID_PREFIX = {"machine": "emi", "kernel": "eki", "ramdisk": "eri"}
ARCHITECTURES = ("i386", "x86_64", "arm64")
# Eucalyptus ids carry 8 hex digits, today's AWS 17; clients send both.
IMAGE_ID_RE = re.compile(r"^[a-z]{3}-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
ACCOUNT_ID_RE = re.compile(r"^\d{12}$")

_COLUMNS = (
    "image_id, account_id, image_type, name, description, location, architecture, kernel_id, ramdisk_id, "
    "platform, root_device_type, root_device_name, virtualization_type, state, public, created"
)


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    account_id: str
    image_type: str
    name: str
    description: str | None
    location: str | None
    architecture: str
    kernel_id: str | None
    ramdisk_id: str | None
    platform: str | None
    root_device_type: str
    root_device_name: str | None
    virtualization_type: str | None
    state: str
    public: bool
    created: float
    launch_accounts: frozenset[str] = frozenset()
    tags: dict[str, str] = field(default_factory=dict)

    def visible_to(self, account_id: str) -> bool:
        return self.public or self.account_id == account_id or account_id in self.launch_accounts


def _record(r: sqlite3.Row, launch: Iterable[str] = (), tags: dict[str, str] | None = None) -> ImageRecord:
    return ImageRecord(
        image_id=r["image_id"],
        account_id=r["account_id"],
        image_type=r["image_type"],
        name=r["name"],
        description=r["description"],
        location=r["location"],
        architecture=r["architecture"],
        kernel_id=r["kernel_id"],
        ramdisk_id=r["ramdisk_id"],
        platform=r["platform"],
        root_device_type=r["root_device_type"],
        root_device_name=r["root_device_name"],
        virtualization_type=r["virtualization_type"],
        state=r["state"],
        public=bool(r["public"]),
        created=r["created"],
        launch_accounts=frozenset(launch),
        tags=tags or {},
    )


def load_visible_images(tx: Tx, account_id: str) -> list[ImageRecord]:
    """Every image the account can see, with its launch permissions and the account's tags on it."""
    rows = tx.all(
        f"SELECT {_COLUMNS} FROM clc_images i WHERE i.account_id=? OR i.public=1 OR EXISTS("
        "SELECT 1 FROM clc_image_launch_permissions p WHERE p.image_id=i.image_id AND p.account_id=?)",
        (account_id, account_id),
    )
    launch: dict[str, list[str]] = {}
    for p in tx.all(
        "SELECT p.image_id, p.account_id FROM clc_image_launch_permissions p JOIN clc_images i "
        "ON i.image_id=p.image_id WHERE i.account_id=? OR i.public=1 OR p.account_id=?",
        (account_id, account_id),
    ):
        launch.setdefault(p["image_id"], []).append(p["account_id"])
    tags = tagging.tags_of(tx, account_id, (r["image_id"] for r in rows))
    return [_record(r, launch.get(r["image_id"], ()), tags.get(r["image_id"])) for r in rows]


def load_image(tx: Tx, image_id: str) -> ImageRecord | None:
    row = tx.one(f"SELECT {_COLUMNS} FROM clc_images WHERE image_id=?", (image_id,))
    if row is None:
        return None
    launch = [
        p["account_id"]
        for p in tx.all("SELECT account_id FROM clc_image_launch_permissions WHERE image_id=?", (image_id,))
    ]
    return _record(row, launch)


def check_image_id(image_id: str) -> None:
    if not IMAGE_ID_RE.match(image_id):
        raise Ec2Error("InvalidAMIID.Malformed", f'Invalid id: "{image_id}"')


def _not_found(image_id: str) -> Ec2Error:
    return Ec2Error("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")


def _visible_image(tx: Tx, image_id: str, account_id: str) -> ImageRecord:
    check_image_id(image_id)
    image = load_image(tx, image_id)
    if image is None or not image.visible_to(account_id):
        raise _not_found(image_id)
    return image


def _owned_image(tx: Tx, image_id: str, account_id: str) -> ImageRecord:
    image = _visible_image(tx, image_id, account_id)
    if image.account_id != account_id:
        raise Ec2Error("AuthFailure", f"Not authorized for image:{image_id}")
    return image


# -- RegisterImage: reading and checking the bundle manifest ---------------------------------------------

# Walrus' S3 path prefix (the CLC and Walrus may share a port; the prefix routes without guessing).
WALRUS_PATH = "/services/objectstorage"
# Part HEADs in flight at once while registering.
PART_CHECK_CONCURRENCY = 8
# How long a node's presigned part URLs stay valid.
DOWNLOAD_URL_SECONDS = 4 * 3600
WALRUS_TIMEOUT = 60.0

BUNDLE_SCHEMA: list[str | Callable[[Tx], None]] = [
    # The manifest an image was registered from, as read and verified at RegisterImage: download manifests
    # are made from it (a manifest replaced in the bucket later changes nothing), and the access key it was
    # read with (the owner's key that presigns part URLs while it stays active).
    """
    CREATE TABLE clc_image_bundles (
        image_id TEXT PRIMARY KEY,
        manifest BLOB NOT NULL,
        access_key_id TEXT
    );
    """,
]


def migrate(store: Store) -> None:
    store.migrate("clc_images", BUNDLE_SCHEMA)


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


def _unreadable(error: S3Error, what: str, bucket: str, key: str) -> Ec2Error:
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


async def _caller_key(call: Call) -> SigningKey:
    key = await call.ctx.identity.access_key(call.principal.access_key_id)
    if key is None or not key.active:
        raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials")
    return SigningKey(key.access_key_id, key.secret_key, call.ctx.config.region, "s3")


async def _check_signature(call: Call, manifest: BundleManifest) -> None:
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
    found: list[ObjectInfo | S3Error | None] = [None] * len(manifest.parts)

    async def head(i: int, key: str) -> None:
        async with limiter:
            try:
                found[i] = await s3.head_object(bucket, key)
            except S3Error as e:
                found[i] = e

    async with trio.open_nursery() as nursery:
        for part in manifest.parts:
            nursery.start_soon(head, part.index, _part_key(manifest_key, part.filename))
    total = 0
    for part, result in zip(manifest.parts, found, strict=True):
        if isinstance(result, S3Error):
            raise _unreadable(result, f"part {part.index}", bucket, _part_key(manifest_key, part.filename))
        assert result is not None
        total += result.size
    if total != manifest.bundled_size:
        raise _invalid(
            f"The parts in {bucket} hold {total} bytes but the manifest says the bundle is "
            f"{manifest.bundled_size} bytes: a part was replaced or truncated."
        )


async def inspect_manifest(call: Call, location: str, req: m.RegisterImageRequest) -> ManifestFacts:
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
        except S3Error as e:
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


def _split_location(location: str) -> str:
    loc = location.strip().lstrip("/")
    bucket, slash, key = loc.partition("/")
    if not bucket or not slash or not key:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Invalid ImageLocation '{location}': expected bucket/prefix.manifest.xml",
        )
    return loc


def _new_image_id(tx: Tx, image_type: str) -> str:
    while True:
        image_id = f"{ID_PREFIX[image_type]}-{secrets.token_hex(4)}"
        if not tx.one("SELECT 1 FROM clc_images WHERE image_id=?", (image_id,)):
            return image_id


def _check_boot_image(tx: Tx, image_id: str | None, want: str, account_id: str) -> None:
    if image_id is None:
        return
    image = _visible_image(tx, image_id, account_id)
    if image.image_type != want:
        raise Ec2Error("InvalidParameterValue", f"Image {image_id} is not a {want} image")


def _check_architecture(architecture: str | None) -> None:
    if architecture is not None and architecture not in ARCHITECTURES:
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({architecture}) for parameter architecture is invalid."
        )


def _check_name_free(tx: Tx, account_id: str, name: str) -> None:
    if tx.one("SELECT 1 FROM clc_images WHERE account_id=? AND name=?", (account_id, name)):
        raise Ec2Error("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI")


async def register_image(call: Call, req: m.RegisterImageRequest) -> m.RegisterImageResult:
    if not IMAGE_NAME_RE.match(req.name):
        raise Ec2Error(
            "InvalidAMIName.Malformed",
            "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, "
            "'(', ')', '.', '-', '/' and '_'",
        )
    if not req.image_location:
        if req.block_device_mappings:
            raise Ec2Error("UnsupportedOperation", "Images backed by EBS snapshots are not supported yet.")
        raise Ec2Error("MissingParameter", "The request must contain the parameter ImageLocation")
    location = _split_location(req.image_location)
    tags = tagging.tags_from_specifications(req.tag_specifications, "image")
    _check_architecture(req.architecture)

    def precheck(tx: Tx) -> None:
        # What the request alone gets wrong is answered before the manifest is read.
        _check_boot_image(tx, req.kernel_id, "kernel", call.account_id)
        _check_boot_image(tx, req.ramdisk_id, "ramdisk", call.account_id)
        _check_name_free(tx, call.account_id, req.name)

    await call.ctx.store.read(precheck)
    facts = await inspect_manifest(call, location, req)
    architecture = facts.architecture or "x86_64"
    _check_architecture(architecture)
    kernel_id = facts.kernel_id if facts.image_type == "machine" else None
    ramdisk_id = facts.ramdisk_id if facts.image_type == "machine" else None
    virtualization = req.virtualization_type or (
        "paravirtual" if kernel_id or facts.image_type != "machine" else "hvm"
    )
    if virtualization not in ("hvm", "paravirtual"):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({virtualization}) for parameter virtualizationType is invalid."
        )

    def write(tx: Tx) -> str:
        _check_boot_image(tx, kernel_id, "kernel", call.account_id)
        _check_boot_image(tx, ramdisk_id, "ramdisk", call.account_id)
        _check_name_free(tx, call.account_id, req.name)
        image_id = _new_image_id(tx, facts.image_type)
        tx.execute(
            f"INSERT INTO clc_images({_COLUMNS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                image_id,
                call.account_id,
                facts.image_type,
                req.name,
                req.description,
                location,
                architecture,
                kernel_id,
                ramdisk_id,
                None,
                "instance-store",
                req.root_device_name or "/dev/sda1",
                virtualization,
                "available",
                0,
                time.time(),
            ),
        )
        if facts.manifest is not None:
            tx.execute(
                "INSERT INTO clc_image_bundles(image_id, manifest, access_key_id) VALUES(?,?,?)",
                (image_id, facts.manifest, facts.access_key_id),
            )
        tagging.write_tags(tx, call.account_id, image_id, "image", tags)
        return image_id

    image_id = await call.ctx.store.write(write)
    log.info(
        "image registered image_id=%s account=%s location=%s type=%s",
        image_id,
        call.account_id,
        location,
        facts.image_type,
    )
    return m.RegisterImageResult(image_id=image_id)


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

    def read(tx: Tx) -> sqlite3.Row | None:
        return tx.one(
            "SELECT i.account_id, i.location, b.manifest, b.access_key_id FROM clc_images i "
            "LEFT JOIN clc_image_bundles b ON b.image_id = i.image_id WHERE i.image_id=?",
            (image_id,),
        )

    row = await ctx.store.read(read)
    if row is None:
        raise _not_found(image_id)
    if row["manifest"] is None or not row["location"]:
        raise _invalid(f"Image {image_id} has no verified bundle manifest recorded; register it again.")
    manifest = parse_manifest(bytes(row["manifest"]))
    keys = await ctx.identity.account_access_keys(row["account_id"])
    if not keys:
        raise _invalid(f"The owner of {image_id} has no active access key to give nodes access to its parts.")
    owner_key = next((k for k in keys if k.access_key_id == row["access_key_id"]), keys[0])
    signing = SigningKey(owner_key.access_key_id, owner_key.secret_key, ctx.config.region, "s3")
    bucket, _, manifest_key = str(row["location"]).partition("/")
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
    data = await trio.to_thread.run_sync(
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


# -- DescribeImages --------------------------------------------------------------------------------------

IMAGE_FILTERS: FilterSet[ImageRecord] = FilterSet(
    {
        "architecture": lambda i: i.architecture,
        "description": lambda i: i.description,
        "image-id": lambda i: i.image_id,
        "image-type": lambda i: i.image_type,
        "is-public": lambda i: i.public,
        "kernel-id": lambda i: i.kernel_id,
        "manifest-location": lambda i: i.location,
        "name": lambda i: i.name,
        "owner-id": lambda i: i.account_id,
        "platform": lambda i: i.platform,
        "ramdisk-id": lambda i: i.ramdisk_id,
        "root-device-name": lambda i: i.root_device_name,
        "root-device-type": lambda i: i.root_device_type,
        "state": lambda i: i.state,
        "virtualization-type": lambda i: i.virtualization_type,
        "hypervisor": lambda i: "xen",
    },
    tags=lambda i: i.tags,
)


def to_image(i: ImageRecord) -> m.Image:
    return m.Image(
        image_id=i.image_id,
        image_location=i.location,
        state=i.state,
        owner_id=i.account_id,
        creation_date=format_timestamp(datetime.fromtimestamp(i.created, UTC)),
        public=i.public,
        architecture=i.architecture,
        image_type=i.image_type,
        name=i.name,
        description=i.description,
        kernel_id=i.kernel_id,
        ramdisk_id=i.ramdisk_id,
        platform=i.platform,
        root_device_type=i.root_device_type,
        root_device_name=i.root_device_name,
        virtualization_type=i.virtualization_type,
        hypervisor="xen",
        tags=tagging.tag_list(i.tags),
    )


async def _owner_ids(call: Call, owners: list[str]) -> set[str]:
    ids: set[str] = set()
    for owner in owners:
        if owner == "self":
            ids.add(call.account_id)
        elif owner == "amazon":
            # The cloud's own images: those of the cloud administrators' account.
            admin = await call.ctx.identity.account_by_name(ADMIN_ACCOUNT)
            if admin is not None:
                ids.add(admin.account_id)
        elif ACCOUNT_ID_RE.match(owner):
            ids.add(owner)
        else:
            # Eucalyptus let an account name stand for the account (its image owner alias).
            account = await call.ctx.identity.account_by_name(owner)
            if account is None:
                raise Ec2Error("InvalidUserID.Malformed", f"Invalid user id: '{owner}'")
            ids.add(account.account_id)
    return ids


def _executable_by(image: ImageRecord, who: list[str], caller: str) -> bool:
    for w in who:
        if w == "all" and image.public:
            return True
        account = caller if w == "self" else w
        if image.account_id == account or account in image.launch_accounts:
            return True
    return False


async def describe_images(call: Call, req: m.DescribeImagesRequest) -> m.DescribeImagesResult:
    for image_id in req.image_ids:
        check_image_id(image_id)
    if req.image_ids and req.max_results is not None:
        raise Ec2Error(
            "InvalidParameterCombination",
            "The parameter imageIdsSet cannot be used with the parameter maxResults",
        )
    images = await call.ctx.store.read(lambda tx: load_visible_images(tx, call.account_id))
    if req.image_ids:
        by_id = {i.image_id: i for i in images}
        missing = [i for i in req.image_ids if i not in by_id]
        if missing:
            raise Ec2Error("InvalidAMIID.NotFound", f"The image ids '[{', '.join(missing)}]' do not exist")
        images = [by_id[i] for i in dict.fromkeys(req.image_ids)]
    if req.owners:
        owners = await _owner_ids(call, req.owners)
        images = [i for i in images if i.account_id in owners]
    if req.executable_users:
        images = [i for i in images if _executable_by(i, req.executable_users, call.account_id)]
    images = IMAGE_FILTERS.apply(req.filters, images)
    page, token = paginate(images, lambda i: i.image_id, req.max_results, req.next_token, PageLimits(5, 1000))
    return m.DescribeImagesResult(images=[to_image(i) for i in page], next_token=token)


# -- DeregisterImage -------------------------------------------------------------------------------------


async def deregister_image(call: Call, req: m.DeregisterImageRequest) -> m.DeregisterImageResult:
    def write(tx: Tx) -> None:
        image = _owned_image(tx, req.image_id, call.account_id)
        tx.execute("DELETE FROM clc_image_launch_permissions WHERE image_id=?", (image.image_id,))
        tx.execute("DELETE FROM clc_images WHERE image_id=?", (image.image_id,))
        tx.execute("DELETE FROM clc_image_bundles WHERE image_id=?", (image.image_id,))
        tagging.forget_resource(tx, image.image_id)

    await call.ctx.store.write(write)
    log.info("image deregistered image_id=%s account=%s", req.image_id, call.account_id)
    return m.DeregisterImageResult()


# -- image attributes ------------------------------------------------------------------------------------

SUPPORTED_ATTRIBUTES = (
    "description",
    "kernel",
    "ramdisk",
    "launchPermission",
    "productCodes",
    "blockDeviceMapping",
)
# In the model, not kept by euca: answered UnsupportedOperation rather than InvalidParameterValue.
OTHER_MODEL_ATTRIBUTES = (
    "sriovNetSupport",
    "bootMode",
    "tpmSupport",
    "uefiData",
    "lastLaunchedTime",
    "imdsSupport",
    "deregistrationProtection",
)


def _check_attribute(name: str) -> None:
    if name in SUPPORTED_ATTRIBUTES:
        return
    if name in OTHER_MODEL_ATTRIBUTES:
        raise Ec2Error("UnsupportedOperation", f"The image attribute {name} is not supported by this cloud.")
    raise Ec2Error(
        "InvalidParameterValue", f"Value ({name}) for parameter attribute is invalid. Unknown attribute."
    )


def _launch_permissions(image: ImageRecord) -> list[m.LaunchPermission]:
    perms = [m.LaunchPermission(group="all")] if image.public else []
    perms.extend(m.LaunchPermission(user_id=a) for a in sorted(image.launch_accounts))
    return perms


async def describe_image_attribute(call: Call, req: m.DescribeImageAttributeRequest) -> m.ImageAttribute:
    _check_attribute(req.attribute)
    image = await call.ctx.store.read(lambda tx: _visible_image(tx, req.image_id, call.account_id))
    attr = req.attribute
    if attr == "launchPermission":
        if image.account_id != call.account_id:
            raise Ec2Error("AuthFailure", f"Not authorized for image:{image.image_id}")
        return m.ImageAttribute(image_id=image.image_id, launch_permissions=_launch_permissions(image))
    if attr == "description":
        return m.ImageAttribute(
            image_id=image.image_id, description=m.AttributeValue(value=image.description)
        )
    if attr == "kernel":
        return m.ImageAttribute(image_id=image.image_id, kernel_id=m.AttributeValue(value=image.kernel_id))
    if attr == "ramdisk":
        return m.ImageAttribute(image_id=image.image_id, ramdisk_id=m.AttributeValue(value=image.ramdisk_id))
    if attr == "productCodes":
        return m.ImageAttribute(image_id=image.image_id, product_codes=[])
    return m.ImageAttribute(image_id=image.image_id, block_device_mappings=[])


@dataclass
class _LaunchChange:
    add_accounts: set[str] = field(default_factory=set)
    remove_accounts: set[str] = field(default_factory=set)
    public: bool | None = None


def _launch_change(req: m.ModifyImageAttributeRequest) -> _LaunchChange | None:
    change = _LaunchChange()
    found = False

    def take(perms: list[m.LaunchPermission], adding: bool) -> None:
        for p in perms:
            if p.group is not None:
                if p.group != "all":
                    raise Ec2Error(
                        "InvalidAMIAttributeItemValue", f"Invalid attribute item value '{p.group}' for group"
                    )
                change.public = adding
            if p.user_id is not None:
                (change.add_accounts if adding else change.remove_accounts).add(p.user_id)

    if req.launch_permission is not None:
        found = True
        take(req.launch_permission.add, True)
        take(req.launch_permission.remove, False)
    if req.attribute == "launchPermission" or (req.attribute is None and (req.user_ids or req.user_groups)):
        found = True
        if req.operation_type not in ("add", "remove"):
            raise Ec2Error(
                "MissingParameter", "The request must contain the parameter OperationType (add or remove)"
            )
        perms = [m.LaunchPermission(user_id=u) for u in req.user_ids]
        perms += [m.LaunchPermission(group=g) for g in req.user_groups]
        if not perms:
            raise Ec2Error("MissingParameter", "The request must contain the parameter UserId or UserGroup")
        take(perms, req.operation_type == "add")
    return change if found else None


async def modify_image_attribute(call: Call, req: m.ModifyImageAttributeRequest) -> None:
    if req.product_codes or req.attribute == "productCodes":
        raise Ec2Error("UnsupportedOperation", "Product codes are not supported by this cloud.")
    if req.organization_arns or req.organizational_unit_arns or req.imds_support is not None:
        raise Ec2Error("UnsupportedOperation", "This image attribute is not supported by this cloud.")
    if req.attribute is not None and req.attribute not in ("launchPermission", "description"):
        _check_attribute(req.attribute)
        raise Ec2Error("InvalidParameterValue", f"The image attribute {req.attribute} cannot be modified.")
    launch = _launch_change(req)
    description: str | None = None
    if req.description is not None:
        description = req.description.value or ""
    elif req.attribute == "description":
        description = req.value or ""
    if launch is None and description is None:
        raise Ec2Error("MissingParameter", "The request must contain the parameter Attribute")
    accounts = (launch.add_accounts | launch.remove_accounts) if launch else set()
    for account_id in accounts:
        if not ACCOUNT_ID_RE.match(account_id) or await call.ctx.identity.account_by_id(account_id) is None:
            raise Ec2Error(
                "InvalidAMIAttributeItemValue", f"Invalid attribute item value '{account_id}' for userId"
            )

    def write(tx: Tx) -> None:
        image = _owned_image(tx, req.image_id, call.account_id)
        if description is not None:
            tx.execute("UPDATE clc_images SET description=? WHERE image_id=?", (description, image.image_id))
        if launch is None:
            return
        if launch.public is not None:
            tx.execute(
                "UPDATE clc_images SET public=? WHERE image_id=?", (int(launch.public), image.image_id)
            )
        tx.executemany(
            "INSERT OR IGNORE INTO clc_image_launch_permissions(image_id, account_id) VALUES(?,?)",
            [(image.image_id, a) for a in sorted(launch.add_accounts)],
        )
        tx.executemany(
            "DELETE FROM clc_image_launch_permissions WHERE image_id=? AND account_id=?",
            [(image.image_id, a) for a in sorted(launch.remove_accounts)],
        )

    await call.ctx.store.write(write)


async def reset_image_attribute(call: Call, req: m.ResetImageAttributeRequest) -> None:
    if req.attribute != "launchPermission":
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({req.attribute}) for parameter attribute is invalid."
        )

    def write(tx: Tx) -> None:
        image = _owned_image(tx, req.image_id, call.account_id)
        tx.execute("UPDATE clc_images SET public=0 WHERE image_id=?", (image.image_id,))
        tx.execute("DELETE FROM clc_image_launch_permissions WHERE image_id=?", (image.image_id,))

    await call.ctx.store.write(write)
