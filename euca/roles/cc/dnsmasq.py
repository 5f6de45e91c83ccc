"""The cluster's DHCP server: one dnsmasq per cluster, kept running by the CC's network (network.py).

It answers exactly the MACs of a dhcp-hostsfile (static leases); the network rewrites that file when
allocations change and has the process reread it (SIGHUP), or restarts it when an address changes hands.
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trio

from euca.roles.cc.addresses import AddressPool, Lease

log = logging.getLogger("euca.cc.network")


def dnsmasq_argv(bridge: str, pool: AddressPool, hosts_path: Path, user: str, group: str) -> list[str]:
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",  # nothing from /etc/dnsmasq.conf
        "--port=0",  # DHCP only, no DNS
        "--log-facility=-",  # to stderr, which we read: readiness and reloads show there
        f"--interface={bridge}",
        "--bind-interfaces",  # other dnsmasqs (libvirt's) may serve other interfaces of this namespace
        f"--dhcp-range={pool.network.network_address},static,{pool.network.netmask},infinite",
        f"--dhcp-option=option:router,{pool.gateway}",
        f"--dhcp-hostsfile={hosts_path}",
        "--dhcp-authoritative",
        "--leasefile-ro",  # leases are static; the hosts file is the state
        "--no-hosts",
        "--no-resolv",
        "--pid-file=",
        # dnsmasq rereads the hosts file on SIGHUP after dropping privileges; it lives in the CC's data dir,
        # which only the CC's user may read, so it runs as that user rather than as "dnsmasq".
        f"--user={user}",
        f"--group={group}",
    ]


class ServedLeases:
    """Every (MAC, address) pair one dnsmasq process has read from a hosts file, hence may hold a lease for.

    dnsmasq keeps the leases it gave in memory (leasefile-ro; "infinite") and does not give a leased address
    to another MAC, even when the hosts file now says so. Additions need only a SIGHUP; an address or MAC
    that changes hands needs a fresh process, which starts with no leases (static ones: clients that come
    back get the same answer as before).
    """

    def __init__(self, leases: Iterable[Lease] = ()):
        self._mac_of: dict[str, str] = {}
        self._ip_of: dict[str, str] = {}
        self.add(leases)

    def add(self, leases: Iterable[Lease]) -> None:
        for lease in leases:
            self._mac_of[lease.ip] = lease.mac
            self._ip_of[lease.mac] = lease.ip

    def conflict(self, leases: Iterable[Lease]) -> str | None:
        """Why these leases cannot be loaded by a SIGHUP, or None."""
        for lease in leases:
            mac = self._mac_of.get(lease.ip, lease.mac)
            if mac != lease.mac:
                return f"{lease.ip} moves from {mac} to {lease.mac}"
            ip = self._ip_of.get(lease.mac, lease.ip)
            if ip != lease.ip:
                return f"{lease.mac} moves from {ip} to {lease.ip}"
        return None


class Dnsmasq:
    """One dnsmasq, kept running: restarted when it exits (with backoff), stopped with its nursery.

    dnsmasq logs "read <hostsfile>" to stderr once its sockets are bound and it has read the file, at start
    and after each SIGHUP: that line is how we know it serves, and which version of the file it serves.
    """

    def __init__(
        self,
        argv: list[str],
        hosts_path: Path,
        written: Callable[[], tuple[int, list[Lease]]],
        on_change: Callable[[], None],
    ):
        self.argv = argv
        self.read_marker = f"read {hosts_path}"
        self._written = written  # (generation, leases) of the hosts file on disk
        self._on_change = on_change
        self.process: trio.Process | None = None
        self.ready = False  # the current process has read the file at least once
        self.loaded = -1  # generation of the hosts file it last confirmed reading
        self.starts = 0  # processes that became ready
        self.disabled = False  # cannot be started at all: DHCP stays off
        self._served = ServedLeases()
        self._restart_why: str | None = None
        self._reads = 0  # "read" lines of the current process
        self._started = trio.Event()
        self._read_seen = trio.Event()
        self._tail: deque[str] = deque(maxlen=5)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.ready else None

    def caught_up(self, generation: int) -> bool:
        return self.disabled or self.loaded >= generation

    def behind(self) -> bool:
        return self.ready and self._restart_why is None and self.loaded < self._written()[0]

    def note_written(self, leases: list[Lease]) -> None:
        """A new hosts file: a process that has not read its file yet may read this one."""
        if self.process is not None and not self.ready:
            self._served.add(leases)

    def _poke_readers(self) -> None:
        self._read_seen.set()
        self._read_seen = trio.Event()

    async def wait_started(self, count: int) -> None:
        """Until `count` processes have become ready (tests: after killing one)."""
        while self.starts < count:
            await self._started.wait()

    async def reload(self) -> None:
        """SIGHUP and wait for the reread (bounded: an old dnsmasq may log differently); or a restart."""
        process = self.process
        if process is None or not self.behind():
            return
        (generation, leases), reads, pid = self._written(), self._reads, process.pid
        why = self._served.conflict(leases)
        if why is not None:
            log.info("dnsmasq restarting to drop old leases pid=%d why=%r", pid, why)
            self._restart_why = why
            process.terminate()
            return
        self._served.add(leases)
        process.send_signal(signal.SIGHUP)
        with trio.move_on_after(10) as scope:
            while self._reads == reads and self.process is process:
                await self._read_seen.wait()
        if scope.cancelled_caught:
            log.warning("dnsmasq did not confirm rereading the hosts file pid=%d", pid)
        if self.process is process:
            self.loaded = max(self.loaded, generation)
            self._on_change()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        backoff = 0.5
        while True:
            began = trio.current_time()
            try:
                await self._run_once(task_status)
            except OSError as e:
                log.warning("dnsmasq cannot start: %s; DHCP off", e)
                self.process, self.disabled = None, True
                self._on_change()
                task_status.started()
                await trio.sleep_forever()
            task_status = trio.TASK_STATUS_IGNORED
            if self._restart_why is not None:
                self._restart_why = None
                continue  # we stopped it on purpose
            # Restart at once after a long run, slower and slower while it keeps dying young.
            backoff = 0.5 if trio.current_time() - began > 60 else min(backoff * 2, 30.0)
            await trio.sleep(backoff)

    async def _run_once(self, task_status: Any) -> None:
        generation, leases = self._written()
        process = await trio.lowlevel.open_process(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.process, self.ready, self._reads = process, False, 0
        self._served = ServedLeases(leases)
        self._tail.clear()
        try:
            async with trio.open_nursery() as nursery:
                reader_done = trio.Event()
                nursery.start_soon(self._read_log, process, generation, task_status, reader_done)
                code = await process.wait()
                with trio.move_on_after(2):  # the last words (why it exited) are still in the pipe
                    await reader_done.wait()
                nursery.cancel_scope.cancel()
            if self._restart_why is None:
                log.warning(
                    "dnsmasq exited pid=%d code=%s last=%r; restarting",
                    process.pid,
                    code,
                    " | ".join(self._tail),
                )
            if not self.ready:
                task_status.started()  # the CC runs on; DHCP comes when a restart succeeds
        finally:
            self.process, self.ready = None, False
            self._poke_readers()
            self._on_change()
            with trio.CancelScope(shield=True):
                await _stop(process)

    async def _read_log(
        self, process: trio.Process, generation: int, task_status: Any, done: trio.Event
    ) -> None:
        assert process.stderr is not None
        buffer = b""
        try:
            async for chunk in process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    self._tail.append(line)
                    if line.endswith(self.read_marker):
                        self._reads += 1
                        self._poke_readers()
                        if not self.ready:
                            self.ready, self.loaded = True, max(self.loaded, generation)
                            self.starts += 1
                            self._started.set()
                            self._started = trio.Event()
                            log.info("dnsmasq serving pid=%d hosts=%s", process.pid, self.read_marker[5:])
                            self._on_change()
                            task_status.started()
                    elif "DHCPACK" in line or "no address" in line or "failed" in line:
                        log.info("dnsmasq: %s", line.split(": ", 1)[-1])
                    else:
                        log.debug("dnsmasq: %s", line)
        finally:
            done.set()


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
