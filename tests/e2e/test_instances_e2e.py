"""Issue 4's proof with real processes, real clients and real guests.

One cloud for the module, started as a user starts it: `euca --role all` on loopback ports with its own data
dir, which at first start registers the default image (Debian cloud kernel, busybox initramfs). The clients
are the aws CLI (run from a shell that sourced the credentials' eucarc) and boto3. Guests are QEMU (TCG)
under qemu:///system; when libvirtd runs in the `euca` namespace (scripts/setup-host), every cluster gets
a bridge of its own there, so the CC's dnsmasq hands guests their addresses.

1. One box: two instances of the default emi (one from the aws CLI, one from boto3) run, show their boot
   marker in GetConsoleOutput and their address lease; one reboots (the marker again); both terminate and
   the node is left with no domain, instance directory, overlay or console file.
2. A second cluster in processes of its own (`euca --role cc --join TOKEN`, `euca --role nc --join TOKEN`,
   their own data dirs, after `euca admin register-cluster/register-node` on the CLC host) is a second zone
   in DescribeAvailabilityZones, and an instance placed there with Placement.AvailabilityZone runs on it.
3. kill -9 of that NC: the guest runs on, the CLC keeps reporting it running; the NC started again finds
   it, and reboots it on request.
4. The CC and NC listeners refuse what is not the registered component that may call them: a certificate
   from another CA (even with the CLC's subject), none at all, plain HTTP, a user's certificate from the
   cloud CA, a component of the wrong role; the instance they tried to terminate still runs.

Polls wait with a long deadline (HANG_GUARD) that only stops a hang; nothing asserts how long things take.
"""

from __future__ import annotations

import configparser
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from cryptography import x509

from euca.core.pki import CloudCA, cert_cluster
from euca.images import bootimage as bi
from euca.images import default_image as di
from euca.protocol import cluster as proto
from euca.roles.cc.network import chain_name
from helpers.aws_cli import aws_executable
from helpers.polling import HANG_GUARD, free_ports, wait_until
from helpers.qemu_host import connect, libvirt, unusable_reason

# -- processes, waits, libvirt, bridges ----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def euca_command() -> list[str]:
    """The `euca` console script of this Python (as installed by pip), else the module."""
    script = Path(sys.executable).parent / "euca"
    return [str(script)] if script.exists() else [sys.executable, "-m", "euca.cli"]


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
    """The named network namespace libvirtd runs in (scripts/setup-host: `euca`), or None (the host's)."""
    pids = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout.split()
    if not pids:
        return None
    ns = subprocess.run(["ip", "netns", "identify", pids[0]], capture_output=True, text=True).stdout.strip()
    return ns or None


# -- fixtures --------------------------------------------------------------------------------------------------


class GuestBridges:
    """Bridges inside libvirtd's namespace for test clusters (guests' NICs attach there and the CC's
    dnsmasq serves them); removed at the end, with the iptables chains the CCs added for their clusters."""

    def __init__(self, netns: str | None):
        self.netns = netns
        self.bridges: list[str] = []
        self.chains: list[str] = []

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

    def forget_chain(self, chain: str) -> None:
        """Remove this iptables chain (and the jumps to it) from the namespace at the end."""
        self.chains.append(chain)

    def cleanup(self) -> None:
        from euca.roles.cc.network import JUMPS

        for chain in self.chains:
            assert self.netns is not None
            run = ["ip", "netns", "exec", self.netns, "iptables", "-w"]
            for table, builtin in JUMPS:
                while (
                    subprocess.run(
                        [*run, "-t", table, "-D", builtin, "-j", chain], capture_output=True
                    ).returncode
                    == 0
                ):
                    pass
                subprocess.run([*run, "-t", table, "-F", chain], capture_output=True)
                subprocess.run([*run, "-t", table, "-X", chain], capture_output=True)
        for name in reversed(self.bridges):
            self._ip("link", "del", name, check=False)


@pytest.fixture(scope="module")
def guest_bridges() -> Iterator[GuestBridges]:
    netns = libvirtd_netns() if os.geteuid() == 0 else None
    bridges = GuestBridges(netns)
    try:
        yield bridges
    finally:
        bridges.cleanup()


