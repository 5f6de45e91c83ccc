"""The default guest image booted for real: QEMU (TCG) under libvirt's qemu:///system, kernel + initramfs +
root disk as the NC boots them, serial console to a file. The guest must print its boot marker with the
instance id (SMBIOS serial), find its root disk, and obey libvirt's ACPI reboot and shutdown.

Needs root, libvirtd (started here with scripts/setup-host when it is not running) and the kernel package
(apt). The boot image comes from ~/.cache/euca/bootimage (built on first use, ~10 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from euca.images import bootimage as bi
from helpers.guest_ssh import make_key_pair, ssh_ok, wait_for_ssh
from helpers.onebox_cloud import libvirtd_netns
from helpers.qemu_host import LIBVIRT_URI, connect, libvirt, unusable_reason

REPO = Path(__file__).resolve().parents[2]
URI = LIBVIRT_URI
# Bounds each wait on the guest, so a guest that never comes up fails the test instead of hanging it.
HANG_GUARD = 180

_REASON = unusable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    c = connect()
    yield c
    c.close()


def domain_xml(name: str, image: bi.BootImage, disk: Path, console: Path, nic: str = "") -> str:
    """What the NC writes for an instance, reduced to what this image needs."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <sysinfo type='smbios'><system><entry name='serial'>{name}</entry></system></sysinfo>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image.vmlinuz}</kernel>
    <initrd>{image.initrd}</initrd>
    <cmdline>console=ttyS0 root=/dev/vda</cmdline>
    <smbios mode='sysinfo'/>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {nic}
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <console type='file'><source path='{console}'/><target type='serial' port='0'/></console>
  </devices>
</domain>"""


def wait_for(what: str, check: Callable[[], bool], console: Path) -> float:
    """Poll until check() holds; the seconds it took. Fails with the console's tail after HANG_GUARD."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > HANG_GUARD:
            tail = console.read_text(errors="replace")[-3000:] if console.exists() else "(no console file)"
            pytest.fail(f"guest never got to: {what}\n--- console ---\n{tail}")
        time.sleep(0.2)
    return time.monotonic() - start


def console_lines(console: Path, prefix: str) -> list[str]:
    if not console.exists():
        return []
    return [
        line.strip() for line in console.read_text(errors="replace").splitlines() if line.startswith(prefix)
    ]


def start_guest(
    conn: Any, image: bi.BootImage, where: Path, nic: str = "", name: str = ""
) -> tuple[Any, Path, str]:
    """A running transient domain of the boot image on a qcow2 overlay in `where`."""
    name = name or f"i-{uuid.uuid4().hex[:8]}"
    disk = where / "root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.root), str(disk)],
        check=True,
    )
    console = where / "console.log"
    return conn.createXML(domain_xml(name, image, disk, console, nic), 0), console, name


def destroy(dom: Any) -> None:
    try:
        dom.destroy()
    except libvirt.libvirtError:
        pass  # already gone (powered off)


@pytest.fixture
def guest(conn: Any, boot_image: bi.BootImage, tmp_path: Path) -> Iterator[tuple[Any, Path, str]]:
    dom, console, name = start_guest(conn, boot_image, tmp_path)
    try:
        yield dom, console, name
    finally:
        destroy(dom)


def test_boots_and_prints_the_marker(guest: tuple[Any, Path, str]) -> None:
    dom, console, name = guest
    took = wait_for("boot marker", lambda: bool(console_lines(console, bi.BOOT_MARKER)), console)
    marker = console_lines(console, bi.BOOT_MARKER)[0]
    assert marker.startswith(f"{bi.BOOT_MARKER} {name} ")
    wait_for("ready", lambda: bool(console_lines(console, "euca-guest: ready")), console)
    lines = console_lines(console, "euca-guest:")
    assert any(line.startswith("euca-guest: modules loaded: ") and "failed" not in line for line in lines), (
        lines
    )
    assert "euca-guest: disks: vda" in lines
    assert any(line.startswith("euca-guest: root marker: euca default root image") for line in lines), lines
    print(f"boot marker {took:.1f}s after the domain started: {marker}")


def test_acpi_reboot_and_shutdown(conn: Any, guest: tuple[Any, Path, str]) -> None:
    dom, console, name = guest
    # The marker is printed once the power button is watched, so the request below is not lost.
    wait_for("boot marker", lambda: bool(console_lines(console, bi.BOOT_MARKER)), console)
    dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
    took = wait_for("second boot", lambda: len(console_lines(console, bi.BOOT_MARKER)) >= 2, console)
    assert "euca-guest: power button, powering off" in console_lines(console, "euca-guest:")
    print(f"ACPI reboot to the second marker: {took:.1f}s")

    dom.shutdown()

    def gone() -> bool:
        try:
            conn.lookupByName(name)
            return False
        except libvirt.libvirtError:
            return True

    took = wait_for("power off", gone, console)
    print(f"ACPI shutdown: domain gone after {took:.1f}s")


