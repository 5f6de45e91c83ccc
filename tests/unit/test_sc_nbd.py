"""The SC's NBD exports: a real qemu-storage-daemon on a unix socket in a tmp dir, driven over QMP (start,
export, a client reading and writing through the export, unexport, stop with the nursery)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from euca.roles.sc.backend import GIB
from euca.roles.sc.nbd import NbdExporter, export_of, nbd_address

pytestmark = pytest.mark.skipif(
    not NbdExporter.available() or shutil.which("qemu-io") is None,
    reason="qemu-storage-daemon / qemu-io not installed",
)

VOL = "vol-0123abcd"


def _qemu_io(url: str, command: str) -> str:
    out = subprocess.run(
        ["qemu-io", "-f", "raw", "-c", command, url], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_addresses_for_a_unix_socket_or_tcp(tmp_path: Path) -> None:
    unix = nbd_address(tmp_path, "10.0.0.1", 0)
    assert unix == {"type": "unix", "path": str(tmp_path / "nbd.sock")}
    assert export_of(unix, VOL).path == str(tmp_path / "nbd.sock")
    tcp = nbd_address(tmp_path, "10.0.0.1", 10809)
    e = export_of(tcp, VOL)
    assert (e.kind, e.host, e.port, e.name, e.path) == ("nbd", "10.0.0.1", 10809, VOL, None)


async def test_export_serves_the_file_and_unexport_removes_it(tmp_path: Path) -> None:
    volume = tmp_path / f"{VOL}.raw"
    with open(volume, "wb") as f:
        f.truncate(GIB)
    exporter = NbdExporter(tmp_path / "nbd")
    async with trio.open_nursery() as nursery:
        await nursery.start(exporter.run)
        sock = exporter.dir / "nbd.sock"
        assert (sock.stat().st_mode & 0o777) == 0o600
        export = await exporter.export(VOL, str(volume))
        assert export.kind == "nbd" and export.name == VOL and export.path == str(sock)
        assert await exporter.export(VOL, str(volume)) == export  # idempotent
        assert await exporter.exports() == [VOL]
        url = f"nbd+unix:///{VOL}?socket={sock}"
        await trio.to_thread.run_sync(_qemu_io, url, "write -P 0x5a 1M 64k")
        assert volume.read_bytes()[1024 * 1024 : 1024 * 1024 + 4] == b"\x5a" * 4
        await exporter.unexport(VOL)
        await exporter.unexport(VOL)  # idempotent
        assert await exporter.exports() == []
        nursery.cancel_scope.cancel()
    assert exporter.qmp is None


async def test_the_daemon_stops_with_the_nursery(tmp_path: Path) -> None:
    exporter = NbdExporter(tmp_path / "nbd")
    async with trio.open_nursery() as nursery:
        await nursery.start(exporter.run)
        pids = subprocess.run(["pgrep", "-f", str(tmp_path / "nbd")], capture_output=True, text=True)
        assert pids.stdout.strip()
        nursery.cancel_scope.cancel()
    with trio.fail_after(10):
        while subprocess.run(["pgrep", "-f", str(tmp_path / "nbd")], capture_output=True).returncode == 0:
            await trio.sleep(0.05)


async def test_the_controller_exports_records_and_exports_again_after_a_restart(tmp_path: Path) -> None:
    from euca.core.store import Store
    from euca.protocol import cluster as c
    from euca.protocol.cluster import ClusterFault
    from euca.roles.sc import exports, volumes
    from euca.roles.sc.controller import StorageController
    from euca.roles.sc.files import FileBackend

    store = Store(tmp_path / "state.db")
    volumes.migrate(store)
    backend = FileBackend(tmp_path / "volumes")
    try:
        async with trio.open_nursery() as nursery:
            exporter = NbdExporter(tmp_path / "nbd")
            await nursery.start(exporter.run)
            sc = StorageController(store, backend, exporter=exporter)
            await sc.create_volume(c.CreateVolume(VOL, 1))
            export = await sc.export_volume(c.ExportVolume(VOL, "node-1"))
            assert export.kind == "nbd" and export.name == VOL
            assert await store.read(exports.exported) == {VOL: "node-1"}
            with pytest.raises(ClusterFault) as e:
                await sc.delete_volume(c.DeleteVolume(VOL))
            assert e.value.code == "VolumeInUse"
            with pytest.raises(ClusterFault) as e:
                await sc.export_volume(c.ExportVolume("vol-ffffffff", "node-1"))
            assert e.value.code == "InvalidVolume.NotFound"
            nursery.cancel_scope.cancel()  # the SC stops: its daemon with it

        async with trio.open_nursery() as nursery:
            exporter = NbdExporter(tmp_path / "nbd")  # a new daemon: it serves nothing yet
            await nursery.start(exporter.run)
            assert await exporter.exports() == []
            sc = StorageController(store, backend, exporter=exporter)
            await sc.export_again()
            assert await exporter.exports() == [VOL]
            await sc.unexport_volume(c.UnexportVolume(VOL))
            await sc.unexport_volume(c.UnexportVolume(VOL))  # idempotent
            assert await exporter.exports() == [] and await store.read(exports.exported) == {}
            assert (await sc.delete_volume(c.DeleteVolume(VOL))).state == "deleted"
            nursery.cancel_scope.cancel()
    finally:
        store.close()
