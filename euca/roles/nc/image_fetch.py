"""Images on the node: a download manifest in, a pinned path in the image cache out.

The CLC signs each download manifest with the cloud key and wraps the bundle's key for the cluster's node
image certificate (Eucalyptus's node-cert.pem, shared by the NCs of a cluster). The node checks the
signature and that the manifest was made for its certificate before it fetches anything, then runs the
image pipeline (fetch, verify, decrypt, gunzip, untar) straight into the cache. One copy per image per node,
whatever the number of instances booted from it; instances hold a pin on it while they run.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from euca.core.components import Components, MissingComponent
from euca.images import pipeline
from euca.images.cache import ImageCache
from euca.protocol import bundle
from euca.protocol.cluster import ImageRef

log = logging.getLogger("euca.nc")


class ImageFetchError(Exception):
    """The image cannot be had: bad manifest, wrong node, expired, unreachable, corrupt (message says)."""


@dataclass(frozen=True)
class NodeKeys:
    node_key: rsa.RSAPrivateKey
    node_cert: x509.Certificate
    cloud_cert: x509.Certificate

    @classmethod
    def from_components(cls, components: Components) -> NodeKeys:
        """The node image key and certificate and the cloud certificate this host holds."""
        try:
            return cls(
                components.node_image_key(),
                components.node_image_cert(),
                x509.load_pem_x509_certificate(components.ca_cert_pem),
            )
        except (MissingComponent, FileNotFoundError) as e:
            raise ImageFetchError(
                f"this node has no node image key ({e}): it has not joined the cloud as an NC"
            ) from None


KeySource = Callable[[], NodeKeys]


def checked_manifest(
    ref: ImageRef, keys: NodeKeys, now: dt.datetime | None = None
) -> bundle.DownloadManifest:
    """The download manifest of `ref`, parsed and verified: signed by the cloud, made for this node's
    certificate, for this image and kind, and (when `now` is given) not expired."""
    try:
        manifest = bundle.parse_download_manifest(ref.download_manifest.encode())
        bundle.verify_download_manifest(manifest, keys.cloud_cert, node_cert=keys.node_cert, now=now)
    except bundle.BundleError as e:
        raise ImageFetchError(f"{ref.image_id}: {e}") from e
    if manifest.image_id != ref.image_id:
        raise ImageFetchError(f"{ref.image_id}: the download manifest is for {manifest.image_id}")
    if manifest.image_type != ref.kind:
        raise ImageFetchError(f"{ref.image_id}: a {manifest.image_type} image where a {ref.kind} is needed")
    return manifest


class NodeImages:
    """Fetches images into the cache. `acquire` pins the entry; `release` unpins it."""

    def __init__(self, cache: ImageCache, keys: KeySource, client: httpx.AsyncClient | None):
        self.cache = cache
        self.keys = keys
        self.client = client
        self._keys: NodeKeys | None = None

    def _node_keys(self) -> NodeKeys:
        if self._keys is None:
            self._keys = self.keys()
        return self._keys

    async def acquire(self, ref: ImageRef, instance_id: str = "") -> Path:
        keys = self._node_keys()
        manifest = checked_manifest(ref, keys)
        key = ref.image_id
        entry = self.cache.entries.get(key)
        if entry is not None and entry.digest and entry.digest != manifest.digest:
            # Same id, other bytes (an image re-registered under an id a test reused): fetch it again.
            if await self.cache.evict(key):
                log.info("image cache entry replaced id=%s", key)
        produced = False

        async def produce(tmp: Path) -> None:
            nonlocal produced
            if manifest.expires <= dt.datetime.now(dt.UTC):
                raise ImageFetchError(f"{ref.image_id}: the download manifest expired at {manifest.expires}")
            source = pipeline.source_from_download_manifest(manifest, keys.node_key)
            log.info(
                "image fetch started id=%s kind=%s bytes=%d parts=%d instance=%s",
                ref.image_id,
                ref.kind,
                manifest.size,
                len(manifest.parts),
                instance_id,
            )
            reported = [0]

            def progress(done: int, total: int) -> None:
                if total and done * 4 // total > reported[0]:
                    reported[0] = done * 4 // total
                    log.info("image fetch progress id=%s done=%d%%", ref.image_id, done * 100 // total)

            await pipeline.write_image(source, tmp, client=self.client, progress=progress)
            produced = True

        try:
            path = await self.cache.acquire(
                key, produce=produce, size_hint=manifest.size, digest=manifest.digest
            )
        except ImageFetchError:
            raise
        except pipeline.ImagePipelineError as e:
            raise ImageFetchError(f"{ref.image_id}: {e}") from e
        except Exception as e:  # CacheFullError, OSError: still a reason the CC can show
            raise ImageFetchError(f"{ref.image_id}: {type(e).__name__}: {e}") from e
        if produced:
            log.info("image cached id=%s kind=%s bytes=%d", ref.image_id, ref.kind, manifest.size)
        return path

    def release(self, image_id: str) -> None:
        self.cache.release(image_id)

    def pin(self, image_id: str) -> bool:
        return self.cache.pin(image_id)
