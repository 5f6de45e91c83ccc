"""Multipart uploads over boto3: create/upload/copy/list/complete/abort, validation errors, checksums."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from botocore.exceptions import ClientError

from helpers.seaweedfs import disk_only

MiB = 1024 * 1024


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_multipart_roundtrip(s3_client, bucket):
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
    up = s3_client.create_multipart_upload(
        Bucket=bucket, Key="mp", ContentType="text/mp", Metadata={"k": "v"}
    )
    uid = up["UploadId"]
    etags = []
    for n, data in enumerate(parts_data, 1):
        etags.append(
            s3_client.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=n, Body=data)["ETag"]
        )
    listed = s3_client.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2, 3] and listed[2]["Size"] == 1234
    uploads = s3_client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["UploadId"] for u in uploads] == [uid]
    r = s3_client.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest() + "-3"
    assert r["ETag"] == f'"{expected}"'
    got = s3_client.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == b"".join(parts_data)
    assert got["ContentType"] == "text/mp" and got["Metadata"] == {"k": "v"}
    part2 = s3_client.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert part2["Body"].read() == parts_data[1] and part2["PartsCount"] == 3
    assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    with pytest.raises(ClientError) as e:
        s3_client.list_parts(Bucket=bucket, Key="mp", UploadId=uid)
    assert code(e) == "NoSuchUpload"


def test_too_small_bad_part_and_order(s3_client, bucket):
    uid = s3_client.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    e1 = s3_client.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=1, Body=b"a" * 100)[
        "ETag"
    ]
    e2 = s3_client.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=2, Body=b"b" * 100)[
        "ETag"
    ]
    with pytest.raises(ClientError) as e:
        s3_client.complete_multipart_upload(
            Bucket=bucket,
            Key="small",
            UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert code(e) == "EntityTooSmall"
    with pytest.raises(ClientError) as e:
        s3_client.complete_multipart_upload(
            Bucket=bucket,
            Key="small",
            UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]},
        )
    assert code(e) == "InvalidPartOrder"
    with pytest.raises(ClientError) as e:
        s3_client.complete_multipart_upload(
            Bucket=bucket,
            Key="small",
            UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]},
        )
    assert code(e) == "InvalidPart"
    # A single small part is fine: the last part has no minimum.
    s3_client.complete_multipart_upload(
        Bucket=bucket, Key="small", UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]}
    )
    assert s3_client.get_object(Bucket=bucket, Key="small")["Body"].read() == b"a" * 100


def test_abort(euca, s3_client, bucket):
    uid = s3_client.create_multipart_upload(Bucket=bucket, Key="ab")["UploadId"]
    s3_client.upload_part(Bucket=bucket, Key="ab", UploadId=uid, PartNumber=1, Body=b"x" * 1000)
    s3_client.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=uid)
    with pytest.raises(ClientError) as e:
        s3_client.abort_multipart_upload(Bucket=bucket, Key="ab", UploadId=uid)
    assert code(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3_client.upload_part(Bucket=bucket, Key="ab", UploadId=uid, PartNumber=1, Body=b"x")
    assert code(e) == "NoSuchUpload"


def test_upload_part_copy_with_range(s3_client, bucket):
    src = os.urandom(6 * MiB)
    s3_client.put_object(Bucket=bucket, Key="src", Body=src)
    uid = s3_client.create_multipart_upload(Bucket=bucket, Key="pc")["UploadId"]
    p1 = s3_client.upload_part_copy(
        Bucket=bucket,
        Key="pc",
        UploadId=uid,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )["CopyPartResult"]["ETag"]
    p2 = s3_client.upload_part_copy(
        Bucket=bucket,
        Key="pc",
        UploadId=uid,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes={5 * MiB}-{6 * MiB - 1}",
    )["CopyPartResult"]["ETag"]
    with pytest.raises(ClientError) as e:
        s3_client.upload_part_copy(
            Bucket=bucket,
            Key="pc",
            UploadId=uid,
            PartNumber=3,
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceRange="bytes=0-99999999",
        )
    assert code(e) == "InvalidRange"
    s3_client.complete_multipart_upload(
        Bucket=bucket,
        Key="pc",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]},
    )
    assert s3_client.get_object(Bucket=bucket, Key="pc")["Body"].read() == src


@pytest.mark.parametrize(
    "algo,ctype", [("CRC32", None), ("SHA256", None), ("CRC32C", "FULL_OBJECT"), ("CRC64NVME", None)]
)
def test_multipart_checksums(s3_client, bucket, algo, ctype):
    kwargs = {"ChecksumType": ctype} if ctype else {}
    uid = s3_client.create_multipart_upload(Bucket=bucket, Key="ck", ChecksumAlgorithm=algo, **kwargs)[
        "UploadId"
    ]
    datas = [os.urandom(5 * MiB), os.urandom(100)]
    parts = []
    for n, d in enumerate(datas, 1):
        r = s3_client.upload_part(
            Bucket=bucket, Key="ck", UploadId=uid, PartNumber=n, Body=d, ChecksumAlgorithm=algo
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"], f"Checksum{algo}": r[f"Checksum{algo}"]})
    r = s3_client.complete_multipart_upload(
        Bucket=bucket, Key="ck", UploadId=uid, MultipartUpload={"Parts": parts}
    )
    value = r[f"Checksum{algo}"]
    if algo == "CRC32":
        raw = b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in parts)
        assert value == base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode() + "-2"
    if ctype == "FULL_OBJECT" or algo == "CRC64NVME":
        assert "-" not in value
    g = s3_client.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert g["Body"].read() == b"".join(datas)
    assert g[f"Checksum{algo}"] == value


def test_transfer_manager(s3_client, bucket, tmp_path):
    """boto3's managed upload (s3transfer) with its default checksum behaviour, and managed download."""
    from boto3.s3.transfer import TransferConfig

    src = tmp_path / "big"
    src.write_bytes(os.urandom(12 * MiB))
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3_client.upload_file(str(src), bucket, "managed", Config=cfg)
    dst = tmp_path / "back"
    s3_client.download_file(bucket, "managed", str(dst), Config=cfg)
    assert dst.read_bytes() == src.read_bytes()


