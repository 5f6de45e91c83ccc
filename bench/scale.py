#!/usr/bin/env python3
"""Scale benchmark (issue 14, "1,000 nodes"): a CLC and a CC with N simulated nodes and 10 instances a node.

    python bench/scale.py --quick        # 100 nodes, 1,000 instances: a couple of minutes
    python bench/scale.py                # 100 nodes / 1,000 instances, then 1,000 nodes / 10,000 instances
    python bench/scale.py --sizes 300    # any node counts, comma-separated

For each size, in a fresh work directory:

  cloud     `euca --role clc,walrus` (the CLC, its own process), `euca admin register-cluster` and `euca --role
            cc --join TOKEN` (the CC, its own process, VM network off: no bridge), and N simulated nodes in
            --node-procs processes (tests/helpers/sim_nodes.py: the real NC code, each node its own TLS
            listener and component certificate, libvirt's test driver per node, sparse-file disks), registered
            with the store call `euca admin register-node` makes (one transaction for all N).
  launch    RunInstances of 100 (t1.micro, a 1 MiB bundled image) through the EC2 API until 10 an node exist;
            after each call the bench polls DescribeInstances of the batch until all are running: "batch of
            100 to running" is from the call's start to that.
  poll      the CC's regular poll round over every node (its "poll round ... seconds=" log line): the rounds
            after the launches, median and max. Goal: under 6 s (Eucalyptus's default period).
  describe  DescribeInstances of everything (all instances in one answer) with wrk, one connection, a request
            SigV4-signed by the bench (replayed: the signature holds for its date's 15 minutes): p50, p99.
            Goal: p50 under 1 s.
  idle      the CLC's and CC's CPU (percent of one core) over --idle-seconds with nothing asked, and their RSS.

Results go to bench/results/scale-<time>.json; the table says how each figure grows from the smallest size to
the largest. Everything started is stopped by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from control_plane import EC2_VERSION, Ec2Failed, RawEc2, ids_param, pct, process_cpu, states_of
from procs import descendants, free_port

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SIM_NODES = REPO / "tests" / "helpers" / "sim_nodes.py"
HOST = "127.0.0.1"
CLUSTER = "sim"
INSTANCE_TYPE = "t1.micro"  # 1 core, 256 MiB, 5 GiB
PER_NODE = 10  # instances a node
NODE_CORES = 12  # what each simulated node offers (t1.micro slots)
BATCH = 100


def euca_command() -> list[str]:
    script = Path(sys.executable).parent / "euca"
    return [str(script)] if script.exists() else [shutil.which("euca") or "euca"]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def cpu(self) -> float:
        return process_cpu(self.popen.pid)

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def wait_for(self, pattern: str, timeout: float, count: int = 1) -> list[re.Match[str]]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = list(rx.finditer(self.log.read_text(errors="replace")))
            if len(found) >= count:
                return found
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name}: no {pattern!r} x{count} (exit {self.popen.poll()}, {len(found)} seen):\n"
                    + "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        kids = descendants(self.popen.pid)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    out = open(log, "wb")
    popen = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    return Proc(name, popen, log)


def eucarc(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"export (\w+)=(\S*)$", line.strip())
        if m and "$" not in m.group(2):
            out[m.group(1)] = m.group(2)
    return out


@dataclass
class Cloud:
    work: Path
    nodes: int
    clc_port: int
    procs: list[Proc] = field(default_factory=list)
    clc: Proc | None = None
    cc: Proc | None = None
    raw: RawEc2 | None = None
    creds: dict[str, str] = field(default_factory=dict)
    image_id: str = ""

    @property
    def clc_data(self) -> Path:
        return self.work / "clc"

    def admin(self, *args: str) -> str:
        cmd = [*euca_command(), "--data-dir", str(self.clc_data), "--set", f"clc.listen.port={self.clc_port}"]
        done = subprocess.run([*cmd, "admin", *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"euca admin {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
        return done.stdout

    def stop(self) -> None:
        if self.raw is not None:
            self.raw.close()
        for p in reversed(self.procs):
            p.stop()


def register_nodes(clc_data: Path, count: int, base_port: int) -> float:
    """The nodes in clc_nodes through topology.register_node, the call `euca admin register-node` makes, all
    in one transaction (1,000 CLI runs would take minutes of Python start-up). Returns seconds."""
    from euca.core.store import open_store
    from euca.roles.clc.schema import migrate
    from euca.roles.clc.topology import records as topology

    t0 = time.perf_counter()
    from euca.core.config import load_config

    config = load_config(None, {"data_dir": str(clc_data)})
    store = open_store(config.store.url, config.data_path, config.store.synchronous)
    try:
        migrate(store)

        def add(tx: Any) -> None:
            for i in range(count):
                url = topology.service_url(HOST, base_port + i)
                topology.register_node(tx, f"sim-{i:04d}", CLUSTER, url)

        store.write_sync(add, durable=True)
    finally:
        store.close()
    return time.perf_counter() - t0


def install_image(cloud: Cloud) -> str:
    image = cloud.work / "tiny.img"
    image.write_bytes(os.urandom(1024 * 1024))
    rc = cloud.clc_data / "credentials" / "eucalyptus" / "admin" / "eucarc"
    euca = " ".join(euca_command())
    cmd = f". {rc} && {euca} install-image -i {image} -b bench-images -n bench-tiny --no-progress"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    m = re.search(r"IMAGE\s+(emi-[0-9a-f]+)", p.stdout)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"euca install-image failed ({p.returncode}): {(p.stderr or p.stdout)[-500:]}")
    return m.group(1)


def start_cloud(work: Path, nodes: int, args: argparse.Namespace, say: Any) -> Cloud:
    """The CLC, the CC and the simulated nodes, registered and up, an image installed; stopped on failure."""
    cloud = Cloud(work, nodes, args.base_port)
    try:
        _start_cloud(cloud, args, say)
    except BaseException:
        cloud.stop()
        raise
    return cloud


def _start_cloud(cloud: Cloud, args: argparse.Namespace, say: Any) -> None:
    work, nodes = cloud.work, cloud.nodes
    clc_port = args.base_port
    cc_port = clc_port + 1
    node_base = clc_port + 10
    for port in (clc_port, cc_port):
        if not free_port(port):
            raise RuntimeError(f"port {port} is busy")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    clc_args = [
        *euca_command(),
        "--role",
        "clc,walrus",
        "--data-dir",
        str(cloud.clc_data),
        "--host",
        HOST,
        "--set",
        f"clc.listen.port={clc_port}",
        "--set",
        f"walrus.listen.port={clc_port}",
        "--set",
        "default_image=false",
        "--set",
        "clc.public_addresses=10.99.0.0/16",
    ]
    cloud.clc = start("clc", clc_args, work / "clc.log", env)
    cloud.procs.append(cloud.clc)
    cloud.clc.wait_for("cloud ready", 120)
    out = cloud.admin(
        "register-cluster", CLUSTER, "--host", HOST, "--port", str(cc_port), "--subnet", "10.64.0.0/16"
    )
    token = next(line.split("\t", 1)[1].strip() for line in out.splitlines() if line.startswith("JOINTOKEN"))
    cc_args = [
        *euca_command(),
        "--role",
        "cc",
        "--join",
        token,
        "--data-dir",
        str(work / "cc"),
        "--host",
        HOST,
        "--set",
        f"cc.listen.port={cc_port}",
        "--set",
        "cc.bridge=",
        "--set",
        "cc.subnet=10.64.0.0/16",
    ]
    cloud.cc = start("cc", cc_args, work / "cc.log", env)
    cloud.procs.append(cloud.cc)
    cloud.cc.wait_for("cloud ready", 120)
    say(f"  CLC and CC up in {time.perf_counter() - t0:.1f} s")
    # The simulated nodes, split over --node-procs processes.
    t1 = time.perf_counter()
    procs = max(1, min(args.node_procs, nodes))
    share = -(-nodes // procs)
    sims: list[Proc] = []
    for k in range(procs):
        first, count = k * share, min(share, nodes - k * share)
        if count <= 0:
            break
        argv = [
            sys.executable,
            str(SIM_NODES),
            "--clc-data",
            str(cloud.clc_data),
            "--cluster",
            CLUSTER,
            "--first",
            str(first),
            "--count",
            str(count),
            "--base-port",
            str(node_base + first),
            "--work",
            str(args.node_dir(work) / f"proc{k}"),
            "--cores",
            str(NODE_CORES),
        ]
        sims.append(start(f"nodes{k}", argv, work / f"nodes{k}.log", env))
    cloud.procs[1:1] = sims  # stopped after the CC
    for sim in sims:
        sim.wait_for(r"SIMNODES READY", 600)
    say(f"  {nodes} simulated nodes listening in {time.perf_counter() - t1:.1f} s ({len(sims)} processes)")
    secs = register_nodes(cloud.clc_data, nodes, node_base)
    say(f"  {nodes} nodes registered in {secs:.2f} s")
    t2 = time.perf_counter()
    cloud.cc.wait_for(r"node up name=sim-", 600, count=nodes)
    say(f"  all {nodes} nodes up at the CC {time.perf_counter() - t2:.1f} s after registration")
    rc = eucarc(cloud.clc_data / "credentials" / "eucalyptus" / "admin" / "eucarc")
    cloud.creds = rc
    cloud.raw = RawEc2(
        f"http://{HOST}:{clc_port}/services/compute",
        rc["AWS_ACCESS_KEY_ID"],
        rc["AWS_SECRET_ACCESS_KEY"],
        rc.get("AWS_DEFAULT_REGION", "eucalyptus"),
    )
    cloud.image_id = install_image(cloud)
    # The CLC learns capacity from its poll of the CC: wait until the zone offers room for everything.
    wait_capacity(cloud, nodes * PER_NODE)


def wait_capacity(cloud: Cloud, wanted: int, timeout: float = 120) -> None:
    """Until the zone's verbose row for t1.micro (Eucalyptus's "free / max") offers `wanted`."""
    import xml.etree.ElementTree as ET

    assert cloud.raw is not None
    deadline = time.monotonic() + timeout
    free = -1
    while True:
        body, _, _ = cloud.raw.call("DescribeAvailabilityZones", {"ZoneName.1": "verbose"})
        for item in ET.fromstring(body).iter():
            if item.tag.endswith("item"):
                fields = {child.tag.split("}")[-1]: child.text or "" for child in item}
                if fields.get("zoneName") == f"|- {INSTANCE_TYPE}":
                    free = int(fields.get("zoneState", "-1 /").split("/")[0])
        if free >= wanted:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the zone offers {free} {INSTANCE_TYPE}, not {wanted}")
        time.sleep(0.5)


def launch(cloud: Cloud, total: int, say: Any) -> dict[str, Any]:
    """RunInstances of BATCH until `total` exist; each batch waited for until running."""
    assert cloud.raw is not None
    calls: list[float] = []
    to_running: list[float] = []
    made = 0
    t0 = time.perf_counter()
    while made < total:
        n = min(BATCH, total - made)
        w0 = time.perf_counter()
        body, _, _ = cloud.raw.call(
            "RunInstances",
            {
                "ImageId": cloud.image_id,
                "MinCount": str(n),
                "MaxCount": str(n),
                "InstanceType": INSTANCE_TYPE,
            },
        )
        call = time.perf_counter() - w0
        ids = list(states_of(body))
        if len(ids) != n:
            raise Ec2Failed(f"RunInstances of {n} made {len(ids)}")
        while True:
            states = states_of(cloud.raw.call("DescribeInstances", ids_param(ids))[0])
            if len(states) == n and all(s == "running" for s in states.values()):
                break
            bad = {i: s for i, s in states.items() if s not in ("pending", "running")}
            if bad or time.perf_counter() - w0 > 300:
                raise Ec2Failed(f"batch not running: {dict(list(states.items())[:5])}")
            time.sleep(0.05)
        made += n
        calls.append(call)
        to_running.append(time.perf_counter() - w0)
        if made % (BATCH * 10) == 0 or made == total:
            say(
                f"    {made} instances: last batch call {call:.2f} s, to running {to_running[-1]:.2f} s "
                f"(median so far {statistics.median(to_running):.2f} s)"
            )
    return {
        "batches": len(calls),
        "wall_s": time.perf_counter() - t0,
        "call": summarise(calls),
        "to_running": summarise(to_running),
        # The last tenth: the batches launched into a nearly full cloud.
        "to_running_last_tenth": summarise(to_running[-max(1, len(to_running) // 10) :]),
    }


def summarise(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": pct(values, 0.5),
        "p90": pct(values, 0.9),
        "max": max(values),
        "min": min(values),
    }


POLL_RE = re.compile(r"poll round nodes=(\d+) up=(\d+) instances=(\d+) seconds=([0-9.]+)")


def poll_rounds(cloud: Cloud, nodes: int, instances: int, rounds: int, say: Any) -> dict[str, Any]:
    """The CC's regular rounds once every node is up and every instance known: `rounds` of them."""
    assert cloud.cc is not None

    def full() -> list[float]:
        out = []
        for m in POLL_RE.finditer(cloud.cc.log.read_text(errors="replace")):
            if int(m.group(1)) == nodes and int(m.group(2)) == nodes and int(m.group(3)) >= instances:
                out.append(float(m.group(4)))
        return out

    before = len(full())
    deadline = time.monotonic() + rounds * 6.0 * 3 + 60
    while len(full()) < before + rounds:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    seconds = full()[before:]
    if not seconds:
        raise RuntimeError("no full poll round logged by the CC")
    say(f"  CC poll rounds over {nodes} nodes: {', '.join(f'{s:.2f}' for s in seconds)} s")
    return {"rounds": seconds, "median_s": statistics.median(seconds), "max_s": max(seconds)}


