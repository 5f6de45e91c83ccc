"""The crash matrix: kill -9 of walrus at a random moment while clients PUT, complete multipart uploads,
overwrite versions, DeleteObjects and copy, all at once; then start it again and check:
- every acknowledged write reads back with its digest (by version id where the bucket keeps versions);
- nothing is half-visible: every object listed reads back whole, as one of the bodies written to its key;
- an acknowledged delete stays deleted;
- no orphan bytes: once the start-up sweep ran, no object file is left that no metadata refers to.

A few rounds in the default run; more with EUCA_CRASH_ROUNDS=N (EUCA_CRASH_SEED=S to repeat a run):

    EUCA_CRASH_ROUNDS=30 python3 -m pytest -q tests/service/test_s3_crash_matrix.py
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from helpers.walrus_files import orphan_files, temp_files
from helpers.walrus_process import free_port, kill_9, s3_client, start_walrus, stop, sweeps_logged

KiB = 1024
MiB = 1024 * KiB
ROUNDS = int(os.environ.get("EUCA_CRASH_ROUNDS", "1"))
PLAIN, VERSIONED = "plain", "versioned"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass
class Key:
    """What was tried on one key of the unversioned bucket, in order, and what was acknowledged."""

    attempts: list[str] = field(default_factory=list)  # md5 of each body written
    acked: int = -1  # index into attempts of the last acknowledged write
    delete_tried: bool = False
    delete_acked: bool = False


class Model:
    """The clients' record of what they asked and what was acknowledged (threads share it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, Key] = {}
        self.versions: dict[str, list[str]] = {}  # versioned key -> md5 of every body tried
        self.acked_versions: list[tuple[str, str, str]] = []  # (key, version id, md5)
        self.server_errors: list[str] = []

    def tried(self, key: str, digest: str) -> None:
        with self.lock:
            self.keys.setdefault(key, Key()).attempts.append(digest)

    def acked(self, key: str, digest: str) -> None:
        with self.lock:
            k = self.keys[key]
            k.acked = max(k.acked, len(k.attempts) - 1 - k.attempts[::-1].index(digest))


