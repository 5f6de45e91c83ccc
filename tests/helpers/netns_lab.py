"""Network namespaces for the CC's data-path tests: a cluster namespace with the bridge, guests as veth ends
in namespaces of their own (static addresses, a TCP listener that says who it is and who called), and a
"client" namespace outside the cloud, cabled to the cluster namespace's uplink and routed to the public pool
through it. Everything is made with unique names and removed, with whatever runs in it, at cleanup."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid

import trio

BRIDGE = "euca-br0"
UPLINK = "up0"
UPLINK_CC = "198.51.100.1"
UPLINK_CLIENT = "198.51.100.2"
PUBLIC_POOL = "203.0.113.0/24"

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{sys.argv[1]} {peer[0]}\\n".encode()); c.close()
"""

CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.makefile().readline().strip())
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print(f"ERROR {e}")
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def unusable_reason(*more_tools: str) -> str | None:
    """Why this machine cannot run these tests (which also need `more_tools`), or None."""
    for tool in ("ip", "dnsmasq", "iptables", "iptables-restore", "iptables-save", *more_tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"euca-probe-{uuid.uuid4().hex[:8]}"
    result = sh("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"ip netns add fails here: {result.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


class Lab:
    """Namespaces made for one test; removed afterwards with whatever still runs in them."""

    def __init__(self) -> None:
        self.prefix = f"euca-d{uuid.uuid4().hex[:6]}"
        self.names: list[str] = []
        self.listeners: list[subprocess.Popen[str]] = []

    def add(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def bridged(self, gateway_cidr: str, tag: str = "cc") -> str:
        """A namespace with the bridge the setup makes: BRIDGE at the gateway address, up."""
        ns = self.add(tag)
        sh("ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", ns, "addr", "add", gateway_cidr, "dev", BRIDGE)
        sh("ip", "-n", ns, "link", "set", BRIDGE, "up")
        return ns

    def cluster(self, gateway_cidr: str) -> tuple[str, str]:
        """The cluster namespace (bridged(), at the gateway address) and a client namespace on its uplink,
        routed to the public pool through it; the cluster's default route goes to the client."""
        cc = self.bridged(gateway_cidr)
        client = self.add("client")
        sh("ip", "link", "add", UPLINK, "netns", cc, "type", "veth", "peer", "name", "eth0", "netns", client)
        sh("ip", "-n", cc, "addr", "add", f"{UPLINK_CC}/24", "dev", UPLINK)
        sh("ip", "-n", cc, "link", "set", UPLINK, "up")
        sh("ip", "-n", client, "addr", "add", f"{UPLINK_CLIENT}/24", "dev", "eth0")
        sh("ip", "-n", client, "link", "set", "eth0", "up")
        sh("ip", "-n", client, "route", "add", PUBLIC_POOL, "via", UPLINK_CC)
        sh("ip", "-n", cc, "route", "add", "default", "via", UPLINK_CLIENT)
        return cc, client

    def guest(
        self, cluster_ns: str, tag: str, mac: str, ip_cidr: str | None = None, gateway: str | None = None
    ) -> str:
        """A namespace whose eth0 (this MAC) is cabled to the cluster's bridge: with this static address and
        default route when given, else with none (for a DHCP client to get one)."""
        ns = self.add(tag)
        port = f"v{tag}"[:15]
        sh(
            "ip",
            "link",
            "add",
            port,
            "netns",
            cluster_ns,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        sh("ip", "-n", cluster_ns, "link", "set", port, "master", BRIDGE, "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        if ip_cidr is not None:
            sh("ip", "-n", ns, "addr", "add", ip_cidr, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        if gateway is not None:
            sh("ip", "-n", ns, "route", "add", "default", "via", gateway)
        return ns

    def listen(self, ns: str, name: str, port: int = 22) -> None:
        """A TCP listener in `ns` that answers each connection with `<name> <caller's address>`."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, name, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.listeners.append(proc)

    def pids(self, ns: str) -> list[int]:
        return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]

    def cleanup(self) -> None:
        for proc in self.listeners:
            proc.kill()
            proc.wait()
        for ns in reversed(self.names):
            for pid in self.pids(ns):  # only processes in namespaces this test made
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", ns, check=False)


async def connect(ns: str, ip: str, port: int = 22, timeout: float = 1.5) -> str:
    """From `ns`, what the listener at ip:port answers ("<name> <caller>"), or TIMEOUT / ERROR ..."""
    result = await trio.run_process(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, ip, str(port), str(timeout)],
        capture_stdout=True,
        check=True,
    )
    return result.stdout.decode().strip()


def iptables_save(ns: str | None) -> str:
    """The namespace's rules (the host's for None) without comments and counters, so two dumps of the same
    rules compare equal."""
    argv = ["iptables-save"] if ns is None else ["ip", "netns", "exec", ns, "iptables-save"]
    lines = sh(*argv).stdout.splitlines()
    return "\n".join(line.split(" [")[0] for line in lines if not line.startswith("#"))


def addresses(ns: str, dev: str) -> list[str]:
    out = sh("ip", "-n", ns, "-o", "-4", "addr", "show", "dev", dev).stdout
    return [field for line in out.splitlines() for field in line.split()[3:4]]


HTTP = """
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
headers = dict(h.split(": ", 1) for h in sys.argv[3:])
try:
    with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=5) as r:
        sys.stdout.write(f"{r.status}\\n" + r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(f"{e.code}\\n")
except OSError as e:
    sys.stdout.write(f"ERROR {e}\\n")
"""


async def http(ns: str, method: str, url: str, *headers: str) -> tuple[str, str]:
    """From `ns`: (status, body) of one HTTP request ("ERROR ..." as the status if none came back)."""
    result = await trio.run_process(
        ["ip", "netns", "exec", ns, sys.executable, "-c", HTTP, method, url, *headers],
        capture_stdout=True,
        check=True,
    )
    status, _, body = result.stdout.decode().partition("\n")
    return status, body
