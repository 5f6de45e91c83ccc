#!/usr/bin/env python3
"""Network API benchmark (issue 9): euca against moto's EC2 (`moto_server`) in the same run, same boto3 calls,
and the time from a security-group change to its enforcement in a real rule set (euca only).

    python bench/network.py [--quick] [--targets euca,moto] [--keep]

  describe-groups   500 security groups of 10 ingress rules each (5 CIDR rules, 5 port ranges), then
                    DescribeSecurityGroups of all of them, repeated; wall time per call (boto3, parsing
                    included), median and p99.
  addresses         AllocateAddress, AssociateAddress (to a running instance), DisassociateAddress,
                    ReleaseAddress in turn, repeated; latency of each call, median and p99.
  authorize->rule   euca only (moto enforces nothing): `euca --role all` whose CC owns a bridge in a network
                    namespace the bench creates (so its iptables rules are real), 100 instances running on
                    libvirt's test driver, all in one security group. Then AuthorizeSecurityGroupIngress of a
                    new port; the time from the call's return until (a) `iptables-save` in that namespace, polled
                    every 5 ms, shows the port's ACCEPT in the group's chain, and (b) a probe admitted: a client
                    namespace routed through the CC's knocks on that port of a veth "guest" on the bridge at an
                    instance's private address every 5 ms from before the call (goal < 1 s).

Ports from --base-port (default 19360: euca 19360-19362, moto 19370). Every process started is stopped by pid,
the namespace removed. Results: bench/results/network-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from control_plane import (
    Target,
    install_tiny_image,
    start_euca,
    start_moto,
    summary,
    terminate_all,
    wait_running,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
BRIDGE = "euca-br0"
SUBNET = "10.64.0.0/16"
GATEWAY = "10.64.0.1/16"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def rules_of(n: int) -> list[dict[str, Any]]:
    """10 ingress rules: 5 CIDRs on tcp/22, and 5 port ranges from anywhere."""
    cidrs = [
        {
            "IpProtocol": "tcp",
            "FromPort": 22,
            "ToPort": 22,
            "IpRanges": [{"CidrIp": f"10.{n % 250}.{k}.0/24"}],
        }
        for k in range(5)
    ]
    ports = [
        {
            "IpProtocol": "tcp",
            "FromPort": 1000 + 10 * k,
            "ToPort": 1005 + 10 * k,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        }
        for k in range(5)
    ]
    return cidrs + ports


def describe_groups(t: Target, groups: int, repeats: int) -> dict[str, Any]:
    ec2 = t.boto3()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    made: list[str] = []
    for n in range(groups):
        gid = ec2.create_security_group(GroupName=f"{prefix}-{n}", Description="bench")["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=rules_of(n))
        made.append(gid)
    setup = time.perf_counter() - start
    seen = len(ec2.describe_security_groups()["SecurityGroups"])
    times = [timed(ec2.describe_security_groups) for _ in range(repeats)]
    # The server's share: the same call signed and sent over one keep-alive connection, the answer read whole
    # but not parsed (boto3 parsing 5,000 rules is much of the figure above).
    raw = t.raw()
    raw_times = [raw.call("DescribeSecurityGroups")[1] for _ in range(repeats)]
    raw.close()
    log(
        f"{t.name}: {groups} groups made in {setup:.1f}s; DescribeSecurityGroups sees {seen}, p50 {statistics.median(times) * 1000:.0f} ms"
    )
    for gid in made:
        ec2.delete_security_group(GroupId=gid)
    return {"groups": seen, "setup_s": setup, "describe": summary(times), "describe_raw": summary(raw_times)}


def address_latency(t: Target, instance_id: str, repeats: int) -> dict[str, Any]:
    ec2 = t.boto3()
    out: dict[str, list[float]] = {"allocate": [], "associate": [], "disassociate": [], "release": []}
    for _ in range(repeats):
        start = time.perf_counter()
        a = ec2.allocate_address(Domain="standard")
        out["allocate"].append(time.perf_counter() - start)
        ip = a["PublicIp"]
        out["associate"].append(
            timed(lambda ip=ip: ec2.associate_address(InstanceId=instance_id, PublicIp=ip))
        )
        out["disassociate"].append(timed(lambda ip=ip: ec2.disassociate_address(PublicIp=ip)))
        out["release"].append(timed(lambda ip=ip: ec2.release_address(PublicIp=ip)))
    return {k: summary(v) for k, v in out.items()}


def sh(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.stderr.strip()}")
    return p.stdout


def make_netns() -> str:
    ns = f"eb{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "-n", ns, "addr", "add", GATEWAY, "dev", BRIDGE)
    sh("ip", "-n", ns, "link", "set", BRIDGE, "up")
    return ns


def remove_netns(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def rule_in_force(ns: str, group_id: str, port: int) -> bool:
    text = sh("ip", "netns", "exec", ns, "iptables-save", "-t", "filter")
    needle = f"--dport {port} -j ACCEPT"
    return any(
        needle in line and group_id[3:] in line.split()[1]
        for line in text.splitlines()
        if line.startswith("-A EU")
    )


# A "guest" on the bridge (a veth in a namespace of its own, at an instance's private address) listening on
# the probe ports, and a "client" namespace cabled to the CC's namespace, routed to the subnet through it, so
# a probe's SYN crosses the CC's FORWARD chain as outside traffic to an instance does.
LISTENER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in range(int(sys.argv[1]), int(sys.argv[2])):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); s.setblocking(False); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept(); c.close()
"""
# Reads "address port" lines; connects every 5 ms (10 ms timeout: a dropped SYN is never answered) until one
# is accepted, then prints the CLOCK_MONOTONIC time of that success (the bench's clock too).
PROBE = """
import socket, sys, time
for line in sys.stdin:
    address, port = line.split()
    while True:
        s = socket.socket(); s.settimeout(0.01)
        try:
            s.connect((address, int(port))); print(f"ok {time.monotonic()}", flush=True); break
        except OSError:
            time.sleep(0.005)
        finally:
            s.close()
"""
UPLINK_CC, UPLINK_CLIENT = "198.51.100.1/24", "198.51.100.2/24"


