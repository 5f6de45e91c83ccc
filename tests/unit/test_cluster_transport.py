"""ClusterApp + ClusterClient over real mutual TLS on loopback: who may call whom, faults, and joining.

Certificates are real (issued by a real CloudCA in a temporary directory); the listener is the real HTTP
server with an SSL context; the client is the real httpx-based ClusterClient.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from euca.core.cluster_app import ClusterApp
from euca.core.cluster_client import ClusterClient
from euca.core.components import Components, ensure_components
from euca.core.config import HttpLimits
from euca.core.http import HttpServer, Peer, Request, Response
from euca.core.pki import CloudCA
from euca.protocol.cluster import (
    ClusterFault,
    DescribeInstances,
    GetConsoleOutput,
    InstancesReply,
    InstanceStatus,
    NcDescribeInstances,
    NodeResources,
    RebootInstances,
    TerminateInstances,
)

HANG_GUARD = 30


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> tuple[CloudCA, Components]:
    """One CA with clc, cc and nc identities (as on a one-box host)."""
    base = tmp_path_factory.mktemp("cloud")
    ca = CloudCA.load_or_create(base / "pki")
    components = Components(base / "pki" / "components")
    ensure_components(
        components,
        ca,
        [("clc", "clc", ["127.0.0.1"]), ("cc", "cluster01", ["127.0.0.1"]), ("nc", "node-a", ["127.0.0.1"])],
        node_image=True,
    )
    return ca, components


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Components:
    """A clc identity from another cloud's CA."""
    base = tmp_path_factory.mktemp("other")
    ca = CloudCA.load_or_create(base / "pki")
    components = Components(base / "pki" / "components")
    ensure_components(components, ca, [("clc", "clc", ["127.0.0.1"]), ("cc", "cluster01", ["127.0.0.1"])])
    return components


def _status(instance_id: str) -> InstanceStatus:
    return InstanceStatus(
        instance_id=instance_id,
        reservation_id="r-00000001",
        account_id="000000000001",
        state="running",
        nc_state="running",
        node="node-a",
        vm_type="m1.small",
        image_id="emi-00000001",
    )


class CcHandlers:
    def __init__(self) -> None:
        self.callers: list[Peer] = []

    async def describe_instances(self, message: DescribeInstances, peer: Peer) -> InstancesReply:
        self.callers.append(peer)
        return InstancesReply([_status(i) for i in message.instance_ids])

    async def terminate(self, message: TerminateInstances, peer: Peer) -> InstancesReply:
        raise ClusterFault("InvalidInstanceID.NotFound", f"no instance {message.instance_ids[0]}", 400)

    async def reboot(self, message: RebootInstances, peer: Peer) -> InstancesReply:
        raise RuntimeError("a bug in the handler")

    def table(self) -> dict[type, object]:
        return {
            DescribeInstances: self.describe_instances,
            TerminateInstances: self.terminate,
            RebootInstances: self.reboot,
        }


@asynccontextmanager
async def cluster_listener(
    components: Components, role: str, handlers: dict[type, object]
) -> AsyncIterator[str]:
    app = ClusterApp(role, handlers)  # type: ignore[arg-type]

    async def dispatch(request: Request) -> Response:
        # What the supervisor's Dispatcher does for a mounted app: strip the prefix.
        assert request.path.startswith("/cluster/")
        request.path = request.path[len("/cluster") :]
        return await app.handle(request)

    server = HttpServer(
        dispatch, "127.0.0.1", 0, HttpLimits(header_timeout=10), ssl_context=components.server_context(role)
    )
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            try:
                yield f"https://127.0.0.1:{port}"
            finally:
                server.shutdown()


async def test_clc_calls_cc(cloud: tuple[CloudCA, Components]) -> None:
    _, components = cloud
    handlers = CcHandlers()
    async with cluster_listener(components, "cc", handlers.table()) as url:
        async with ClusterClient(components, "clc") as client:
            reply = await client.call(url, DescribeInstances(["i-00000001", "i-00000002"]))
            again = await client.call(url, DescribeInstances(["i-00000003"]))  # same kept-alive connection
    assert isinstance(reply, InstancesReply)
    assert [s.instance_id for s in reply.instances] == ["i-00000001", "i-00000002"]
    assert [s.instance_id for s in again.instances] == ["i-00000003"]
    assert handlers.callers[0] == Peer(role="clc", name="clc", organization="euca")


async def test_faults_reach_the_caller(
    cloud: tuple[CloudCA, Components], caplog: pytest.LogCaptureFixture
) -> None:
    _, components = cloud
    async with cluster_listener(components, "cc", CcHandlers().table()) as url:
        async with ClusterClient(components, "clc") as client:
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, TerminateInstances(["i-deadbeef"]))
            assert (fault.value.code, fault.value.status) == ("InvalidInstanceID.NotFound", 400)
            with caplog.at_level(logging.ERROR, logger="euca.cluster"):
                with pytest.raises(ClusterFault) as fault:
                    await client.call(url, RebootInstances(["i-00000001"]))
            assert (fault.value.code, fault.value.status) == ("InternalError", 500)
            assert "a bug in the handler" not in fault.value.message  # no traceback text on the wire
            assert any("a bug in the handler" in (r.exc_text or "") for r in caplog.records)
            # A message the cc does not answer.
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, GetConsoleOutput("i-00000001"))
            assert (fault.value.code, fault.value.status) == ("BadMessage", 400)


