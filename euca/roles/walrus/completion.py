"""CompleteMultipartUpload's computations, as pure functions: which stored parts make the object (and the
rules they must meet), the object's ETag, the checksum of the whole object, and how the bytes are kept."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.roles.walrus.meta import PartRow
from euca.roles.walrus.storage import checksum_of, combine_crc

# A multipart object of up to this many parts is kept as its part files (a manifest); one of more parts is
# concatenated into one file at completion (a full GET opens every file it covers at once).
MAX_SEGMENTS = 256


def chosen_parts(
    requested: Sequence[s3.CompletedPart], stored: Sequence[PartRow], upload_id: str, algorithm: str | None
) -> list[PartRow]:
    """The stored parts the completion request lists, in order: InvalidPartOrder, InvalidPart (missing, another
    ETag or checksum) and EntityTooSmall (a part but the last under MIN_PART_SIZE) as S3 answers them."""
    by_number = {p.part_number: p for p in stored}
    previous = 0
    for want in requested:
        if want.part_number < previous:
            raise S3Error("InvalidPartOrder")
        previous = want.part_number
    # A part number listed twice in a row (a part re-sent while the first upload was still going) counts
    # once, with its last entry, as Ceph RGW does.
    requested = [
        w
        for i, w in enumerate(requested)
        if i + 1 == len(requested) or requested[i + 1].part_number != w.part_number
    ]
    chosen: list[PartRow] = []
    for i, want in enumerate(requested):
        have = by_number.get(want.part_number)
        if have is None or have.etag != want.etag:
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(want.part_number), ETag=want.etag)
        if algorithm and want.checksums.get(algorithm) not in (None, have.checksum):
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(want.part_number))
        if i < len(requested) - 1 and have.size < s3.MIN_PART_SIZE:
            raise S3Error(
                "EntityTooSmall",
                ProposedSize=str(have.size),
                MinSizeAllowed=str(s3.MIN_PART_SIZE),
                PartNumber=str(want.part_number),
                ETag=want.etag,
            )
        chosen.append(have)
    return chosen


def multipart_etag(parts: Sequence[PartRow]) -> str:
    """S3's multipart ETag: the MD5 of the parts' binary MD5s, then "-" and the number of parts."""
    return hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in parts)).hexdigest() + f"-{len(parts)}"


def multipart_checksum(
    algorithm: str | None, checksum_type: str | None, parts: Sequence[PartRow]
) -> str | None:
    """The whole object's checksum from its parts' (None unless the upload has an algorithm and every part a
    checksum): FULL_OBJECT, the CRC of all the bytes, combined from the parts' CRCs and sizes; COMPOSITE, the
    checksum of the parts' raw checksums, then "-" and the number of parts."""
    if not algorithm or not all(p.checksum for p in parts):
        return None
    raws = [base64.b64decode(p.checksum or "") for p in parts]
    if checksum_type == "FULL_OBJECT":
        combined = combine_crc(algorithm, zip(raws, (p.size for p in parts), strict=True))
        return base64.b64encode(combined).decode()
    return base64.b64encode(checksum_of(algorithm, b"".join(raws))).decode() + f"-{len(parts)}"


def kept_as_parts(parts: Sequence[PartRow]) -> bool:
    """Whether the object keeps its part files (no copy) rather than one file concatenated from them."""
    return len(parts) <= MAX_SEGMENTS


def check_final_checksum(sent: s3.ChecksumRequest, algorithm: str | None, computed: str | None) -> None:
    """The whole object's x-amz-checksum-* a CompleteMultipartUpload carries, against the one computed from
    the parts: InvalidRequest when the upload has another algorithm (or none), BadDigest when it differs (a
    COMPOSITE value may come with or without its "-<parts>" suffix)."""
    if sent.value is None or sent.algorithm is None:
        return
    if sent.algorithm != algorithm or computed is None:
        raise S3Error(
            "InvalidRequest",
            f"The upload was created using the {algorithm or 'null'} checksum algorithm, but the complete "
            f"request specified {sent.algorithm}.",
        )
    if sent.value.split("-", 1)[0] != computed.split("-", 1)[0]:
        raise S3Error(
            "BadDigest", f"The {sent.algorithm} you specified did not match the calculated checksum."
        )
