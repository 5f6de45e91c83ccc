"""Walrus with its object bytes in a real SeaweedFS cluster (walrus.backend = "s3"): the S3 front end is the
same, the bytes are objects of the backend bucket, streamed both ways; a crash's leftovers are swept.

The whole S3 service suite can also run on this backend: EUCA_TEST_WALRUS_BACKEND=s3 (see conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from helpers.seaweedfs import (
    ACCESS_KEY,
    SECRET_KEY,
    SeaweedCluster,
    backend_client,
    backend_keys,
    backend_overrides,
)
from helpers.server import EucaServer, start_euca
from helpers.walrus_process import PausedUpload, free_port, kill_9, s3_client, start_walrus, stop

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def walrus_s3(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedCluster) -> Iterator[EucaServer]:
    overrides = backend_overrides(seaweedfs, bucket="walrus-" + uuid.uuid4().hex[:12])
    yield from start_euca(tmp_path_factory.mktemp("euca-s3-backend"), roles="walrus", overrides=overrides)


@pytest.fixture(scope="module")
def backend_bucket(walrus_s3: EucaServer) -> str:
    name: str = walrus_s3.ctx.config.walrus.backend_bucket
    return name


@pytest.fixture
def s3(walrus_s3: EucaServer) -> Any:
    return walrus_s3.client("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = "bk-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


def _keys(seaweedfs: SeaweedCluster, backend_bucket: str) -> dict[str, int]:
    return backend_keys(seaweedfs, backend_bucket)


def test_the_backend_bucket_is_created_and_objects_land_in_it(
    s3: Any, bucket: str, seaweedfs: SeaweedCluster, backend_bucket: str
) -> None:
    before = _keys(seaweedfs, backend_bucket)
    data = os.urandom(300 * 1024)  # past the inline limit: a byte object of its own
    put = s3.put_object(Bucket=bucket, Key="a/b.bin", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    new = {k: v for k, v in _keys(seaweedfs, backend_bucket).items() if k not in before}
    assert list(new.values()) == [len(data)]
    assert s3.get_object(Bucket=bucket, Key="a/b.bin")["Body"].read() == data
    # Small objects stay inline in the metadata store: nothing in the backend.
    s3.put_object(Bucket=bucket, Key="small", Body=b"tiny")
    assert len(_keys(seaweedfs, backend_bucket)) == len(before) + 1
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"tiny"


def test_ranges_and_head(s3: Any, bucket: str) -> None:
    data = os.urandom(2 * MiB + 123)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    for first, last in [(0, 0), (5, 99), (MiB - 1, MiB + 1), (len(data) - 10, len(data) - 1)]:
        got = s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={first}-{last}")
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
        assert got["Body"].read() == data[first : last + 1]
    suffix = s3.get_object(Bucket=bucket, Key="r", Range="bytes=-7")["Body"].read()
    assert suffix == data[-7:]
    assert s3.head_object(Bucket=bucket, Key="r")["ContentLength"] == len(data)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(data)}-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_a_large_object_streams_both_ways(s3: Any, bucket: str) -> None:
    data = os.urandom(24 * MiB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big", Config=TransferConfig(multipart_threshold=64 * MiB))
    body = s3.get_object(Bucket=bucket, Key="big")["Body"]
    digest = hashlib.sha256()
    while chunk := body.read(MiB):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_multipart_parts_ranges_across_parts_and_abort(
    s3: Any, bucket: str, seaweedfs: SeaweedCluster, backend_bucket: str
) -> None:
    parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = []
    for n, part in enumerate(parts_data, 1):
        etags.append(
            s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=part)["ETag"]
        )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    whole = b"".join(parts_data)
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == whole
    across = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB - 3}-{10 * MiB + 2}")
    assert across["Body"].read() == whole[5 * MiB - 3 : 10 * MiB + 3]
    assert s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)["Body"].read() == parts_data[2]
    # An aborted upload's parts leave the backend.
    before = _keys(seaweedfs, backend_bucket)
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=aborted, PartNumber=1, Body=os.urandom(MiB))
    assert len(_keys(seaweedfs, backend_bucket)) == len(before) + 1
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=aborted)
    assert _keys(seaweedfs, backend_bucket) == before


def test_copy_object_and_upload_part_copy(s3: Any, bucket: str) -> None:
    data = os.urandom(3 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == data
    upload = s3.create_multipart_upload(Bucket=bucket, Key="pc")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket,
        Key="pc",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange="bytes=10-1048585",
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="pc",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key="pc")["Body"].read() == data[10:1048586]


def test_versions_and_deletes_remove_backend_objects(
    s3: Any, bucket: str, seaweedfs: SeaweedCluster, backend_bucket: str
) -> None:
    before = _keys(seaweedfs, backend_bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"1" * (200 * 1024))["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"2" * (200 * 1024))["VersionId"]
    assert len(_keys(seaweedfs, backend_bucket)) == len(before) + 2
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v1)["Body"].read()[:1] == b"1"
    s3.delete_object(Bucket=bucket, Key="v")  # a delete marker: both versions' bytes stay
    assert len(_keys(seaweedfs, backend_bucket)) == len(before) + 2
    s3.delete_object(Bucket=bucket, Key="v", VersionId=v1)
    s3.delete_object(Bucket=bucket, Key="v", VersionId=v2)
    assert _keys(seaweedfs, backend_bucket) == before


def test_listing_is_walrus_own(s3: Any, bucket: str) -> None:
    for key in ["a/1", "a/2", "b/1", "c"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * (70 * 1024))
    listed = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [c["Prefix"] for c in listed["CommonPrefixes"]] == ["a/", "b/"]
    assert [o["Key"] for o in listed["Contents"]] == ["c"]


def test_the_sweep_takes_backend_orphans_only(
    walrus_s3: EucaServer, s3: Any, bucket: str, seaweedfs: SeaweedCluster, backend_bucket: str
) -> None:
    """What a killed writer leaves (a backend object no row refers to) goes; referenced and young ones stay."""
    from euca.core.store import open_store
    from euca.roles.walrus import sweep as walrus_sweep
    from euca.roles.walrus.backend import S3Backend

    data = os.urandom(100 * 1024)
    s3.put_object(Bucket=bucket, Key="kept", Body=data)
    orphan = uuid.uuid4().hex
    backend_client(seaweedfs).put_object(Bucket=backend_bucket, Key=orphan, Body=b"o" * 1000)
    config = walrus_s3.ctx.config
    cfg = config.walrus

    async def sweep(min_age: float) -> Any:
        # As another process would: its own store connection and backend client.
        store = open_store(config.store.url, config.data_path, config.store.synchronous)
        backend = S3Backend(
            cfg.backend_endpoint, cfg.backend_access_key, cfg.backend_secret_key, cfg.backend_bucket
        )
        try:
            return await walrus_sweep.sweep_backend(backend, store, min_age=min_age)
        finally:
            await backend.aclose()
            store.close()

    young = trio.run(sweep, 3600.0)  # an unreferenced object this young may be a write in flight
    assert young.files == 0 and young.in_flight >= 1
    assert orphan in _keys(seaweedfs, backend_bucket)
    result = trio.run(sweep, 0.0)
    assert result.files >= 1
    keys = _keys(seaweedfs, backend_bucket)
    assert orphan not in keys
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == data


@pytest.mark.slow
def test_kill_9_mid_upload_keeps_the_old_version_and_no_backend_debris(
    tmp_path: Any, seaweedfs: SeaweedCluster
) -> None:
    """Walrus killed while it streams a new version to the backend: the backend PUT is cut (nothing kept),
    the old version reads back after the restart, and no backend object is left that no row refers to."""
    bucket = "crash-" + uuid.uuid4().hex[:12]
    settings = [f"{k}={v}" for k, v in backend_overrides(seaweedfs, bucket=bucket).items()]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    proc = start_walrus(data_dir, port, settings=settings)
    try:
        s3 = s3_client(data_dir, port)
        s3.create_bucket(Bucket="crash")
        old = os.urandom(300 * 1024)
        s3.put_object(Bucket="crash", Key="obj", Body=old)
        before = backend_keys(seaweedfs, bucket)
        assert len(before) == 1
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "crash", "Key": "obj"})
        upload = PausedUpload(url)
        time.sleep(1)  # the first 16 MiB are on their way to the backend
        kill_9(proc)
        upload.finish()

        proc = start_walrus(data_dir, port, settings=settings)
        s3 = s3_client(data_dir, port)
        assert s3.get_object(Bucket="crash", Key="obj")["Body"].read() == old
        assert len(s3.list_object_versions(Bucket="crash").get("Versions", [])) == 1
        assert backend_keys(seaweedfs, bucket) == before
    finally:
        stop(proc)


def test_a_copy_without_hashing_runs_inside_the_backend(seaweedfs: SeaweedCluster) -> None:
    """The concatenation of a completion past MAX_SEGMENTS parts: UploadPartCopy of each range in the backend's
    own multipart upload (every range but the last at least its 5 MiB floor), read back in ranges."""
    from euca.roles.walrus.backend import BACKEND_MIN_PART, S3Backend

    bucket = "copy-" + uuid.uuid4().hex[:12]
    first, second = os.urandom(BACKEND_MIN_PART + 10), os.urandom(1000)

    async def body(data: bytes) -> Any:
        yield data

    async def run() -> tuple[bytes, bytes, int]:
        backend = S3Backend(seaweedfs.endpoint, ACCESS_KEY, SECRET_KEY, bucket)
        try:
            await backend.setup()
            a, b = uuid.uuid4().hex, uuid.uuid4().hex
            await backend.client.put_stream(bucket, a, body(first), len(first))
            await backend.client.put_stream(bucket, b, body(second), len(second))
            written = await backend.copy([(a, 5, BACKEND_MIN_PART), (b, 0, 1000)], None, hash_md5=False)
            assert written.storage_id is not None
            assert backend.claim([written.storage_id])  # in flight until its commit, as a disk file
            backend.release([written.storage_id])

            async def read(offset: int, length: int) -> bytes:
                stream = await backend.open_stream([(str(written.storage_id), offset, length)])
                assert stream is not None
                return b"".join([chunk async for chunk in stream])

            whole = await read(0, written.size)
            tail = await read(BACKEND_MIN_PART - 3, 10)
            gone = await backend.open_stream([(uuid.uuid4().hex, 0, 1)])
            assert gone is None  # a piece that is gone sends the GET back to the metadata
            return whole, tail, written.size
        finally:
            await backend.aclose()

    whole, tail, size = trio.run(run)
    expected = first[5 : 5 + BACKEND_MIN_PART] + second
    assert size == len(expected)
    assert whole == expected
    assert tail == expected[BACKEND_MIN_PART - 3 : BACKEND_MIN_PART + 7]
