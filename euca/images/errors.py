"""The image pipeline's failures (euca.images.pipeline and its fetch and untar stages), all ImagePipelineError."""

from __future__ import annotations


class ImagePipelineError(Exception):
    """Base of the pipeline's failures."""


class PartMissingError(ImagePipelineError):
    """A part could not be fetched (404, refused, or still failing after retries)."""


class PartDigestError(ImagePipelineError):
    """A part's bytes do not match the SHA1 the manifest lists."""


class ImageKeyError(ImagePipelineError):
    """The key or IV cannot be unwrapped, or decrypting with them does not give a gzip stream."""


class ImageCorruptError(ImagePipelineError):
    """The decrypted stream is not a valid gzip/tar of one image, or the image digest does not match."""


class ImageDiskFullError(ImagePipelineError):
    """No space left for the image."""