_REASON = unusable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

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
            import boto3
            from botocore.config import Config as BotoConfig

            creds = configparser.ConfigParser()
            creds.read(self.creds_dir / "aws-credentials")
            conf = configparser.ConfigParser()
            conf.read(self.creds_dir / "aws-config")
            profile = conf["profile euca"]
            self._ec2 = boto3.client(
                "ec2",
                endpoint_url=profile["endpoint_url"],
                region_name=profile["region"],
                aws_access_key_id=creds["euca"]["aws_access_key_id"],
                aws_secret_access_key=creds["euca"]["aws_secret_access_key"],
                config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"}),
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
                    f"instances ended while waiting for {state}: {_reasons(last)}\n{self.tail()}"
                )
            return last if all(s == state for s in states.values()) else None

        return wait_until(
            f"{instance_ids} to be {state}", probe, detail=lambda: f"{_reasons(last)}\n{self.tail()}"
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


def _reasons(instances: dict[str, dict[str, Any]]) -> str:
    return ", ".join(
        f"{i}={d['State']['Name']}({d.get('StateReason', {}).get('Message', '')})"
        for i, d in instances.items()
    )


def _workdir(prefix: str) -> Path:
    # Outside pytest's 0700 tree, so libvirt's QEMU reaches disks and kernels whatever user it runs as.
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    d.chmod(0o755)
    return d


def _kill_strays(data_dir: Path) -> None:
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


def _network_args(bridges: GuestBridges, bridge: str | None, subnet: str) -> list[str]:
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


@pytest.fixture(scope="module")
def cloud(boot_image: bi.BootImage, guest_bridges: GuestBridges) -> Iterator[Cloud]:
    tag = uuid.uuid4().hex[:4]
    cluster = f"e2e{tag}a"
    # Subnets of their own (euca-br0 has 10.77.0.0/24, test_bootimage_qemu 10.79.x.0/24).
    octet = random.randrange(1, 255)
    bridge = guest_bridges.add(f"eucae2e{tag}a", f"10.76.{octet}.1/24")
    if bridge is not None:
        guest_bridges.forget_chain(chain_name(cluster))
    work = _workdir("euca-e2e-cloud-")
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
        *_network_args(guest_bridges, bridge, f"10.76.{octet}.0/24"),
    ]
    # The one-box, as a user starts it: it registers its default image (configuration key default_image).
    env = dict(os.environ)
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
        _kill_strays(data)
        leaked = destroy_domains(launched)
        if leaked:
            print(f"teardown: destroyed leftover domains {leaked}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


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
        args = list(self.nc.args)
        at = args.index("--join")
        del args[at : at + 2]
        self.nc = EucaProcess(self.nc.name, args, self.nc.log_path).start()
        return self.nc


def _token(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("JOINTOKEN\t"):
            return line.split("\t", 1)[1].strip()
    raise AssertionError(f"no JOINTOKEN in:\n{output}")


@pytest.fixture(scope="module")
def second_cluster(cloud: Cloud, guest_bridges: GuestBridges) -> Iterator[SecondCluster]:
    name = cloud.cluster[:-1] + "b"
    node = f"{name}-node"
    octet = random.randrange(1, 255)
    bridge = guest_bridges.add(f"eucae2e{name[3:7]}b", f"10.78.{octet}.1/24")
    if bridge is not None:
        guest_bridges.forget_chain(chain_name(name))
    cc_port, nc_port = free_ports(2)
    cc_token = _token(cloud.admin("register-cluster", name, "--host", "127.0.0.1", "--port", str(cc_port)))
    nc_token = _token(
        cloud.admin(
            "register-node", "--cluster", name, "--host", "127.0.0.1", "--port", str(nc_port), "--name", node
        )
    )
    work = _workdir("euca-e2e-cluster2-")
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
        *_network_args(guest_bridges, bridge, f"10.78.{octet}.0/24"),
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
        _kill_strays(work)
        leaked = destroy_domains(second.launched)
        if leaked:
            print(f"teardown: destroyed leftover domains {leaked}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


def _marker(instance_id: str) -> str:
    return f"{bi.BOOT_MARKER} {instance_id}"


def _assert_node_clean(nc_data: Path, instance_ids: list[str]) -> None:
    """No domain, instance directory, overlay or console file of these instances is left on the node."""
    instances_dir = nc_data / "nc" / "instances"
    left = wait_until(
        f"the node to drop {instance_ids}",
        lambda: (
            True
            if not (set(instance_ids) & domain_names())
            and not any((instances_dir / i).exists() for i in instance_ids)
            else None
        ),
        deadline=120,
        detail=lambda: f"domains: {sorted(domain_names())}; dirs: {sorted(os.listdir(instances_dir))}",
    )
    assert left
    found = [p for p in nc_data.rglob("*") if p.name in ("console.log", "root.qcow2") or p.suffix == ".qcow2"]
    assert found == [], found


# -- 1. one box --------------------------------------------------------------------------------------------------


def test_one_box_runs_reboots_and_terminates_two_guests_of_the_default_image(cloud: Cloud) -> None:
    ec2 = cloud.ec2()
    zones = {z["ZoneName"]: z["State"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}
    assert zones.get(cloud.zone) == "available", zones
    cloud.wait_capacity(cloud.zone, 2)
    image = ec2.describe_images(ImageIds=[cloud.emi])["Images"][0]
    assert (image["KernelId"], image["RamdiskId"], image["Public"]) == (cloud.eki, cloud.eri, True)

    # One instance from the aws CLI, one from boto3.
    by_cli = cloud.aws("ec2", "run-instances", "--image-id", cloud.emi, "--instance-type", INSTANCE_TYPE)
    first = by_cli["Instances"][0]
    a = first["InstanceId"]
    cloud.launched.add(a)
    assert first["State"]["Name"] == "pending"
    assert (first["ImageId"], first["KernelId"], first["RamdiskId"]) == (cloud.emi, cloud.eki, cloud.eri)
    by_boto = ec2.run_instances(ImageId=cloud.emi, MinCount=1, MaxCount=1, InstanceType=INSTANCE_TYPE)
    b = by_boto["Instances"][0]["InstanceId"]
    cloud.launched.add(b)
    ids = [a, b]

    running = cloud.wait_states(ids, "running")
    for i in ids:
        assert running[i]["Placement"]["AvailabilityZone"] == cloud.zone
        assert running[i]["InstanceType"] == INSTANCE_TYPE
    # The guests came up: their boot marker (with their own instance id) through GetConsoleOutput, read
    # with the aws CLI for one and boto3 for the other.
    wait_until(
        f"the boot marker of {a} through the aws CLI",
        lambda: (
            _marker(a) in (cloud.aws("ec2", "get-console-output", "--instance-id", a) or {}).get("Output", "")
        ),
        detail=cloud.tail,
    )
    text_b = cloud.wait_console(b, _marker(b))
    assert "Linux version" in text_b
    if cloud.bridge is not None:
        # The CC's dnsmasq gave each guest the address DescribeInstances shows.
        for i in ids:
            cloud.wait_console(i, f"eth0 bound {running[i]['PrivateIpAddress']}/")

    # Reboot one: it boots again (a second marker), and stays running.
    cloud.aws("ec2", "reboot-instances", "--instance-ids", a)
    cloud.wait_console(a, _marker(a), count=2)
    assert cloud.describe([a])[a]["State"]["Name"] == "running"
    assert cloud.console(b).count(_marker(b)) == 1

    # Terminate both: nothing of them stays on the node.
    ec2.terminate_instances(InstanceIds=ids)
    cloud.wait_states(ids, "terminated")
    _assert_node_clean(cloud.data_dir, ids)


# -- 2. a second cluster in processes of its own -------------------------------------------------------------------


@pytest.fixture(scope="module")
def zone2_instance(cloud: Cloud, second_cluster: SecondCluster) -> str:
    """An instance placed in the second cluster's zone with boto3, running with its boot marker shown."""
    # The zone is there once the CLC has heard from its CC, and has room once that CC has heard from its node.
    cloud.wait_capacity(second_cluster.name, 1, detail=second_cluster.cc.tail)
    reply = cloud.ec2().run_instances(
        ImageId=cloud.emi,
        MinCount=1,
        MaxCount=1,
        InstanceType=INSTANCE_TYPE,
        Placement={"AvailabilityZone": second_cluster.name},
    )
    instance_id: str = reply["Instances"][0]["InstanceId"]
    second_cluster.launched.add(instance_id)
    cloud.wait_states([instance_id], "running")
    cloud.wait_console(instance_id, _marker(instance_id))
    return instance_id


def test_a_second_cluster_is_a_second_zone_and_runs_the_instance_placed_there(
    cloud: Cloud, second_cluster: SecondCluster, zone2_instance: str
) -> None:
    zones = cloud.aws("ec2", "describe-availability-zones")["AvailabilityZones"]
    assert {(z["ZoneName"], z["State"]) for z in zones} >= {
        (cloud.zone, "available"),
        (second_cluster.name, "available"),
    }, zones
    described = cloud.describe([zone2_instance])[zone2_instance]
    assert described["Placement"]["AvailabilityZone"] == second_cluster.name
    in_zone = cloud.aws(
        "ec2", "describe-instances", "--filters", f"Name=availability-zone,Values={second_cluster.name}"
    )
    assert [i["InstanceId"] for r in in_zone["Reservations"] for i in r["Instances"]] == [zone2_instance]
    # It runs on the second cluster's node (its own process and data dir), not on the one-box's.
    assert (second_cluster.nc_dir / "nc" / "instances" / zone2_instance).is_dir()
    assert not (cloud.data_dir / "nc" / "instances" / zone2_instance).exists()
    services = cloud.admin("describe-services")
    assert f"\tnode\t{second_cluster.node}\t{second_cluster.name}\t" in services, services


# -- 3. kill -9 of the NC --------------------------------------------------------------------------------------------


def _node_state(cloud: Cloud, node: str) -> str | None:
    for line in cloud.admin("describe-services").splitlines():
        fields = line.split("\t")
        if fields[:3] == ["SERVICE", "node", node]:
            return fields[5]
    return None


def test_an_nc_killed_and_started_again_keeps_its_instance(
    cloud: Cloud, second_cluster: SecondCluster, zone2_instance: str
) -> None:
    second_cluster.nc.kill9()
    # The guest is libvirt's, not the NC's: it runs on without its NC.
    assert zone2_instance in domain_names()
    wait_until(
        f"node {second_cluster.node} to be reported down",
        lambda: _node_state(cloud, second_cluster.node) == "down",
        detail=lambda: cloud.admin("describe-services"),
    )
    # A node that does not answer is not an instance that ended.
    assert cloud.describe([zone2_instance])[zone2_instance]["State"]["Name"] == "running"

    since = second_cluster.nc.log_size()
    nc = second_cluster.restart_nc()
    nc.wait_for_log("cloud ready", since=since)
    wait_until(
        f"node {second_cluster.node} to be up again",
        lambda: _node_state(cloud, second_cluster.node) == "up",
        detail=lambda: f"{cloud.admin('describe-services')}\n{nc.tail()}",
    )
    described = cloud.describe([zone2_instance])[zone2_instance]
    assert described["State"]["Name"] == "running"
    assert described["Placement"]["AvailabilityZone"] == second_cluster.name
    assert _marker(zone2_instance) in cloud.console(zone2_instance)
    # The new NC drives the guest it found: a reboot through the API boots it again.
    before = cloud.console(zone2_instance).count(_marker(zone2_instance))
    cloud.ec2().reboot_instances(InstanceIds=[zone2_instance])
    cloud.wait_console(zone2_instance, _marker(zone2_instance), count=before + 1)
    assert cloud.describe([zone2_instance])[zone2_instance]["State"]["Name"] == "running"


# -- 4. strangers on the cluster listeners ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """A client identity for the cluster listeners: a certificate and key (or none)."""

    what: str
    cert: Path | None = None
    key: Path | None = None


def _call(url: str, message: msgspec.Struct, caller: Caller, ca_file: Path) -> tuple[int, bytes] | str:
    """POST the cluster message as `caller`; (status, body), or the transport error when the TLS listener
    did not take the connection."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False
    if caller.cert is not None:
        ctx.load_cert_chain(str(caller.cert), str(caller.key))
    path, body = proto.encode_request(message)
    try:
        with httpx.Client(verify=ctx, timeout=30) as client:
            r = client.post(url + path, content=body, headers={"Content-Type": "application/json"})
    except httpx.TransportError as e:
        return f"{type(e).__name__}: {e}"
    return r.status_code, r.content


def _assert_refused(result: tuple[int, bytes] | str, who: str) -> None:
    if isinstance(result, str):
        return  # the handshake (or the connection) was refused
    status, body = result
    assert status == 403, f"{who}: answered {status} {body[:300]!r}"
    assert msgspec.json.decode(body, type=proto.Fault).code == "Unauthorized", body


def _component(directory: Path, role: str) -> Caller:
    return Caller(f"{role} of {directory}", directory / f"{role}-cert.pem", directory / f"{role}-key.pem")


def test_cluster_listeners_refuse_what_is_not_their_registered_caller(
    cloud: Cloud, second_cluster: SecondCluster, zone2_instance: str, tmp_path: Path
) -> None:
    ca_file = cloud.components / "cloud-cert.pem"
    cc2 = f"https://127.0.0.1:{second_cluster.cc_port}"
    nc2 = f"https://127.0.0.1:{second_cluster.nc_port}"

    # Control: the registered CLC is answered by the CC, and that CC by its NC.
    clc = _component(cloud.components, "clc")
    result = _call(cc2, proto.DescribeInstances([zone2_instance]), clc, ca_file)
    assert not isinstance(result, str) and result[0] == 200, result
    cc = _component(second_cluster.cc_dir / "pki" / "components", "cc")
    result = _call(nc2, proto.NcDescribeInstances([zone2_instance]), cc, ca_file)
    assert not isinstance(result, str) and result[0] == 200, result

    # Another CA's certificates carrying the very subjects of the registered components.
    foreign = CloudCA.load_or_create(tmp_path / "foreign-ca")
    impostors = {}
    for role, name in (("clc", "clc"), ("cc", second_cluster.name)):
        key, cert = foreign.issue_component(role, name, ["127.0.0.1"])
        (tmp_path / f"{role}-key.pem").write_bytes(key)
        (tmp_path / f"{role}-cert.pem").write_bytes(cert)
        impostors[role] = Caller(
            f"{role} cert from another CA", tmp_path / f"{role}-cert.pem", tmp_path / f"{role}-key.pem"
        )
    # A certificate the cloud CA did issue, to a user (bundle signing), and components of the wrong role.
    creds = cloud.creds_dir
    user = Caller("the admin user's certificate", creds / "cert.pem", creds / "pk.pem")
    nc_cert = _component(second_cluster.nc_dir / "pki" / "components", "nc")
    nobody = Caller("no client certificate")

    terminate_cc = proto.TerminateInstances([zone2_instance])
    terminate_nc = proto.NcTerminateInstance(zone2_instance)
    for caller in (impostors["clc"], nobody, user, nc_cert, cc):
        _assert_refused(_call(cc2, terminate_cc, caller, ca_file), f"CC <- {caller.what}")
    for caller in (impostors["cc"], nobody, user, clc, nc_cert):
        _assert_refused(_call(nc2, terminate_nc, caller, ca_file), f"NC <- {caller.what}")
    # A valid certificate of the wrong role gets past TLS and is refused by role, with a Fault.
    for url, message, caller in ((cc2, terminate_cc, nc_cert), (nc2, terminate_nc, clc)):
        result = _call(url, message, caller, ca_file)
        assert not isinstance(result, str) and result[0] == 403, (caller.what, result)
    # Plain HTTP on a mutual-TLS port.
    for url in (cc2, nc2):
        try:
            r = httpx.post(
                url.replace("https:", "http:") + "/cluster/DescribeInstances", content=b"{}", timeout=30
            )
            assert r.status_code != 200, r.text
        except httpx.TransportError:
            pass

    # None of them reached the instance.
    assert cloud.describe([zone2_instance])[zone2_instance]["State"]["Name"] == "running"
    assert zone2_instance in domain_names()
    result = _call(cc2, proto.DescribeInstances([zone2_instance]), clc, ca_file)
    assert not isinstance(result, str) and result[0] == 200, result


def test_an_nc_refuses_the_cc_of_another_cluster(cloud: Cloud, second_cluster: SecondCluster) -> None:
    """A node's certificate names its cluster (the one-box's NC: issued at start; the joined NC: signed at
    join from `register-node --cluster`), and its NC takes calls from that cluster's CC only — not from the
    CC of another cluster of the same cloud, though its certificate is valid and of the right role."""
    ca_file = cloud.components / "cloud-cert.pem"
    nc2_components = second_cluster.nc_dir / "pki" / "components"
    for components, cluster in ((cloud.components, cloud.cluster), (nc2_components, second_cluster.name)):
        cert = x509.load_pem_x509_certificate((components / "nc-cert.pem").read_bytes())
        assert cert_cluster(cert) == cluster, components
    one_box_cc = _component(cloud.components, "cc")
    cc2 = _component(second_cluster.cc_dir / "pki" / "components", "cc")
    nc1 = f"https://127.0.0.1:{cloud.nc_port}"
    nc2 = f"https://127.0.0.1:{second_cluster.nc_port}"
    # Each NC answers its own cluster's CC ...
    for url, caller in ((nc1, one_box_cc), (nc2, cc2)):
        result = _call(url, proto.NcDescribeInstances(), caller, ca_file)
        assert not isinstance(result, str) and result[0] == 200, (caller.what, result)
    # ... and refuses the other's, past the TLS handshake, with a Fault and one log line.
    since = second_cluster.nc.log_size()
    for url, caller in ((nc2, one_box_cc), (nc1, cc2)):
        result = _call(url, proto.NcDescribeInstances(), caller, ca_file)
        assert not isinstance(result, str), (caller.what, result)
        _assert_refused(result, f"NC at {url} <- {caller.what}")
    second_cluster.nc.wait_for_log(f"cluster call refused role=nc caller=cc/{cloud.cluster}", since=since)
    cloud.proc.wait_for_log(f"cluster call refused role=nc caller=cc/{second_cluster.name}")
