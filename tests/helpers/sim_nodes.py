"""Simulated nodes: many real NCs in one process, for the scale bench (bench/scale.py) and its test.

Each simulated node is the NC role's own code path: a `NodeController` answering the CC's messages through
the NC's `ClusterApp` on an `HttpServer` of its own (its own loopback port, mutual TLS with a component
certificate whose CN is the node's registered name and which names its cluster, as `euca --role nc --join`
gets). What is simulated is the host under it:

- the hypervisor is libvirt's test driver, one private driver per node: `test:///<file>` (a node XML with
  the host's cores and memory) opens a fresh in-memory driver per connection, unlike `test:///default`,
  which every connection of a process shares; so each node lists only its own domains;
- the instance's disks are sparse files of the layout's sizes (`sparse_disks`) instead of qemu-img,
  mkfs.ext4 and mkswap runs (three processes an instance: 30,000 for 10,000 instances); the test driver
  never opens them. Everything else (instance.json, the image cache with the download manifest's checks,
  the domain XML, the lifecycle, the polls) is the real NC's.

Certificates: the CLC's CA (its data dir's `pki`, the key is there) issues one certificate per node, all for
one key made per process: a key is the costly part of issuing (an RSA key ~100 ms, a signature ~2 ms), and
the PKI checks the certificate's CN and cluster, never that keys differ. The node image key (what download
manifests' keys are sealed for) is the CLC host's, as a join hands it to an NC.

Run as a program: `python tests/helpers/sim_nodes.py --clc-data DIR --cluster NAME --first 0 --count 500
--base-port 30000 --work DIR`; it prints `SIMNODES READY n=... ports=A-B` once every node listens, and stops
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from euca.core.cluster_app import ClusterApp
from euca.core.components import COMPONENTS_DIR, Components
from euca.core.config import HttpLimits
from euca.core.http import HttpServer
from euca.core.pki import CloudCA, key_pem, new_key
from euca.core.roles import Dispatcher
from euca.roles.nc import _with_peer
from euca.roles.nc.controller import NodeController
from euca.roles.nc.disks import EPHEMERAL_FILE, ROOT_FILE, SWAP_FILE, DiskLayout
from euca.roles.nc.domain import Disk
from euca.roles.nc.hypervisor import Hypervisor
from euca.roles.nc.image_fetch import NodeKeys
from euca.roles.nc.settings import NcSettings

log = logging.getLogger("euca.simnodes")

HOST = "127.0.0.1"
GiB = 1024**3


def node_name(index: int) -> str:
    return f"sim-{index:04d}"


def sparse_disks(directory: Path, base: Path, layout: DiskLayout) -> tuple[Disk, ...]:
    """The instance's disks as sparse files of the sizes the layout says (the root as large as its image):
    what make_instance_disks leaves on a node, without the three tool runs. The test driver never reads
    them."""
    sizes = [(ROOT_FILE, "vda", "qcow2", base.stat().st_size)]
    if layout.ephemeral_bytes:
        sizes.append((EPHEMERAL_FILE, "vdb", "raw", layout.ephemeral_bytes))
    if layout.swap_bytes:
        sizes.append((SWAP_FILE, "vdc", "raw", layout.swap_bytes))
    devices = []
    for file, target, fmt, size in sizes:
        path = directory / file
        with open(path, "wb") as f:
            f.truncate(size)
        devices.append(Disk(str(path), target, fmt))
    return tuple(devices)


class SimNodeController(NodeController):
    """The NC's controller with sparse-file disks (see the module's docstring)."""

    _make_disks = staticmethod(sparse_disks)


def host_xml(cores: int, memory_mb: int) -> str:
    """A test-driver node description: the host's CPUs and memory, no domains."""
    return (
        "<node>\n"
        f"  <cpu><mhz>2000</mhz><model>sim</model><active>{cores}</active><nodes>1</nodes>"
        f"<sockets>1</sockets><cores>{cores}</cores><threads>1</threads></cpu>\n"
        f"  <memory>{memory_mb * 1024}</memory>\n"
        "</node>\n"
    )


