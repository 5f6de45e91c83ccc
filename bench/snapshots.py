#!/usr/bin/env python3
"""EBS snapshot benchmark (issue 10): euca's snapshot data path against `qemu-img convert` + `aws s3 cp`.

    python bench/snapshots.py [--quick] [--keep] [--base-port 19280]

One command starts a one-box euca (`--role all`, the NC on libvirt's test:///default driver, no default
image; CLC and Walrus on --base-port, CC +1, NC +2, SC +3) from this repository, makes a 1 GiB volume and
fills it with random bytes (written into the SC's sparse file as a guest's writes would land; --quick: the
first 256 MiB), then, in one run:

  full snapshot         CreateSnapshot -> DescribeSnapshots says completed (polled every 50 ms); MB/s of the
                        volume's data, bytes uploaded (the snapshot bucket's growth, counted over S3), and the
                        SC's own time from its log (the upload alone, without the CLC's poll)
  incremental, 5%       5% of the volume rewritten in 1 MiB runs at random offsets, then the same; and
                        again after 5% rewritten as one contiguous region
  volume from snapshot  CreateVolume(SnapshotId=the last incremental) -> available; its SHA-256 checked against the
                        source's
  baseline              `qemu-img convert -O raw` of the same volume file to a file, then `aws s3 cp` of that
                        file into a bucket of the same euca (the aws CLI's defaults: 8 MiB parts, 10 at once),
                        paired with a full snapshot again (earlier ones deleted: no parent), --repeat times
                        (default 3; --quick: 1); the ratio is of the medians

The CLC polls every 0.25 s here (clc.poll_interval): the end-to-end figures include up to one poll.
Results go to bench/results/snapshots-<time>.json. Everything started is stopped by pid.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import free_port, stop_tree

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
MIB = 1024 * 1024
GIB = 1024 * MIB


class Euca:
    def __init__(self, work: Path, port: int):
        self.work = work
        self.port = port
        self.data = work / "data"
        self.data.mkdir(parents=True)
        self.log = work / "euca.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for p in range(self.port, self.port + 4):
            if not free_port(p):
                raise RuntimeError(f"port {p} is busy")
        sets = [
            f"clc.listen.port={self.port}",
            f"walrus.listen.port={self.port}",
            f"cc.listen.port={self.port + 1}",
            f"nc.listen.port={self.port + 2}",
            f"sc.listen.port={self.port + 3}",
            "nc.libvirt_uri=test:///default",
            "default_image=false",
            "clc.poll_interval=0.25",
            "log_level=INFO",
        ]
        args = [
            sys.executable,
            "-m",
            "euca.cli",
            "--role",
            "all",
            "--data-dir",
            str(self.data),
            "--host",
            HOST,
        ]
        for s in sets:
            args += ["--set", s]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        rc = self.data / "credentials" / "eucalyptus" / "admin" / "eucarc"
        deadline = time.monotonic() + 120
        while not rc.exists() or not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"euca did not start; see {self.log}")
            time.sleep(0.2)
        values = dict(re.findall(r"export (\w+)=(\S*)", rc.read_text()))
        self.access_key = values["AWS_ACCESS_KEY_ID"]
        self.secret_key = values["AWS_SECRET_ACCESS_KEY"]
        self.region = values.get("AWS_DEFAULT_REGION", "eucalyptus")

    def _answers(self) -> bool:
        import http.client

        try:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=1)
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        except OSError:
            return False

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        path = "/services/compute" if service == "ec2" else "/services/objectstorage"
        return boto3.client(
            service,
            endpoint_url=f"http://{HOST}:{self.port}{path}",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, read_timeout=600
            ),
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc, wait=30, after_kill=10)

    def sc_log(self, snapshot_id: str) -> dict[str, float]:
        """The SC's own line for a completed snapshot: chunks, bytes uploaded, seconds."""
        for line in self.log.read_text().splitlines():
            if f"snapshot completed id={snapshot_id} " in line:
                return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)(?:\s|$)", line)}
        return {}


