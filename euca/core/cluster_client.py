"""The caller's side of the cluster messages: `await client.call(base_url, message) -> reply`.

One httpx.AsyncClient per caller (keep-alive connections, bounded pool, timeouts) presenting this host's
certificate for the calling role. The listener's certificate must chain to the cloud CA and carry the OU
of the role that answers the message (a CC for CLC->CC messages, an NC for CC->NC ones); host names are
not checked. That OU is checked as each connection's handshake completes, before a message is sent on it.

Every failure is a ClusterFault: the listener's Fault as sent (code, message, HTTP status); a listener that
cannot be reached, times out or breaks the connection -> ClusterFault("Unavailable", ..., 503).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx
import msgspec

from euca.core.components import Components
from euca.core.http import Peer
from euca.protocol.cluster import (
    CC_MESSAGES,
    NC_MESSAGES,
    SC_MESSAGES,
    ClusterFault,
    decode_reply,
    encode_request,
)

log = logging.getLogger("euca.cluster")

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0


def listener_role(message_type: type) -> str:
    """The role whose listener answers `message_type`."""
    if message_type in CC_MESSAGES:
        return "cc"
    if message_type in NC_MESSAGES:
        return "nc"
    if message_type in SC_MESSAGES:
        return "sc"
    raise TypeError(f"{message_type.__name__} is not a cluster message")


class _PoolPerListener(httpx.AsyncBaseTransport):
    """One small connection pool per listener (scheme, host, port) instead of one shared pool: httpcore's
    pool looks at every connection it holds for each request, and a shared pool smaller than the number of
    listeners closes connections to make room, so a CC polling 1,000 nodes paid a mutual-TLS handshake (and
    a scan of the pool) per call. With a pool each, every node keeps its keep-alive connection."""

    def __init__(self, make_pool: Callable[[], httpx.AsyncHTTPTransport]):
        self._make_pool = make_pool
        self._pools: dict[tuple[bytes, bytes, int | None], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.raw_scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = self._make_pool()
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


class ClusterClient:
    """Calls cluster listeners as `role` (the certificate presented): "clc" calling CCs, "cc" calling NCs."""

    def __init__(
        self,
        components: Components,
        role: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_connections: int = 64,  # per listener
    ):
        self.role = role
        self.timeout = timeout
        context = components.client_context(role)
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=60,
        )
        self._http = httpx.AsyncClient(
            transport=_PoolPerListener(lambda: httpx.AsyncHTTPTransport(verify=context, limits=limits)),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"Content-Type": "application/json", "User-Agent": f"euca-{role}"},
        )

    async def call(
        self,
        base_url: str,
        message: msgspec.Struct,
        *,
        timeout: float | None = None,
        expect_name: str | None = None,
    ) -> Any:
        """Send `message` to the listener at `base_url` (https://host:port) and return its reply struct
        (the type REPLIES names for the message). Raises ClusterFault.

        `timeout`: seconds for this call instead of the client's default. `expect_name`: the listener's
        registered name, checked against its certificate's CN when a connection is made (a node answering
        at another node's address is refused)."""
        message_type = type(message)
        path, body = encode_request(message)
        expected = listener_role(message_type)
        url = base_url.rstrip("/") + path

        async def check_listener(event: str, info: dict[str, Any]) -> None:
            # httpcore reports each new connection's finished TLS handshake here, before the request
            # goes out on it: the listener must be the role that answers this message.
            if event != "connection.start_tls.complete":
                return
            stream = info.get("return_value")
            ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
            peer = Peer.from_ssl(ssl_object) if ssl_object is not None else None
            if (
                peer is None
                or peer.role != expected
                or (expect_name is not None and peer.name != expect_name)
            ):
                if stream is not None:
                    await stream.aclose()
                got = f"{peer.role}/{peer.name}" if peer else "no certificate"
                want = f"{expected}/{expect_name}" if expect_name is not None else f"a {expected}"
                log.warning("cluster listener refused url=%s expected=%s certificate=%s", base_url, want, got)
                raise ClusterFault("Unauthorized", f"{base_url} is not {want} (its certificate: {got})", 403)

        call_timeout: Any = (
            httpx.USE_CLIENT_DEFAULT
            if timeout is None
            else httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT))
        )
        try:
            response = await self._http.post(
                url, content=body, extensions={"trace": check_listener}, timeout=call_timeout
            )
        except httpx.TimeoutException as e:
            raise ClusterFault("Unavailable", f"{url}: timed out ({type(e).__name__})", 503) from None
        except httpx.TransportError as e:
            raise ClusterFault("Unavailable", f"{url}: {type(e).__name__}: {e}", 503) from None
        return decode_reply(message_type, response.status_code, response.content)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ClusterClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
