"""S3 XML, sans-I/O: the request bodies (ACL policies, DeleteObjects, CompleteMultipartUpload, tagging,
versioning, CreateBucketConfiguration) parsed by `parse_*_body`, and the responses rendered from plain model values
by `render_*` (listings, ACLs, multipart results, copy and delete results)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from euca.protocol.bounded import BoundsError, parse_xml
from euca.protocol.s3.endpoints import (
    ListMultipartUploads,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListParts,
)
from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.headers import Grant, validate_tags
from euca.protocol.s3.wire import (
    CHECKSUM_ALGORITHMS,
    PERMISSIONS,
    XSI_NS,
    document,
    escape,
    iso8601,
    url_encode,
)

# -- request bodies ------------------------------------------------------------------------------------


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# The largest request document Walrus reads (S3's documents are far smaller: 1,000 DeleteObjects keys of
# 1 KiB fit).
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024


def parse_document(body: bytes, code: str = "MalformedXML") -> ET.Element:
    """A request's XML document, bounded in size and depth (no DOCTYPE); `code` for anything refused."""
    try:
        return parse_xml(body, max_bytes=MAX_DOCUMENT_BYTES)
    except (ET.ParseError, BoundsError) as e:
        raise S3Error(code) from e


def _xml(body: bytes, code: str = "MalformedXML") -> ET.Element:
    if not body.strip():
        raise S3Error(code)
    root = parse_document(body, code)
    for el in root.iter():
        el.tag = _strip_ns(el.tag)
    return root


def _text(el: ET.Element | None) -> str:
    return "" if el is None or el.text is None else el.text


# The same two, for the package's other document parsers (lifecycle, object lock, bucket settings).
parse_root = _xml
text_of = _text


_LOCATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def parse_create_bucket_body(body: bytes) -> str | None:
    """The LocationConstraint, if any."""
    if not body.strip():
        return None
    root = _xml(body)
    if root.tag != "CreateBucketConfiguration":
        raise S3Error("MalformedXML")
    loc = root.find("LocationConstraint")
    if loc is None:
        return None
    location = _text(loc)
    # A region name (or a legacy one such as "EU"); anything else, a 5,000-character one say, is refused.
    if location and _LOCATION_RE.fullmatch(location) is None:
        raise S3Error(
            "InvalidLocationConstraint",
            "The specified location-constraint is not valid",
            LocationConstraint=location[:128],
        )
    return location


def parse_versioning_body(body: bytes) -> str:
    root = _xml(body)
    status = _text(root.find("Status"))
    if root.tag != "VersioningConfiguration" or status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML")
    return status


def parse_tagging_body(body: bytes, limit: int = 10) -> dict[str, str]:
    root = _xml(body)
    if root.tag != "Tagging":
        raise S3Error("MalformedXML")
    tags: dict[str, str] = {}
    for tag in root.iter("Tag"):
        k, v = _text(tag.find("Key")), _text(tag.find("Value"))
        if k in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[k] = v
    validate_tags(tags, limit)
    return tags


@dataclass(slots=True)
class ObjectIdentifier:
    key: str
    version_id: str | None = None


def parse_delete_objects_body(body: bytes) -> tuple[list[ObjectIdentifier], bool]:
    root = _xml(body)
    if root.tag != "Delete":
        raise S3Error("MalformedXML")
    quiet = _text(root.find("Quiet")).strip().lower() == "true"
    items = []
    for obj in root.findall("Object"):
        key_el = obj.find("Key")
        if key_el is None:
            raise S3Error("MalformedXML")
        vid = obj.find("VersionId")
        items.append(ObjectIdentifier(_text(key_el), _text(vid) if vid is not None else None))
    if not items or len(items) > 1000:
        raise S3Error("MalformedXML")
    return items, quiet


@dataclass(slots=True)
class CompletedPart:
    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)


