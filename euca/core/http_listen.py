"""Who the HTTP server (euca.core.http) lets in: the connection caps checked at accept (per listener, per
client address, and the process's open-file budget), the cheap refusal of a connection over a cap, and the
listening sockets themselves (SO_REUSEPORT for the walrus workers)."""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import socket as pysocket
import time

import trio

from euca.core.config import HttpLimits

log = logging.getLogger("euca.http")

# The whole answer to a connection over a cap: written once, without a task, and the socket closed.
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections"
)


class OpenFiles:
    """The process's budget of connections from public clients on listeners without client certificates:
    half the open-file limit (each may hold a socket and a file), the other half kept for files, the store,
    internal callers and the cluster listeners, so that a flood never ends in EMFILE for everyone."""

    budget = 0
    in_use = 0

    @classmethod
    def ensure_budget(cls) -> None:
        if cls.budget:
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
            except (ValueError, OSError) as e:
                log.warning("cannot raise the open files limit from %d to %d: %s", soft, wanted, e)
        limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        cls.budget = max(limit // 2, 16)
        log.info("open files limit=%d public connections budget=%d", limit, cls.budget)


class Admission:
    """One listener's connection counts. Clients in limits.internal_networks are never counted nor refused;
    the others are admitted while under max_connections_per_client for their address, max_connections for
    the listener and (unless `own_budget`: a listener requiring client certificates) the process's
    OpenFiles budget."""

    def __init__(self, limits: HttpLimits, *, own_budget: bool):
        self.limits = limits
        self.own_budget = own_budget
        self._internal = [ipaddress.ip_network(name, strict=False) for name in limits.internal_networks]
        self._internal_cache: dict[str, bool] = {}
        self.public_connections = 0
        self.per_client: dict[str, int] = {}
        self.refused = 0
        self._refusals_logged_at = -1e9

    def is_internal(self, host: str) -> bool:
        known = self._internal_cache.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host.partition("%")[0])
            except ValueError:
                known = False
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                known = any(address in network for network in self._internal)
            if len(self._internal_cache) > 4096:
                self._internal_cache.clear()
            self._internal_cache[host] = known
        return known

    def admit(self, host: str) -> bool:
        """Count a public client's connection in, or say it is over a cap."""
        limits = self.limits
        held = self.per_client.get(host, 0)
        if held >= limits.max_connections_per_client or self.public_connections >= limits.max_connections:
            return False
        if not self.own_budget:
            if OpenFiles.in_use >= OpenFiles.budget:
                return False
            OpenFiles.in_use += 1
        self.per_client[host] = held + 1
        self.public_connections += 1
        return True

    def release(self, host: str) -> None:
        held = self.per_client.pop(host, 1) - 1
        if held > 0:
            self.per_client[host] = held
        self.public_connections -= 1
        if not self.own_budget:
            OpenFiles.in_use -= 1

    def refuse(self, sock: trio.socket.SocketType, host: str, port: int, *, plain: bool) -> None:
        """Answer 503 in one non-blocking write (plain HTTP only) and close: no task, no buffer, no wait."""
        if plain:
            try:
                os.write(sock.fileno(), BUSY_RESPONSE)
            except OSError:
                pass
        sock.close()
        self.refused += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= 10:
            self._refusals_logged_at = now
            log.warning(
                "connections over the cap refused=%d (this one from %s) port=%d public=%d limit=%d per_client=%d",
                self.refused,
                host,
                port,
                self.public_connections,
                self.limits.max_connections,
                self.limits.max_connections_per_client,
            )


async def reuse_port_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """As trio.open_tcp_listeners, with SO_REUSEPORT set before bind (it cannot be set after)."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=pysocket.SOCK_STREAM, flags=pysocket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
                sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEPORT, 1)
                if family == pysocket.AF_INET6:
                    sock.setsockopt(pysocket.IPPROTO_IPV6, pysocket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(1024)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners
