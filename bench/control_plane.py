#!/usr/bin/env python3
"""EC2 control-plane benchmark: euca (CLC + CC + NC in one process, the NC on libvirt's test:///default driver)
against moto's EC2 (`moto_server`), same machine, same run, same client.

    python bench/control_plane.py [--quick] [--targets euca,moto] [--store sqlite,postgresql] [--real-guest] [--keep]

Both servers run on 127.0.0.1 (ports from --base-port, default 19260: euca 19260-19262, moto 19270, the
optional real-guest euca 19265-19267). The workloads run on one server after the other:

  run-100           RunInstances of 100 t1.micro in one call (boto3), repeated until --instances exist; wall
                    time per call, median. After each call the bench waits until the batch is running, so
                    every call starts from a settled cloud (that wait is reported as "batch running").
  describe-1000     DescribeInstances with those instances present: N signed requests over one keep-alive
                    connection (http.client; the body is read whole, not parsed), p50/p99; and boto3's full
                    call, which adds botocore's parsing of 1,000 instances (the client's share is reported).
  walk              DescribeInstances pages of MaxResults=1000 and of MaxResults=100 until no NextToken.
  time-to-running   RunInstances of 1 instance of the cached image, then DescribeInstances of it every 20 ms
                    until it is running. For euca the time splits (from its log, read as it is written) into
                    the call, the NC's staging (overlay, ephemeral and swap disks, domain defined and started),
                    and the wait until the CLC has it as running (the CC's poll of the NC, then the CLC's of
                    the CC: after a RunInstances both poll again after 0.1 s, 0.2 s, 0.4 s, ... while instances
                    are pending, so this does not wait for their poll intervals, printed with the result).
  real guest        (--real-guest, euca only) the same with a real QEMU (TCG) guest of the default boot image
                    on qemu:///system: time to running and to the guest's boot marker on its console.

--store picks euca's state store: sqlite (default: the data dir's state.db), postgresql (a private cluster the
bench starts with initdb + pg_ctl on a unix socket, fsync on as in production; euca's store.url points at a
fresh database in it), or both (two euca targets, "euca" on SQLite and "euca-pg", measured one after the other).

Every figure is a time (lower is better); the ratio column is moto / euca, so > 1 means euca is faster.
Results go to bench/results/control-plane-<time>.json. Everything started is stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from procs import descendants, free_port, proc_stat

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))
from helpers import postgres  # noqa: E402  (the tests' private PostgreSQL cluster, for --store postgresql)

RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
EC2_VERSION = "2016-11-15"
INSTANCE_TYPE = "t1.micro"  # 1 core, 256 MiB, 5 GiB in euca's defaults
BOOT_MARKER = "euca-guest: booted"


@dataclass(frozen=True)
class Plan:
    instances: int  # instances made by run-100 and present for describe
    batch: int  # instances per RunInstances
    describe_calls: int  # raw DescribeInstances calls (fewer if describe_seconds runs out)
    describe_seconds: float
    boto3_calls: int
    walks: int
    ttr_repeats: int
    guest_repeats: int


FULL = Plan(
    instances=1000,
    batch=100,
    describe_calls=200,
    describe_seconds=90,
    boto3_calls=10,
    walks=5,
    ttr_repeats=7,
    guest_repeats=3,
)
QUICK = Plan(
    instances=200,
    batch=100,
    describe_calls=20,
    describe_seconds=20,
    boto3_calls=3,
    walks=2,
    ttr_repeats=3,
    guest_repeats=1,
)


# ---------------------------------------------------------------------------------------------------------
# Processes


def process_cpu(pid: int) -> float:
    """CPU seconds of a process, its threads and its children already reaped (qemu-img, mkfs on the NC)."""
    fields = proc_stat(pid)
    if not fields:
        return 0.0
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


class LogTap:
    """Follows a server's log file as it is written and keeps the arrival time of lines that match.

    The server writes to the file itself (a pipe to this process could fill and block the server's event
    loop in its logging call); a thread here reads what was added every few milliseconds."""

    POLL = 0.003

    def __init__(self, path: Path, patterns: dict[str, re.Pattern[str]]):
        self.path = path
        self.patterns = patterns
        self.events: dict[str, dict[str, tuple[float, re.Match[str]]]] = {k: {} for k in patterns}
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        partial = b""
        with open(self.path, "rb") as f:
            while not self.stopped.is_set():
                chunk = f.read(1 << 20)
                if not chunk:
                    time.sleep(self.POLL)
                    continue
                now = time.perf_counter()
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for raw in lines:
                    self._line(raw.decode("utf-8", "replace"), now)

    def _line(self, line: str, now: float) -> None:
        if "cloud ready" in line:
            self.ready.set()
        for name, pattern in self.patterns.items():
            m = pattern.search(line)
            if m:
                with self.lock:
                    self.events[name].setdefault(m.group("id"), (now, m))

    def event(self, name: str, key: str) -> tuple[float, re.Match[str]] | None:
        with self.lock:
            return self.events[name].get(key)

    def tail(self, n: int = 12) -> str:
        try:
            return "\n  ".join(self.path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""


EUCA_EVENTS = {
    # The NC received NcRunInstance / finished staging (disks made, domain defined and started).
    "nc_staging": re.compile(r"instance staging id=(?P<id>i-[0-9a-f]+)"),
    "nc_booting": re.compile(r"instance booting id=(?P<id>i-[0-9a-f]+) .* in=(?P<secs>[0-9.]+)s"),
    # The CLC's poll recorded the state the CC reported.
    "clc_running": re.compile(r"instance state id=(?P<id>i-[0-9a-f]+) from=\S+ to=running"),
}


@dataclass
class Target:
    name: str
    endpoint: str  # the EC2 endpoint URL
    workdir: Path
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    image_id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    tap: LogTap | None = None
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def boto3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=600),
        )

    def raw(self) -> RawEc2:
        return RawEc2(self.endpoint, self.access_key, self.secret_key, self.region)

    def cpu(self) -> float:
        return process_cpu(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.tap is not None:
            self.tap.stopped.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in pids[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _eucarc(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"export (\w+)=(\S*)$", line.strip())
        if m and "$" not in m.group(2):
            out[m.group(1)] = m.group(2)
    return out


def start_euca(
    work: Path,
    name: str,
    port: int,
    *,
    poll_interval: float | None,
    capacity: int,
    libvirt_uri: str = "test:///default",
    default_image: bool = False,
    extra_sets: list[str] | None = None,
    ready_timeout: float = 120,
) -> Target:
    """`euca --role all` in its own data dir: CLC+Walrus on `port`, CC on port+1, NC on port+2, SC on port+3."""
    for p in (port, port + 1, port + 2, port + 3):
        if not free_port(p):
            raise RuntimeError(f"port {p} is busy ({name} needs {port}..{port + 3})")
    t = Target(name, f"http://{HOST}:{port}/services/compute", work / name)
    data = t.workdir / "data"
    data.mkdir(parents=True)
    sets = [
        f"clc.listen.port={port}",
        f"walrus.listen.port={port}",
        f"cc.listen.port={port + 1}",
        f"nc.listen.port={port + 2}",
        f"sc.listen.port={port + 3}",  # not the default 8776: two eucas (--store sqlite,postgresql) side by side
        f"nc.libvirt_uri={libvirt_uri}",
        # Room for every instance the bench makes: a /16 of private addresses, a public address pool as large
        # (every instance takes one at launch, as Eucalyptus gave them), and (test driver) a node as large as
        # needed. A real node offers what the host has.
        "cc.subnet=10.64.0.0/16",
        "clc.public_addresses=10.99.0.0/16",
    ]
    if capacity:
        sets += [f"nc.cores={capacity}", f"nc.memory_mb={capacity * 256}", f"nc.disk_gb={capacity * 5}"]
    if poll_interval is not None:
        sets += [f"clc.poll_interval={poll_interval}", f"cc.poll_interval={poll_interval}"]
    sets += [f"default_image={'true' if default_image else 'false'}"]
    sets += extra_sets or []
    t.info["poll_intervals"] = effective_poll_intervals(sets)
    args = [shutil.which("euca") or "euca", "--role", "all", "--data-dir", str(data), "--host", HOST]
    for s in sets:
        args += ["--set", s]
    env = dict(os.environ)
    t.info["command"] = args
    t.info["settings"] = sets
    t.log_path = t.workdir / "euca.log"
    t.proc = subprocess.Popen(
        args,
        stdout=open(t.log_path, "wb"),
        stderr=subprocess.STDOUT,
        cwd=t.workdir,
        env=env,
        start_new_session=True,
    )
    t.tap = LogTap(t.log_path, EUCA_EVENTS)
    deadline = time.monotonic() + ready_timeout
    while not t.tap.ready.wait(0.2):
        if t.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not become ready (exit {t.proc.poll()}):\n  {t.tap.tail()}")
    rc = _eucarc(data / "credentials" / "eucalyptus" / "admin" / "eucarc")
    t.access_key, t.secret_key = rc["AWS_ACCESS_KEY_ID"], rc["AWS_SECRET_ACCESS_KEY"]
    t.region = rc.get("AWS_DEFAULT_REGION", "eucalyptus")
    return t


def effective_poll_intervals(sets: list[str]) -> dict[str, float]:
    """clc.poll_interval and cc.poll_interval as euca will run with these --set's (its defaults otherwise)."""
    from euca.core.config import load_config

    overrides = dict(item.split("=", 1) for item in sets if item.split("=", 1)[0].endswith(".poll_interval"))
    config = load_config(None, {"data_dir": "/nonexistent", **{k: float(v) for k, v in overrides.items()}})
    return {"clc": config.clc.poll_interval, "cc": config.cc.poll_interval}