def parse_complete_body(body: bytes) -> list[CompletedPart]:
    root = _xml(body)
    if root.tag != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    parts = []
    for p in root.findall("Part"):
        try:
            n = int(_text(p.find("PartNumber")))
        except ValueError:
            raise S3Error("MalformedXML") from None
        checksums = {}
        for algo in CHECKSUM_ALGORITHMS:
            el = p.find("Checksum" + algo)
            if el is not None:
                checksums[algo] = _text(el)
        parts.append(CompletedPart(n, _text(p.find("ETag")).strip().strip('"'), checksums))
    if not parts:
        raise S3Error("MalformedXML")
    return parts


@dataclass(slots=True)
class AccessControlPolicy:
    owner_id: str
    owner_name: str
    grants: list[Grant] = field(default_factory=list)


def parse_acl_body(body: bytes) -> AccessControlPolicy:
    root = _xml(body, "MalformedACLError")
    if root.tag != "AccessControlPolicy":
        raise S3Error("MalformedACLError")
    owner = root.find("Owner")
    policy = AccessControlPolicy(
        _text(owner.find("ID")) if owner is not None else "",
        _text(owner.find("DisplayName")) if owner is not None else "",
    )
    acl = root.find("AccessControlList")
    for g in acl.findall("Grant") if acl is not None else []:
        grantee = g.find("Grantee")
        permission = _text(g.find("Permission"))
        if grantee is None or permission not in PERMISSIONS:
            raise S3Error("MalformedACLError")
        gtype = grantee.get(f"{{{XSI_NS}}}type") or grantee.get("type") or ""
        if grantee.find("ID") is not None:
            policy.grants.append(
                Grant(
                    permission, "CanonicalUser", _text(grantee.find("ID")), _text(grantee.find("DisplayName"))
                )
            )
        elif grantee.find("URI") is not None:
            policy.grants.append(Grant(permission, "Group", _text(grantee.find("URI"))))
        elif grantee.find("EmailAddress") is not None:
            policy.grants.append(
                Grant(permission, "AmazonCustomerByEmail", _text(grantee.find("EmailAddress")))
            )
        else:
            raise S3Error("MalformedACLError", f"Unsupported grantee type {gtype!r}")
    return policy


# -- models and responses ----------------------------------------------------------------------------


@dataclass(slots=True)
class Owner:
    id: str
    display_name: str


def _owner(tag: str, owner: Owner) -> str:
    return (
        f"<{tag}><ID>{escape(owner.id)}</ID><DisplayName>{escape(owner.display_name)}</DisplayName></{tag}>"
    )


@dataclass(slots=True)
class BucketEntry:
    name: str
    created: float
    region: str = ""


def render_list_buckets(
    owner: Owner, buckets: list[BucketEntry], continuation_token: str | None = None, prefix: str | None = None
) -> bytes:
    items = "".join(
        f"<Bucket><Name>{escape(b.name)}</Name><CreationDate>{iso8601(b.created)}</CreationDate>"
        + (f"<BucketRegion>{escape(b.region)}</BucketRegion>" if b.region else "")
        + "</Bucket>"
        for b in buckets
    )
    page = (
        f"<ContinuationToken>{escape(continuation_token)}</ContinuationToken>" if continuation_token else ""
    )
    page += f"<Prefix>{escape(prefix)}</Prefix>" if prefix is not None else ""
    return document("ListAllMyBucketsResult", _owner("Owner", owner) + f"<Buckets>{items}</Buckets>" + page)


def render_location(location: str) -> bytes:
    return document("LocationConstraint", escape(location))


def render_versioning(status: str) -> bytes:
    return document("VersioningConfiguration", f"<Status>{status}</Status>" if status else "")


