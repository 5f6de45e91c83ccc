"""kill -9 in the middle of an upload: the old version survives, nothing new is visible, no debris stays."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig

MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "euca.cli",
            "--role",
            "walrus",
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--set",
            f"walrus.listen.port={port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(data_dir.parent / f"euca-{port}.log", "ab"),
    )
    for _ in range(600):  # up to a minute to come up
        if proc.poll() is not None:
            raise RuntimeError("euca exited at start")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("euca did not come up")


def client(data_dir: Path, port: int):  # type: ignore[no-untyped-def]
    rc = (data_dir / "credentials/eucalyptus/admin/eucarc").read_text()
    akid = re.search(r"AWS_ACCESS_KEY_ID=['\"]?([^'\"\n]+)", rc).group(1)  # type: ignore[union-attr]
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=['\"]?([^'\"\n]+)", rc).group(1)  # type: ignore[union-attr]
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="eucalyptus",
        aws_access_key_id=akid,
        aws_secret_access_key=secret,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


# The old version small (kept inline in the state store, no object file) or large (an object file).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "old_files"), [(b"old version", 0), (b"old version" * 20000, 1)], ids=["inline", "file"]
)
def test_kill_9_mid_upload(tmp_path, old, old_files):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    proc = start(data_dir, port)
    try:
        s3 = client(data_dir, port)
        s3.create_bucket(Bucket="crash")
        s3.put_object(Bucket="crash", Key="obj", Body=old)
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "crash", "Key": "obj"})
        halfway = threading.Event()
        release = threading.Event()

        def body():  # type: ignore[no-untyped-def]
            for i in range(64):
                if i == 16:
                    halfway.set()
                    release.wait(60)
                yield b"n" * MiB

        def upload() -> None:
            try:
                httpx.put(url, content=body(), headers={"Content-Length": str(64 * MiB)}, timeout=60)
            except httpx.HTTPError:
                pass

        t = threading.Thread(target=upload, daemon=True)
        t.start()
        assert halfway.wait(60)
        tmp_dir = data_dir / "objects" / "tmp"
        for _ in range(600):  # the server has started writing the new version
            if any(p.stat().st_size > 0 for p in tmp_dir.iterdir()):
                break
            time.sleep(0.05)
        assert list(tmp_dir.iterdir()), "upload never reached the server"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        release.set()
        t.join(60)
        assert list(tmp_dir.iterdir())  # the debris of the killed upload, until the next start

        proc = start(data_dir, port)
        s3 = client(data_dir, port)
        assert s3.get_object(Bucket="crash", Key="obj")["Body"].read() == old
        versions = s3.list_object_versions(Bucket="crash").get("Versions", [])
        assert len(versions) == 1
        assert list(tmp_dir.iterdir()) == []
        files = [p for p in (data_dir / "objects").rglob("*") if p.is_file()]
        assert len(files) == old_files
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