def wait(what: str, check: Any, timeout: float = 600, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(every)


def bucket_bytes(s3: Any, bucket: str) -> tuple[int, int]:
    count = size = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                count += 1
                size += o["Size"]
    except s3.exceptions.NoSuchBucket:
        pass
    return count, size


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    return h.hexdigest()


def fill(path: Path, offset: int, length: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        left = length
        while left:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def snapshot(euca: Euca, ec2: Any, s3: Any, bucket: str, volume_id: str, data_bytes: int) -> dict[str, Any]:
    objects0, bytes0 = bucket_bytes(s3, bucket)
    os.sync()
    start = time.monotonic()
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]

    def done() -> bool:
        (s,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        if s["State"] == "error":
            raise RuntimeError(f"{snapshot_id} failed: {s.get('StateMessage')}")
        return bool(s["State"] == "completed")

    wait(f"{snapshot_id} completed", done)
    seconds = time.monotonic() - start
    objects1, bytes1 = bucket_bytes(s3, bucket)
    sc = euca.sc_log(snapshot_id)
    return {
        "snapshot_id": snapshot_id,
        "seconds_to_completed": seconds,
        "volume_data_mb_per_s": data_bytes / MIB / seconds,
        "bytes_uploaded": bytes1 - bytes0,
        "objects_added": objects1 - objects0,
        "sc_seconds": sc.get("seconds"),
        "sc_uploaded_bytes": sc.get("uploaded_bytes"),
        "sc_volume_data_mb_per_s": data_bytes / MIB / sc["seconds"] if sc.get("seconds") else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="snapbench-", dir=args.work_dir))
    euca = Euca(work, args.base_port)
    results: dict[str, Any] = {"quick": args.quick, "work": str(work)}
    try:
        euca.start()
        ec2, s3 = euca.client("ec2"), euca.client("s3")
        zone = wait(
            "a zone with its SC",
            lambda: next(
                (z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]), None
            ),
        )
        volume_id = ec2.create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
        wait(
            f"{volume_id} available",
            lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available",
        )
        path = euca.data / "sc" / "volumes" / f"{volume_id}.raw"
        data_bytes = 256 * MIB if args.quick else GIB
        fill(path, 0, data_bytes)
        # The snapshot bucket is the system account's (the admin's here); made by the first upload.
        bucket = _bucket(euca)
        full = snapshot(euca, ec2, s3, bucket, volume_id, data_bytes)
        results["full"] = full
        print(
            f"full snapshot: {full['seconds_to_completed']:.2f} s to completed, "
            f"{full['volume_data_mb_per_s']:.0f} MiB/s of data, {full['bytes_uploaded'] / MIB:.0f} MiB uploaded "
            f"(SC alone {full['sc_seconds']} s)"
        )

        rng = random.Random(10)
        changed = int(GIB * 0.05)
        runs = changed // MIB
        for _ in range(runs):
            fill(path, rng.randrange(0, GIB - MIB), MIB)
        inc = snapshot(euca, ec2, s3, bucket, volume_id, data_bytes)
        inc["changed_bytes"] = changed
        results["incremental_5pct"] = inc
        print(
            f"incremental after 5% changed ({runs} runs of 1 MiB): {inc['seconds_to_completed']:.2f} s, "
            f"{inc['bytes_uploaded'] / MIB:.0f} MiB uploaded in {inc['objects_added']} objects (SC alone {inc['sc_seconds']} s)"
        )

        # The same amount in one contiguous region: what a 4 MiB chunk size costs scattered writes, above.
        fill(path, rng.randrange(0, GIB - changed), changed)
        region = snapshot(euca, ec2, s3, bucket, volume_id, data_bytes)
        region["changed_bytes"] = changed
        results["incremental_5pct_contiguous"] = region
        print(
            f"incremental after 5% changed in one region: {region['seconds_to_completed']:.2f} s, "
            f"{region['bytes_uploaded'] / MIB:.0f} MiB uploaded in {region['objects_added']} objects"
        )

        source_sha = sha256_of(path)
        start = time.monotonic()
        restored = ec2.create_volume(AvailabilityZone=zone, SnapshotId=region["snapshot_id"])["VolumeId"]
        wait(
            f"{restored} available",
            lambda: ec2.describe_volumes(VolumeIds=[restored])["Volumes"][0]["State"] == "available",
        )
        restore_seconds = time.monotonic() - start
        same = sha256_of(euca.data / "sc" / "volumes" / f"{restored}.raw") == source_sha
        results["volume_from_snapshot"] = {"seconds_to_available": restore_seconds, "sha256_matches": same}
        print(
            f"volume from the last incremental snapshot: {restore_seconds:.2f} s to available, SHA-256 equal: {same}"
        )
        if not same:
            raise RuntimeError("the restored volume differs from its source")

        # Baseline: qemu-img convert of the same volume to a file, then aws s3 cp of the file; paired with a
        # full snapshot of the volume again (its earlier snapshots deleted first: no parent), --repeat times,
        # alternating, since the shared machine's load drifts.
        s3.create_bucket(Bucket="snapbench")
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=euca.access_key,
            AWS_SECRET_ACCESS_KEY=euca.secret_key,
            AWS_DEFAULT_REGION=euca.region,
        )
        cfg = work / "aws-config"
        cfg.write_text("[default]\ns3 =\n    addressing_style = path\n")
        env["AWS_CONFIG_FILE"] = str(cfg)
        rounds: list[dict[str, Any]] = []
        for r in range(args.repeat):
            if r:
                for old in ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [volume_id]}])[
                    "Snapshots"
                ]:
                    ec2.delete_snapshot(SnapshotId=old["SnapshotId"])
                full = snapshot(euca, ec2, s3, bucket, volume_id, data_bytes)
            copy = work / "volume-copy.raw"
            copy.unlink(missing_ok=True)
            os.sync()
            start = time.monotonic()
            subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(copy)], check=True)
            convert_seconds = time.monotonic() - start
            os.sync()
            start = time.monotonic()
            subprocess.run(
                [
                    shutil.which("aws") or "aws",
                    "s3",
                    "cp",
                    str(copy),
                    f"s3://snapbench/volume-{r}.raw",
                    "--no-progress",
                    "--endpoint-url",
                    f"http://{HOST}:{args.base_port}/services/objectstorage",
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            cp_seconds = time.monotonic() - start
            baseline = convert_seconds + cp_seconds
            pair = {
                "full_snapshot_seconds": full["seconds_to_completed"],
                "full_snapshot_sc_seconds": full["sc_seconds"],
                "full_snapshot_uploaded_bytes": full["sc_uploaded_bytes"],
                "qemu_img_convert_seconds": convert_seconds,
                "aws_s3_cp_seconds": cp_seconds,
                "baseline_seconds": baseline,
                "baseline_uploaded_bytes": copy.stat().st_size,
                "speed_ratio": baseline / full["seconds_to_completed"],
                "load_average": os.getloadavg()[0],
            }
            rounds.append(pair)
            print(
                f"round {r + 1}: full snapshot {full['seconds_to_completed']:.2f} s "
                f"({data_bytes / MIB / full['seconds_to_completed']:.0f} MiB/s of data); baseline qemu-img convert "
                f"{convert_seconds:.2f} s + aws s3 cp {cp_seconds:.2f} s = {baseline:.2f} s "
                f"({copy.stat().st_size / MIB:.0f} MiB uploaded); snapshot/baseline speed {pair['speed_ratio']:.2f}"
            )
        results["rounds"] = rounds
        median_full = statistics.median(p["full_snapshot_seconds"] for p in rounds)
        median_base = statistics.median(p["baseline_seconds"] for p in rounds)
        results["median_full_snapshot_seconds"] = median_full
        results["median_baseline_seconds"] = median_base
        results["full_vs_baseline_speed"] = median_base / median_full
        print(
            f"medians: full snapshot {median_full:.2f} s, baseline {median_base:.2f} s; "
            f"snapshot/baseline speed {results['full_vs_baseline_speed']:.2f} (above 1: the snapshot is faster)"
        )
        results["load_average"] = os.getloadavg()
    finally:
        euca.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def _bucket(euca: Euca) -> str:
    """The system account's snapshot bucket (named after the cloud CA: read its certificate's digest)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca = x509.load_pem_x509_certificate((euca.data / "pki" / "cloud-cert.pem").read_bytes())
    return f"euca-snapshots-{hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="256 MiB of data in the 1 GiB volume")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--repeat", type=int, default=3, help="full snapshot / baseline pairs (median)")
    parser.add_argument("--base-port", type=int, default=19280)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    results = run(args)
    results["commit"] = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    results["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"snapshots-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