def render_tagging(tags: Mapping[str, str]) -> bytes:
    items = "".join(f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>" for k, v in tags.items())
    return document("Tagging", f"<TagSet>{items}</TagSet>")


def render_acl(policy: AccessControlPolicy) -> bytes:
    grants = []
    for g in policy.grants:
        if g.grantee_type == "Group":
            who = f'<Grantee xmlns:xsi="{XSI_NS}" xsi:type="Group"><URI>{escape(g.grantee)}</URI></Grantee>'
        elif g.grantee_type == "AmazonCustomerByEmail":
            who = (
                f'<Grantee xmlns:xsi="{XSI_NS}" xsi:type="AmazonCustomerByEmail">'
                f"<EmailAddress>{escape(g.grantee)}</EmailAddress></Grantee>"
            )
        else:
            who = (
                f'<Grantee xmlns:xsi="{XSI_NS}" xsi:type="CanonicalUser"><ID>{escape(g.grantee)}</ID>'
                f"<DisplayName>{escape(g.display_name)}</DisplayName></Grantee>"
            )
        grants.append(f"<Grant>{who}<Permission>{g.permission}</Permission></Grant>")
    owner = _owner("Owner", Owner(policy.owner_id, policy.owner_name))
    return document(
        "AccessControlPolicy", owner + f"<AccessControlList>{''.join(grants)}</AccessControlList>"
    )


@dataclass(slots=True)
class ObjectEntry:
    key: str
    last_modified: float
    etag: str
    size: int
    owner: Owner | None = None
    version_id: str | None = None
    is_latest: bool = True
    delete_marker: bool = False
    checksum_algorithm: str | None = None
    checksum_type: str | None = None


@dataclass(slots=True)
class Listing:
    entries: list[ObjectEntry] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    # The last key (or common prefix) returned: the next marker.
    next_marker: str | None = None
    next_version_id_marker: str | None = None


def _contents(e: ObjectEntry, enc: bool, owner: bool, tag: str = "Contents") -> str:
    s = f"<{tag}><Key>{escape(url_encode(e.key, enc))}</Key>"
    if tag != "Contents":
        s += f"<VersionId>{escape(e.version_id or 'null')}</VersionId><IsLatest>{'true' if e.is_latest else 'false'}</IsLatest>"
    s += f"<LastModified>{iso8601(e.last_modified)}</LastModified>"
    if not e.delete_marker:
        s += f"<ETag>&quot;{escape(e.etag)}&quot;</ETag><Size>{e.size}</Size>"
        if e.checksum_algorithm:
            s += f"<ChecksumAlgorithm>{e.checksum_algorithm}</ChecksumAlgorithm>"
            if e.checksum_type:
                s += f"<ChecksumType>{e.checksum_type}</ChecksumType>"
    if owner and e.owner is not None:
        s += _owner("Owner", e.owner)
    if not e.delete_marker:
        s += "<StorageClass>STANDARD</StorageClass>"
    return s + f"</{tag}>"


def _prefixes(prefixes: list[str], enc: bool) -> str:
    return "".join(
        f"<CommonPrefixes><Prefix>{escape(url_encode(p, enc))}</Prefix></CommonPrefixes>" for p in prefixes
    )


def _opt(tag: str, value: str | None, enc: bool = False) -> str:
    if value is None:
        return f"<{tag}></{tag}>"
    return f"<{tag}>{escape(url_encode(value, enc))}</{tag}>"


def render_list_objects(req: ListObjects, listing: Listing) -> bytes:
    enc = req.encoding_type == "url"
    # The V1 Prefix goes back as sent, as Ceph RGW does: botocore url-decodes Marker, NextMarker, Delimiter,
    # keys and common prefixes of a ListObjects answer, but not its Prefix.
    s = f"<Name>{escape(req.bucket)}</Name>{_opt('Prefix', req.prefix)}{_opt('Marker', req.marker, enc)}"
    s += f"<MaxKeys>{req.max_keys}</MaxKeys>"
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>"
    if listing.truncated and req.delimiter and listing.next_marker is not None:
        s += _opt("NextMarker", listing.next_marker, enc)
    s += "".join(_contents(e, enc, True) for e in listing.entries)
    s += _prefixes(listing.prefixes, enc)
    return document("ListBucketResult", s)


def render_list_objects_v2(req: ListObjectsV2, listing: Listing, next_token: str | None) -> bytes:
    enc = req.encoding_type == "url"
    s = f"<Name>{escape(req.bucket)}</Name>{_opt('Prefix', req.prefix, enc)}"
    if req.start_after:
        s += _opt("StartAfter", req.start_after, enc)
    if req.continuation_token is not None:
        s += _opt("ContinuationToken", req.continuation_token)
    s += f"<KeyCount>{len(listing.entries) + len(listing.prefixes)}</KeyCount><MaxKeys>{req.max_keys}</MaxKeys>"
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>"
    if next_token is not None:
        s += f"<NextContinuationToken>{escape(next_token)}</NextContinuationToken>"
    s += "".join(_contents(e, enc, req.fetch_owner) for e in listing.entries)
    s += _prefixes(listing.prefixes, enc)
    return document("ListBucketResult", s)


def render_list_versions(req: ListObjectVersions, listing: Listing) -> bytes:
    enc = req.encoding_type == "url"
    s = f"<Name>{escape(req.bucket)}</Name>{_opt('Prefix', req.prefix, enc)}{_opt('KeyMarker', req.key_marker, enc)}"
    s += _opt("VersionIdMarker", req.version_id_marker)
    s += f"<MaxKeys>{req.max_keys}</MaxKeys>"
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<IsTruncated>{'true' if listing.truncated else 'false'}</IsTruncated>"
    if listing.truncated:
        s += _opt("NextKeyMarker", listing.next_marker, enc)
        if listing.next_version_id_marker is not None:
            s += _opt("NextVersionIdMarker", listing.next_version_id_marker)
    for e in listing.entries:
        s += _contents(e, enc, True, "DeleteMarker" if e.delete_marker else "Version")
    s += _prefixes(listing.prefixes, enc)
    return document("ListVersionsResult", s)


@dataclass(slots=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: float
    owner: Owner
    checksum_algorithm: str | None = None


def render_list_uploads(
    req: ListMultipartUploads, uploads: list[UploadEntry], prefixes: list[str], truncated: bool
) -> bytes:
    enc = req.encoding_type == "url"
    s = f"<Bucket>{escape(req.bucket)}</Bucket>{_opt('KeyMarker', req.key_marker, enc)}"
    s += _opt("UploadIdMarker", req.upload_id_marker)
    last = uploads[-1] if uploads else None
    s += _opt("NextKeyMarker", last.key if last else "", enc)
    s += _opt("NextUploadIdMarker", last.upload_id if last else "")
    s += _opt("Prefix", req.prefix, enc)
    if req.delimiter:
        s += _opt("Delimiter", req.delimiter, enc)
    if enc:
        s += "<EncodingType>url</EncodingType>"
    s += f"<MaxUploads>{req.max_uploads}</MaxUploads><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
    for u in uploads:
        s += (
            f"<Upload><Key>{escape(url_encode(u.key, enc))}</Key><UploadId>{escape(u.upload_id)}</UploadId>"
            + _owner("Initiator", u.owner)
            + _owner("Owner", u.owner)
            + "<StorageClass>STANDARD</StorageClass>"
            + (
                f"<ChecksumAlgorithm>{u.checksum_algorithm}</ChecksumAlgorithm>"
                if u.checksum_algorithm
                else ""
            )
            + f"<Initiated>{iso8601(u.initiated)}</Initiated></Upload>"
        )
    s += _prefixes(prefixes, enc)
    return document("ListMultipartUploadsResult", s)


@dataclass(slots=True)
class PartEntry:
    part_number: int
    last_modified: float
    etag: str
    size: int
    checksums: dict[str, str] = field(default_factory=dict)


def render_list_parts(
    req: ListParts,
    owner: Owner,
    parts: list[PartEntry],
    truncated: bool,
    checksum_algorithm: str | None,
    checksum_type: str | None,
) -> bytes:
    s = f"<Bucket>{escape(req.bucket)}</Bucket><Key>{escape(req.key)}</Key><UploadId>{escape(req.upload_id)}</UploadId>"
    s += _owner("Initiator", owner) + _owner("Owner", owner) + "<StorageClass>STANDARD</StorageClass>"
    s += f"<PartNumberMarker>{req.part_number_marker}</PartNumberMarker>"
    s += f"<NextPartNumberMarker>{parts[-1].part_number if parts else 0}</NextPartNumberMarker>"
    s += f"<MaxParts>{req.max_parts}</MaxParts><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
    if checksum_algorithm:
        s += f"<ChecksumAlgorithm>{checksum_algorithm}</ChecksumAlgorithm>"
        if checksum_type:
            s += f"<ChecksumType>{checksum_type}</ChecksumType>"
    for p in parts:
        s += (
            f"<Part><PartNumber>{p.part_number}</PartNumber><LastModified>{iso8601(p.last_modified)}</LastModified>"
            f"<ETag>&quot;{escape(p.etag)}&quot;</ETag><Size>{p.size}</Size>"
            + "".join(f"<Checksum{a}>{escape(v)}</Checksum{a}>" for a, v in p.checksums.items())
            + "</Part>"
        )
    return document("ListPartsResult", s)


def render_initiate_multipart(bucket: str, key: str, upload_id: str) -> bytes:
    return document(
        "InitiateMultipartUploadResult",
        f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key><UploadId>{escape(upload_id)}</UploadId>",
    )


def render_complete_multipart(
    location: str, bucket: str, key: str, etag: str, checksums: Mapping[str, str], checksum_type: str | None
) -> bytes:
    s = (
        f"<Location>{escape(location)}</Location><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
        f"<ETag>&quot;{escape(etag)}&quot;</ETag>"
    )
    s += "".join(f"<Checksum{a}>{escape(v)}</Checksum{a}>" for a, v in checksums.items())
    if checksum_type and checksums:
        s += f"<ChecksumType>{checksum_type}</ChecksumType>"
    return document("CompleteMultipartUploadResult", s)


def render_copy_result(root: str, etag: str, last_modified: float, checksums: Mapping[str, str]) -> bytes:
    s = f"<LastModified>{iso8601(last_modified)}</LastModified><ETag>&quot;{escape(etag)}&quot;</ETag>"
    s += "".join(f"<Checksum{a}>{escape(v)}</Checksum{a}>" for a, v in checksums.items())
    return document(root, s)


@dataclass(slots=True)
class DeleteResult:
    key: str
    version_id: str | None = None
    delete_marker: bool = False
    delete_marker_version_id: str | None = None
    error: S3Error | None = None


def render_delete_result(results: list[DeleteResult], quiet: bool) -> bytes:
    s = []
    for r in results:
        if r.error is not None:
            s.append(
                f"<Error><Key>{escape(r.key)}</Key>"
                + (f"<VersionId>{escape(r.version_id)}</VersionId>" if r.version_id else "")
                + f"<Code>{r.error.code}</Code><Message>{escape(r.error.message)}</Message></Error>"
            )
        elif not quiet:
            d = f"<Deleted><Key>{escape(r.key)}</Key>"
            if r.version_id:
                d += f"<VersionId>{escape(r.version_id)}</VersionId>"
            if r.delete_marker:
                d += "<DeleteMarker>true</DeleteMarker>"
                if r.delete_marker_version_id:
                    d += (
                        f"<DeleteMarkerVersionId>{escape(r.delete_marker_version_id)}</DeleteMarkerVersionId>"
                    )
            s.append(d + "</Deleted>")
    return document("DeleteResult", "".join(s))
