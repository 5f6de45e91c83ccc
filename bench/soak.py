#!/usr/bin/env python3
"""Soak (issue 13): 32 clients of mixed S3 and EC2 Describe calls for N minutes against one euca.

    python bench/soak.py --minutes 30            # the goal run: 0 errors, RSS flat after warm-up
    python bench/soak.py --minutes 3             # a short one
    python bench/soak.py --minutes 1 --clients 8 --base-port 19430 --keep   # a fixed port, work dir kept

The load is `wrk` (a native load generator: Python clients would be the bottleneck, not the server) with
bench/soak.lua, `--clients` connections on 2 threads, one wrk run a minute. wrk cannot sign, so every request
is presigned here first (SigV4 query authentication, valid for the whole run): PUT of 1 KiB objects (a set
of keys overwritten again and again), GET of preloaded 1 KiB objects, ListObjectsV2 of a prefix (100 keys),
and EC2 DescribeInstances / DescribeImages / DescribeRegions / DescribeAvailabilityZones, mixed 3:3:1:3 in
one shuffled list. Each minute prints one line: ops/s, responses that are not 2xx by HTTP status and socket
errors, p50/p99 latency, and the euca processes' RSS and open descriptors (sampled every 5 s; the line shows
the minute's last sample and its peak). At the end a summary (RSS growth after the first minute, warm-up)
and bench/results/soak-<time>.json.

euca runs as `--role walrus,clc` with S3 and EC2 on one port (--base-port), as the one-box serves them on
8773, from this tree; started and stopped by this script (by its pid), on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import descendants  # noqa: E402
from s3_bench import BUCKET, Target, wait_ready  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
EXPIRES = 7 * 24 * 3600  # the longest SigV4 presign: a 30-minute run is well inside it
OBJECT = 1024
GET_KEYS = 200
PUT_KEYS = 400
LIST_KEYS = 100
EC2_ACTIONS = ("describe_instances", "describe_images", "describe_regions", "describe_availability_zones")


def usage(pid: int) -> tuple[int, int]:
    """(RSS bytes, open descriptors) of the euca process and its descendants (walrus workers)."""
    rss = fds = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * page
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss, fds


def start_onebox(work: Path, port: int) -> Target:
    """euca's user-facing roles with S3 and EC2 on one port, credentials read from what it writes."""
    t = Target("euca", port, work)
    data = work / "data"
    args = [
        shutil.which("euca") or "euca",
        "--role",
        "walrus,clc",
        "--data-dir",
        str(data),
        "--host",
        "127.0.0.1",
    ]
    for setting in ("default_image=false", f"walrus.listen.port={port}", f"clc.listen.port={port}",
                    "log_level=WARNING"):  # fmt: skip
        args += ["--set", setting]
    t.log_path = work / "euca.log"
    t.proc = subprocess.Popen(
        args, stdout=open(t.log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    creds = data / "credentials" / "eucalyptus" / "admin"
    deadline = time.monotonic() + 60
    while not ((creds / "aws-credentials").exists() and (creds / "eucarc").exists()):
        if t.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"euca did not start; see {t.log_path}")
        time.sleep(0.1)
    time.sleep(0.2)
    for line in (creds / "aws-credentials").read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == "aws_access_key_id":
            t.access_key = v.strip()
        elif k.strip() == "aws_secret_access_key":
            t.secret_key = v.strip()
    for line in (creds / "eucarc").read_text().splitlines():
        if line.startswith("export AWS_DEFAULT_REGION="):
            t.region = line.split("=", 1)[1]
    return t


def build_requests(t: Target, path: Path) -> int:
    """Preload the objects and write the presigned request list. Returns its length."""
    import boto3
    from botocore.config import Config as BotoConfig

    s3 = t.boto3()
    ec2 = boto3.client(
        "ec2",
        endpoint_url=t.endpoint,
        region_name=t.region,
        aws_access_key_id=t.access_key,
        aws_secret_access_key=t.secret_key,
        config=BotoConfig(signature_version="v4"),
    )
    body = os.urandom(OBJECT)
    for i in range(GET_KEYS):
        s3.put_object(Bucket=BUCKET, Key=f"get/{i:04d}", Body=body)
    for i in range(LIST_KEYS):
        s3.put_object(Bucket=BUCKET, Key=f"list/{i:04d}", Body=body)
    ec2.describe_regions()  # the EC2 endpoint answers before the load starts

    def target(url: str) -> str:
        rest = url.split("://", 1)[1]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"

    def s3_url(method: str, op: str, params: dict[str, Any]) -> str:
        return f"{method} " + target(s3.generate_presigned_url(op, Params=params, ExpiresIn=EXPIRES))

    def ec2_url(action: str) -> str:
        # EC2's Query API takes a presigned GET (Action and Version in the query, SigV4 query auth).
        full = ec2.generate_presigned_url(action, Params={}, ExpiresIn=EXPIRES, HttpMethod="GET")
        return f"GET {target(full)}"

    lines: list[str] = []
    for i in range(PUT_KEYS):
        lines += [s3_url("PUT", "put_object", {"Bucket": BUCKET, "Key": f"put/{i:04d}"})] * 3
    for i in range(GET_KEYS):
        lines += [s3_url("GET", "get_object", {"Bucket": BUCKET, "Key": f"get/{i:04d}"})] * 6
    for _ in range(PUT_KEYS // 3):
        lines.append(s3_url("GET", "list_objects_v2", {"Bucket": BUCKET, "Prefix": "list/"}))
    ec2_lines = [ec2_url(a) for a in EC2_ACTIONS]
    for line in ec2_lines:  # each presigned EC2 call reaches the EC2 API (not S3's ListBuckets at "/")
        action = line.split("Action=", 1)[1].split("&", 1)[0]
        with urllib.request.urlopen(t.endpoint + line.split(" ", 1)[1], timeout=30) as answer:
            assert f"<{action}Response".encode() in answer.read(), f"{action}: not an EC2 answer"
    lines += ec2_lines * (len(lines) * 3 // 7 // len(ec2_lines))
    random.Random(13).shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def run_minute(
    wrk: str, url: str, clients: int, threads: int, env: dict[str, str], seconds: int
) -> dict[str, Any]:
    cmd = [wrk, "-t", str(threads), "-c", str(clients), "-d", f"{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(HERE / "soak.lua"), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("SOAK "):
            result: dict[str, Any] = json.loads(line[5:])
            return result
    raise RuntimeError(f"wrk gave no summary (exit {out.returncode}): {out.stderr.strip()[-400:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (the load generator's cores)")
    ap.add_argument("--base-port", type=int, default=0, help="euca's port (0: a free one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print("soak: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2

    if not args.base_port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.base_port = probe.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="euca-soak-"))
    t = start_onebox(work, args.base_port)
    assert t.proc is not None
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    minutes: list[dict[str, Any]] = []
    started = time.monotonic()

    def sample() -> None:
        assert t.proc is not None
        while not stop.is_set():
            rss, fds = usage(t.proc.pid)
            samples.append((time.monotonic() - started, rss, fds))
            stop.wait(5)

    try:
        wait_ready(t)
        requests = work / "requests.txt"
        body = work / "body.bin"
        body.write_bytes(os.urandom(OBJECT))
        n = build_requests(t, requests)
        env = dict(
            os.environ, SOAK_REQUESTS=str(requests), SOAK_BODY=str(body), SOAK_THREADS=str(args.threads)
        )
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(
            f"soak: {args.clients} clients, {args.minutes} min, {n} presigned requests in rotation, pid {t.proc.pid}"
        )
        print("minute  ops/s   non-2xx            socket-errors  p50ms  p99ms  rss-MiB(peak)  fds(peak)")
        for minute in range(1, args.minutes + 1):
            since = time.monotonic() - started
            r = run_minute(wrk, t.endpoint, args.clients, args.threads, env, 60)
            window = [s for s in samples if s[0] >= since] or samples[-1:]
            rss, fds = window[-1][1], window[-1][2]
            peak_rss, peak_fds = max(s[1] for s in window), max(s[2] for s in window)
            bad = {k: v for k, v in r["codes"].items() if not k.startswith("2")}
            sock = {k: v for k, v in r["socket_errors"].items() if v}
            row = {
                "minute": minute,
                "ops_per_s": r["requests"] / (r["duration_us"] / 1e6),
                "requests": r["requests"],
                "codes": r["codes"],
                "errors": bad,
                "socket_errors": sock,
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "rss_bytes": rss,
                "rss_peak_bytes": peak_rss,
                "fds": fds,
                "fds_peak": peak_fds,
            }
            minutes.append(row)
            print(
                f"{minute:>6}  {row['ops_per_s']:>6.0f}  {json.dumps(bad) if bad else '-':<18} "
                f"{json.dumps(sock) if sock else '-':<14} {r['p50_ms']:>5.1f}  {r['p99_ms']:>5.1f}  "
                f"{rss / 2**20:>6.1f}({peak_rss / 2**20:.1f})  {fds:>4}({peak_fds})",
                flush=True,
            )
    finally:
        stop.set()
        t.proc.terminate()
        try:
            t.proc.wait(60)
        except subprocess.TimeoutExpired:
            t.proc.kill()
            t.proc.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if not minutes:
        return 1
    errors: dict[str, int] = {}
    for row in minutes:
        for k, v in {**row["errors"], **{f"socket:{k}": v for k, v in row["socket_errors"].items()}}.items():
            errors[k] = errors.get(k, 0) + v
    total = sum(row["requests"] for row in minutes)
    after_warmup = minutes[1:] or minutes
    growth = (after_warmup[-1]["rss_bytes"] - after_warmup[0]["rss_bytes"]) / 2**20
    summary = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "minutes": args.minutes,
        "clients": args.clients,
        "requests": total,
        "errors": errors,
        "rss_growth_after_warmup_mib": round(growth, 1),
        "fds_first_last": [minutes[0]["fds"], minutes[-1]["fds"]],
        "per_minute": minutes,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{summary['when'].replace(':', '')}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"soak: {total} requests, errors {errors or 0}, RSS after minute 1: {growth:+.1f} MiB, "
        f"descriptors {minutes[0]['fds']} -> {minutes[-1]['fds']}; {out}"
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
