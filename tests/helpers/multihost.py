"""The multi-host cloud of scripts/multihost for the e2e tests: built with `scripts/multihost up` under a
prefix, LAN and data directory of the test's own, always taken down with `scripts/multihost down` (which
destroys the guests through each node's libvirtd, stops every process it started and removes the
namespaces and the directory), and seen through helpers.onebox_cloud.Cloud (boto3 with the admin's
credentials at the cloud host's LAN address, `euca admin` on the cloud host's data dir)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from euca.images import default_image as di
from helpers.onebox_cloud import REPO, Cloud, EucaProcess, workdir

SCRIPT = REPO / "scripts" / "multihost"


@dataclass
class MultiHost:
    """The running layout: its namespaces are `<prefix>-cloud`, `-cc-a`, `-nc-a1`, ..., `-client`."""

    prefix: str
    lan: str  # the LAN's first three octets
    dir: Path
    env: dict[str, str]
    cloud: Cloud

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def client_netns(self) -> str:
        return self.netns("client")

    def log(self, host_dir: str, role: str) -> Path:
        return self.dir / host_dir / f"{role}.log"

    def tail(self, host_dir: str, role: str, lines: int = 30) -> str:
        try:
            text = self.log(host_dir, role).read_text(errors="replace")
        except FileNotFoundError:
            return f"--- no log {host_dir}/{role}"
        return f"--- last lines of {host_dir}/{role}.log:\n" + "\n".join(text.splitlines()[-lines:])

    def script(self, *args: str) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            raise AssertionError(f"scripts/multihost {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def nodes(self) -> dict[str, tuple[str, list[str]]]:
        """node name -> (state, its instances), from `euca admin describe-nodes`."""
        out: dict[str, tuple[str, list[str]]] = {}
        for line in self.cloud.admin("describe-nodes").splitlines():
            fields = line.split("\t")
            if fields[0] == "NODE":
                listed = fields[-1].removeprefix("instances ").strip()
                out[fields[1]] = (fields[3], [] if listed == "-" else listed.split(","))
        return out

    def services(self) -> dict[str, str]:
        """component name -> state, from `euca admin describe-services`."""
        return {
            f[2]: f[5]
            for f in (line.split("\t") for line in self.cloud.admin("describe-services").splitlines())
        }

    def libvirt_uri(self, node: str) -> str:
        return f"qemu+unix:///system?socket={self.dir}/nc-{node}/libvirt/sock/libvirt-sock"

    def domains(self, node: str) -> list[str]:
        """The domains node `node`'s own libvirtd has (running or not)."""
        done = subprocess.run(
            ["virsh", "-c", self.libvirt_uri(node), "list", "--all", "--name"], capture_output=True, text=True
        )
        return [n for n in done.stdout.split() if n]

    def domain_xml(self, node: str, name: str) -> str:
        done = subprocess.run(
            ["virsh", "-c", self.libvirt_uri(node), "dumpxml", name], capture_output=True, text=True
        )
        return done.stdout


@contextlib.contextmanager
def multihost_cloud(
    prefix: str,
    lan: str,
    *,
    cloud_set: str = "",
    cc_set: str = "",
    nc_set: str = "",
) -> Iterator[MultiHost]:
    """scripts/multihost up with this prefix and LAN (the rest of the layout as the script has it);
    scripts/multihost down at the end whatever happened, up's failure included."""
    work = workdir(f"euca-e2e-{prefix}-")
    env = {
        **os.environ,
        "MH_PREFIX": prefix,
        "MH_LAN": lan,
        "MH_DIR": str(work / "hosts"),
        "MH_CLOUD_SET": cloud_set,
        "MH_CC_SET": cc_set,
        "MH_NC_SET": nc_set,
        "PYTHON": sys.executable,
    }
    proc = EucaProcess("cloud", [], work / "hosts" / "cloud" / "cloud.log")
    try:
        up = subprocess.run(
            ["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=1200
        )
        if up.returncode != 0:
            raise AssertionError(f"scripts/multihost up failed:\n{up.stdout}{up.stderr}")
        data = work / "hosts" / "cloud"
        image = json.loads((data / di.STATE_FILE).read_text())
        cloud = Cloud(
            proc, data, 8773, 8774, 8775, "cluster-a", f"{prefix}-1a", "vmbr0",
            image["machine_id"], image["kernel_id"], image["ramdisk_id"],
        )  # fmt: skip
        yield MultiHost(prefix, lan, work / "hosts", env, cloud)
    finally:
        down = subprocess.run(
            ["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=600
        )
        if down.returncode != 0:
            print(f"teardown: scripts/multihost down failed:\n{down.stdout}{down.stderr}", file=sys.stderr)
        with contextlib.suppress(OSError):
            work.rmdir()  # down removed hosts/; the work dir itself is ours


def private_ip_of(described: dict[str, object]) -> str:
    ip = described.get("PrivateIpAddress")
    assert isinstance(ip, str) and re.fullmatch(r"[\d.]+", ip), described
    return ip
