"""Smaller bucket settings, sans-I/O: ownership controls, server access logging, default encryption (their
documents parsed as S3 validates them and rendered back), and the GetObjectAttributes answer."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.wire import CHECKSUM_ALGORITHMS, document, escape
from euca.protocol.s3.xml import parse_root, text_of

OWNERSHIP = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")


def parse_ownership_controls(body: bytes) -> str:
    root = parse_root(body)
    rules = root.findall("Rule")
    if root.tag != "OwnershipControls" or len(rules) != 1:
        raise S3Error("MalformedXML")
    value = text_of(rules[0].find("ObjectOwnership"))
    if value not in OWNERSHIP:
        raise S3Error("MalformedXML")
    return value


def render_ownership_controls(value: str) -> bytes:
    return document("OwnershipControls", f"<Rule><ObjectOwnership>{value}</ObjectOwnership></Rule>")


# -- server access logging ---------------------------------------------------------------------------------


def parse_logging(body: bytes) -> dict[str, Any] | None:
    """A BucketLoggingStatus: {"bucket", "prefix"} of its LoggingEnabled, or None (logging turned off)."""
    root = parse_root(body)
    if root.tag != "BucketLoggingStatus":
        raise S3Error("MalformedXML")
    enabled = root.find("LoggingEnabled")
    if enabled is None:
        return None
    target = text_of(enabled.find("TargetBucket"))
    if not target or enabled.find("TargetPrefix") is None:
        raise S3Error("MalformedXML")
    return {"bucket": target, "prefix": text_of(enabled.find("TargetPrefix"))}


def render_logging(conf: Mapping[str, Any] | None) -> bytes:
    if conf is None:
        return document("BucketLoggingStatus", "")
    return document(
        "BucketLoggingStatus",
        f"<LoggingEnabled><TargetBucket>{escape(conf['bucket'])}</TargetBucket>"
        f"<TargetPrefix>{escape(conf['prefix'])}</TargetPrefix></LoggingEnabled>",
    )


def access_log_line(
    *,
    bucket_owner: str,
    bucket: str,
    when: float,
    remote_ip: str,
    requester: str | None,
    request_id: str,
    operation: str,
    key: str | None,
    request_uri: str,
    status: int,
    error_code: str | None,
    bytes_sent: int | None,
    object_size: int | None,
    total_ms: int,
    referer: str | None,
    user_agent: str | None,
    version_id: str | None,
    host_id: str,
    signature_version: str | None,
    auth_type: str | None,
    host_header: str | None,
) -> str:
    """One record of S3's server access log format (space-separated, "-" for none, quoted where S3 quotes)."""

    def f(value: object | None) -> str:
        return "-" if value is None or value == "" else str(value)

    def q(value: str | None) -> str:
        return '"-"' if not value else '"' + value.replace('"', "%22") + '"'

    stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(when))
    fields = [
        f(bucket_owner), f(bucket), stamp, f(remote_ip), f(requester), f(request_id), f(operation),
        f(quote(key, safe="/") if key else None), q(request_uri), str(status), f(error_code), f(bytes_sent),
        f(object_size), str(total_ms), "-", q(referer), q(user_agent), f(version_id), f(host_id),
        f(signature_version), "-", f(auth_type), f(host_header), "-", "-", "-",
    ]  # fmt: skip
    return " ".join(fields)


# -- default encryption -----------------------------------------------------------------------------------


def parse_encryption(body: bytes) -> dict[str, Any]:
    """A ServerSideEncryptionConfiguration: {"algorithm", "key_id", "bucket_key"}. Walrus does SSE-S3
    (AES256) only; a KMS algorithm is refused as a region without KMS refuses it."""
    root = parse_root(body)
    rules = root.findall("Rule")
    if root.tag != "ServerSideEncryptionConfiguration" or not rules:
        raise S3Error("MalformedXML")
    default = rules[0].find("ApplyServerSideEncryptionByDefault")
    if default is None:
        raise S3Error("MalformedXML")
    algorithm = text_of(default.find("SSEAlgorithm"))
    if algorithm not in ("AES256", "aws:kms", "aws:kms:dsse"):
        raise S3Error("MalformedXML")
    if algorithm != "AES256":
        raise S3Error("NotImplemented", "Walrus has no key management service: only AES256 (SSE-S3)")
    if default.find("KMSMasterKeyID") is not None:
        raise S3Error(
            "InvalidArgument",
            "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms",
        )
    bucket_key = text_of(rules[0].find("BucketKeyEnabled")).strip().lower() == "true"
    return {"algorithm": algorithm, "bucket_key": bucket_key}


