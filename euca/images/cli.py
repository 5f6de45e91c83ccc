"""`euca bundle-image` and `euca unbundle`: euca2ools' commands of the same names, same options and env.

Also `euca upload-bundle`, `euca register` and `euca install-image` (bundle + upload + register), with
euca2ools' options and environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, S3_URL, EC2_URL, as a sourced
eucarc sets them). Wire into the main CLI with `main.add_command(...)` (the commands carry their names).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
import trio

from euca.core.s3client import S3Client, S3ClientError
from euca.images.bundler import DEFAULT_COMPRESSLEVEL, BundleInputError, bundle_image
from euca.images.pipeline import (
    DEFAULT_CONCURRENCY,
    ImageKeyError,
    ImagePipelineError,
    ImageSource,
    source_from_bundle_manifest,
    unbundle_image,
)
from euca.images.upload import (
    BundleFiles,
    Ec2ApiError,
    UploadError,
    bundle_files,
    register_bundle,
    split_bucket,
    upload_bundle,
)
from euca.protocol.bundle import (
    IMAGE_TYPES,
    BlockDeviceMapping,
    BundleError,
    load_certificate,
    load_private_key,
    parse_manifest,
    verify_manifest,
)
from euca.protocol.sigv4 import SigningKey

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
UPLOAD_TIMEOUT = 300.0


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise click.ClickException(f"cannot read the {what} {path}: {e.strerror}") from e


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress_bar(shown: bool, length: int, label: str) -> Any:
    if not shown:
        return _NoProgress()
    return click.progressbar(length=max(length, 1), label=label, show_percent=True, show_eta=True)


def _bundle_with_progress(image: str, destination: Path, progress: bool, **options: Any) -> Any:
    """bundle_image with a progress bar over the image's bytes; bad input becomes a ClickException."""
    size = os.path.getsize(image) if os.path.isfile(image) else 0
    with _progress_bar(progress, size, "Bundling") as bar:
        last = 0

        def advance(done: int, total: int) -> None:
            nonlocal last
            bar.update(done - last)
            last = done

        try:
            return bundle_image(Path(image), destination, progress=advance, **options)
        except (BundleInputError, ValueError) as e:
            raise click.ClickException(str(e)) from e


def _mappings(value: str | None) -> list[BlockDeviceMapping]:
    """`ami=sda1,root=/dev/sda1,ephemeral0=sda2` as euca-bundle-image's -B takes it."""
    out = []
    for item in (value or "").split(","):
        if not item.strip():
            continue
        virtual, sep, device = item.partition("=")
        if not sep or not virtual.strip() or not device.strip():
            raise click.BadParameter(f"{item!r} is not VIRTUAL=DEVICE", param_hint="--block-device-mapping")
        out.append(BlockDeviceMapping(virtual.strip(), device.strip()))
    return out


@click.command("bundle-image")
@click.option(
    "-i", "--image", "image", required=True, type=click.Path(dir_okay=False), help="The image file."
)
@click.option("-p", "--prefix", default=None, help="Bundle file name prefix (default: the image's name).")
@click.option(
    "-d",
    "--destination",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for the parts and the manifest.",
)
@click.option(
    "-r", "--arch", default="x86_64", show_default=True, help="Target architecture (i386, x86_64...)."
)
@click.option(
    "--image-type",
    type=click.Choice(IMAGE_TYPES),
    default=None,
    help="machine, kernel or ramdisk (default machine; --kernel true means kernel, as euca2ools).",
)
@click.option("--kernel", default=None, help="Kernel image id to boot a machine image with.")
@click.option("--ramdisk", default=None, help="Ramdisk image id to boot a machine image with.")
@click.option(
    "-B", "--block-device-mapping", default=None, help="VIRTUAL=DEVICE,... (ami=sda1,root=/dev/sda1)."
)
@click.option("--productcodes", default=None, help="Comma-separated product codes.")
@click.option("-c", "--cert", envvar="EC2_CERT", required=True, help="Your certificate [EC2_CERT].")
@click.option(
    "-k",
    "--privatekey",
    envvar="EC2_PRIVATE_KEY",
    required=True,
    help="Your private key, which signs the manifest [EC2_PRIVATE_KEY].",
)
@click.option(
    "--ec2cert",
    envvar="EUCALYPTUS_CERT",
    required=True,
    help="The cloud's certificate, for which the key is wrapped [EUCALYPTUS_CERT].",
)
@click.option("-u", "--user", envvar="EC2_USER_ID", required=True, help="Your account id [EC2_USER_ID].")
@click.option(
    "--compress-level",
    type=click.IntRange(1, 9),
    default=DEFAULT_COMPRESSLEVEL,
    show_default=True,
    help="gzip level: 1 is much faster, 6 a little smaller.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def bundle_image_command(
    image: str,
    prefix: str | None,
    destination: str,
    arch: str,
    image_type: str | None,
    kernel: str | None,
    ramdisk: str | None,
    block_device_mapping: str | None,
    productcodes: str | None,
    cert: str,
    privatekey: str,
    ec2cert: str,
    user: str,
    compress_level: int,
    progress: bool,
) -> None:
    """Bundle an image file for upload: tar, gzip, AES-128-CBC, 10 MiB parts and a signed manifest."""
    if image_type is None:
        image_type = "kernel" if kernel == "true" else "ramdisk" if ramdisk == "true" else "machine"
    try:
        user_cert = load_certificate(_read(cert, "certificate"))
        user_key = load_private_key(_read(privatekey, "private key"))
        cloud_cert = load_certificate(_read(ec2cert, "cloud certificate"))
    except BundleError as e:
        raise click.ClickException(str(e)) from e
    codes = [c.strip() for c in (productcodes or "").split(",") if c.strip()]
    result = _bundle_with_progress(
        image,
        Path(destination),
        progress,
        user=user,
        cloud_cert=cloud_cert,
        user_cert=user_cert,
        user_key=user_key,
        prefix=prefix,
        architecture=arch,
        image_type=image_type,
        kernel_id=kernel,
        ramdisk_id=ramdisk,
        block_device_mappings=_mappings(block_device_mapping),
        product_codes=codes,
        compresslevel=compress_level,
    )
    click.echo(f"Wrote manifest {result.manifest_path}")


