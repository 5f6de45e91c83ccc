"""A one-box cloud in real processes for the end-to-end tests that boot guests through the CLC -> CC -> NC
path: `euca` processes with their own logs (EucaProcess), the libvirt domains they leave, bridges of the
tests' own in libvirtd's network namespace (GuestBridges, which also removes what the CCs put in that
namespace), and the cloud itself (start_cloud -> Cloud: the aws CLI from a shell that sourced the eucarc,
boto3, `euca admin`, waits on instance states and consoles). Polls wait with helpers.polling's HANG_GUARD."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from euca.images import default_image as di
from euca.roles.cc.filters import ChainNames, jumps
from helpers.aws_cli import aws_executable
from helpers.polling import HANG_GUARD, free_ports, wait_until
from helpers.qemu_host import connect, libvirt

REPO = Path(__file__).resolve().parents[2]


def euca_command() -> list[str]:
    """The `euca` console script of this Python (as installed by pip), else the module."""
    script = Path(sys.executable).parent / "euca"
    return [str(script)] if script.exists() else [sys.executable, "-m", "euca.cli"]


def ec2_from_credentials(creds_dir: Path, **client_options: Any) -> Any:
    """A boto3 EC2 client with the keys, region and endpoint of a credentials directory's AWS files (the
    `euca` profile `euca admin write-credentials` writes); `client_options` go to boto3.client."""
    import boto3

    creds = configparser.ConfigParser()
    creds.read(creds_dir / "aws-credentials")
    conf = configparser.ConfigParser()
    conf.read(creds_dir / "aws-config")
    profile = conf["profile euca"]
    return boto3.client(
        "ec2",
        endpoint_url=profile["endpoint_url"],
        region_name=profile["region"],
        aws_access_key_id=creds["euca"]["aws_access_key_id"],
        aws_secret_access_key=creds["euca"]["aws_secret_access_key"],
        **client_options,
    )


class EucaProcess:
    """One `euca` process with its own log file; started by start(), ended by stop() or kill9()."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.args = args
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EucaProcess:
        with open(self.log_path, "ab") as log:
            log.write(f"=== {self.name}: euca {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*euca_command(), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a Ctrl-C of pytest does not reach it; we stop it ourselves
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def tail(self, lines: int = 40) -> str:
        text = "\n".join(self.log().splitlines()[-lines:])
        return f"--- last lines of {self.name}'s log ({self.log_path}):\n{text}"

    def wait_for_log(self, text: str, *, since: int = 0, deadline: float = HANG_GUARD) -> str:
        """The log from byte `since` once it contains `text`; fails at once if the process exits first."""

        def probe() -> str | None:
            if not self.running():
                code = self.proc.returncode if self.proc is not None else None
                raise AssertionError(f"{self.name} exited ({code}) before logging {text!r}\n{self.tail()}")
            with open(self.log_path, "rb") as f:
                f.seek(since)
                chunk = f.read().decode(errors="replace")
            return chunk if text in chunk else None

        return wait_until(f"{self.name} to log {text!r}", probe, deadline=deadline, detail=self.tail)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM and wait (a graceful stop); SIGKILL if it has not ended after `timeout` seconds."""
        if not self.running():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def kill9(self) -> None:
        """kill -9 of this process alone (what it started, e.g. dnsmasq, is left as a crash leaves it)."""
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(30)


# -- libvirt ---------------------------------------------------------------------------------------------------


def domain_names() -> set[str]:
    conn = connect()
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


def destroy_domains(names: set[str]) -> list[str]:
    """Destroy and undefine those of these domains that exist (a safety net for a failed test); returns
    the names it found."""
    found = []
    conn = connect()
    try:
        for name in sorted(names):
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            found.append(name)
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()
    return found


def libvirtd_netns() -> str | None:
    """The named network namespace of the libvirtd serving qemu:///system (scripts/setup-host: `euca`), or None
    (the host's). That libvirtd is the one started without a --config of its own: the multi-host tests run a
    libvirtd per simulated host beside it, each with its own configuration."""
    found = subprocess.run(["pgrep", "-a", "-x", "libvirtd"], capture_output=True, text=True).stdout
    for line in found.splitlines():
        pid, _, args = line.partition(" ")
        if "--config" not in args:
            ns = subprocess.run(["ip", "netns", "identify", pid], capture_output=True, text=True).stdout
            return ns.strip() or None
    return None


# -- fixtures --------------------------------------------------------------------------------------------------


class GuestBridges:
    """Bridges inside libvirtd's namespace for test clusters (guests' NICs attach there and the CC's
    dnsmasq serves them); removed at the end, with the iptables chains the CCs added for their clusters."""

    def __init__(self, netns: str | None):
        self.netns = netns
        self.bridges: list[str] = []
        self.clusters: list[str] = []

    def _ip(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.netns is not None
        result = subprocess.run(["ip", "-n", self.netns, *argv], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"ip -n {self.netns} {' '.join(argv)}: {result.stderr.strip()}")
        return result

    def add(self, name: str, gateway_cidr: str) -> str | None:
        """A bridge NAME with the gateway address, up; None when guests have no namespace to attach to."""
        if self.netns is None:
            return None
        self._ip("link", "add", name, "type", "bridge")
        self.bridges.append(name)
        self._ip("addr", "add", gateway_cidr, "dev", name)
        self._ip("link", "set", name, "up")
        return name

    def forget_cluster(self, cluster: str) -> None:
        """Remove this cluster's iptables chains (the jumps to them, its group chains) and the public
        addresses its CC put on the uplink from the namespace at the end: a stopped CC leaves its rules in
        place (a restarted one keeps them until its first view)."""
        self.clusters.append(cluster)

    def cleanup(self) -> None:
        for cluster in self.clusters:
            assert self.netns is not None
            remove_cluster_rules(self.netns, cluster)
        for name in reversed(self.bridges):
            self._ip("link", "del", name, check=False)


def remove_cluster_rules(netns: str, cluster: str) -> None:
    """Every iptables chain and uplink address of `cluster`'s CC in namespace `netns` (best effort)."""
    names = ChainNames.of(cluster)
    run = ["ip", "netns", "exec", netns, "iptables", "-w"]
    for table, builtin, chain in jumps(names):
        while (
            subprocess.run([*run, "-t", table, "-D", builtin, "-j", chain], capture_output=True).returncode
            == 0
        ):
            pass
    saved = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables-save"], capture_output=True, text=True
    ).stdout
    table = ""
    chains: list[tuple[str, str]] = []
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chain = line[1:].split(" ", 1)[0]
            if chain in (names.cluster, names.dnat) or names.is_group_chain(chain):
                chains.append((table, chain))
    for table, chain in chains:
        subprocess.run([*run, "-t", table, "-F", chain], capture_output=True)
    for table, chain in chains:
        subprocess.run([*run, "-t", table, "-X", chain], capture_output=True)
    shown = subprocess.run(
        ["ip", "-n", netns, "-o", "-4", "addr", "show"], capture_output=True, text=True
    ).stdout
    for line in shown.splitlines():
        m = re.search(r"^\d+: (\S+?)(?:@\S+)?\s+inet (\S+/32) .*\b(\S+:" + names.tag + r")\b", line)
        if m:
            subprocess.run(
                ["ip", "-n", netns, "addr", "del", m.group(2), "dev", m.group(1)], capture_output=True
            )


