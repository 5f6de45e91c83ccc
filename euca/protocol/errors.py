"""The one shape of error every wire speaks: a code a client branches on (`InvalidInstanceID.NotFound`,
`SignatureDoesNotMatch`), a message for a person, and the HTTP status it travels with.

Each wire keeps its own subclass (EC2's, the cluster protocol's, a signature check's ...) because each is
rendered differently; what they share lives here once. S3's error (euca.protocol.s3.errors) carries extra
XML elements and headers and is not of this shape.
"""

from __future__ import annotations

from typing import ClassVar


class CodedError(Exception):
    """An error with an AWS-style code, a message and an HTTP status (`default_status` when not given)."""

    default_status: ClassVar[int] = 400

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = self.default_status if status is None else status