@click.command("unbundle")
@click.option(
    "-m",
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The bundle's manifest.",
)
@click.option(
    "-k",
    "--privatekey",
    envvar="EC2_PRIVATE_KEY",
    required=True,
    help="Your private key (or the cloud's) to unwrap the bundle key [EC2_PRIVATE_KEY].",
)
@click.option(
    "-s",
    "--source",
    default=None,
    help="Directory or http(s) URL prefix holding the parts (default: the manifest's directory).",
)
@click.option(
    "-d",
    "--destination",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory to write the image into.",
)
@click.option("-c", "--cert", default=None, help="Check the manifest's signature against this certificate.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Parts fetched at once.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def unbundle_command(
    manifest_path: str,
    privatekey: str,
    source: str | None,
    destination: str,
    cert: str | None,
    concurrency: int,
    progress: bool,
) -> None:
    """Rebuild the image file from a bundle's parts, checking every part and the image digest."""
    try:
        manifest = parse_manifest(_read(manifest_path, "manifest"))
        if cert is not None:
            verify_manifest(manifest, load_certificate(_read(cert, "certificate")))
        key = load_private_key(_read(privatekey, "private key"))
    except BundleError as e:
        raise click.ClickException(str(e)) from e
    base = source or os.path.dirname(os.path.abspath(manifest_path))
    image_source: ImageSource | None = None
    for holder in ("user", "ec2"):
        try:
            image_source = source_from_bundle_manifest(manifest, key, base, holder=holder)
            break
        except ImageKeyError:
            continue
    if image_source is None:
        raise click.ClickException(
            "this private key can unwrap neither the user's nor the cloud's bundle key"
        )
    # The manifest's name is the user's to choose: keep only a base name for the output file.
    name = os.path.basename(manifest.name) or "image"
    if name in (".", ".."):
        name = "image"
    out = Path(destination) / name
    Path(destination).mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        with _progress_bar(progress, manifest.size, "Unbundling") as bar:
            last = 0

            def advance(done: int, total: int) -> None:
                nonlocal last
                bar.update(done - last)
                last = done

            async with httpx.AsyncClient(timeout=60) as client:
                await unbundle_image(
                    image_source, out, client=client, concurrency=concurrency, progress=advance
                )

    try:
        trio.run(run)
    except ImagePipelineError as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from e
    click.echo(f"Wrote {out}")


# ---------------------------------------------------------------------------------------------------------
# upload-bundle, register, install-image: euca2ools' commands, credentials from the environment (eucarc)


def _with_credentials(url_option: tuple[str, ...], url_env: str, url_help: str) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        f = click.option(
            "--region",
            envvar="AWS_DEFAULT_REGION",
            default="eucalyptus",
            show_default=True,
            help="Signing region.",
        )(f)
        f = click.option(*url_option, "url", envvar=url_env, default=None, help=f"{url_help} [{url_env}]")(f)
        f = click.option(
            "-S",
            "--secret-key",
            envvar=["AWS_SECRET_ACCESS_KEY", "EC2_SECRET_KEY"],
            default=None,
            help="Secret key [AWS_SECRET_ACCESS_KEY].",
        )(f)
        f = click.option(
            "-I",
            "--access-key-id",
            "--access-key",
            "access_key_id",
            envvar=["AWS_ACCESS_KEY_ID", "EC2_ACCESS_KEY"],
            default=None,
            help="Access key id [AWS_ACCESS_KEY_ID].",
        )(f)
        return f

    return decorate