def _object_files(euca) -> set[str]:  # type: ignore[no-untyped-def]
    root = euca.data_dir / "objects"
    return {p.name for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp"}


@disk_only
def test_completed_object_kept_as_its_parts(euca, s3_client, bucket):
    """CompleteMultipartUpload copies nothing: the object is its part files. Ranges across part boundaries,
    part numbers, copies, an unused part's removal, and overwrite/delete leaving no file behind."""
    before = _object_files(euca)
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(777)]
    uid = s3_client.create_multipart_upload(Bucket=bucket, Key="kept")["UploadId"]
    etags = [
        s3_client.upload_part(Bucket=bucket, Key="kept", UploadId=uid, PartNumber=n, Body=d)["ETag"]
        for n, d in enumerate(parts_data, 1)
    ]
    s3_client.upload_part(Bucket=bucket, Key="kept", UploadId=uid, PartNumber=9, Body=b"unused")
    s3_client.complete_multipart_upload(
        Bucket=bucket,
        Key="kept",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    whole = b"".join(parts_data)
    assert len(_object_files(euca) - before) == 3  # the three parts, no concatenated copy; part 9 removed
    assert s3_client.get_object(Bucket=bucket, Key="kept")["Body"].read() == whole
    for lo, hi in [(0, 0), (5 * MiB - 10, 5 * MiB + 10), (MiB, 10 * MiB + 5), (10 * MiB, 10 * MiB + 776)]:
        got = s3_client.get_object(Bucket=bucket, Key="kept", Range=f"bytes={lo}-{hi}")
        assert got["Body"].read() == whole[lo : hi + 1]
        assert got["ContentRange"] == f"bytes {lo}-{hi}/{len(whole)}"
    got = s3_client.get_object(Bucket=bucket, Key="kept", Range="bytes=-100")
    assert got["Body"].read() == whole[-100:]
    assert s3_client.get_object(Bucket=bucket, Key="kept", PartNumber=3)["Body"].read() == parts_data[2]
    assert s3_client.head_object(Bucket=bucket, Key="kept")["ContentLength"] == len(whole)
    # Copies read across the parts.
    s3_client.copy_object(Bucket=bucket, Key="kept-copy", CopySource={"Bucket": bucket, "Key": "kept"})
    assert s3_client.get_object(Bucket=bucket, Key="kept-copy")["Body"].read() == whole
    uid2 = s3_client.create_multipart_upload(Bucket=bucket, Key="pc2")["UploadId"]
    e = s3_client.upload_part_copy(
        Bucket=bucket,
        Key="pc2",
        UploadId=uid2,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "kept"},
        CopySourceRange=f"bytes={5 * MiB - 3}-{10 * MiB + 3}",
    )["CopyPartResult"]["ETag"]
    s3_client.complete_multipart_upload(
        Bucket=bucket, Key="pc2", UploadId=uid2, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]}
    )
    assert s3_client.get_object(Bucket=bucket, Key="pc2")["Body"].read() == whole[5 * MiB - 3 : 10 * MiB + 4]
    # Overwritten and deleted: every file goes.
    s3_client.put_object(Bucket=bucket, Key="kept", Body=b"small now")
    assert s3_client.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"small now"
    for key in ("kept", "kept-copy", "pc2"):
        s3_client.delete_object(Bucket=bucket, Key=key)
    assert _object_files(euca) == before
