"""The SC's NBD exports: one qemu-storage-daemon, driven over QMP, serving the attached volumes to the nodes.

Why NBD from qemu-storage-daemon (ARCHITECTURE.md, "EBS volumes"): QEMU on the node reaches the volume with
its own NBD client (libvirt's `<disk type='network'><source protocol='nbd'>`), so the node's kernel needs no
nbd or iSCSI module, and one daemon serves every volume of the SC: its NBD server is started once
(`nbd-server-start`) and each attached volume is one block node plus one export (`blockdev-add`,
`block-export-add`), removed again on detach (`block-export-del`, `blockdev-del`).

Where it listens: `sc.nbd_port` 0 (the default) is a unix socket in the SC's directory, which a node on the
same host reaches whatever network namespace its libvirtd runs in (a one-box); a port is TCP on
`sc.nbd_host` for the nodes of a cluster on other hosts.

Not done here: NBD over TLS (qemu `tls-creds-x509` with the cloud CA, and `tls-authz` naming the node's
certificate) would restrict an export to its node; libvirt takes the client's certificate for NBD from the
host-wide qemu.conf (`nbd_tls`, `nbd_tls_x509_cert_dir`, a libvirtd restart), so it is an operator's setup
step, left for the deployment slice. Until then the TCP listener is to be kept on the cluster's storage
network; the unix socket is the SC host's root's only (0600).

The daemon is a child of the SC role: started in its nursery (`run`, which reports started once QMP
answered and the NBD server listens) and killed with it. After an SC restart the controller exports again
what its store says is attached.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio

from euca.protocol.cluster import VolumeExport
from euca.roles.sc.backend import BackendError, check_volume_id

log = logging.getLogger("euca.sc")

PROGRAM = "qemu-storage-daemon"
START_TIMEOUT = 15.0
QMP_TIMEOUT = 30.0


class QmpError(BackendError):
    """QMP answered a command with an error (class and description in the message)."""

    def __init__(self, command: str, error: Mapping[str, Any]):
        self.error_class = str(error.get("class", ""))
        super().__init__(f"{command}: {error.get('class')}: {error.get('desc')}")


class Qmp:
    """A QMP conversation on a connected stream: commands one at a time, events kept for whoever waits."""

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self._buffer = b""
        self._lock = trio.Lock()
        self.events: list[dict[str, Any]] = []

    async def _message(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise BackendError("qemu-storage-daemon closed its QMP socket")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    async def greet(self) -> None:
        greeting = await self._message()
        if "QMP" not in greeting:
            raise BackendError(f"not a QMP greeting: {greeting!r}")
        await self.command("qmp_capabilities")

    async def command(self, command: str, **arguments: Any) -> Any:
        name = command
        async with self._lock:
            request: dict[str, Any] = {"execute": name}
            if arguments:
                request["arguments"] = arguments
            with trio.fail_after(QMP_TIMEOUT):
                await self.stream.send_all(json.dumps(request).encode() + b"\n")
                while True:
                    message = await self._message()
                    if "event" in message:
                        self.events.append(message)
                        del self.events[:-100]
                        continue
                    if "error" in message:
                        raise QmpError(name, message["error"])
                    if "return" in message:
                        return message["return"]


def nbd_address(directory: Path, host: str, port: int) -> dict[str, Any]:
    """The NBD server's address as QMP's SocketAddress: a unix socket in `directory`, or TCP host:port."""
    if port == 0:
        return {"type": "unix", "path": str(directory / "nbd.sock")}
    return {"type": "inet", "host": host, "port": str(port)}


def export_of(address: Mapping[str, Any], volume_id: str) -> VolumeExport:
    """What a node needs to reach export `volume_id` of the server at `address`."""
    if address["type"] == "unix":
        return VolumeExport(kind="nbd", name=volume_id, path=str(address["path"]))
    return VolumeExport(kind="nbd", name=volume_id, host=str(address["host"]), port=int(address["port"]))


class NbdExporter:
    """One qemu-storage-daemon with an NBD server; `export`/`unexport` per volume (idempotent)."""

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int = 0, program: str = PROGRAM):
        self.dir = directory
        self.address = nbd_address(directory, host, port)
        self.program = program
        self.qmp: Qmp | None = None
        self.exported: set[str] = set()
        self.ready = trio.Event()

    @staticmethod
    def available(program: str = PROGRAM) -> bool:
        return shutil.which(program) is not None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the daemon, open QMP, start the NBD server; then serve until cancelled (the daemon with it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        qmp_path = self.dir / "qmp.sock"
        for stale in (qmp_path, self.dir / "nbd.sock"):
            stale.unlink(missing_ok=True)
        argv = [
            self.program,
            "--chardev",
            f"socket,id=qmp,path={qmp_path},server=on,wait=off",
            "--monitor",
            "chardev=qmp",
        ]
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(trio.run_process, argv, check=False, stdin=None, stderr=None)
            )
            try:
                with trio.fail_after(START_TIMEOUT):
                    while not qmp_path.exists():
                        if process.returncode is not None:
                            raise BackendError(f"{self.program} exited ({process.returncode}) at start")
                        await trio.sleep(0.02)
                    # The socket file exists from bind(), a moment before listen(): refused until then.
                    while True:
                        try:
                            stream = await trio.open_unix_socket(str(qmp_path))
                            break
                        except ConnectionRefusedError:
                            if process.returncode is not None:
                                raise BackendError(
                                    f"{self.program} exited ({process.returncode}) at start"
                                ) from None
                            await trio.sleep(0.02)
                    self.qmp = Qmp(stream)
                    await self.qmp.greet()
                    # nbd-server-start takes the legacy SocketAddress: {"type": ..., "data": {...}}.
                    data = {k: v for k, v in self.address.items() if k != "type"}
                    await self.qmp.command(
                        "nbd-server-start", addr={"type": self.address["type"], "data": data}
                    )
                if self.address["type"] == "unix":
                    os.chmod(self.address["path"], 0o600)
                log.info("nbd server started pid=%d address=%s", process.pid, _describe(self.address))
                self.ready.set()
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.qmp = None
                self.exported.clear()
                self.ready = trio.Event()
                nursery.cancel_scope.cancel()

    def _qmp(self) -> Qmp:
        if self.qmp is None:
            raise BackendError("the NBD server is not running")
        return self.qmp

    async def export(self, volume_id: str, path: str) -> VolumeExport:
        """Serve the raw file `path` as NBD export `volume_id` (writable); already served: its export."""
        check_volume_id(volume_id)
        qmp = self._qmp()
        if volume_id not in self.exported:
            try:
                await qmp.command("blockdev-add", driver="file", filename=path, **{"node-name": volume_id})
            except QmpError as e:
                if "Duplicate" not in str(e) and "already" not in str(e):
                    raise
            try:
                await qmp.command(
                    "block-export-add",
                    type="nbd",
                    id=volume_id,
                    name=volume_id,
                    writable=True,
                    **{"node-name": volume_id},
                )
            except QmpError as e:
                if "already" not in str(e):
                    raise
            self.exported.add(volume_id)
            log.info("volume exported id=%s address=%s", volume_id, _describe(self.address))
        return export_of(self.address, volume_id)

    async def unexport(self, volume_id: str) -> None:
        """The export and its block node gone; connections still open are dropped (the node detached the
        disk before the CLC asks this, or the detach was forced)."""
        check_volume_id(volume_id)
        qmp = self._qmp()
        exports = {e["id"] for e in await qmp.command("query-block-exports")}
        if volume_id in exports:
            await qmp.command("block-export-del", id=volume_id, mode="hard")
        # The export goes once its last connection closed: until then the node stays in use.
        with trio.fail_after(QMP_TIMEOUT):
            while True:
                nodes = {n.get("node-name") for n in await qmp.command("query-named-block-nodes")}
                if volume_id not in nodes:
                    break
                try:
                    await qmp.command("blockdev-del", **{"node-name": volume_id})
                    break
                except QmpError as e:
                    if "in use" not in str(e) and "being used" not in str(e):
                        raise
                await trio.sleep(0.05)
        if volume_id in self.exported:
            self.exported.discard(volume_id)
            log.info("volume unexported id=%s", volume_id)

    async def exports(self) -> list[str]:
        """The export ids the daemon serves now (tests; the controller keeps its own record)."""
        return sorted(e["id"] for e in await self._qmp().command("query-block-exports"))


def _describe(address: Mapping[str, Any]) -> str:
    if address["type"] == "unix":
        return f"unix:{address['path']}"
    return f"{address['host']}:{address['port']}"