def _signing(access_key_id: str | None, secret_key: str | None, region: str, service: str) -> SigningKey:
    if not access_key_id or not secret_key:
        raise click.ClickException(
            "no credentials: source your eucarc or pass --access-key-id and --secret-key"
        )
    return SigningKey(access_key_id, secret_key, region, service)


def _url(url: str | None, env: str) -> str:
    if not url:
        raise click.ClickException(f"no endpoint: source your eucarc ({env}) or pass the URL option")
    return url


async def _upload(
    files: BundleFiles, bucket: str, prefix: str, s3_url: str, key: SigningKey, progress: bool
) -> str:
    with _progress_bar(progress, files.size, "Uploading") as bar:
        async with httpx.AsyncClient(timeout=UPLOAD_TIMEOUT) as http:
            s3 = S3Client(http, s3_url, key)
            return await upload_bundle(s3, bucket, prefix, files, progress=bar.update)


async def _register(ec2_url: str, key: SigningKey, location: str, name: str, **kw: str | None) -> str:
    async with httpx.AsyncClient(timeout=UPLOAD_TIMEOUT) as http:
        return await register_bundle(http, ec2_url, key, location, name, **kw)


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        result: T = trio.run(fn)
        return result
    except (UploadError, S3ClientError, Ec2ApiError) as e:
        raise click.ClickException(str(e)) from e


@click.command("upload-bundle")
@click.option(
    "-b", "--bucket", required=True, help="BUCKET or BUCKET/PREFIX to upload into (created if missing)."
)
@click.option("-m", "--manifest", "manifest_path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "-d",
    "--directory",
    default=None,
    type=click.Path(file_okay=False),
    help="Where the parts are (default: next to the manifest).",
)
@click.option(
    "--location",
    "location_prefix",
    default=None,
    help="Key prefix inside the bucket (same as BUCKET/PREFIX).",
)
@_with_credentials(("-U", "--url"), "S3_URL", "Object storage (Walrus) URL.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def upload_bundle_command(
    bucket: str,
    manifest_path: str,
    directory: str | None,
    location_prefix: str | None,
    access_key_id: str | None,
    secret_key: str | None,
    url: str | None,
    region: str,
    progress: bool,
) -> None:
    """Upload a bundle's parts, then its manifest, to Walrus (SigV4)."""
    key = _signing(access_key_id, secret_key, region, "s3")
    s3_url = _url(url, "S3_URL")
    try:
        bucket_name, prefix = split_bucket(bucket if not location_prefix else f"{bucket}/{location_prefix}")
        files = bundle_files(Path(manifest_path), Path(directory) if directory else None)
    except UploadError as e:
        raise click.ClickException(str(e)) from e
    location = _run(lambda: _upload(files, bucket_name, prefix, s3_url, key, progress))
    click.echo(f"Uploaded {location}")


@click.command("register")
@click.argument("manifest_location")
@click.option("-n", "--name", required=True, help="Image name.")
@click.option("-a", "--architecture", default=None, help="i386, x86_64 or arm64 (default: the manifest's).")
@click.option("--kernel", default=None, help="Kernel image id (eki-...) to boot with.")
@click.option("--ramdisk", default=None, help="Ramdisk image id (eri-...) to boot with.")
@click.option("-d", "--description", default=None)
@click.option("--virtualization-type", type=click.Choice(["hvm", "paravirtual"]), default=None)
@_with_credentials(("-U", "--url"), "EC2_URL", "Cloud controller (EC2) URL.")
def register_command(
    manifest_location: str,
    name: str,
    architecture: str | None,
    kernel: str | None,
    ramdisk: str | None,
    description: str | None,
    virtualization_type: str | None,
    access_key_id: str | None,
    secret_key: str | None,
    url: str | None,
    region: str,
) -> None:
    """Register an uploaded bundle (BUCKET/PREFIX.manifest.xml) as an image; prints IMAGE <id>."""
    key = _signing(access_key_id, secret_key, region, "ec2")
    ec2_url = _url(url, "EC2_URL")
    image_id = _run(
        lambda: _register(
            ec2_url,
            key,
            manifest_location,
            name,
            architecture=architecture,
            kernel_id=kernel,
            ramdisk_id=ramdisk,
            description=description,
            virtualization_type=virtualization_type,
        )
    )
    click.echo(f"IMAGE\t{image_id}")


