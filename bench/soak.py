#!/usr/bin/env python3
"""Soak: 32 clients for N minutes against one euca (walrus + clc), mixed S3 and EC2 Describe calls (issue 13).

    python bench/soak.py [--minutes 30] [--clients 32] [--workers 1] [--base-port 19320] [--keep]

Each client is a thread with its own boto3 clients, looping over: PUT 4 KiB, GET it, HEAD it, list a prefix,
DELETE it, and DescribeInstances / DescribeImages / DescribeRegions on the EC2 API. Every minute one line:
ops/s in that minute, errors by code, the server's RSS (all its processes) and open descriptors. At the end a
summary and bench/results/soak-<time>.json. Goal (issue 13): 0 errors, RSS flat after warm-up, descriptors
flat. Everything it starts is stopped by pid; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import descendants  # noqa: E402
from s3_bench import BUCKET, Target, start_euca, wait_ready  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def server_usage(pid: int) -> tuple[int, int]:
    """(RSS bytes, open descriptors) of the server process and its descendants."""
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


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops = 0
        self.errors: collections.Counter[str] = collections.Counter()

    def add(self, ok: int, error: str | None = None) -> None:
        with self.lock:
            self.ops += ok
            if error is not None:
                self.errors[error] += 1

    def take(self) -> tuple[int, dict[str, int]]:
        with self.lock:
            ops, errors = self.ops, dict(self.errors)
            self.ops, self.errors = 0, collections.Counter()
            return ops, errors


def ec2_client(t: Target) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ec2",
        endpoint_url=f"http://127.0.0.1:{t.port + 1}",
        aws_access_key_id=t.access_key,
        aws_secret_access_key=t.secret_key,
        region_name=t.region,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60),
    )


def client_loop(t: Target, index: int, stop: threading.Event, tally: Tally) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    s3, ec2 = t.boto3(), ec2_client(t)
    body = os.urandom(4096)
    n = 0
    calls: list[Callable[[str], object]] = [
        lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=body),
        lambda key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
        lambda key: s3.head_object(Bucket=BUCKET, Key=key),
        lambda key: s3.list_objects_v2(Bucket=BUCKET, Prefix=f"soak/{index}/", MaxKeys=100),
        lambda key: s3.delete_object(Bucket=BUCKET, Key=key),
        lambda key: ec2.describe_instances(),
        lambda key: ec2.describe_images(),
        lambda key: ec2.describe_regions(),
    ]
    while not stop.is_set():
        key = f"soak/{index}/{n % 50}"
        for call in calls:
            try:
                call(key)
            except ClientError as e:
                tally.add(0, str(e.response.get("Error", {}).get("Code", "ClientError")))
            except BotoCoreError as e:
                tally.add(0, type(e).__name__)
            else:
                tally.add(1)
        n += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1, help="walrus.workers")
    ap.add_argument("--base-port", type=int, default=19320)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="euca-soak-"))
    t = start_euca(base, args.base_port, [], args.workers)
    rows: list[dict[str, Any]] = []
    try:
        wait_ready(t)
        assert t.proc is not None
        stop = threading.Event()
        tally = Tally()
        threads = [
            threading.Thread(target=client_loop, args=(t, i, stop, tally), daemon=True)
            for i in range(args.clients)
        ]
        for th in threads:
            th.start()
        started = time.monotonic()
        minute = 0
        print(f"{'min':>4} {'ops/s':>9} {'rss MiB':>8} {'fds':>6}  errors", flush=True)
        while time.monotonic() - started < args.minutes * 60:
            period = min(60.0, args.minutes * 60 - (time.monotonic() - started))
            time.sleep(period)
            minute += 1
            ops, errors = tally.take()
            rss, fds = server_usage(t.proc.pid)
            row = {
                "minute": minute,
                "ops_per_s": round(ops / period, 1),
                "rss": rss,
                "fds": fds,
                "errors": errors,
            }
            rows.append(row)
            print(
                f"{minute:4d} {row['ops_per_s']:9.1f} {rss / 2**20:8.1f} {fds:6d}  {errors or '-'}",
                flush=True,
            )
        stop.set()
        for th in threads:
            th.join(120)
    finally:
        t.stop()
    total_errors: collections.Counter[str] = collections.Counter()
    for row in rows:
        total_errors.update(row["errors"])
    warm = rows[len(rows) // 4 :] or rows
    summary = {
        "minutes": args.minutes,
        "clients": args.clients,
        "workers": args.workers,
        "errors": dict(total_errors),
        "rss_after_warmup_mib": [
            round(min(r["rss"] for r in warm) / 2**20, 1),
            round(max(r["rss"] for r in warm) / 2**20, 1),
        ]
        if warm
        else [],
        "fds_after_warmup": [min(r["fds"] for r in warm), max(r["fds"] for r in warm)] if warm else [],
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"errors: {dict(total_errors) or 0}; RSS after warm-up {summary['rss_after_warmup_mib']} MiB; "
          f"descriptors {summary['fds_after_warmup']}; {out}")  # fmt: skip
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