def guest_bridges_here() -> GuestBridges:
    """GuestBridges in libvirtd's namespace (none when not root or libvirtd runs on the host's network)."""
    return GuestBridges(libvirtd_netns() if os.geteuid() == 0 else None)


INSTANCE_TYPE = "t1.micro"


@dataclass
class Cloud:
    """The one-box cloud of this module and what the tests need to talk to it."""

    proc: EucaProcess
    data_dir: Path
    clc_port: int
    cc_port: int
    nc_port: int
    cluster: str
    zone: str
    bridge: str | None
    emi: str
    eki: str
    eri: str
    launched: set[str] = field(default_factory=set)
    _ec2: Any = None

    @property
    def creds_dir(self) -> Path:
        return self.data_dir / "credentials" / "eucalyptus" / "admin"

    @property
    def components(self) -> Path:
        return self.data_dir / "pki" / "components"

    def aws(self, *args: str) -> Any:
        """`aws ARGS --output json` in a shell that sourced the admin's eucarc, as the README says to;
        the decoded JSON (None for no output)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_CLI=aws_executable(), AWS_EC2_METADATA_DISABLED="true")
        script = '. "$0" && exec "$AWS_CLI" "$@"'
        cmd = ["bash", "-c", script, str(self.creds_dir / "eucarc"), *args, "--output", "json"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}"
            )
        return json.loads(done.stdout) if done.stdout.strip() else None

    def ec2(self) -> Any:
        """boto3 EC2 client with the keys, region and endpoint of the credentials directory's AWS files."""
        if self._ec2 is None:
            from botocore.config import Config as BotoConfig

            self._ec2 = ec2_from_credentials(
                self.creds_dir, config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"})
            )
        return self._ec2

    def admin(self, *args: str) -> str:
        """`euca admin ...` on the CLC host (same data dir and CLC port as the server)."""
        cmd = [
            *euca_command(),
            "--data-dir",
            str(self.data_dir),
            "--set",
            f"clc.listen.port={self.clc_port}",
            "admin",
            *args,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"euca admin {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
        return done.stdout

    # -- instances ---------------------------------------------------------------------------------------

    def describe(self, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
        reply = self.ec2().describe_instances(InstanceIds=instance_ids)
        return {i["InstanceId"]: i for r in reply["Reservations"] for i in r["Instances"]}

    def wait_states(self, instance_ids: list[str], state: str) -> dict[str, dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}

        def probe() -> dict[str, dict[str, Any]] | None:
            nonlocal last
            last = self.describe(instance_ids)
            states = {i: last[i]["State"]["Name"] if i in last else None for i in instance_ids}
            if "terminated" in states.values() and state != "terminated":
                raise AssertionError(
                    f"instances ended while waiting for {state}: {reasons(last)}\n{self.tail()}"
                )
            return last if all(s == state for s in states.values()) else None

        return wait_until(
            f"{instance_ids} to be {state}", probe, detail=lambda: f"{reasons(last)}\n{self.tail()}"
        )

    def free_slots(self, zone: str, instance_type: str = INSTANCE_TYPE) -> int | None:
        """Free slots for the type in the zone, from the admin's verbose DescribeAvailabilityZones (Eucalyptus's
        "|- t1.micro  0002 / 0002 ..." rows under each zone); None while the zone is not listed."""
        rows = self.ec2().describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
        current = None
        for row in rows:
            name = row["ZoneName"]
            if not name.startswith("|-"):
                current = name
            elif current == zone and name == f"|- {instance_type}":
                return int(row["State"].split("/")[0])
        return None

    def wait_capacity(self, zone: str, slots: int, detail: Callable[[], str] | None = None) -> None:
        wait_until(
            f"{slots} free {INSTANCE_TYPE} slot(s) in zone {zone}",
            lambda: (self.free_slots(zone) or 0) >= slots,
            detail=lambda: (
                f"{self.admin('describe-nodes')}{self.admin('describe-services')}"
                + (detail() if detail is not None else self.tail())
            ),
        )

    def console(self, instance_id: str) -> str:
        """GetConsoleOutput through boto3 (botocore decodes the base64)."""
        return str(self.ec2().get_console_output(InstanceId=instance_id).get("Output") or "")

    def wait_console(self, instance_id: str, text: str, count: int = 1) -> str:
        last = ""

        def probe() -> str | None:
            nonlocal last
            last = self.console(instance_id)
            return last if last.count(text) >= count else None

        return wait_until(
            f"{text!r} x{count} on the console of {instance_id}",
            probe,
            detail=lambda: f"console:\n{last[-3000:]}\n{self.tail()}",
        )

    def terminate_and_wait(self, instance_ids: list[str]) -> None:
        """Best effort, for teardown: terminate what still runs and wait until the CLC says terminated."""
        if not instance_ids or not self.proc.running():
            return
        try:
            alive = [i for i, d in self.describe(instance_ids).items() if d["State"]["Name"] != "terminated"]
            if alive:
                self.ec2().terminate_instances(InstanceIds=alive)
                wait_until(
                    f"{alive} to terminate",
                    lambda: all(d["State"]["Name"] == "terminated" for d in self.describe(alive).values()),
                    deadline=120,
                )
        except Exception as e:  # teardown goes on: the domains are destroyed below whatever happened
            print(f"teardown: terminating {instance_ids} failed: {e}", file=sys.stderr)

    def tail(self) -> str:
        return self.proc.tail()


def reasons(instances: dict[str, dict[str, Any]]) -> str:
    return ", ".join(
        f"{i}={d['State']['Name']}({d.get('StateReason', {}).get('Message', '')})"
        for i, d in instances.items()
    )


def workdir(prefix: str) -> Path:
    # Outside pytest's 0700 tree, so libvirt's QEMU reaches disks and kernels whatever user it runs as.
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    d.chmod(0o755)
    return d


def kill_strays(data_dir: Path) -> None:
    """Processes still running with our data dir on their command line (a dnsmasq left by a CC that was
    killed): ours, so ended here."""
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def network_args(bridges: GuestBridges, bridge: str | None, subnet: str) -> list[str]:
    if bridge is None:  # guests cannot reach a bridge of ours: no VM network (instances get no NIC)
        return ["--set", "cc.bridge="]
    return [
        "--set",
        f"cc.netns={bridges.netns}",
        "--set",
        f"cc.bridge={bridge}",
        "--set",
        f"cc.subnet={subnet}",
    ]


@contextlib.contextmanager
def start_cloud(
    guest_bridges: GuestBridges,
    *,
    subnet_prefix: str = "10.76",
    extra_args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Cloud]:
    """A one-box cloud (`euca --role all`) on loopback ports with its own data dir and, when libvirtd runs
    in a namespace, a bridge of its own there with subnet `<subnet_prefix>.<random>.0/24`; it registers its
    default image at start. Stopped at the end, with whatever it launched terminated and its domains,
    strays, chains and bridge removed."""
    tag = uuid.uuid4().hex[:4]
    cluster = f"e2e{tag}a"
    # Subnets of their own (euca-br0 has 10.77.0.0/24, test_bootimage_qemu 10.79.x.0/24).
    octet = random.randrange(1, 255)
    bridge = guest_bridges.add(f"eucae2e{tag}a", f"{subnet_prefix}.{octet}.1/24")
    if bridge is not None:
        guest_bridges.forget_cluster(cluster)
    work = workdir("euca-e2e-cloud-")
    data = work / "data"
    clc_port, cc_port, nc_port, sc_port = free_ports(4)
    args = [
        "--role",
        "all",
        "--data-dir",
        str(data),
        "--host",
        "127.0.0.1",
        "--set",
        f"clc.listen.port={clc_port}",
        "--set",
        f"walrus.listen.port={clc_port}",
        "--set",
        f"cc.listen.port={cc_port}",
        "--set",
        f"nc.listen.port={nc_port}",
        "--set",
        f"sc.listen.port={sc_port}",
        "--set",
        "clc.poll_interval=0.5",
        "--set",
        "cc.poll_interval=0.5",
        "--set",
        f"cc.cluster={cluster}",
        *network_args(guest_bridges, bridge, f"{subnet_prefix}.{octet}.0/24"),
        *extra_args,
    ]
    # The one-box, as a user starts it: it registers its default image (configuration key default_image).
    env = dict(os.environ if env is None else env)
    proc = EucaProcess("one-box", args, work / "one-box.log", env).start()
    launched: set[str] = set()
    c: Cloud | None = None
    try:
        proc.wait_for_log("cloud ready")
        state = data / di.STATE_FILE
        if not state.exists():
            raise AssertionError(f"the one-box came up without its default image ({state})\n{proc.tail(80)}")
        image = json.loads(state.read_text())
        c = Cloud(
            proc,
            data,
            clc_port,
            cc_port,
            nc_port,
            cluster,
            "euca-1a",
            bridge,
            image["machine_id"],
            image["kernel_id"],
            image["ramdisk_id"],
            launched,
        )
        yield c
    finally:
        if c is not None:
            c.terminate_and_wait(sorted(launched))
        proc.stop()
        kill_strays(data)
        leaked = destroy_domains(launched)
        if leaked:
            print(f"teardown: destroyed leftover domains {leaked}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def start_cloud_in_netns(
    guest_bridges: GuestBridges, image_cache: Path, *, subnet_prefix: str, extra_args: Iterable[str] = ()
) -> Iterator[Cloud]:
    """start_cloud for tests whose guests must be reached over the network: skipped unless libvirtd runs in
    a namespace (scripts/setup-host), with the module's own image cache (XDG_CACHE_HOME) so that its
    guest image is built once and kept between runs."""
    import pytest

    if guest_bridges.netns is None:
        pytest.skip("libvirtd does not run in a network namespace (scripts/setup-host starts it in one)")
    env = {**os.environ, "XDG_CACHE_HOME": str(image_cache)}
    with start_cloud(guest_bridges, subnet_prefix=subnet_prefix, extra_args=extra_args, env=env) as cloud:
        yield cloud


@dataclass
class SecondCluster:
    name: str
    node: str
    cc: EucaProcess
    nc: EucaProcess
    cc_port: int
    nc_port: int
    cc_dir: Path
    nc_dir: Path
    launched: set[str] = field(default_factory=set)

    def restart_nc(self) -> EucaProcess:
        """The NC started again with the same command line minus the token (its identity is on disk)."""
        self.nc = _again(self.nc)
        return self.nc

    def restart_cc(self) -> EucaProcess:
        """The CC stopped (SIGTERM) and started again the same way (its identity is on disk)."""
        self.cc.stop()
        self.cc = _again(self.cc)
        return self.cc


def _again(proc: EucaProcess) -> EucaProcess:
    args = list(proc.args)
    if "--join" in args:
        at = args.index("--join")
        del args[at : at + 2]
    return EucaProcess(proc.name, args, proc.log_path, proc.env).start()


def join_token(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("JOINTOKEN\t"):
            return line.split("\t", 1)[1].strip()
    raise AssertionError(f"no JOINTOKEN in:\n{output}")


@contextlib.contextmanager
def start_second_cluster(
    cloud: Cloud, guest_bridges: GuestBridges, *, subnet_prefix: str = "10.78"
) -> Iterator[SecondCluster]:
    """Another cluster of the cloud in processes of its own, as an operator adds one: `euca admin
    register-cluster/register-node` on the CLC host, then `euca --role cc --join TOKEN` and `euca --role nc
    --join TOKEN` with their own data dirs (its CC can be stopped and started alone). Its zone is named
    after the cluster; what it launched is terminated at the end and its processes stopped."""
    name = cloud.cluster[:-1] + "b"
    node = f"{name}-node"
    octet = random.randrange(1, 255)
    bridge = guest_bridges.add(f"eucae2e{name[3:7]}b", f"{subnet_prefix}.{octet}.1/24")
    if bridge is not None:
        guest_bridges.forget_cluster(name)
    cc_port, nc_port = free_ports(2)
    cc_token = join_token(
        cloud.admin("register-cluster", name, "--host", "127.0.0.1", "--port", str(cc_port))
    )
    nc_token = join_token(
        cloud.admin(
            "register-node", "--cluster", name, "--host", "127.0.0.1", "--port", str(nc_port), "--name", node
        )
    )
    work = workdir("euca-e2e-cluster2-")
    cc_dir, nc_dir = work / "cc", work / "nc"
    cc_args = [
        "--role",
        "cc",
        "--join",
        cc_token,
        "--data-dir",
        str(cc_dir),
        "--host",
        "127.0.0.1",
        "--set",
        f"cc.listen.port={cc_port}",
        "--set",
        "cc.poll_interval=0.5",
        *network_args(guest_bridges, bridge, f"{subnet_prefix}.{octet}.0/24"),
    ]
    nc_args = [
        "--role",
        "nc",
        "--join",
        nc_token,
        "--data-dir",
        str(nc_dir),
        "--host",
        "127.0.0.1",
        "--set",
        f"nc.listen.port={nc_port}",
    ]
    second = SecondCluster(
        name,
        node,
        EucaProcess("cc2", cc_args, work / "cc2.log"),
        EucaProcess("nc2", nc_args, work / "nc2.log"),
        cc_port,
        nc_port,
        cc_dir,
        nc_dir,
    )
    try:
        second.cc.start()
        second.nc.start()
        second.cc.wait_for_log("cloud ready")
        second.nc.wait_for_log("cloud ready")
        yield second
    finally:
        cloud.terminate_and_wait(sorted(second.launched))
        second.nc.stop()
        second.cc.stop()
        kill_strays(work)
        leaked = destroy_domains(second.launched)
        if leaked:
            print(f"teardown: destroyed leftover domains {leaked}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