def signed_describe(cloud: Cloud) -> tuple[str, dict[str, str]]:
    """A DescribeInstances request body and its SigV4 headers (botocore's signer, as the other benches)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = urlencode({"Action": "DescribeInstances", "Version": EC2_VERSION})
    url = f"http://{HOST}:{cloud.clc_port}/services/compute"
    req = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    rc = cloud.creds
    creds = Credentials(rc["AWS_ACCESS_KEY_ID"], rc["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(creds, "ec2", rc.get("AWS_DEFAULT_REGION", "eucalyptus")).add_auth(req)
    return body, {k: v for k, v in req.headers.items() if k.lower() != "host"}


def lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


WRK_LATENCY_RE = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s)\s*$", re.M)
UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def describe(cloud: Cloud, instances: int, seconds: float, say: Any) -> dict[str, Any]:
    """DescribeInstances of every instance with wrk (1 thread, 1 connection, --latency)."""
    assert cloud.raw is not None
    body, _, _ = cloud.raw.call("DescribeInstances")
    present = len(states_of(body))
    if present < instances:
        raise Ec2Failed(f"DescribeInstances lists {present}, expected {instances}")
    form, headers = signed_describe(cloud)
    script = cloud.work / "describe.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(form)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    url = f"http://{HOST}:{cloud.clc_port}/services/compute"
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    cpu0 = cloud.clc.cpu() if cloud.clc else 0.0
    done = subprocess.run(
        [wrk, "-t1", "-c1", f"-d{seconds:.0f}s", "--timeout", "30s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    out = done.stdout
    requests = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {f"p{q}": float(v) * UNIT[u] for q, v, u in WRK_LATENCY_RE.findall(out)}
    n = int(requests.group(1)) if requests else 0
    if done.returncode != 0 or not latency or n == 0 or non2xx:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    clc_cpu = (cloud.clc.cpu() - cpu0) if cloud.clc else 0.0
    say(
        f"  DescribeInstances of {present}: p50 {latency['p50']:.3f} s, p99 {latency['p99']:.3f} s "
        f"({n} requests, {len(body) / 1e6:.1f} MB each, CLC CPU {clc_cpu / n * 1000:.0f} ms a request)"
    )
    return {
        "instances": present,
        "bytes": len(body),
        "requests": n,
        **latency,
        "clc_cpu_per_request_s": clc_cpu / n,
        "wrk": out,
    }


def idle(cloud: Cloud, seconds: float, say: Any) -> dict[str, Any]:
    assert cloud.clc is not None and cloud.cc is not None
    sims = [p for p in cloud.procs if p.name.startswith("nodes")]
    c0 = {p.name: p.cpu() for p in [cloud.clc, cloud.cc, *sims]}
    t0 = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    cpu = {p.name: (p.cpu() - c0[p.name]) / elapsed * 100 for p in [cloud.clc, cloud.cc, *sims]}
    out = {
        "seconds": elapsed,
        "clc_cpu_pct": cpu["clc"],
        "cc_cpu_pct": cpu["cc"],
        "nodes_cpu_pct": sum(cpu[p.name] for p in sims),
        "clc_rss_mb": cloud.clc.rss_mb(),
        "cc_rss_mb": cloud.cc.rss_mb(),
        "nodes_rss_mb": sum(p.rss_mb() for p in sims),
    }
    say(
        f"  idle {elapsed:.0f} s: CLC {out['clc_cpu_pct']:.1f}% of a core, RSS {out['clc_rss_mb']:.0f} MB; "
        f"CC {out['cc_cpu_pct']:.1f}%, RSS {out['cc_rss_mb']:.0f} MB; simulated nodes "
        f"{out['nodes_cpu_pct']:.1f}%, RSS {out['nodes_rss_mb']:.0f} MB"
    )
    return out


@contextlib.contextmanager
def profiled(args: argparse.Namespace, proc: Proc | None, name: str) -> Iterator[None]:
    """py-spy (`pip install py-spy`) records `proc` meanwhile into --profile DIR/<name>.txt (collapsed
    stacks, for flamegraph.pl or speedscope)."""
    if not args.profile or proc is None:
        yield
        return
    out = Path(args.profile) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        ["py-spy", "record", "-p", str(proc.popen.pid), "-f", "raw", "-o", str(out), "-r", "50"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def run_size(nodes: int, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    instances = nodes * PER_NODE
    work = Path(tempfile.mkdtemp(prefix=f"euca-scale-{nodes}-", dir=args.workdir))
    say(f"== {nodes} nodes, {instances} instances (work {work})")
    result: dict[str, Any] = {"nodes": nodes, "instances": instances, "load_start": os.getloadavg()}
    cloud = start_cloud(work, nodes, args, say)
    try:
        result["idle_empty"] = idle(cloud, args.idle_seconds, say)
        result["launch"] = launch(cloud, instances, say)
        with profiled(args, cloud.cc, f"cc-poll-{nodes}"):
            result["poll"] = poll_rounds(cloud, nodes, instances, args.rounds, say)
        with profiled(args, cloud.clc, f"clc-describe-{nodes}"):
            result["describe"] = describe(cloud, instances, args.describe_seconds, say)
        result["idle"] = idle(cloud, args.idle_seconds, say)
        result["load_end"] = os.getloadavg()
    finally:
        cloud.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(args.node_dir(work), ignore_errors=True)
    return result


def growth(results: list[dict[str, Any]]) -> list[tuple[str, list[str], str]]:
    rows: list[tuple[str, Any, str]] = [
        ("CC poll round, median (goal < 6 s)", lambda r: r["poll"]["median_s"], "s"),
        ("CC poll round, max", lambda r: r["poll"]["max_s"], "s"),
        ("DescribeInstances of all, p50 (goal < 1 s)", lambda r: r["describe"]["p50"], "s"),
        ("DescribeInstances of all, p99", lambda r: r["describe"]["p99"], "s"),
        ("batch of 100 to running, median (goal < 1 s)", lambda r: r["launch"]["to_running"]["p50"], "s"),
        ("batch of 100 to running, p90", lambda r: r["launch"]["to_running"]["p90"], "s"),
        ("batch of 100, last tenth, median", lambda r: r["launch"]["to_running_last_tenth"]["p50"], "s"),
        ("RunInstances x100 call, median", lambda r: r["launch"]["call"]["p50"], "s"),
        ("CLC idle CPU (% of a core)", lambda r: r["idle"]["clc_cpu_pct"], "%"),
        ("CC idle CPU (% of a core)", lambda r: r["idle"]["cc_cpu_pct"], "%"),
        ("CLC RSS", lambda r: r["idle"]["clc_rss_mb"], "MB"),
        ("CC RSS", lambda r: r["idle"]["cc_rss_mb"], "MB"),
        ("simulated nodes' idle CPU", lambda r: r["idle"]["nodes_cpu_pct"], "%"),
        ("simulated nodes' RSS", lambda r: r["idle"]["nodes_rss_mb"], "MB"),
    ]
    table = []
    for label, get, unit in rows:
        values = [get(r) for r in results]
        grow = f"x{values[-1] / values[0]:.1f}" if len(values) > 1 and values[0] else ""
        table.append((label, [f"{v:.3f} {unit}" if unit == "s" else f"{v:.1f} {unit}" for v in values], grow))
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 nodes, 1,000 instances, short idle/describe")
    p.add_argument("--sizes", default="", help="node counts, comma-separated (default 100,1000)")
    p.add_argument("--node-procs", type=int, default=2, help="processes hosting the simulated nodes")
    p.add_argument("--base-port", type=int, default=19400, help="CLC; CC +1; nodes from +10")
    p.add_argument("--idle-seconds", type=float, default=0)
    p.add_argument("--describe-seconds", type=float, default=0)
    p.add_argument("--rounds", type=int, default=0, help="CC poll rounds to time")
    p.add_argument("--workdir", default=None, help="where the work directories go (default: the temp dir)")
    p.add_argument("--keep", action="store_true")
    p.add_argument(
        "--profile", default="", help="py-spy the CC's poll rounds and the CLC's describes into DIR"
    )
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([100] if args.quick else [100, 1000])
    args.idle_seconds = args.idle_seconds or (10 if args.quick else 30)
    args.describe_seconds = args.describe_seconds or (10 if args.quick else 30)
    args.rounds = args.rounds or (2 if args.quick else 4)
    # The simulated nodes' files (instance.json, image caches) on tmpfs: each real node has a disk of its own,
    # and a thousand nodes' fsyncs on one virtual disk would measure that disk.
    shm = Path("/dev/shm")
    args.node_dir = lambda work: (shm / f"{work.name}-nodes") if shm.is_dir() else (work / "nodes")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = RESULTS_DIR / f"scale-{stamp}.json"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    def say(msg: str) -> None:
        print(msg, flush=True)

    say(f"scale bench, commit {commit}, sizes {sizes}, load {os.getloadavg()}")
    results = []
    for nodes in sizes:
        results.append(run_size(nodes, args, say))
        out_path.write_text(json.dumps({"commit": commit, "sizes": results}, indent=1))
    say("")
    heads = " | ".join(f"{r['nodes']} nodes / {r['instances']} inst." for r in results)
    say(f"| figure | {heads} | growth |")
    say(f"|---|{'---:|' * len(results)}---:|")
    for label, values, grow in growth(results):
        say(f"| {label} | {' | '.join(values)} | {grow} |")
    loads = [f"{r['load_start'][0]:.1f}-{r.get('load_end', r['load_start'])[0]:.1f}" for r in results]
    say(f"load average (1 min) at start-end of each size: {', '.join(loads)}; results {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
