"""`euca bundle-image` and `euca unbundle`: euca2ools' commands of the same names, same options and env.

Wire into the main CLI with `main.add_command(bundle_image_command)` and `main.add_command(unbundle_command)`
(the commands carry their names).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import httpx
import trio

from euca.images.bundler import DEFAULT_COMPRESSLEVEL, BundleInputError, bundle_image
from euca.images.pipeline import (
    DEFAULT_CONCURRENCY,
    ImageKeyError,
    ImagePipelineError,
    ImageSource,
    source_from_bundle_manifest,
    unbundle_image,
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
    size = os.path.getsize(image) if os.path.isfile(image) else 0
    codes = [c.strip() for c in (productcodes or "").split(",") if c.strip()]
    with _progress_bar(progress, size, "Bundling") as bar:
        last = 0

        def advance(done: int, total: int) -> None:
            nonlocal last
            bar.update(done - last)
            last = done

        try:
            result = bundle_image(
                Path(image),
                Path(destination),
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
                progress=advance,
            )
        except (BundleInputError, ValueError) as e:
            raise click.ClickException(str(e)) from e
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