def render_encryption(conf: Mapping[str, Any]) -> bytes:
    key = "true" if conf.get("bucket_key") else "false"
    return document(
        "ServerSideEncryptionConfiguration",
        f"<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>{conf['algorithm']}</SSEAlgorithm>"
        f"</ApplyServerSideEncryptionByDefault><BucketKeyEnabled>{key}</BucketKeyEnabled></Rule>",
    )


# -- GetObjectAttributes ----------------------------------------------------------------------------------

OBJECT_ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")


def parse_object_attributes(value: str | None) -> tuple[str, ...]:
    """The x-amz-object-attributes header: a comma-separated list of OBJECT_ATTRIBUTES (at least one)."""
    names = tuple(n.strip() for n in (value or "").split(",") if n.strip())
    if not names:
        raise S3Error(
            "InvalidArgument", "Object attributes must be specified", ArgumentName="x-amz-object-attributes"
        )
    for n in names:
        if n not in OBJECT_ATTRIBUTES:
            raise S3Error(
                "InvalidArgument",
                "Invalid attribute name specified.",
                ArgumentName="x-amz-object-attributes",
                ArgumentValue=n[:64],
            )
    return names


@dataclass(slots=True)
class ObjectAttributes:
    etag: str
    size: int
    checksum_algorithm: str | None = None
    checksum: str | None = None
    checksum_type: str | None = None
    # (part number, size, checksum or None) of a multipart object; None: not a multipart object.
    parts: Sequence[tuple[int, int, str | None]] | None = None
    storage_class: str = "STANDARD"
    wanted: tuple[str, ...] = field(default_factory=tuple)


def render_object_attributes(a: ObjectAttributes, max_parts: int = 1000, part_marker: int = 0) -> bytes:
    out = []
    if "ETag" in a.wanted:
        out.append(f"<ETag>{escape(a.etag)}</ETag>")
    if (
        "Checksum" in a.wanted
        and a.checksum
        and a.checksum_algorithm
        and a.checksum_algorithm in CHECKSUM_ALGORITHMS
    ):
        name = f"Checksum{a.checksum_algorithm}"
        ctype = f"<ChecksumType>{a.checksum_type}</ChecksumType>" if a.checksum_type else ""
        out.append(f"<Checksum><{name}>{escape(a.checksum)}</{name}>{ctype}</Checksum>")
    if "ObjectParts" in a.wanted and a.parts is not None:
        after = [p for p in a.parts if p[0] > part_marker]
        page = after[:max_parts]
        truncated = len(after) > len(page)
        inner = f"<PartsCount>{len(a.parts)}</PartsCount><PartNumberMarker>{part_marker}</PartNumberMarker>"
        if page:
            inner += f"<NextPartNumberMarker>{page[-1][0]}</NextPartNumberMarker>"
        inner += (
            f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        )
        # S3 lists the parts themselves only for an object with an additional checksum.
        for number, size, checksum in page if a.checksum_algorithm else []:
            check = ""
            if checksum and a.checksum_algorithm:
                name = f"Checksum{a.checksum_algorithm}"
                check = f"<{name}>{escape(checksum)}</{name}>"
            inner += f"<Part>{check}<PartNumber>{number}</PartNumber><Size>{size}</Size></Part>"
        out.append(f"<ObjectParts>{inner}</ObjectParts>")
    if "StorageClass" in a.wanted:
        out.append(f"<StorageClass>{a.storage_class}</StorageClass>")
    if "ObjectSize" in a.wanted:
        out.append(f"<ObjectSize>{a.size}</ObjectSize>")
    return document("GetObjectAttributesResponse", "".join(out))