def sh(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@pytest.fixture
def dhcp_bridge(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(bridge, gateway): a bridge of this test's own in libvirtd's network namespace (scripts/setup-host's
    "euca"), with busybox udhcpd serving it; both removed afterwards. Never in the host's namespace."""
    ns = libvirtd_netns() or ""
    if not ns:
        pytest.skip("libvirtd does not run in a network namespace (scripts/setup-host starts it in one)")
    tag = uuid.uuid4().hex[:6]
    bridge, octet = f"eucat{tag}", 100 + int(tag, 16) % 100
    gateway = f"10.79.{octet}.1"
    sh("ip", "-n", ns, "link", "add", bridge, "type", "bridge")
    server = None
    try:
        sh("ip", "-n", ns, "addr", "add", f"{gateway}/24", "dev", bridge)
        sh("ip", "-n", ns, "link", "set", bridge, "up")
        conf = tmp_path / "udhcpd.conf"
        conf.write_text(
            f"start 10.79.{octet}.10\nend 10.79.{octet}.20\ninterface {bridge}\n"
            f"lease_file {tmp_path}/udhcpd.leases\npidfile {tmp_path}/udhcpd.pid\n"
            f"option subnet 255.255.255.0\noption router {gateway}\n"
        )
        (tmp_path / "udhcpd.leases").touch()
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, "busybox", "udhcpd", "-f", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield bridge, gateway
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        subprocess.run(["ip", "-n", ns, "link", "del", bridge], capture_output=True)


def test_network_in_the_namespace(
    conn: Any, boot_image: bi.BootImage, dhcp_bridge: tuple[str, str], tmp_path: Path
) -> None:
    """A virtio NIC on a bridge inside libvirtd's namespace: the guest's udhcpc gets a lease and the guest
    answers ping from inside the namespace (nothing reaches the host's own network)."""
    bridge, gateway = dhcp_bridge
    mac = "d0:0d:" + ":".join(uuid.uuid4().hex[i : i + 2] for i in range(0, 8, 2))
    nic = f"<interface type='bridge'><source bridge='{bridge}'/><mac address='{mac}'/><model type='virtio'/></interface>"
    dom, console, name = start_guest(conn, boot_image, tmp_path, nic)
    try:
        took = wait_for(
            "DHCP lease", lambda: bool(console_lines(console, "euca-guest: eth0 bound ")), console
        )
        lease = console_lines(console, "euca-guest: eth0 bound ")[0]
        address = lease.split()[3].split("/")[0]
        assert address.startswith(gateway.rsplit(".", 1)[0] + ".") and f"router={gateway}" in lease
        print(f"lease {took:.1f}s after start: {lease}")
        ns = libvirtd_netns() or ""
        wait_for(
            f"answering ping at {address}",
            lambda: (
                subprocess.run(
                    ["ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", address],
                    capture_output=True,
                ).returncode
                == 0
            ),
            console,
        )
    finally:
        destroy(dom)


# A stand-in for the CC's metadata service on 169.254.169.254:80 inside the namespace, answering every
# source as one instance with the CC's own answer function (euca.roles.cc.metadata).
METADATA_STANDIN = """
import http.server, json, secrets, sys, time
from euca.roles.cc.metadata import Answer, MetadataRecord, Tokens, answer
spec = json.loads(open(sys.argv[1]).read())
refuse_tokens = spec.pop("refuse_tokens", False)
record = MetadataRecord(**{**spec, "user_data": spec["user_data"].encode()})
tokens = Tokens(secrets.token_bytes(32))

class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        if refuse_tokens and self.command == "PUT":  # a service without IMDSv2
            a = Answer(405, b"Method Not Allowed\\n")
        else:
            a = answer(record, self.command, self.path, headers, tokens, time.time())
        self.send_response(a.status)
        for k, v in (("Content-Type", a.content_type), ("Content-Length", str(len(a.body))), *a.headers):
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(a.body)
        print(self.command, self.path, a.status, flush=True)

    do_GET = do_PUT = answer

    def log_message(self, *args):
        pass

http.server.HTTPServer(("169.254.169.254", 80), Handler).serve_forever()
"""


@pytest.fixture
def metadata_standin(
    dhcp_bridge: tuple[str, str], tmp_path: Path
) -> Iterator[Callable[[dict[str, Any]], None]]:
    """start(spec): a stand-in for the CC's metadata service on 169.254.169.254:80 in the bridge's
    namespace, answering every source as the instance `spec` describes, with the CC's own answer function
    (euca.roles.cc.metadata); `refuse_tokens` in the spec makes it a service without IMDSv2."""
    bridge, _ = dhcp_bridge
    ns = libvirtd_netns() or ""
    sh("ip", "-n", ns, "addr", "add", "169.254.169.254/32", "dev", bridge)
    # Ahead of any cluster's DNAT of 169.254.169.254 in the shared namespace: ours stays local.
    keep_local = ["-t", "nat", "PREROUTING", "-i", bridge, "-d", "169.254.169.254/32", "-j", "ACCEPT"]
    sh("ip", "netns", "exec", ns, "iptables", "-w", *keep_local[:2], "-I", *keep_local[2:])
    servers: list[subprocess.Popen[bytes]] = []
    log = open(tmp_path / "metadata.log", "w")

    def start(spec: dict[str, Any]) -> None:
        (tmp_path / "md.json").write_text(json.dumps(spec))
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", METADATA_STANDIN, str(tmp_path / "md.json")]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        servers.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))

    try:
        yield start
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
        log.close()
        sh("ip", "netns", "exec", ns, "iptables", "-w", *keep_local[:2], "-D", *keep_local[2:])


def _guest_on(bridge: str) -> str:
    mac = "d0:0d:" + ":".join(uuid.uuid4().hex[i : i + 2] for i in range(0, 8, 2))
    return f"<interface type='bridge'><source bridge='{bridge}'/><mac address='{mac}'/><model type='virtio'/></interface>"


def test_metadata_hostname_ssh_key_and_user_data(
    conn: Any,
    boot_image: bi.BootImage,
    dhcp_bridge: tuple[str, str],
    metadata_standin: Callable[[dict[str, Any]], None],
    tmp_path: Path,
) -> None:
    """The guest reads its metadata (IMDSv2), sets its hostname, installs root's key, starts dropbear and
    runs its user-data script (output on the console); ssh with the key from the namespace gets in."""
    bridge, gateway = dhcp_bridge
    ns = libvirtd_netns() or ""
    key, public_key = make_key_pair(tmp_path)
    name = f"i-{uuid.uuid4().hex[:8]}"
    local_ip = gateway.rsplit(".", 1)[0] + ".10"
    metadata_standin(
        {
            "instance_id": name,
            "local_ipv4": local_ip,
            "mac": "d0:0d:00:00:00:01",
            "zone": "test-zone",
            "key_name": "test-key",
            "public_key": public_key,
            "user_data": '#!/bin/sh\necho "hello from user data on $(hostname)"\nexit 0\n',
        }
    )
    dom, console, _ = start_guest(conn, boot_image, tmp_path, _guest_on(bridge), name=name)
    try:
        took = wait_for(
            "user data run", lambda: bool(console_lines(console, "euca-guest: user-data exit")), console
        )
        lines = console_lines(console, "euca-guest:")
        short = "euca-" + local_ip.replace(".", "-")
        assert f"euca-guest: metadata IMDSv2 instance-id={name}" in lines, lines
        assert f"euca-guest: hostname {short} ({short}.eucalyptus.internal)" in lines, lines
        assert "euca-guest: ssh key installed for root (ssh-ed25519 id_ed25519)" in lines, lines
        assert any(line.startswith("euca-guest: sshd started (dropbear") for line in lines), lines
        assert "euca-guest: user-data exit 0" in lines, lines
        text = console.read_text(errors="replace")
        assert f"hello from user data on {short}" in text
        print(f"user data run {took:.1f}s after start")
        address = console_lines(console, "euca-guest: eth0 bound ")[0].split()[3].split("/")[0]
        assert wait_for_ssh(ns, key, address) == short
        assert ssh_ok(ns, key, address, "cat /root/.ssh/authorized_keys").strip() == public_key
        assert ssh_ok(ns, key, address, "id -u").strip() == "0"
    finally:
        destroy(dom)


def test_imdsv1_only_no_key_and_user_data_that_is_no_script(
    conn: Any,
    boot_image: bi.BootImage,
    dhcp_bridge: tuple[str, str],
    metadata_standin: Callable[[dict[str, Any]], None],
    tmp_path: Path,
) -> None:
    """A service without IMDSv2 tokens is read with plain GETs; without a key root gets none (dropbear
    still starts, keys only); user data without #! is left in /run/user-data, not run."""
    bridge, gateway = dhcp_bridge
    name = f"i-{uuid.uuid4().hex[:8]}"
    local_ip = gateway.rsplit(".", 1)[0] + ".11"
    metadata_standin(
        {
            "instance_id": name,
            "local_ipv4": local_ip,
            "mac": "d0:0d:00:00:00:02",
            "zone": "test-zone",
            "user_data": "just some text\n",
            "refuse_tokens": True,
        }
    )
    dom, console, _ = start_guest(conn, boot_image, tmp_path, _guest_on(bridge), name=name)
    try:
        wait_for("user data seen", lambda: bool(console_lines(console, "euca-guest: user-data is")), console)
        lines = console_lines(console, "euca-guest:")
        assert f"euca-guest: metadata IMDSv1 instance-id={name}" in lines, lines
        assert "euca-guest: no ssh key in the metadata" in lines, lines
        assert any(line.startswith("euca-guest: sshd started (dropbear") for line in lines), lines
        assert "euca-guest: user-data is not a script (no #!): left in /run/user-data" in lines, lines
    finally:
        destroy(dom)
