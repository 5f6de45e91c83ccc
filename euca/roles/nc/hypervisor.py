"""The NC's one libvirt connection: blocking libvirt-python calls run in worker threads, and a connection
that broke (libvirtd restarted, socket closed) is opened again and the call retried once.

libvirt connections are thread-safe, so concurrent calls share the one connection. Every method here is
async and returns plain values (names, state numbers), never a libvirt object, so callers stay on trio.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt
import trio

from euca.protocol.cluster import NcState
from euca.roles.nc.domain import METADATA_NS, owner_dir_of

log = logging.getLogger("euca.nc")


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr; ours arrive as exceptions and get logged."""


libvirt.registerErrorHandler(_quiet, None)

T = TypeVar("T")

# libvirt's domain states -> the NC's lifecycle. A domain that has stopped (shut off by the guest, or
# crashed and destroyed per on_crash) is on its way out: the NC tears it down and reports it terminated.
_NC_STATE_OF_LIBVIRT: dict[int, NcState] = {
    libvirt.VIR_DOMAIN_NOSTATE: "booting",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "teardown",
    libvirt.VIR_DOMAIN_SHUTOFF: "teardown",
    libvirt.VIR_DOMAIN_CRASHED: "teardown",
}

# States in which the domain is still alive (a process runs the guest).
ALIVE_STATES = frozenset(
    {
        libvirt.VIR_DOMAIN_NOSTATE,
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_PAUSED,
        libvirt.VIR_DOMAIN_PMSUSPENDED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
    }
)

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


def nc_state_of(libvirt_state: int) -> NcState:
    """The NC state a libvirt domain state stands for (unknown future states count as running)."""
    return _NC_STATE_OF_LIBVIRT.get(libvirt_state, "running")


def state_name(libvirt_state: int) -> str:
    return STATE_NAMES.get(libvirt_state, str(libvirt_state))


# Errors that mean the connection itself is gone, not that the call was wrong.
_CONNECTION_ERRORS = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_AUTH_FAILED,
    }
)


class HypervisorError(Exception):
    """A libvirt call failed (the message is libvirt's)."""


class HypervisorUnavailable(HypervisorError):
    """libvirt cannot be reached at all."""


@dataclass(frozen=True)
class HostInfo:
    cores: int
    memory_mb: int
    hostname: str


@dataclass(frozen=True)
class DomainInfo:
    name: str
    state: int  # libvirt VIR_DOMAIN_* state
    owner_dir: str | None  # from our metadata; None: not a domain of any NC


def _is_connection_error(e: libvirt.libvirtError, conn: libvirt.virConnect | None) -> bool:
    if conn is None:
        return True
    try:
        alive = conn.isAlive() == 1
    except libvirt.libvirtError:
        alive = False
    return not alive or (
        e.get_error_code() in _CONNECTION_ERRORS and e.get_error_domain() == libvirt.VIR_FROM_RPC
    )


# libvirt's test driver runs inside this process, and two threads in it at once can crash the process
# (a segfault in defineXML from two threads was seen on Debian 12's libvirt 9.0 in the test suite): calls to
# an in-process driver run one at a time per URI. Drivers behind libvirtd (qemu://) take concurrent calls.
_IN_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_IN_PROCESS_LOCKS_GUARD = threading.Lock()


