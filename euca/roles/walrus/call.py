"""One S3 request being served, as the handlers see it."""

from __future__ import annotations

from dataclasses import dataclass

from euca.core.auth import AuthResult, PayloadStream
from euca.core.http import Request
from euca.core.identity import Principal
from euca.protocol.s3 import S3Error
from euca.protocol.s3.headers import check_document_digest
from euca.roles.walrus.access import ACL_ONLY, Access

MAX_XML_BODY = 1024 * 1024


@dataclass(slots=True)
class S3Call:
    """The raw request (for its body), who made it, how it was signed, and what the bucket's policy and public
    access block decided for it (set by dispatch before the handler runs; ACL_ONLY when the bucket has
    neither)."""

    request: Request
    auth: AuthResult
    request_id: str
    access: Access = ACL_ONLY

    @property
    def principal(self) -> Principal | None:
        return self.auth.principal

    def payload(self) -> PayloadStream:
        return self.auth.payload(self.request.body)

    async def xml_body(self, *, document_checksum: bool = True) -> bytes:
        """The whole (small) document body, checked against its Content-MD5 and, unless the request's
        x-amz-checksum-* describes something else (`document_checksum` False), that checksum."""
        stream = self.payload()
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await stream.read(262144)
            if not chunk:
                body = b"".join(parts)
                check_document_digest(self.request.headers, body, stream.trailers, checksum=document_checksum)
                return body
            size += len(chunk)
            if size > MAX_XML_BODY:
                raise S3Error("MalformedXML", "The XML you provided was too large")
            parts.append(chunk)
