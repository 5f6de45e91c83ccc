"""scripts/start-onebox and scripts/stop-onebox as an operator runs them (as root, real guests).

start-onebox (install step skipped, the default image registered from the cached boot image) runs in a
network namespace of the test's own; an instance of the default emi runs; `stop-onebox --terminate-guests`
terminates it through the EC2 API, stops euca by its pid file, stops the daemons setup-host started in the
namespace and removes the namespace. Afterwards nothing of it is left: no euca process, no domain, no
namespace, no pid file, no process with the data dir on its command line.

libvirtd is one per host: the one already running (scripts/setup-host's, in the `euca` namespace) is left
alone by setup-host and by stop-onebox here, as it is in no namespace of ours. To still prove that
stop-onebox stops what setup-host started inside the namespace and nothing else, a stand-in process named
`virtlogd` (a copy of sleep) runs there, recorded in the run dir as setup-host records the daemons it starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from euca.images import bootimage as bi
from helpers.polling import HANG_GUARD, free_ports, wait_until
from helpers.qemu_host import connect, unusable_reason

REPO = Path(__file__).resolve().parents[2]

_REASON = unusable_reason() if os.geteuid() == 0 else "start-onebox and stop-onebox are tested as root"
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def processes_mentioning(needle: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class OneBox:
    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="euca-onebox-", dir="/var/tmp"))
        self.work.chmod(0o755)  # libvirt's QEMU reads the instances' disks under it
        self.data = self.work / "data"
        self.run = self.work / "run"
        self.netns = f"eucat{uuid.uuid4().hex[:6]}"
        self.client_netns = f"{self.netns}-c"  # not the shared euca-client: its uplink is another cloud's
        self.clc_port, self.cc_port, self.nc_port = free_ports(3)
        self.log = self.work / "start.log"
        self.env = dict(
            os.environ,
            PYTHON=sys.executable,
            EUCA_SKIP_INSTALL="1",
            EUCA_DATA_DIR=str(self.data),
            EUCA_RUN_DIR=str(self.run),
            EUCA_NETNS=self.netns,
            EUCA_CLIENT_NETNS=self.client_netns,
            PYTHONPATH=str(REPO),
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            "--host",
            "127.0.0.1",
            "--set",
            f"clc.listen.port={self.clc_port}",
            "--set",
            f"walrus.listen.port={self.clc_port}",
            "--set",
            f"cc.listen.port={self.cc_port}",
            "--set",
            f"nc.listen.port={self.nc_port}",
            "--set",
            "clc.poll_interval=0.5",
            # Guests' QEMU runs in libvirtd's namespace, not the test's: no NIC for them.
            "--set",
            "cc.bridge=",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", str(REPO / "scripts" / "start-onebox"), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        return "--- start-onebox's output:\n" + "\n".join(self.text().splitlines()[-40:])

    def stop_onebox(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REPO / "scripts" / "stop-onebox"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
        )

    def ec2(self) -> Any:
        import boto3

        creds = (self.data / "credentials" / "eucalyptus" / "admin" / "aws-credentials").read_text()
        keys = dict(line.split(" = ", 1) for line in creds.splitlines() if " = " in line)
        return boto3.client(
            "ec2",
            endpoint_url=f"http://127.0.0.1:{self.clc_port}",
            region_name="eucalyptus",
            aws_access_key_id=keys["aws_access_key_id"],
            aws_secret_access_key=keys["aws_secret_access_key"],
        )

    def cleanup(self) -> None:
        """Only when a test failed half way: what is still ours is ended (never another process)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for line in processes_mentioning(str(self.work)):
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in (self.netns, self.client_netns):
            if ns in netns_list():
                subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture
def onebox() -> Iterator[OneBox]:
    try:
        bi.find_boot_image() or bi.build_boot_image()
    except bi.BootImageUnavailable as e:
        pytest.skip(f"no default boot image: {e}")
    box = OneBox()
    try:
        yield box
    finally:
        box.cleanup()


def test_stop_onebox_terminates_guests_stops_what_was_started_and_leaves_nothing(onebox: OneBox) -> None:
    onebox.start()
    assert onebox.proc is not None
    wait_until(
        "cloud ready",
        lambda: "cloud ready" in onebox.text() or onebox.proc.poll() is not None,  # type: ignore[union-attr]
        detail=onebox.tail,
    )
    assert onebox.proc.poll() is None, onebox.tail()
    pid = int((onebox.run / "onebox.pid").read_text())
    assert pid == onebox.proc.pid  # start-onebox execs euca: the pid it wrote is euca's
    assert {onebox.netns, onebox.client_netns} <= netns_list()
    # A second start while this one runs is refused.
    again = subprocess.run(
        ["bash", str(REPO / "scripts" / "start-onebox")], env=onebox.env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "already runs" in again.stderr

    ec2 = onebox.ec2()
    [emi] = [
        i["ImageId"]
        for i in ec2.describe_images(Owners=["self"])["Images"]
        if i["ImageId"].startswith("emi-")
    ]
    [instance] = ec2.run_instances(ImageId=emi, InstanceType="t1.micro", MinCount=1, MaxCount=1)["Instances"]
    instance_id = instance["InstanceId"]

    def running() -> bool:
        [r] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return bool(r["Instances"][0]["State"]["Name"] == "running")

    wait_until(f"{instance_id} running", running, detail=onebox.tail)
    conn = connect()
    try:
        assert instance_id in {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()

    # What setup-host would have started in the namespace, had no libvirt run yet (see the module doc).
    stand_in = onebox.work / "bin" / "virtlogd"
    stand_in.parent.mkdir()
    shutil.copy("/bin/sleep", stand_in)
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", onebox.netns, str(stand_in), "600"], start_new_session=True
    )
    (onebox.run / "virtlogd.pid").write_text(f"{daemon.pid}\n")
    wait_until(
        "the stand-in daemon",
        lambda: Path(f"/proc/{daemon.pid}/comm").read_text().strip() == "virtlogd",
        detail=onebox.tail,
    )
    others = {
        int(p)
        for p in subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout.split()
    }

    done = onebox.stop_onebox("--terminate-guests")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    daemon.wait(10)
    assert f"terminating 1 instance(s) through the EC2 API: {instance_id}" in out
    assert f"euca: stopped (pid {pid})" in out
    assert f"virtlogd: stopped (pid {daemon.pid})" in out
    assert f"netns {onebox.netns}: removed" in out
    # Nothing is left: euca, its dnsmasq, the guest, the namespace, the pid files. libvirtd of the host's
    # (not started in our namespace) still runs.
    assert onebox.proc.wait(5) == 0
    assert not alive(pid)
    assert not {onebox.netns, onebox.client_netns} & netns_list()
    assert not (onebox.run / "onebox.pid").exists() and not (onebox.run / "virtlogd.pid").exists()
    assert processes_mentioning(str(onebox.work)) == []
    conn = connect()
    try:
        assert instance_id not in {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()
    assert all(alive(p) for p in others)
    # Started with its pid file, stopped by it: the start's own lines are one per step.
    assert "start-onebox: starting euca --role all" in onebox.text()

    # Nothing running: says so, and succeeds.
    done = onebox.stop_onebox()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "none that start-onebox started" in done.stdout
