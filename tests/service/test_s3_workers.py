"""walrus.workers: several processes serve S3 on one port, sharing the store and the objects directory.

Every request here goes out on a connection of its own, so the kernel spreads them over the processes: a
write answered by one process must be seen by a request that another process serves (the shared change
counters make each drop or reload its caches)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from helpers.walrus_process import children, free_port, s3_client, start_walrus, stop


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture
def euca_workers(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    data_dir = tmp_path / "data"
    port = free_port()
    proc = start_walrus(data_dir, port, workers=2)
    try:
        yield proc, data_dir, port
    finally:
        stop(proc)


@pytest.mark.slow
def test_workers_see_each_others_writes(euca_workers):  # type: ignore[no-untyped-def]
    proc, data_dir, port = euca_workers
    (worker,) = children(proc.pid)
    worker_cpu = cpu_ticks(worker)
    # No connection reuse: each call is a new connection, placed by the kernel on either process.
    s3 = s3_client(data_dir, port, max_pool_connections=1, tcp_keepalive=False)
    url = f"http://127.0.0.1:{port}"

    def fresh_get(bucket: str, key: str) -> httpx.Response:
        presigned = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
        with httpx.Client() as c:  # a new connection every time
            return c.get(presigned)

    for i in range(20):
        bucket = f"workers-{i}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"one")
        assert [fresh_get(bucket, "k").content for _ in range(6)] == [b"one"] * 6
        s3.put_object(Bucket=bucket, Key="k", Body=b"two" * 30000)  # now a file, not inline
        assert [fresh_get(bucket, "k").content for _ in range(6)] == [b"two" * 30000] * 6
        s3.delete_object(Bucket=bucket, Key="k")
        assert [fresh_get(bucket, "k").status_code for _ in range(6)] == [404] * 6
        s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
        s3.put_object(Bucket=bucket, Key="pub", Body=b"public", ACL="public-read")
        with httpx.Client() as c:
            assert [c.get(f"{url}/{bucket}/pub").status_code for _ in range(3)] == [200] * 3
        s3.delete_object(Bucket=bucket, Key="pub")
        s3.delete_bucket(Bucket=bucket)
        for _ in range(6):
            with pytest.raises(ClientError) as e:
                s3.head_bucket(Bucket=bucket)
            assert e.value.response["Error"]["Code"] == "404"
    assert cpu_ticks(worker) > worker_cpu  # the worker served its share
    # Concurrent writes from both processes to one store: every one lands.
    s3.create_bucket(Bucket="many")
    for i in range(50):
        s3.put_object(Bucket="many", Key=f"k{i:03d}", Body=os.urandom(100))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="many")["Contents"]]
    assert keys == [f"k{i:03d}" for i in range(50)]


@pytest.mark.slow
def test_worker_stops_with_its_parent(euca_workers):  # type: ignore[no-untyped-def]
    proc, _, _ = euca_workers
    (worker,) = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(600):  # it checks for its parent every second
        if not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker outlived its parent")