async def test_bad_bodies_are_bad_messages(cloud: tuple[CloudCA, Components]) -> None:
    _, components = cloud
    async with cluster_listener(components, "cc", CcHandlers().table()) as url:
        async with httpx.AsyncClient(verify=components.client_context("clc")) as http:
            for path, body in [
                ("/cluster/DescribeInstances", b"{not json"),
                ("/cluster/DescribeInstances", b'{"instance_ids": 5}'),
                ("/cluster/NoSuchMessage", b"{}"),
            ]:
                response = await http.post(url + path, content=body)
                assert response.status_code == 400
                assert response.json()["code"] == "BadMessage"
                assert response.headers["content-type"] == "application/json"
            response = await http.get(url + "/cluster/DescribeInstances")
            assert response.status_code == 405 and response.json()["code"] == "BadMessage"


async def test_nc_certificate_may_not_call_a_cc(cloud: tuple[CloudCA, Components]) -> None:
    _, components = cloud
    handlers = CcHandlers()
    async with cluster_listener(components, "cc", handlers.table()) as url:
        async with ClusterClient(components, "nc") as client:
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, DescribeInstances([]))
    assert (fault.value.code, fault.value.status) == ("Unauthorized", 403)
    assert handlers.callers == []


async def test_body_of_a_refused_caller_is_not_decoded(cloud: tuple[CloudCA, Components]) -> None:
    _, components = cloud
    async with cluster_listener(components, "cc", CcHandlers().table()) as url:
        async with httpx.AsyncClient(verify=components.client_context("nc")) as http:
            response = await http.post(url + "/cluster/DescribeInstances", content=b"{not json")
    assert response.status_code == 403 and response.json()["code"] == "Unauthorized"


async def test_caller_checks_the_listener_role(cloud: tuple[CloudCA, Components]) -> None:
    """An NC message sent to a CC's address is refused by the caller before it is sent."""
    _, components = cloud
    handlers = CcHandlers()
    async with cluster_listener(components, "cc", handlers.table()) as url:
        async with ClusterClient(components, "cc") as client:
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, NcDescribeInstances([]))
    assert (fault.value.code, fault.value.status) == ("Unauthorized", 403)
    assert "is not a nc" in fault.value.message
    assert handlers.callers == []


async def test_certificate_from_another_ca_fails_the_handshake(
    cloud: tuple[CloudCA, Components], stranger: Components, caplog: pytest.LogCaptureFixture
) -> None:
    _, components = cloud
    handlers = CcHandlers()
    with caplog.at_level(logging.WARNING, logger="euca.http"):
        async with cluster_listener(components, "cc", handlers.table()) as url:
            # The stranger does not trust our listener either: the handshake fails on its side ...
            async with ClusterClient(stranger, "clc") as client:
                with pytest.raises(ClusterFault) as fault:
                    await client.call(url, DescribeInstances([]))
            assert (fault.value.code, fault.value.status) == ("Unavailable", 503)
            # ... and with verification off on its side, ours refuses its certificate.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ident = stranger.identity("clc")
            ctx.load_cert_chain(ident.cert_path, ident.key_path)
            async with httpx.AsyncClient(verify=ctx) as http:
                with pytest.raises(httpx.TransportError):
                    await http.post(url + "/cluster/DescribeInstances", content=b"{}")
            # The server is still serving.
            async with ClusterClient(components, "clc") as client:
                await client.call(url, DescribeInstances([]))
    assert handlers.callers == [Peer("clc", "clc", "euca")]
    failures = [r for r in caplog.records if "tls handshake failed" in r.getMessage()]
    assert failures and all("\n" not in r.getMessage() and r.exc_info is None for r in failures)


async def test_no_client_certificate_fails(cloud: tuple[CloudCA, Components]) -> None:
    _, components = cloud
    handlers = CcHandlers()
    async with cluster_listener(components, "cc", handlers.table()) as url:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cafile=str(components.ca_cert_path))
        async with httpx.AsyncClient(verify=ctx) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(url + "/cluster/DescribeInstances", content=b"{}")
        # Plain HTTP on the TLS port is not served either.
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.TransportError):
                await http.post(url.replace("https:", "http:") + "/cluster/DescribeInstances", content=b"{}")
    assert handlers.callers == []


async def test_unreachable_listener_is_unavailable(cloud: tuple[CloudCA, Components]) -> None:
    _, components = cloud
    # A port nobody listens on: bind one and close it.
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with ClusterClient(components, "cc") as client:
        with pytest.raises(ClusterFault) as fault:
            await client.call(f"https://127.0.0.1:{port}", NcDescribeInstances([]))
    assert (fault.value.code, fault.value.status) == ("Unavailable", 503)


async def test_cc_calls_nc(cloud: tuple[CloudCA, Components]) -> None:
    from euca.protocol.cluster import NcDescribeResource

    _, components = cloud
    seen: list[Peer] = []

    async def describe(message: NcDescribeResource, peer: Peer) -> NodeResources:
        seen.append(peer)
        return NodeResources(node="node-a", state="up", cores_max=2, cores_free=2)

    async with cluster_listener(components, "nc", {NcDescribeResource: describe}) as url:
        async with ClusterClient(components, "cc") as client:
            reply = await client.call(url, NcDescribeResource())
        async with ClusterClient(components, "clc") as client:
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, NcDescribeResource())
    assert reply.cores_max == 2
    assert seen == [Peer("cc", "cluster01", "euca")]
    assert fault.value.code == "Unauthorized"


def test_cluster_app_needs_a_known_listener_role() -> None:
    with pytest.raises(ValueError):
        ClusterApp("walrus", {})
