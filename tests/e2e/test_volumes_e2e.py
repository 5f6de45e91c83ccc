"""Issue 10's attach proof with a real guest: a one-box (`euca --role all`: CLC, Walrus, SC, CC, NC) runs one
QEMU guest of its default image; a 1 GiB volume attached to it while it runs appears in the guest as a new
virtio disk without a reboot (the guest kernel's `virtio_blk ... [vdX] ... (1.07 GB/1.00 GiB)` on the
console, read with GetConsoleOutput), served by the SC's qemu-storage-daemon over NBD through CLC -> SC
(ExportVolume) and CLC -> CC -> NC (AttachVolume, a hot-plug); detaching takes it out of the running domain
again (the guest acknowledged the ACPI unplug) and the volume is available.

Polls wait with a long deadline (HANG_GUARD) that only stops a hang; nothing asserts how long things take.
"""

from __future__ import annotations

import json
import os
import re
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
from euca.images import default_image as di
from helpers.onebox_cloud import ec2_from_credentials
from helpers.polling import HANG_GUARD, free_ports, wait_until
from helpers.qemu_host import connect, libvirt, unusable_reason

_REASON = unusable_reason()
if _REASON is None and shutil.which("qemu-storage-daemon") is None:
    _REASON = "qemu-storage-daemon is not installed"
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

# One 1 GiB disk as the guest kernel announces it.
VIRTIO_BLK = re.compile(r"virtio_blk virtio\d+: \[(vd[a-z]+)\] 2097152 512-byte logical blocks")


def euca_command() -> list[str]:
    script = Path(sys.executable).parent / "euca"
    return [str(script)] if script.exists() else [sys.executable, "-m", "euca.cli"]


class OneBox:
    def __init__(self, work: Path):
        self.work = work
        self.data = work / "data"
        self.log_path = work / "one-box.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ec2: Any = None

    def start(self) -> None:
        clc, cc, nc, sc = free_ports(4)
        args = [
            "--role",
            "all",
            "--data-dir",
            str(self.data),
            "--host",
            "127.0.0.1",
            *("--set", f"clc.listen.port={clc}", "--set", f"walrus.listen.port={clc}"),
            *(
                "--set",
                f"cc.listen.port={cc}",
                "--set",
                f"nc.listen.port={nc}",
                "--set",
                f"sc.listen.port={sc}",
            ),
            *("--set", "clc.poll_interval=0.5", "--set", "cc.poll_interval=0.5"),
            *("--set", f"cc.cluster=e2evol{uuid.uuid4().hex[:4]}", "--set", "cc.bridge="),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*euca_command(), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            "the one-box to be ready", lambda: "cloud ready" in self.log() or self._died(), detail=self.tail
        )
        assert self.proc.poll() is None, self.tail()

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the one-box exited ({self.proc.returncode})\n{self.tail()}")
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "--- one-box log:\n" + "\n".join(self.log().splitlines()[-lines:])

    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = ec2_from_credentials(self.data / "credentials" / "eucalyptus" / "admin")
        return self._ec2


def _kill_strays(data_dir: Path) -> None:
    """Processes still running with our data dir on their command line (a qemu-storage-daemon left by a
    one-box that did not stop cleanly): ours, so ended here."""
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


@pytest.fixture(scope="module")
def onebox(boot_image: bi.BootImage) -> Iterator[OneBox]:
    # Outside pytest's 0700 tree, so libvirt's QEMU reaches disks and kernels whatever user it runs as.
    work = Path(tempfile.mkdtemp(prefix="euca-e2e-vol-", dir="/var/tmp"))
    work.chmod(0o755)
    box = OneBox(work)
    launched: list[str] = []
    box.launched = launched  # type: ignore[attr-defined]
    try:
        box.start()
        yield box
    finally:
        if launched and box.proc is not None and box.proc.poll() is None:
            try:
                box.ec2().terminate_instances(InstanceIds=launched)
                wait_until(
                    "the guest to terminate",
                    lambda: all(
                        i["State"]["Name"] == "terminated"
                        for r in box.ec2().describe_instances(InstanceIds=launched)["Reservations"]
                        for i in r["Instances"]
                    ),
                    deadline=120,
                )
            except Exception as e:
                print(f"teardown: terminating {launched} failed: {e}", file=sys.stderr)
        box.stop()
        _kill_strays(box.data)
        conn = connect()
        try:
            for name in launched:
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    continue
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        finally:
            conn.close()
        shutil.rmtree(work, ignore_errors=True)


def _console(ec2: Any, instance_id: str) -> str:
    return str(ec2.get_console_output(InstanceId=instance_id).get("Output") or "")


def _domain_has(instance_id: str, volume_id: str) -> bool:
    conn = connect()
    try:
        return f"<serial>{volume_id}</serial>" in conn.lookupByName(instance_id).XMLDesc(0)
    finally:
        conn.close()


def test_a_volume_attached_to_a_running_guest_is_a_new_disk_and_detach_removes_it(onebox: OneBox) -> None:
    ec2 = onebox.ec2()
    image = json.loads((onebox.data / di.STATE_FILE).read_text())
    zone = ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    made = ec2.run_instances(
        ImageId=image["machine_id"],
        MinCount=1,
        MaxCount=1,
        InstanceType="t1.micro",
        Placement={"AvailabilityZone": zone},
    )
    instance_id = made["Instances"][0]["InstanceId"]
    onebox.launched.append(instance_id)  # type: ignore[attr-defined]
    wait_until(
        "the guest's boot marker",
        lambda: "euca-guest: booted" in _console(ec2, instance_id),
        detail=lambda: _console(ec2, instance_id)[-2000:] + onebox.tail(),
    )
    disks_before = set(VIRTIO_BLK.findall(_console(ec2, instance_id)))

    volume_id = ec2.create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
    wait_until(
        f"{volume_id} available",
        lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available",
        detail=onebox.tail,
    )
    attached = ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    assert attached["State"] == "attaching"

    def attachment_state() -> str | None:
        (v,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        return v["Attachments"][0]["State"] if v["Attachments"] else None

    wait_until(f"{volume_id} attached", lambda: attachment_state() == "attached", detail=onebox.tail)

    def new_disk() -> str | None:
        found = set(VIRTIO_BLK.findall(_console(ec2, instance_id))) - disks_before
        return next(iter(found), None)

    disk = wait_until(
        "the guest kernel to announce the new 1 GiB disk",
        new_disk,
        deadline=HANG_GUARD,
        detail=lambda: _console(ec2, instance_id)[-3000:] + onebox.tail(),
    )
    assert disk.startswith("vd")
    assert _domain_has(instance_id, volume_id)
    # Served by the SC's qemu-storage-daemon over NBD (its unix socket: the node is on the SC's host).
    (line,) = [x for x in onebox.log().splitlines() if f"volume attached id={volume_id}" in x]
    assert "export=nbd" in line, line
    (r,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert [m["Ebs"]["VolumeId"] for m in r["Instances"][0]["BlockDeviceMappings"]] == [volume_id]

    ec2.detach_volume(VolumeId=volume_id)
    wait_until(
        f"{volume_id} available after the detach",
        lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available",
        detail=onebox.tail,
    )
    assert not _domain_has(instance_id, volume_id)  # the guest let go of it: gone from the running domain
    assert "euca-guest: booted" in _console(ec2, instance_id)  # never rebooted
    assert _console(ec2, instance_id).count("euca-guest: booted") == 1
    ec2.delete_volume(VolumeId=volume_id)
