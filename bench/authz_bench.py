#!/usr/bin/env python3
"""What authorisation by identity policies costs (issue 12): the same requests as an account's admin user (no
policy evaluated) and as a user holding 20 policies (10 managed policies attached to the user, 10 to a group it
is in; the statement that allows the request is in the last one), on one euca, interleaved.

    python bench/authz_bench.py [--quick] [--requests N] [--base-port 19290] [--keep]

  get-4k         S3 GET of one 4 KiB object over one keep-alive connection (presigned URLs, signed by boto3
                 beforehand), p50 and mean per request.
  describe       DescribeInstances (SigV4-signed Query POSTs over one keep-alive connection), p50 and mean.

The two principals alternate in rounds of 50 requests, so the machine's drifting load falls on both alike.
The figure to read is "added": (user - admin) / admin of the mean, the goal being under 10%. Policies are
evaluated per request (DescribeInstances is authorised on the account's EC2 resources, not per instance), so
the added time does not grow with the number of instances: with none, the ratio is the worst case.
Results go to bench/results/authz-<time>.json. The server started is stopped by pid.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))
from control_plane import HOST, RawEc2, start_euca  # noqa: E402

POLICIES = 20
ROUND = 50


def policy(actions: list[str], resource: str = "*") -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]}
    )


def setup_user(url: str, region: str, access: str, secret: str, bucket: str) -> tuple[str, str]:
    """A user with 20 policies; only the last allows what the bench asks."""
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=url, region_name=region, aws_access_key_id=access, aws_secret_access_key=secret
    )
    iam.create_user(UserName="bench")
    iam.create_group(GroupName="bench-group")
    iam.add_user_to_group(GroupName="bench-group", UserName="bench")
    for i in range(POLICIES):
        last = i == POLICIES - 1
        actions = (
            ["s3:GetObject", "ec2:DescribeInstances"]
            if last
            else [f"ec2:Describe{n}{i}" for n in ("Images", "Tags")]
        )
        resource = "*" if last else f"arn:aws:s3:::{bucket}-other-{i}/*"
        arn = iam.create_policy(PolicyName=f"bench-{i}", PolicyDocument=policy(actions, resource))["Policy"][
            "Arn"
        ]
        if i < POLICIES // 2:
            iam.attach_group_policy(GroupName="bench-group", PolicyArn=arn)
        else:
            iam.attach_user_policy(UserName="bench", PolicyArn=arn)
    key = iam.create_access_key(UserName="bench")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


class Getter:
    def __init__(self, url: str, region: str, access: str, secret: str, bucket: str, count: int):
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=url, region_name=region, aws_access_key_id=access, aws_secret_access_key=secret
        )
        self.urls = [
            s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "obj"}, ExpiresIn=3600)
            for _ in range(min(count, 200))
        ]
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname or HOST, u.port or 80, timeout=60)
        self.i = 0

    def once(self) -> float:
        target = self.urls[self.i % len(self.urls)]
        self.i += 1
        u = urlsplit(target)
        t0 = time.perf_counter()
        self.conn.request("GET", f"{u.path}?{u.query}")
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200 or len(body) != 4096:
            raise RuntimeError(f"GET answered {resp.status}: {body[:200]!r}")
        return elapsed


def measure(requests: int, runners: dict[str, Any]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():  # warm up: caches, connections
        for _ in range(20):
            run()
    done = 0
    while done < requests:
        for name, run in runners.items():
            for _ in range(ROUND):
                times[name].append(run())
        done += ROUND
    return times


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(values) * 1000,
        "mean_ms": statistics.fmean(values) * 1000,
        "n": len(values),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--base-port", type=int, default=19290)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    requests = args.requests or (300 if args.quick else 3000)
    work = Path(tempfile.mkdtemp(prefix="euca-authz-bench-"))
    target = start_euca(work, "euca", args.base_port, poll_interval=None, capacity=0)
    results: dict[str, Any] = {"requests_per_principal": requests, "policies": POLICIES}
    try:
        import boto3

        url = f"http://{HOST}:{args.base_port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=target.region,
            aws_access_key_id=target.access_key,
            aws_secret_access_key=target.secret_key,
        )
        bucket = "authz-bench"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="obj", Body=b"x" * 4096)
        user_access, user_secret = setup_user(
            url, target.region, target.access_key, target.secret_key, bucket
        )
        admin_get = Getter(url, target.region, target.access_key, target.secret_key, bucket, requests)
        user_get = Getter(url, target.region, user_access, user_secret, bucket, requests)
        admin_ec2 = RawEc2(target.endpoint, target.access_key, target.secret_key, target.region)
        user_ec2 = RawEc2(target.endpoint, user_access, user_secret, target.region)
        lines = {
            "get-4k": measure(requests, {"admin": admin_get.once, "user-20-policies": user_get.once}),
            "describe": measure(
                requests,
                {
                    "admin": lambda: admin_ec2.call("DescribeInstances")[1],
                    "user-20-policies": lambda: user_ec2.call("DescribeInstances")[1],
                },
            ),
        }
        print(f"{'line':<10} {'principal':<18} {'p50 ms':>8} {'mean ms':>8} {'added':>8}")
        for line, times in lines.items():
            admin = summary(times["admin"])
            user = summary(times["user-20-policies"])
            added = (user["mean_ms"] - admin["mean_ms"]) / admin["mean_ms"]
            results[line] = {"admin": admin, "user-20-policies": user, "added": added}
            print(f"{line:<10} {'admin':<18} {admin['p50_ms']:8.3f} {admin['mean_ms']:8.3f}")
            print(
                f"{'':<10} {'user, 20 policies':<18} {user['p50_ms']:8.3f} {user['mean_ms']:8.3f} {added:+8.1%}"
            )
    finally:
        target.stop()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"authz-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