def install_tiny_image(t: Target) -> str:
    """A 1 MiB machine image, bundled, uploaded and registered with euca's image CLI."""
    image = t.workdir / "tiny.img"
    image.write_bytes(os.urandom(1024 * 1024))
    eucarc = t.workdir / "data" / "credentials" / "eucalyptus" / "admin" / "eucarc"
    euca = shutil.which("euca") or "euca"
    cmd = f". {eucarc} && {euca} install-image -i {image} -b bench-images -n bench-tiny --no-progress"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    m = re.search(r"IMAGE\s+(emi-[0-9a-f]+)", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(
            f"euca install-image failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-500:]}"
        )
    return m.group(1)


def start_moto(work: Path, port: int) -> Target:
    if not free_port(port):
        raise RuntimeError(f"port {port} is busy (moto)")
    t = Target("moto", f"http://{HOST}:{port}", work / "moto", "benchmotokey", "benchmotosecret", "us-east-1")
    t.workdir.mkdir(parents=True)
    t.log_path = t.workdir / "moto.log"
    exe = shutil.which("moto_server") or "moto_server"
    t.proc = subprocess.Popen(
        [exe, "-H", HOST, "-p", str(port)],
        stdout=open(t.log_path, "wb"),
        stderr=subprocess.STDOUT,
        cwd=t.workdir,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    client = t.boto3()
    while True:
        try:
            images = client.describe_images()["Images"]
            break
        except Exception as e:
            if t.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server not ready: {e}") from e
            time.sleep(0.3)
    # One of moto's built-in AMIs (an x86_64 machine image).
    machine = [i for i in images if i.get("Architecture", "x86_64") == "x86_64"] or images
    t.image_id = sorted(i["ImageId"] for i in machine)[0]
    try:
        from importlib.metadata import version

        t.info["version"] = version("moto")
    except Exception:
        pass
    return t


# ---------------------------------------------------------------------------------------------------------
# A lean EC2 Query client: botocore signs (SigV4), http.client sends over one keep-alive connection and the
# answer is read whole but not parsed, so the time is the server's plus loopback and http.client.


class Ec2Failed(Exception):
    pass


class RawEc2:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str):
        from botocore.auth import SigV4Auth
        from botocore.credentials import Credentials

        self.endpoint = endpoint
        u = urlsplit(endpoint)
        self.host, self.port, self.path = u.hostname or HOST, u.port or 80, u.path or "/"
        self.signer = SigV4Auth(Credentials(access_key, secret_key), "ec2", region)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def call(self, action: str, params: dict[str, Any] | None = None) -> tuple[bytes, float, float]:
        """(body, seconds from sending to the last byte read, client CPU seconds inside that span)."""
        from botocore.awsrequest import AWSRequest

        body = urlencode({"Action": action, "Version": EC2_VERSION, **(params or {})})
        req = AWSRequest(
            method="POST",
            url=self.endpoint,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        self.signer.add_auth(req)
        headers = dict(req.headers.items())
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for attempt in (1, 2):
            try:
                self.conn.request("POST", self.path, body=body.encode(), headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed an idle keep-alive connection: once more on a new one.
                self.conn.close()
                if attempt == 2:
                    raise
                t0, c0 = time.perf_counter(), time.thread_time()
        elapsed = time.perf_counter() - t0
        cpu = time.thread_time() - c0
        if resp.status != 200:
            raise Ec2Failed(f"{action} answered {resp.status}: {data[:400]!r}")
        return data, elapsed, cpu

    def close(self) -> None:
        self.conn.close()


INSTANCE_ID_RE = re.compile(rb"<instanceId>(i-[0-9a-f]+)</instanceId>")
STATE_RE = re.compile(rb"<instanceState>\s*<code>\d+</code>\s*<name>([a-z-]+)</name>")
NEXT_TOKEN_RE = re.compile(rb"<nextToken>([^<]+)</nextToken>")


def states_of(body: bytes) -> dict[str, str]:
    """instance id -> state name from a DescribeInstances answer (ids and states come in the same order)."""
    ids = INSTANCE_ID_RE.findall(body)
    states = STATE_RE.findall(body)
    if len(ids) != len(states):
        raise Ec2Failed(f"cannot read {len(ids)} instances' states from the answer")
    return {i.decode(): s.decode() for i, s in zip(ids, states, strict=True)}


def ids_param(ids: list[str]) -> dict[str, str]:
    return {f"InstanceId.{n}": i for n, i in enumerate(ids, 1)}


def wait_running(raw: RawEc2, ids: list[str], timeout: float, interval: float = 0.2) -> float:
    t0 = time.perf_counter()
    while True:
        body, _, _ = raw.call("DescribeInstances", ids_param(ids))
        states = states_of(body)
        if len(states) == len(ids) and all(s == "running" for s in states.values()):
            return time.perf_counter() - t0
        bad = {i: s for i, s in states.items() if s not in ("pending", "running")}
        if bad:
            raise Ec2Failed(f"instances ended instead of running: {dict(list(bad.items())[:5])}")
        if time.perf_counter() - t0 > timeout:
            counts: dict[str, int] = {}
            for s in states.values():
                counts[s] = counts.get(s, 0) + 1
            raise Ec2Failed(f"not running after {timeout:.0f} s: {counts}")
        time.sleep(interval)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p50": pct(values, 0.50),
        "p99": pct(values, 0.99),
        "min": min(values),
        "max": max(values),
        "values": [round(v, 6) for v in values],
    }


# ---------------------------------------------------------------------------------------------------------
# Workloads


def run_batches(t: Target, plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    client = t.boto3()
    raw = t.raw()
    walls: list[float] = []
    client_cpu: list[float] = []
    settle: list[float] = []
    server_cpu: list[float] = []
    made = 0
    try:
        while made < plan.instances:
            n = min(plan.batch, plan.instances - made)
            cpu0 = t.cpu()
            c0 = time.thread_time()
            w0 = time.perf_counter()
            r = client.run_instances(ImageId=t.image_id, MinCount=n, MaxCount=n, InstanceType=INSTANCE_TYPE)
            wall = time.perf_counter() - w0
            ccpu = time.thread_time() - c0
            ids = [i["InstanceId"] for i in r["Instances"]]
            if len(ids) != n:
                raise Ec2Failed(f"RunInstances of {n} made {len(ids)}")
            settled = wait_running(raw, ids, timeout=600)
            made += n
            walls.append(wall)
            client_cpu.append(ccpu)
            settle.append(settled)
            server_cpu.append(t.cpu() - cpu0)
            log(
                f"    RunInstances x{n}: {wall:.3f} s (boto3 CPU {ccpu * 1000:.0f} ms), "
                f"batch running {settled:.2f} s later; {made} instances"
            )
    finally:
        raw.close()
    return {
        "batch": plan.batch,
        "call": summary(walls),
        "client_cpu": summary(client_cpu),
        "batch_running_after": summary(settle),
        "server_cpu_per_batch": summary(server_cpu),
    }


def describe(t: Target, plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    raw = t.raw()
    try:
        body, _, _ = raw.call("DescribeInstances")
        present = len(INSTANCE_ID_RE.findall(body))
        if present < plan.instances:
            raise Ec2Failed(f"DescribeInstances lists {present} instances, expected {plan.instances}")
        lat: list[float] = []
        cpu: list[float] = []
        t_end = time.perf_counter() + plan.describe_seconds
        while len(lat) < plan.describe_calls and (len(lat) < 10 or time.perf_counter() < t_end):
            body, elapsed, ccpu = raw.call("DescribeInstances")
            lat.append(elapsed)
            cpu.append(ccpu)
        size = len(body)
        log(
            f"    DescribeInstances ({present} instances, {size / 1024:.0f} KiB): "
            f"p50 {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms over {len(lat)} calls"
        )

        # The same answer through botocore: what a boto3 user waits for, and how much of it is the client.
        client = t.boto3()
        boto_lat: list[float] = []
        boto_cpu: list[float] = []
        for _ in range(plan.boto3_calls):
            c0, w0 = time.thread_time(), time.perf_counter()
            res = client.describe_instances()
            boto_lat.append(time.perf_counter() - w0)
            boto_cpu.append(time.thread_time() - c0)
            got = sum(len(r["Instances"]) for r in res["Reservations"])
            if got != present:
                raise Ec2Failed(f"boto3 DescribeInstances read {got} instances, expected {present}")
        log(
            f"    boto3 describe_instances(): p50 {pct(boto_lat, 0.5) * 1000:.0f} ms, of which client CPU "
            f"{statistics.median(boto_cpu) * 1000:.0f} ms"
        )

        walks: dict[str, Any] = {}
        for page_size in (1000, 100):
            times: list[float] = []
            pages = count = 0
            for _ in range(plan.walks):
                token: str | None = None
                pages = count = 0
                w0 = time.perf_counter()
                while True:
                    params: dict[str, Any] = {"MaxResults": page_size}
                    if token:
                        params["NextToken"] = token
                    body, _, _ = raw.call("DescribeInstances", params)
                    pages += 1
                    count += len(INSTANCE_ID_RE.findall(body))
                    m = NEXT_TOKEN_RE.search(body)
                    token = m.group(1).decode() if m else None
                    if not token:
                        break
                times.append(time.perf_counter() - w0)
            walks[str(page_size)] = {"pages": pages, "instances": count, **summary(times)}
            log(
                f"    walk MaxResults={page_size}: {pages} page(s), {count} instances, "
                f"median {statistics.median(times) * 1000:.0f} ms"
            )
        return {
            "instances": present,
            "answer_bytes": size,
            "raw": summary(lat),
            "raw_client_cpu": summary(cpu),
            "boto3": summary(boto_lat),
            "boto3_client_cpu": summary(boto_cpu),
            "walk": walks,
        }
    finally:
        raw.close()


def idle_cpu(t: Target, seconds: float) -> float:
    """Share of one core the server uses while nobody calls it (euca: its poll loops)."""
    c0, w0 = t.cpu(), time.perf_counter()
    time.sleep(seconds)
    return (t.cpu() - c0) / (time.perf_counter() - w0)


def time_to_running(
    t: Target,
    repeats: int,
    log: Callable[[str], None],
    *,
    image_id: str | None = None,
    instance_type: str = INSTANCE_TYPE,
    marker: str | None = None,
    interval: float = 0.02,
    timeout: float = 120,
    terminate: bool = False,
) -> dict[str, Any]:
    """RunInstances of one instance, then DescribeInstances of it every `interval` until running (and with
    `marker`, GetConsoleOutput until the console shows it)."""
    raw = t.raw()
    rows: list[dict[str, float]] = []
    try:
        for _ in range(repeats):
            params = {
                "ImageId": image_id or t.image_id,
                "MinCount": 1,
                "MaxCount": 1,
                "InstanceType": instance_type,
            }
            w0 = time.perf_counter()
            body, _, _ = raw.call("RunInstances", params)
            replied = time.perf_counter()
            iid = INSTANCE_ID_RE.findall(body)[0].decode()
            while True:
                body, _, _ = raw.call("DescribeInstances", ids_param([iid]))
                state = states_of(body).get(iid)
                if state == "running":
                    break
                if state not in ("pending", None):
                    raise Ec2Failed(f"{iid} went {state}")
                if time.perf_counter() - w0 > timeout:
                    raise Ec2Failed(f"{iid} not running after {timeout:.0f} s")
                time.sleep(interval)
            seen = time.perf_counter()
            row = {"call": replied - w0, "running": seen - w0}
            if t.tap is not None:
                # The log lines may reach the tap a few ms after the client saw the state.
                deadline = time.perf_counter() + 1.0
                while t.tap.event("clc_running", iid) is None and time.perf_counter() < deadline:
                    time.sleep(0.005)
                staging = t.tap.event("nc_staging", iid)
                booting = t.tap.event("nc_booting", iid)
                clc = t.tap.event("clc_running", iid)
                if staging and booting and clc:
                    row["nc_received"] = staging[0] - w0
                    row["nc_staged"] = float(booting[1].group("secs"))
                    row["booting_at"] = booting[0] - w0
                    row["polls"] = clc[0] - booting[0]  # NC booting -> CC poll -> CLC poll
                    row["clc_running_at"] = clc[0] - w0
            if marker is not None:
                while True:
                    out, _, _ = raw.call("GetConsoleOutput", {"InstanceId": iid})
                    m = re.search(rb"<output>([^<]*)</output>", out)
                    if m:
                        import base64

                        if marker.encode() in base64.b64decode(m.group(1)):
                            break
                    if time.perf_counter() - w0 > timeout:
                        raise Ec2Failed(f"no boot marker on {iid}'s console after {timeout:.0f} s")
                    time.sleep(0.25)
                row["marker"] = time.perf_counter() - w0
            rows.append(row)
            extra = ""
            if "polls" in row:
                extra = (
                    f" = call {row['call'] * 1000:.0f} ms, NC staging {row['nc_staged'] * 1000:.0f} ms"
                    f" (from the call's start: booting at {row['booting_at'] * 1000:.0f} ms), polls "
                    f"{row['polls'] * 1000:.0f} ms, client sees it {(row['running'] - row['clc_running_at']) * 1000:.0f} ms later"
                )
            if "marker" in row:
                extra += f"; boot marker at {row['marker']:.2f} s"
            log(f"    {iid} running after {row['running'] * 1000:.0f} ms{extra}")
            if terminate:
                # Gone before the next one: a real node has room for few instances.
                raw.call("TerminateInstances", ids_param([iid]))
                deadline = time.perf_counter() + timeout
                while states_of(raw.call("DescribeInstances", ids_param([iid]))[0]).get(iid) != "terminated":
                    if time.perf_counter() > deadline:
                        raise Ec2Failed(f"{iid} not terminated after {timeout:.0f} s")
                    time.sleep(0.2)
    finally:
        raw.close()
    keys = sorted({k for r in rows for k in r})
    return {k: summary([r[k] for r in rows if k in r]) for k in keys}


def terminate_all(t: Target, timeout: float = 300) -> None:
    """Terminate every instance and wait until they are all terminated (a real guest's domain is gone)."""
    raw = t.raw()
    try:
        body, _, _ = raw.call("DescribeInstances")
        alive = [i for i, s in states_of(body).items() if s != "terminated"]
        if alive:
            raw.call("TerminateInstances", ids_param(alive))
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(1)
            body, _, _ = raw.call("DescribeInstances", ids_param(alive))
            alive = [i for i, s in states_of(body).items() if s != "terminated"]
        if alive:
            raise Ec2Failed(f"still not terminated after {timeout:.0f} s: {alive}")
    finally:
        raw.close()


# ---------------------------------------------------------------------------------------------------------
# The real guest (optional)


def real_guest_unavailable() -> str | None:
    try:
        import libvirt
    except ImportError:
        return "libvirt-python is not installed"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed"
    libvirt.registerErrorHandler(lambda *a: None, None)
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as e:
        return f"qemu:///system does not answer ({e}); run scripts/setup-host"
    cache = Path.home() / ".cache" / "euca" / "bootimage"
    if not any(cache.glob("*/root.img")):
        return f"no boot image in {cache}; run `euca build-boot-image`"
    return None


def real_guest(
    work: Path, port: int, poll: float, repeats: int, log: Callable[[str], None]
) -> dict[str, Any]:
    t = start_euca(
        work,
        "euca-qemu",
        port,
        poll_interval=poll,
        capacity=0,
        libvirt_uri="qemu:///system",
        default_image=True,
        ready_timeout=900,
    )
    try:
        state = json.loads((t.workdir / "data" / "default-image.json").read_text())
        t.image_id = state.get("machine_id") or state.get("machine") or state["emi"]
        log(f"  real guest: default image {t.image_id} on qemu:///system; warm-up run (fills the NC's cache)")
        time_to_running(t, 1, log, instance_type="m1.small", marker=BOOT_MARKER, timeout=600, terminate=True)
        log("  real guest: measured runs")
        result = time_to_running(
            t, repeats, log, instance_type="m1.small", marker=BOOT_MARKER, timeout=600, terminate=True
        )
        result["settings"] = t.info["settings"]
        return result
    finally:
        try:
            terminate_all(t)
        finally:
            t.stop()


# ---------------------------------------------------------------------------------------------------------
# Running it


def fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:,.1f} ms" if v < 1 else f"{v:,.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 instances, few repeats (about a minute)")
    ap.add_argument("--targets", default="euca,moto", help="euca,moto (default); none: only --real-guest")
    ap.add_argument("--instances", type=int, help="instances present for DescribeInstances (default 1000)")
    ap.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="set euca's clc.poll_interval and cc.poll_interval (default: euca's own, 5 s and 6 s)",
    )
    ap.add_argument("--euca-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--store",
        default="sqlite",
        help="euca's state store: sqlite, postgresql, or sqlite,postgresql (euca and euca-pg, one after the other)",
    )
    ap.add_argument(
        "--real-guest",
        action="store_true",
        help="also time a real QEMU (TCG) guest on qemu:///system (needs libvirtd and the boot image)",
    )
    ap.add_argument("--profile-euca", action="store_true", help="py-spy record euca during the workloads")
    ap.add_argument("--base-port", type=int, default=19260)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = ap.parse_args()

    plan = QUICK if args.quick else FULL
    if args.instances:
        plan = Plan(**{**plan.__dict__, "instances": args.instances})
    targets = [x.strip() for x in args.targets.split(",") if x.strip() and x.strip() != "none"]
    stores = [x.strip() for x in args.store.replace("both", "sqlite,postgresql").split(",") if x.strip()]
    if set(stores) - {"sqlite", "postgresql"} or not stores:
        raise SystemExit(f"--store: sqlite, postgresql or both, not {args.store!r}")
    if "euca" in targets:
        at = targets.index("euca")
        targets[at : at + 1] = ["euca" if s == "sqlite" else "euca-pg" for s in stores]
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="euca-cp-bench-"))

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        commit = subprocess.run(
            ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    report: dict[str, Any] = {
        "time": stamp,
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load": os.getloadavg(),
        },
        "plan": plan.__dict__,
        "poll_interval": args.poll_interval,
        "targets": {},
    }
    started: list[Target] = []
    profiler: subprocess.Popen[bytes] | None = None
    pg_cluster = contextlib.ExitStack()
    try:
        # All up first (an idle one costs nearly nothing), then the workloads on one after the other.
        for i, name in enumerate(targets):
            if name in ("euca", "euca-pg"):
                capacity = plan.instances + plan.ttr_repeats + 20
                store_sets = []
                if name == "euca-pg":
                    cluster = pg_cluster.enter_context(postgres.cluster(fast=False))
                    store_sets = [f"store.url={cluster.create_database('bench')}"]
                t = start_euca(
                    work,
                    name,
                    args.base_port + 20 * i,
                    poll_interval=args.poll_interval,
                    capacity=capacity,
                    extra_sets=[*store_sets, *args.euca_set],
                )
                t.info["store"] = "postgresql" if name == "euca-pg" else "sqlite"
                started.append(t)
                t.image_id = install_tiny_image(t)
                log(
                    f"{name} up ({t.info['store']}): {t.endpoint}, image {t.image_id}, NC on test:///default, "
                    f"clc.poll_interval={t.info['poll_intervals']['clc']} s, "
                    f"cc.poll_interval={t.info['poll_intervals']['cc']} s"
                )
            elif name == "moto":
                t = start_moto(work, args.base_port + 10 + 20 * i)
                started.append(t)
                log(f"moto {t.info.get('version', '')} up: {t.endpoint}, image {t.image_id}")
            else:
                raise SystemExit(f"unknown target {name!r}")
        for t in started:
            res: dict[str, Any] = {"endpoint": t.endpoint, "image": t.image_id, **t.info}
            report["targets"][t.name] = res
            log(f"\n== {t.name}")
            if args.profile_euca and t.name.startswith("euca") and shutil.which("py-spy") and t.proc:
                out = RESULTS_DIR / f"control-plane-{stamp}-euca.pyspy"
                profiler = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(t.proc.pid),
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "--nonblocking",
                        "-r",
                        "200",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                res["profile"] = str(out)
            try:
                log(f"  run-{plan.batch}: RunInstances of {plan.batch}, until {plan.instances} exist")
                res["run"] = run_batches(t, plan, log)
                log(f"  describe-{plan.instances}")
                res["describe"] = describe(t, plan, log)
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(timeout=60)
                    profiler = None
                res["idle_cpu"] = idle_cpu(t, 5.0)
                log(f"  idle with {plan.instances} instances: {res['idle_cpu'] * 100:.1f}% of a core")
                log("  time-to-running (one instance, cached image)")
                res["time_to_running"] = time_to_running(t, plan.ttr_repeats, log)
            except Exception as e:  # one target failing still reports the other
                res["error"] = f"{type(e).__name__}: {e}"
                log(f"  FAILED: {res['error']}")
            finally:
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait(timeout=60)
                    profiler = None
        for t in started:
            t.stop()
        if args.real_guest:
            why = real_guest_unavailable()
            if why:
                log(f"\nreal guest skipped: {why}")
                report["real_guest"] = {"skipped": why}
            else:
                log("\n== euca with a real QEMU guest")
                try:
                    report["real_guest"] = real_guest(
                        work, args.base_port + 5, args.poll_interval, plan.guest_repeats, log
                    )
                except Exception as e:
                    report["real_guest"] = {"error": f"{type(e).__name__}: {e}"}
                    log(f"  FAILED: {report['real_guest']['error']}")
    finally:
        if profiler is not None:
            profiler.kill()
        for t in started:
            t.stop()
        pg_cluster.close()
        out = RESULTS_DIR / f"control-plane-{stamp}.json"
        out.write_text(json.dumps(report, indent=2, default=str))
        if args.keep:
            log(f"\nwork directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print_table(report, plan)
    log(f"\nresults: {out}")
    return 0 if all("error" not in r for r in report["targets"].values()) else 1


def print_table(report: dict[str, Any], plan: Plan) -> None:
    e = report["targets"].get("euca", {})
    m = report["targets"].get("moto", {})

    def get(r: dict[str, Any], *path: str) -> float | None:
        cur: Any = r
        for p in path:
            if not isinstance(cur, dict) or p not in cur:
                return None
            cur = cur[p]
        return float(cur)

    n = plan.instances
    rows = [
        (f"RunInstances x{plan.batch}, one call (median)", ("run", "call", "median")),
        (f"DescribeInstances, {n} present, p50", ("describe", "raw", "p50")),
        (f"DescribeInstances, {n} present, p99", ("describe", "raw", "p99")),
        (f"DescribeInstances via boto3 (p50, incl. parsing {n})", ("describe", "boto3", "p50")),
        (f"walk MaxResults=1000 ({n} instances, median)", ("describe", "walk", "1000", "median")),
        (f"walk MaxResults=100 ({n} instances, median)", ("describe", "walk", "100", "median")),
        ("time to running, 1 instance (median)", ("time_to_running", "running", "median")),
    ]
    pg = report["targets"].get("euca-pg")
    if pg is not None:
        print(
            "\n| workload | euca on SQLite | euca on PostgreSQL | PostgreSQL / SQLite time |\n|---|---:|---:|---:|"
        )
        for label, path in rows:
            sv, pv = get(e, *path), get(pg, *path)
            print(f"| {label} | {fmt_s(sv)} | {fmt_s(pv)} | {f'{pv / sv:.2f}' if sv and pv else '-'} |")
        if not e:
            e = pg
    print("\n| workload | euca | moto | euca/moto speed |\n|---|---:|---:|---:|")
    for label, path in rows:
        ev, mv = get(e, *path), get(m, *path)
        ratio = f"{mv / ev:.2f}" if ev and mv else "-"
        if path[0] == "time_to_running":
            ratio = "- (moto runs nothing)"
        print(f"| {label} | {fmt_s(ev)} | {fmt_s(mv)} | {ratio} |")
    ttr = e.get("time_to_running", {})
    if "polls" in ttr:
        print(
            f"\neuca time to running (test driver, medians): RunInstances call {fmt_s(ttr['call']['median'])}, "
            f"NC staging {fmt_s(ttr['nc_staged']['median'])}, NC booting -> the CLC has it running (the CC's "
            f"and the CLC's follow-up polls) {fmt_s(ttr['polls']['median'])}; poll intervals "
            f"clc {e['poll_intervals']['clc']} s, cc {e['poll_intervals']['cc']} s"
        )
    if "describe" in e and "describe" in m:
        print(
            f"client overhead: raw DescribeInstances client CPU p50 euca "
            f"{fmt_s(e['describe']['raw_client_cpu']['p50'])} / moto {fmt_s(m['describe']['raw_client_cpu']['p50'])}; "
            f"boto3 parsing adds ~{fmt_s(e['describe']['boto3_client_cpu']['median'])} of client CPU per call"
        )
    if "run" in e:
        print(
            f"euca: batch of {plan.batch} running {fmt_s(e['run']['batch_running_after']['median'])} after the call "
            f"(median); idle CPU with {n} instances {e.get('idle_cpu', 0) * 100:.1f}% of a core"
        )
    g = report.get("real_guest")
    if g and "running" in g:
        print(
            f"real QEMU (TCG) guest: running after {fmt_s(g['running']['median'])}, boot marker after "
            f"{fmt_s(g['marker']['median'])} (median of {g['running']['n']})"
        )
    elif g:
        print(f"real guest: {g.get('skipped') or g.get('error')}")


if __name__ == "__main__":
    sys.exit(main())