@click.command("install-image")
@click.option(
    "-i", "--image", "image", required=True, type=click.Path(dir_okay=False), help="The image file."
)
@click.option("-b", "--bucket", required=True, help="BUCKET or BUCKET/PREFIX to upload into.")
@click.option("-n", "--name", required=True, help="Image name.")
@click.option("-r", "--arch", default="x86_64", show_default=True, help="Architecture.")
@click.option(
    "--image-type",
    type=click.Choice(IMAGE_TYPES),
    default=None,
    help="machine, kernel or ramdisk (default machine; --kernel true / --ramdisk true as euca2ools).",
)
@click.option(
    "--kernel", default=None, help="Kernel image id for a machine image, or 'true' for a kernel image."
)
@click.option(
    "--ramdisk", default=None, help="Ramdisk image id for a machine image, or 'true' for a ramdisk image."
)
@click.option("--description", default=None)
@click.option("--virtualization-type", type=click.Choice(["hvm", "paravirtual"]), default=None)
@click.option("-c", "--cert", envvar="EC2_CERT", required=True, help="Your certificate [EC2_CERT].")
@click.option(
    "-k", "--privatekey", envvar="EC2_PRIVATE_KEY", required=True, help="Your private key [EC2_PRIVATE_KEY]."
)
@click.option(
    "--ec2cert", envvar="EUCALYPTUS_CERT", required=True, help="The cloud's certificate [EUCALYPTUS_CERT]."
)
@click.option("-u", "--user", envvar="EC2_USER_ID", required=True, help="Your account id [EC2_USER_ID].")
@click.option("--s3-url", envvar="S3_URL", default=None, help="Object storage (Walrus) URL [S3_URL].")
@_with_credentials(("-U", "--url"), "EC2_URL", "Cloud controller (EC2) URL.")
@click.option(
    "--directory",
    default=None,
    type=click.Path(file_okay=False),
    help="Where to write the bundle (default: a temporary directory, removed afterwards).",
)
@click.option("--compress-level", type=click.IntRange(1, 9), default=DEFAULT_COMPRESSLEVEL, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def install_image_command(
    image: str,
    bucket: str,
    name: str,
    arch: str,
    image_type: str | None,
    kernel: str | None,
    ramdisk: str | None,
    description: str | None,
    virtualization_type: str | None,
    cert: str,
    privatekey: str,
    ec2cert: str,
    user: str,
    s3_url: str | None,
    access_key_id: str | None,
    secret_key: str | None,
    url: str | None,
    region: str,
    directory: str | None,
    compress_level: int,
    progress: bool,
) -> None:
    """Bundle, upload and register an image file in one go (euca-install-image); prints IMAGE <id>."""
    if image_type is None:
        image_type = "kernel" if kernel == "true" else "ramdisk" if ramdisk == "true" else "machine"
    kernel_id = None if kernel == "true" else kernel
    ramdisk_id = None if ramdisk == "true" else ramdisk
    s3_key = _signing(access_key_id, secret_key, region, "s3")
    ec2_key = _signing(access_key_id, secret_key, region, "ec2")
    s3_endpoint = _url(s3_url, "S3_URL")
    ec2_endpoint = _url(url, "EC2_URL")
    try:
        bucket_name, prefix = split_bucket(bucket)
        user_cert = load_certificate(_read(cert, "certificate"))
        user_key = load_private_key(_read(privatekey, "private key"))
        cloud_cert = load_certificate(_read(ec2cert, "cloud certificate"))
    except (UploadError, BundleError) as e:
        raise click.ClickException(str(e)) from e
    with tempfile.TemporaryDirectory(prefix="euca-bundle-") as tmp:
        where = Path(directory) if directory else Path(tmp)
        result = _bundle_with_progress(
            image,
            where,
            progress,
            user=user,
            cloud_cert=cloud_cert,
            user_cert=user_cert,
            user_key=user_key,
            architecture=arch,
            image_type=image_type,
            kernel_id=kernel_id if image_type == "machine" else None,
            ramdisk_id=ramdisk_id if image_type == "machine" else None,
            compresslevel=compress_level,
        )
        files = BundleFiles(result.manifest_path, result.part_paths)
        location = _run(lambda: _upload(files, bucket_name, prefix, s3_endpoint, s3_key, progress))
    click.echo(f"Uploaded {location}")
    image_id = _run(
        lambda: _register(
            ec2_endpoint,
            ec2_key,
            location,
            name,
            architecture=arch,
            kernel_id=kernel_id if image_type == "machine" else None,
            ramdisk_id=ramdisk_id if image_type == "machine" else None,
            description=description,
            virtualization_type=virtualization_type,
        )
    )
    click.echo(f"IMAGE\t{image_id}")
