"""Walrus in a process of its own (`euca --role walrus`), to kill -9 and start again on the same data dir.

port = free_port()
proc = start_walrus(data_dir, port)
s3 = s3_client(data_dir, port)
...
kill_9(proc)   # and every walrus worker process it started, waited for until gone
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from helpers import postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_path(data_dir: Path, port: int) -> Path:
    """Where the process's log goes (appended to by every start on this port)."""
    return data_dir.parent / f"euca-{port}.log"


def start_walrus(
    data_dir: Path,
    port: int,
    *,
    workers: int = 1,
    settings: Sequence[str] = (),
    config_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start walrus and wait until it answers (and, with workers, until they are ready too); `settings`:
    more KEY=VALUE for --set; `config_file`: a TOML configuration (for values --set cannot give, lists)."""
    args = [
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
    ]
    if workers > 1:
        args += ["--set", f"clc.listen.port={free_port()}", "--set", f"walrus.workers={workers}"]
    for setting in [*postgres.settings_for(data_dir), *settings]:
        args += ["--set", setting]
    if config_file is not None:
        args += ["--config", str(config_file)]
    log = log_path(data_dir, port)
    ready_before = log.read_bytes().count(b"walrus worker ready") if log.exists() else 0
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
    for _ in range(600):  # up to a minute to come up
        if proc.poll() is not None:
            raise RuntimeError("euca exited at start")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            if log.read_bytes().count(b"walrus worker ready") - ready_before >= workers - 1:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("euca did not come up")


def s3_client(data_dir: Path, port: int, **config: Any) -> Any:
    """boto3 S3 client as the cloud admin (path-style, no retries: one request per call)."""
    import boto3
    from botocore.config import Config as BotoConfig

    rc = (data_dir / "credentials/eucalyptus/admin/eucarc").read_text()
    akid = re.search(r"AWS_ACCESS_KEY_ID=['\"]?([^'\"\n]+)", rc)
    secret = re.search(r"AWS_SECRET_ACCESS_KEY=['\"]?([^'\"\n]+)", rc)
    assert akid is not None and secret is not None
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="eucalyptus",
        aws_access_key_id=akid.group(1),
        aws_secret_access_key=secret.group(1),
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def kill_9(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """kill -9 the walrus process; its worker processes (which finish their requests in flight and stop
    once their parent is gone) are waited for, so that a restart finds no process of the old run."""
    workers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    for pid in workers:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sweeps_logged(data_dir: Path, port: int) -> int:
    """How many sweeps the walrus processes on this port have logged (euca/roles/walrus/sweep.py)."""
    log = log_path(data_dir, port)
    return log.read_bytes().count(b"walrus sweep reclaimed") if log.exists() else 0


class PausedUpload:
    """A presigned 64 MiB PUT that stops after its first 16 MiB until `finish()`: a crash test kills the
    server while this body is on its way (the client's error then is expected and ignored)."""

    MIB = 1024 * 1024

    def __init__(self, url: str):
        import threading

        self.halfway = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._upload, args=(url,), daemon=True)
        self._thread.start()
        assert self.halfway.wait(60), "the upload never started"

    def _body(self) -> Iterator[bytes]:
        for i in range(64):
            if i == 16:
                self.halfway.set()
                self._release.wait(60)
            yield b"n" * self.MIB

    def _upload(self, url: str) -> None:
        try:
            httpx.put(url, content=self._body(), headers={"Content-Length": str(64 * self.MIB)}, timeout=60)
        except httpx.HTTPError:
            pass

    def finish(self) -> None:
        self._release.set()
        self._thread.join(60)