@dataclass(frozen=True)
class SimPlan:
    clc_data: Path  # the CLC's data dir: pki/ (the CA with its key) and components/ (the node image key)
    cluster: str
    first: int  # index of the first node (names sim-NNNN)
    count: int
    base_port: int  # node i listens on base_port + (i - first); 0: any free ports
    work: Path
    cores: int = 12
    memory_mb: int = 12 * 256
    disk_gb: int = 12 * 5
    monitor_interval: float = 5.0


def issue_certificates(plan: SimPlan) -> list[Components]:
    """Each node's components dir: the cloud certificate, its nc identity (one shared key, a certificate
    per node: CN = its name, its cluster), the node image key and certificate. Reused when present."""
    ca = CloudCA.load_or_create(plan.clc_data / "pki", create=False)
    clc = Components(plan.clc_data / COMPONENTS_DIR)
    key = None
    out = []
    for index in range(plan.first, plan.first + plan.count):
        name = node_name(index)
        components = Components(plan.work / name / "components")
        if not components.has("nc"):
            if key is None:
                key = new_key()
            cert = ca.issue_component_cert(key.public_key(), "nc", name, [HOST], cluster=plan.cluster)
            components.write_ca_cert(ca.cert_pem)
            components.write_identity("nc", key_pem(key), cert)
            components.write_node_image(clc.node_image_key_pem, clc.node_image_cert_pem)
        out.append(components)
    return out


async def serve_nodes(
    plan: SimPlan, *, task_status: Any = trio.TASK_STATUS_IGNORED, ready: Any = None
) -> None:
    """Run plan.count simulated nodes until cancelled; task_status.started(ports) once all listen."""
    components = await trio.to_thread.run_sync(issue_certificates, plan)
    keys = NodeKeys.from_components(components[0])  # the cluster's node image key: the same for every node
    limits = HttpLimits()
    xml = plan.work / "host.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(host_xml(plan.cores, plan.memory_mb))
    controllers: list[NodeController] = []
    ports: list[int] = []
    async with trio.open_nursery() as nursery:
        for offset, comp in enumerate(components):
            name = node_name(plan.first + offset)
            data = plan.work / name
            settings = NcSettings(
                name=name,
                data_dir=data,
                instances_dir=data / "instances",
                cache_dir=data / "cache",
                cache_max_bytes=GiB,
                libvirt_uri=f"test://{xml}",
                hypervisor="qemu",
                cores=plan.cores,
                memory_mb=plan.memory_mb,
                disk_gb=plan.disk_gb,
                monitor_interval=plan.monitor_interval,
            )
            controller = SimNodeController(settings, Hypervisor(settings.libvirt_uri), keys=lambda: keys)
            handlers = {cls: _with_peer(fn) for cls, fn in controller.handlers().items()}
            app = ClusterApp("nc", handlers, caller_name=plan.cluster)
            server = HttpServer(
                Dispatcher([app]),
                HOST,
                plan.base_port + offset if plan.base_port else 0,
                limits,
                ssl_context=comp.server_context("nc"),
            )
            ports.append(await nursery.start(server.serve))
            await nursery.start(controller.run)
            controllers.append(controller)
        task_status.started(ports)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                for controller in controllers:
                    await controller.hv.close()


def parse_args(argv: list[str]) -> SimPlan:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clc-data", type=Path, required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--cores", type=int, default=12)
    p.add_argument("--monitor-interval", type=float, default=5.0)
    a = p.parse_args(argv)
    return SimPlan(
        a.clc_data,
        a.cluster,
        a.first,
        a.count,
        a.base_port,
        a.work,
        cores=a.cores,
        memory_mb=a.cores * 256,
        disk_gb=a.cores * 5,
        monitor_interval=a.monitor_interval,
    )


async def _main(plan: SimPlan) -> None:
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(serve_nodes, plan)
        print(
            f"SIMNODES READY n={len(ports)} ports={ports[0]}-{ports[-1]} in {time.monotonic() - started:.1f}s",
            flush=True,
        )
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    trio.run(_main, parse_args(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