class Load:
    """Five client threads, one per kind of write, each looping until stopped."""

    def __init__(self, data_dir: Path, port: int, model: Model, rng: random.Random, round_no: int):
        self.data_dir, self.port, self.model = data_dir, port, model
        self.stop = threading.Event()
        self.round = round_no
        self.seed = rng.randrange(1 << 30)
        self.blob = rng.randbytes(5 * MiB)  # bodies are a unique prefix + a slice of this
        self.threads = [
            threading.Thread(target=self._loop, args=(fn,), daemon=True)
            for fn in (self.put, self.multipart, self.overwrite, self.delete_objects, self.copy)
        ]

    def body(self, n: int, size: int) -> bytes:
        prefix = f"{self.round}:{n}:{time.monotonic_ns()}:".encode()
        return prefix + self.blob[: max(0, size - len(prefix))]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
            assert not t.is_alive(), "a client thread hung"

    def _loop(self, op: Callable[[Any, int], None]) -> None:
        s3 = s3_client(self.data_dir, self.port, connect_timeout=5, read_timeout=30)
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                op(s3, n)
            except ClientError as e:
                if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                    with self.model.lock:
                        self.model.server_errors.append(f"{op.__name__}: {e}")
            except BotoCoreError:  # the server went away mid-request
                pass

    def _put(self, s3: Any, key: str, data: bytes) -> None:
        digest = md5(data)
        self.model.tried(key, digest)
        s3.put_object(Bucket=PLAIN, Key=key, Body=data)
        self.model.acked(key, digest)

    # -- the writes -----------------------------------------------------------------------------------------

    def put(self, s3: Any, n: int) -> None:
        """A new key: small (kept inline) or a file."""
        self._put(s3, f"put/{self.round}/{n}", self.body(n, 2 * KiB if n % 2 else 200 * KiB))

    def multipart(self, s3: Any, n: int) -> None:
        key = f"mp/{self.round}/{n}"
        parts = [self.body(n, 5 * MiB), self.body(n + 1, 300 * KiB)]
        digest = md5(b"".join(parts))
        self.model.tried(key, digest)
        upload = s3.create_multipart_upload(Bucket=PLAIN, Key=key)["UploadId"]
        done = []
        for i, part in enumerate(parts, 1):
            etag = s3.upload_part(Bucket=PLAIN, Key=key, UploadId=upload, PartNumber=i, Body=part)["ETag"]
            done.append({"PartNumber": i, "ETag": etag})
        s3.complete_multipart_upload(Bucket=PLAIN, Key=key, UploadId=upload, MultipartUpload={"Parts": done})
        self.model.acked(key, digest)

    def overwrite(self, s3: Any, n: int) -> None:
        """The same few keys again and again: new versions in the versioned bucket, and a replaced file in
        the unversioned one (its old file removed after the commit)."""
        key = f"over/{n % 3}"
        data = self.body(n, 100 * KiB)
        digest = md5(data)
        with self.model.lock:
            self.model.versions.setdefault(key, []).append(digest)
        version = s3.put_object(Bucket=VERSIONED, Key=key, Body=data)["VersionId"]
        with self.model.lock:
            self.model.acked_versions.append((key, version, digest))
        self._put(s3, key, data)

    def delete_objects(self, s3: Any, n: int) -> None:
        keys = [f"del/{self.round}/{n}/{i}" for i in range(20)]
        for i, key in enumerate(keys):
            self._put(s3, key, self.body(n * 100 + i, 100 * KiB))
        with self.model.lock:
            for key in keys:
                self.model.keys[key].delete_tried = True
        answer = s3.delete_objects(
            Bucket=PLAIN, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        assert not answer.get("Errors"), answer
        with self.model.lock:
            for key in keys:
                self.model.keys[key].delete_acked = True

    def copy(self, s3: Any, n: int) -> None:
        source = f"src/{self.round}"
        if n == 1:
            self._put(s3, source, self.body(0, 150 * KiB))
        with self.model.lock:
            src = self.model.keys[source]
            digest = src.attempts[src.acked]
        key = f"copy/{self.round}/{n}"
        self.model.tried(key, digest)
        s3.copy_object(Bucket=PLAIN, Key=key, CopySource={"Bucket": PLAIN, "Key": source})
        self.model.acked(key, digest)


def check(s3: Any, model: Model) -> None:
    """After a restart: the model's promises hold (see the module docstring)."""

    def read(bucket: str, key: str, **kw: Any) -> str | None:
        try:
            o = s3.get_object(Bucket=bucket, Key=key, **kw)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "NoSuchVersion"):
                return None
            raise
        data = o["Body"].read()
        assert len(data) == o["ContentLength"], key
        return md5(data)

    listed = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=PLAIN):
        listed.update(o["Key"] for o in page.get("Contents", []))
    assert listed <= set(model.keys), listed - set(model.keys)
    for key, k in model.keys.items():
        digest = read(PLAIN, key)
        if k.delete_acked:
            assert digest is None, f"{key}: deleted, and back"
        elif digest is None:
            assert k.acked < 0 or k.delete_tried, f"{key}: acknowledged, and gone"
        else:
            allowed = k.attempts[max(k.acked, 0) :]
            assert digest in allowed, f"{key}: neither the acknowledged body nor a later one"
        assert (digest is not None) == (key in listed), key

    for key, version, digest in model.acked_versions:
        assert read(VERSIONED, key, VersionId=version) == digest, f"{key} {version}"
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=VERSIONED):
        for v in page.get("Versions", []):
            assert read(VERSIONED, v["Key"], VersionId=v["VersionId"]) in model.versions[v["Key"]]


def wait_for_sweep(data_dir: Path, port: int, before: int) -> None:
    for _ in range(1200):
        if sweeps_logged(data_dir, port) > before:
            return
        time.sleep(0.05)
    raise AssertionError("no sweep logged after the restart")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "workers"])
def test_kill_9_at_random_points(tmp_path: Path, workers: int) -> None:
    seed = int(os.environ.get("EUCA_CRASH_SEED", random.randrange(1 << 30)))
    print(f"EUCA_CRASH_SEED={seed}")
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    proc = start_walrus(data_dir, port, workers=workers)
    model = Model()
    try:
        s3 = s3_client(data_dir, port)
        s3.create_bucket(Bucket=PLAIN)
        s3.create_bucket(Bucket=VERSIONED)
        s3.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})
        for round_no in range(ROUNDS):
            load = Load(data_dir, port, model, rng, round_no)
            load.start()
            time.sleep(rng.uniform(0.5, 2.5))
            kill_9(proc)
            load.finish()
            sweeps = sweeps_logged(data_dir, port)
            proc = start_walrus(data_dir, port, workers=workers)
            wait_for_sweep(data_dir, port, sweeps)
            s3 = s3_client(data_dir, port)
            check(s3, model)
            assert model.server_errors == []
            assert temp_files(data_dir) == []
            assert orphan_files(data_dir) == {}, f"round {round_no}"
    finally:
        stop(proc)