def cable_probe(
    ns: str, guest_ip: str, first_port: int, ports: int
) -> tuple[list[str], list[subprocess.Popen[str]]]:
    """The guest and client namespaces, the guest's listener and the client's probe process."""
    guest, client = f"{ns}g", f"{ns}c"
    for name in (guest, client):
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "add", "pg0", "type", "veth", "peer", "name", "pg1", "netns", guest)
    sh("ip", "-n", ns, "link", "set", "pg0", "master", BRIDGE, "up")
    sh("ip", "-n", guest, "addr", "add", f"{guest_ip}/16", "dev", "pg1")
    sh("ip", "-n", guest, "link", "set", "pg1", "up")
    sh("ip", "-n", guest, "route", "add", "default", "via", GATEWAY.split("/")[0])
    sh("ip", "-n", ns, "link", "add", "pu0", "type", "veth", "peer", "name", "pu1", "netns", client)
    sh("ip", "-n", ns, "addr", "add", UPLINK_CC, "dev", "pu0")
    sh("ip", "-n", ns, "link", "set", "pu0", "up")
    sh("ip", "-n", client, "addr", "add", UPLINK_CLIENT, "dev", "pu1")
    sh("ip", "-n", client, "link", "set", "pu1", "up")
    sh("ip", "-n", client, "route", "add", SUBNET, "via", UPLINK_CC.split("/")[0])
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            guest,
            sys.executable,
            "-c",
            LISTENER,
            str(first_port),
            str(first_port + ports),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    probe = subprocess.Popen(
        ["ip", "netns", "exec", client, sys.executable, "-u", "-c", PROBE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return [guest, client], [listener, probe]


def authorize_to_rule(work: Path, port: int, instances: int, repeats: int) -> dict[str, Any]:
    ns = make_netns()
    t: Target | None = None
    extra_ns: list[str] = []
    procs: list[subprocess.Popen[str]] = []
    try:
        t = start_euca(
            work,
            "euca-netns",
            port,
            poll_interval=5.0,
            capacity=instances + 4,
            extra_sets=[
                f"cc.netns={ns}",
                f"cc.bridge={BRIDGE}",
                "clc.public_addresses=10.98.0.0/24",
                f"sc.listen.port={port + 3}",  # not the default 8776 another euca on the host may hold
            ],
        )
        t.image_id = install_tiny_image(t)
        ec2 = t.boto3()
        gid = ec2.create_security_group(GroupName="bench-web", Description="bench")["GroupId"]
        ec2.authorize_security_group_ingress(
            GroupId=gid, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"
        )
        start = time.perf_counter()
        ids = [
            i["InstanceId"]
            for i in ec2.run_instances(
                ImageId=t.image_id,
                MinCount=instances,
                MaxCount=instances,
                InstanceType="t1.micro",
                SecurityGroupIds=[gid],
            )["Instances"]
        ]
        wait_running(t.raw(), ids, timeout=300)
        log(f"euca-netns: {instances} instances running in {time.perf_counter() - start:.1f}s")
        # Every instance's jump is in the rule set before the clock starts.
        deadline = time.monotonic() + 60
        while not rule_in_force(ns, gid, 22):
            if time.monotonic() > deadline:
                raise RuntimeError("the group's chain never appeared")
            time.sleep(0.05)
        jumps = sum(
            1
            for line in sh("ip", "netns", "exec", ns, "iptables-save", "-t", "filter").splitlines()
            if gid[3:] in line and "-d 10.64." in line
        )
        guest_ip = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0][
            "PrivateIpAddress"
        ]
        extra_ns, procs = cable_probe(ns, guest_ip, 20000, repeats + 1)
        # The control: a listening port no rule admits stays closed to the probe (the filter is in force).
        control = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                extra_ns[1],
                sys.executable,
                "-c",
                "import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1); print('open')\n"
                "except OSError: print('closed')",
                guest_ip,
                str(20000 + repeats),
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if control != "closed":
            raise RuntimeError(
                f"the probe reaches a port no rule admits ({control}): the filter is not in force"
            )
        probe = procs[1]
        assert probe.stdin is not None and probe.stdout is not None
        rule_times: list[float] = []
        probe_times: list[float] = []
        for k in range(repeats):
            p = 20000 + k
            probe.stdin.write(f"{guest_ip} {p}\n")
            probe.stdin.flush()
            time.sleep(0.05)  # the probe is knocking (and dropped) before the call
            ec2.authorize_security_group_ingress(
                GroupId=gid, IpProtocol="tcp", FromPort=p, ToPort=p, CidrIp="0.0.0.0/0"
            )
            returned = time.monotonic()
            while not rule_in_force(ns, gid, p):
                if time.monotonic() - returned > 30:
                    raise RuntimeError(f"port {p} never enforced")
                time.sleep(0.005)
            rule_times.append(time.monotonic() - returned)
            answer = probe.stdout.readline().split()
            if not answer or answer[0] != "ok":
                raise RuntimeError(f"probe of port {p}: {answer}")
            probe_times.append(max(0.0, float(answer[1]) - returned))
        log(
            f"euca-netns: authorize->rule in iptables-save p50 {statistics.median(rule_times) * 1000:.0f} ms, "
            f"->probe SYN admitted p50 {statistics.median(probe_times) * 1000:.0f} ms, over {repeats}, "
            f"{jumps} instance jumps in the chain"
        )
        return {
            "instances": instances,
            "jumps": jumps,
            "authorize_to_rule": summary(rule_times),
            "authorize_to_probe": summary(probe_times),
        }
    finally:
        if t is not None:
            try:
                terminate_all(t, timeout=120)
            except Exception as e:
                log(f"terminate: {e}")
            t.stop()
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in extra_ns:
            remove_netns(name)
        remove_netns(ns)


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (each part under a minute)")
    ap.add_argument("--targets", default="euca,moto")
    ap.add_argument("--parts", default="groups,addresses,enforce")
    ap.add_argument("--base-port", type=int, default=19360)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    targets = [x for x in args.targets.split(",") if x]
    parts = set(args.parts.split(","))
    groups, describe_repeats = 500, (5 if args.quick else 30)
    address_repeats = 10 if args.quick else 100
    instances, enforce_repeats = 100, (5 if args.quick else 30)
    work = Path(tempfile.mkdtemp(prefix="euca-bench-net-"))
    report: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "quick": args.quick,
        "targets": {},
    }
    try:
        if parts & {"groups", "addresses"}:
            for name in targets:
                t = (
                    start_euca(
                        work,
                        "euca",
                        args.base_port,
                        poll_interval=None,
                        capacity=8,
                        extra_sets=[
                            "clc.public_addresses=10.97.0.0/20",
                            f"sc.listen.port={args.base_port + 3}",
                        ],
                    )
                    if name == "euca"
                    else start_moto(work, args.base_port + 10)
                )
                try:
                    if name == "euca":
                        t.image_id = install_tiny_image(t)
                    r: dict[str, Any] = {}
                    if "groups" in parts:
                        r["describe_groups"] = describe_groups(t, groups, describe_repeats)
                    if "addresses" in parts:
                        ec2 = t.boto3()
                        (inst,) = [
                            i["InstanceId"]
                            for i in ec2.run_instances(
                                ImageId=t.image_id, MinCount=1, MaxCount=1, InstanceType="t1.micro"
                            )["Instances"]
                        ]
                        wait_running(t.raw(), [inst], timeout=120)
                        r["addresses"] = address_latency(t, inst, address_repeats)
                    report["targets"][name] = r
                finally:
                    t.stop()
        if "enforce" in parts and "euca" in targets:
            report["targets"].setdefault("euca", {})["enforce"] = authorize_to_rule(
                work, args.base_port + 5, instances, enforce_repeats
            )
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)])
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"network-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    e, m = report["targets"].get("euca", {}), report["targets"].get("moto", {})
    print("\n| workload | euca p50 | moto p50 | euca p99 | moto p99 |\n|---|---:|---:|---:|---:|")

    def row(label: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> None:
        print(
            f"| {label} | {ms(a and a['p50'])} | {ms(b and b['p50'])} | {ms(a and a.get('p99'))} | {ms(b and b.get('p99'))} |"
        )

    if "describe_groups" in e or "describe_groups" in m:
        row(
            f"DescribeSecurityGroups, raw signed request ({groups} groups x 10 rules)",
            e.get("describe_groups", {}).get("describe_raw"),
            m.get("describe_groups", {}).get("describe_raw"),
        )
        row(
            f"DescribeSecurityGroups, boto3 ({groups} groups x 10 rules)",
            e.get("describe_groups", {}).get("describe"),
            m.get("describe_groups", {}).get("describe"),
        )
    for call in ("allocate", "associate", "disassociate", "release"):
        if "addresses" in e or "addresses" in m:
            row(
                f"{call.capitalize()}Address",
                e.get("addresses", {}).get(call),
                m.get("addresses", {}).get(call),
            )
    if "enforce" in e:
        row(
            f"Authorize -> rule in iptables-save ({instances} instances)",
            e["enforce"]["authorize_to_rule"],
            None,
        )
        row(
            f"Authorize -> probe SYN admitted ({instances} instances)",
            e["enforce"]["authorize_to_probe"],
            None,
        )
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