def _one_at_a_time(uri: str, fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` (a call into libvirt on `uri`: open, close or any call on a connection), serialised for `test:`."""
    if not uri.startswith("test:"):
        return fn
    with _IN_PROCESS_LOCKS_GUARD:
        lock = _IN_PROCESS_LOCKS.setdefault(uri, threading.Lock())

    def serialised(*args: Any) -> T:
        with lock:
            return fn(*args)

    return serialised


def _not_found(e: libvirt.libvirtError) -> bool:
    return bool(e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)


class Hypervisor:
    """One libvirt connection to `uri`, opened on first use.

    `conn` may be given (tests that stand for a restarted NC pass the same `test:///default` connection to a
    new controller: the test driver keeps its domains per connection).
    """

    def __init__(self, uri: str, conn: libvirt.virConnect | None = None):
        self.uri = uri
        self._conn = conn
        self._owns_conn = conn is None
        self._lock = trio.Lock()  # one (re)connect at a time
        # Calls running in worker threads: close() waits for them, since closing a libvirt connection under a
        # call in flight crashes the process (seen: a segfault in lookupByName when an HTTP handler's call
        # outlived the role that closed the connection).
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._closing = False
        self._dropped: list[libvirt.virConnect] = []

    # -- connection ---------------------------------------------------------------------------------------

    async def _connection(self) -> libvirt.virConnect:
        if self._conn is not None:
            return self._conn
        async with self._lock:
            if self._conn is None:
                try:
                    self._conn = await trio.to_thread.run_sync(
                        _one_at_a_time(self.uri, libvirt.open), self.uri
                    )
                except libvirt.libvirtError as e:
                    raise HypervisorUnavailable(f"cannot connect to {self.uri}: {e}") from e
                self._owns_conn = True
                log.info("libvirt connected uri=%s", self.uri)
        assert self._conn is not None
        return self._conn

    def _drop(self, broken: libvirt.virConnect) -> None:
        current = self._conn
        if current is None or current is not broken:
            return  # another task reconnected already
        self._conn = None
        if self._owns_conn:
            # Other calls may still be running on it: it is closed with the rest in close().
            self._dropped.append(current)

    async def call(self, fn: Callable[[libvirt.virConnect], T]) -> T:
        """fn(conn) in a worker thread; on a broken connection, reconnect and try once more."""
        for attempt in (1, 2):
            if self._closing:
                raise HypervisorUnavailable(f"the connection to {self.uri} is closing")
            conn = await self._connection()
            self._in_flight += 1
            self._idle = trio.Event() if self._in_flight == 1 else self._idle
            try:
                result: T = await trio.to_thread.run_sync(_one_at_a_time(self.uri, fn), conn)
                return result
            except libvirt.libvirtError as e:
                if (
                    attempt == 1
                    and self._owns_conn
                    and await trio.to_thread.run_sync(_one_at_a_time(self.uri, _is_connection_error), e, conn)
                ):  # isAlive() is a call into the driver too
                    log.warning("libvirt connection lost uri=%s error=%s: reconnecting", self.uri, e)
                    self._drop(conn)
                    continue
                raise HypervisorError(str(e)) from e
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._closing = True
        await self._idle.wait()
        conns = self._dropped
        self._dropped = []
        if self._conn is not None and self._owns_conn:
            conns.append(self._conn)
        self._conn = None
        for conn in conns:
            try:
                await trio.to_thread.run_sync(_one_at_a_time(self.uri, conn.close))
            except libvirt.libvirtError:
                pass

    # -- host ---------------------------------------------------------------------------------------------

    async def host_info(self) -> HostInfo:
        def get(conn: libvirt.virConnect) -> HostInfo:
            info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
            return HostInfo(cores=int(info[2]), memory_mb=int(info[1]), hostname=conn.getHostname())

        return await self.call(get)

    # -- domains ------------------------------------------------------------------------------------------

    async def domain_states(self) -> dict[str, int]:
        """Every domain's name and libvirt state, in one round trip."""

        def get(conn: libvirt.virConnect) -> dict[str, int]:
            stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
            return {dom.name(): int(values.get("state.state", 0)) for dom, values in stats}

        return await self.call(get)

    async def list_domains(self) -> list[DomainInfo]:
        """Every domain with its state and the owner named in our metadata (for the start-up scan)."""

        def get(conn: libvirt.virConnect) -> list[DomainInfo]:
            out = []
            for dom in conn.listAllDomains(0):
                try:
                    state = int(dom.state()[0])
                    try:
                        meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
                    except libvirt.libvirtError:
                        meta = None
                except libvirt.libvirtError as e:
                    if _not_found(e):  # went away while we looked
                        continue
                    raise
                out.append(DomainInfo(dom.name(), state, owner_dir_of(meta) if meta else None))
            return out

        return await self.call(get)

    async def domain_state(self, name: str) -> int | None:
        def get(conn: libvirt.virConnect) -> int | None:
            try:
                return int(conn.lookupByName(name).state()[0])
            except libvirt.libvirtError as e:
                if _not_found(e):
                    return None
                raise

        return await self.call(get)

    async def define_and_start(self, xml: str) -> str:
        """Define the domain persistently and start it; a domain that fails to start is undefined again."""

        def run(conn: libvirt.virConnect) -> str:
            dom = conn.defineXML(xml)
            try:
                dom.create()
            except libvirt.libvirtError:
                try:
                    dom.undefine()
                except libvirt.libvirtError:
                    pass
                raise
            return str(dom.name())

        return await self.call(run)

    async def start(self, name: str) -> None:
        def run(conn: libvirt.virConnect) -> None:
            conn.lookupByName(name).create()

        await self.call(run)

    async def destroy(self, name: str, *, owner: str | None = None, undefine: bool = True) -> bool:
        """Stop the domain hard and (by default) forget it. False if there was no such domain, or when
        `owner` is given and the domain's metadata names another (a domain we did not make)."""

        def run(conn: libvirt.virConnect) -> bool:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError as e:
                if _not_found(e):
                    return False
                raise
            if owner is not None:
                try:
                    meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
                except libvirt.libvirtError:
                    meta = None
                if meta is None or owner_dir_of(meta) != owner:
                    return False
            try:
                if dom.isActive():
                    dom.destroy()
                if undefine and dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError as e:
                if _not_found(e):
                    return True
                raise
            return True

        return await self.call(run)

    async def reboot(self, name: str) -> str:
        """Restart the guest keeping its disks: a hard reset where the driver has one (it needs nothing from
        the guest, unlike an ACPI reboot that a busybox or TCG guest may never act on), else destroy and
        start again. Returns how it was done."""

        def run(conn: libvirt.virConnect) -> str:
            dom = conn.lookupByName(name)
            if not dom.isActive():
                dom.create()
                return "start"
            try:
                dom.reset(0)
                return "reset"
            except libvirt.libvirtError as e:
                if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_INVALID):
                    raise
            dom.destroy()
            dom.create()
            return "destroy+create"

        return await self.call(run)

    async def shutdown_guest(self, name: str) -> None:
        """Ask the guest to power off (ACPI). Used by tests to stand for a guest that shuts itself down."""

        def run(conn: libvirt.virConnect) -> None:
            conn.lookupByName(name).shutdown()

        await self.call(run)

    # -- devices (EBS volumes) --------------------------------------------------------------------------

    async def domain_xml(self, name: str) -> str:
        """The domain's live XML (its persistent one when it is not running)."""

        def get(conn: libvirt.virConnect) -> str:
            return str(conn.lookupByName(name).XMLDesc(0))

        return await self.call(get)

    async def attach_device(self, name: str, device_xml: str) -> None:
        """Hot-plug the device into the running guest and keep it in the persistent definition."""

        def run(conn: libvirt.virConnect) -> None:
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            conn.lookupByName(name).attachDeviceFlags(device_xml, flags)

        await self.call(run)

    async def detach_device(self, name: str, device_xml: str) -> None:
        """Ask the guest to let go of the device (it goes once the guest acknowledged: ACPI unplug) and drop
        it from the persistent definition."""

        def run(conn: libvirt.virConnect) -> None:
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            conn.lookupByName(name).detachDeviceFlags(device_xml, flags)

        await self.call(run)
