"""ClusterApp + ClusterClient over real mutual TLS on loopback: who may call whom, faults, and joining.

Certificates are real (issued by a real CloudCA in a temporary directory); the listener is the real HTTP
server with an SSL context; the client is the real httpx-based ClusterClient.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from cryptography import x509

from euca.core.cluster_app import ClusterApp
from euca.core.cluster_client import ClusterClient
from euca.core.components import (
    ComponentIdentity,
    Components,
    JoinError,
    JoinRequest,
    encode_join_token,
    ensure_components,
    join_cloud,
    make_csr,
    open_cloud_ca,
    parse_join_token,
)
from euca.core.config import Config, HttpLimits, load_config
from euca.core.http import HttpServer, Peer, Request, Response
from euca.core.pki import CloudCA, cert_cluster, new_key
from euca.core.roles import Dispatcher, RoleContext
from euca.core.store import open_store
from euca.core.supervisor import Supervisor
from euca.protocol.cluster import (
    ClusterFault,
    DescribeInstances,
    GetConsoleOutput,
    InstancesReply,
    InstanceStatus,
    NcDescribeInstances,
    NcDescribeResource,
    NodeResources,
    RebootInstances,
    TerminateInstances,
)
from euca.roles.clc.join import (
    JoinApp,
    _redeem,
    make_join_token,
    revoke_cluster_join_tokens,
    revoke_join_tokens,
)
from euca.roles.clc.schema import JOIN_TOKENS

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
        cluster="cluster01",
        node_image=True,
    )
    return ca, components


@pytest.fixture(scope="module")
def other_cluster(cloud: tuple[CloudCA, Components], tmp_path_factory: pytest.TempPathFactory) -> Components:
    """The CC of another cluster of the same cloud (same CA): cluster02."""
    ca, _ = cloud
    components = Components(tmp_path_factory.mktemp("cluster02") / "components")
    ensure_components(components, ca, [("cc", "cluster02", ["127.0.0.1"])])
    return components


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
    components: Components, role: str, handlers: dict[type, object], *, caller_name: str | None = None
) -> AsyncIterator[str]:
    app = ClusterApp(role, handlers, caller_name=caller_name)  # type: ignore[arg-type]

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
    caller = handlers.callers[0]
    assert (caller.role, caller.name, caller.organization) == ("clc", "clc", "euca")
    assert (
        caller.serial
        == x509.load_pem_x509_certificate(components.cert_path("clc").read_bytes()).serial_number
    )


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
                # Nested past msgspec's limit: a client error, never a 500.
                ("/cluster/DescribeInstances", b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
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


async def test_caller_checks_the_listener_name(cloud: tuple[CloudCA, Components]) -> None:
    _, components = cloud

    async def describe(message: NcDescribeResource, peer: Peer) -> NodeResources:
        return NodeResources(node="node-a", state="up")

    async with cluster_listener(components, "nc", {NcDescribeResource: describe}) as url:
        async with ClusterClient(components, "cc") as client:
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, NcDescribeResource(), expect_name="node-b")
        assert (fault.value.code, fault.value.status) == ("Unauthorized", 403)
        async with ClusterClient(components, "cc") as client:
            assert (await client.call(url, NcDescribeResource(), expect_name="node-a")).node == "node-a"


async def test_per_call_timeout(cloud: tuple[CloudCA, Components]) -> None:
    """A listener that does not answer within the call's timeout is Unavailable (503)."""
    _, components = cloud
    never = trio.Event()  # set only after the caller gave up

    async def stuck(message: DescribeInstances, peer: Peer) -> InstancesReply:
        await never.wait()
        return InstancesReply([])

    async with cluster_listener(components, "cc", {DescribeInstances: stuck}) as url:
        async with ClusterClient(components, "clc") as client:
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, DescribeInstances([]), timeout=0.2)
        never.set()  # let the listener finish the abandoned call and shut down
    assert (fault.value.code, fault.value.status) == ("Unavailable", 503)
    assert "timed out" in fault.value.message


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


async def test_an_nc_refuses_the_cc_of_another_cluster(
    cloud: tuple[CloudCA, Components], other_cluster: Components, caplog: pytest.LogCaptureFixture
) -> None:
    """The NC's listener takes its own cluster's CC (CN = the cluster its certificate names) and refuses
    another cluster's — a valid certificate of the same cloud and role — before decoding anything."""
    _, components = cloud
    cluster = components.cluster_of("nc")
    assert cluster == "cluster01"
    seen: list[Peer] = []

    async def describe(message: NcDescribeResource, peer: Peer) -> NodeResources:
        seen.append(peer)
        return NodeResources(node="node-a", state="up")

    async with cluster_listener(components, "nc", {NcDescribeResource: describe}, caller_name=cluster) as url:
        async with ClusterClient(components, "cc") as client:
            assert (await client.call(url, NcDescribeResource(), expect_name="node-a")).node == "node-a"
        caplog.set_level(logging.WARNING, logger="euca.cluster")
        async with ClusterClient(other_cluster, "cc") as client:
            with pytest.raises(ClusterFault) as fault:
                await client.call(url, NcDescribeResource(), expect_name="node-a")
        # Refused before the body is read: garbage is Unauthorized, not BadMessage.
        async with httpx.AsyncClient(verify=other_cluster.client_context("cc")) as http:
            response = await http.post(url + "/cluster/NcDescribeResource", content=b"{not json")
        # The role check still comes first: a CLC is refused as before.
        async with ClusterClient(components, "clc") as client:
            with pytest.raises(ClusterFault) as by_role:
                await client.call(url, NcDescribeResource())
    assert (fault.value.code, fault.value.status) == ("Unauthorized", 403)
    assert "cluster01" in fault.value.message
    assert response.status_code == 403 and response.json()["code"] == "Unauthorized"
    assert by_role.value.code == "Unauthorized"
    assert seen == [Peer("cc", "cluster01", "euca")]
    refused = [r.getMessage() for r in caplog.records if "cluster call refused" in r.getMessage()]
    assert refused == [  # one line per refusal
        "cluster call refused role=nc caller=cc/cluster02 path=/NcDescribeResource",
        "cluster call refused role=nc caller=cc/cluster02 path=/NcDescribeResource",
        "cluster call refused role=nc caller=clc/clc path=/NcDescribeResource",
    ]


def test_cluster_app_needs_a_known_listener_role() -> None:
    with pytest.raises(ValueError):
        ClusterApp("walrus", {})


# ---------------------------------------------------------------------------------------------------------
# Joining: a host without the CA gets its certificate from the CLC with a one-time token.


@asynccontextmanager
async def clc_join_endpoint(data_dir: Path) -> AsyncIterator[tuple[RoleContext, str]]:
    """A CLC's RoleContext (real store, CA, components) with JoinApp on a plain HTTP listener."""
    cfg = load_config(None, {"data_dir": str(data_dir), "cc.cluster": "cluster01"})
    ctx = Supervisor(cfg, ["clc"]).open_context()
    app = JoinApp(ctx)
    dispatcher = Dispatcher([app])  # type: ignore[list-item]
    server = HttpServer(dispatcher, "127.0.0.1", 0, HttpLimits(header_timeout=10))
    try:
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.serve)
                try:
                    yield ctx, f"http://127.0.0.1:{port}"
                finally:
                    server.shutdown()
    finally:
        ctx.store.close()


def _joiner(data_dir: Path) -> Config:
    return load_config(None, {"data_dir": str(data_dir)})


async def _join(data_dir: Path, token: str) -> ComponentIdentity:
    return await trio.to_thread.run_sync(join_cloud, _joiner(data_dir), token)


async def test_join_round_trip(tmp_path: Path) -> None:
    async with clc_join_endpoint(tmp_path / "clc") as (ctx, clc_url):
        token = make_join_token(
            ctx.store, ctx.ca, "nc", "node-b", clc_url=clc_url, hosts=["127.0.0.1"], cluster="cluster02"
        )
        ident = await _join(tmp_path / "node", token)
        assert (ident.role, ident.name) == ("nc", "node-b")
        joined = Components.for_config(_joiner(tmp_path / "node"))
        assert joined.cluster_of("nc") == "cluster02"  # the CLC signed the cluster it registered
        assert joined.ca_cert_pem == ctx.ca.cert_pem
        assert joined.node_image_cert_pem == ctx.components.node_image_cert_pem
        assert joined.node_image_key_pem == ctx.components.node_image_key_pem
        assert not (tmp_path / "node" / "pki" / "cloud-pk.pem").exists()
        # Starting again with the same token is fine: already joined, nothing is asked of the CLC.
        assert (await _join(tmp_path / "node", token)).name == "node-b"
        # The token is spent: another host cannot use it.
        with pytest.raises(JoinError, match="used already"):
            await _join(tmp_path / "thief", token)
        # A cc joins too, without the node image key.
        cc_token = make_join_token(ctx.store, ctx.ca, "cc", "cluster02", clc_url=clc_url)
        await _join(tmp_path / "cc", cc_token)
        cc_joined = Components.for_config(_joiner(tmp_path / "cc"))
        assert cc_joined.name("cc") == "cluster02" and not cc_joined.has_node_image

        # The joined certificates work: the joined cc calls the joined nc over mutual TLS.
        seen: list[Peer] = []

        async def describe(message: NcDescribeResource, peer: Peer) -> NodeResources:
            seen.append(peer)
            return NodeResources(node="node-b", state="up")

        # ... and the CC of another cluster of the same cloud (joined just the same) is refused.
        await _join(tmp_path / "cc3", make_join_token(ctx.store, ctx.ca, "cc", "cluster03", clc_url=clc_url))
        cc3 = Components.for_config(_joiner(tmp_path / "cc3"))

        async with cluster_listener(
            joined, "nc", {NcDescribeResource: describe}, caller_name=joined.cluster_of("nc")
        ) as url:
            async with ClusterClient(cc_joined, "cc") as client:
                assert (await client.call(url, NcDescribeResource())).node == "node-b"
            async with ClusterClient(cc3, "cc") as client:
                with pytest.raises(ClusterFault) as fault:
                    await client.call(url, NcDescribeResource())
        assert fault.value.code == "Unauthorized"
        assert seen == [Peer("cc", "cluster02", "euca")]


async def test_join_retires_a_ca_the_host_made_for_itself(tmp_path: Path) -> None:
    """A host that once ran standalone (and so made its own CA) joins: the joined cloud's CA is the one the
    next start opens, and the old files are kept aside."""
    standalone = CloudCA.load_or_create(tmp_path / "node" / "pki")
    async with clc_join_endpoint(tmp_path / "clc") as (ctx, clc_url):
        await _join(
            tmp_path / "node",
            make_join_token(ctx.store, ctx.ca, "nc", "node-g", clc_url=clc_url, cluster="c1"),
        )
        cfg = _joiner(tmp_path / "node")
        opened = open_cloud_ca(cfg)
        assert not opened.has_key and opened.sha256 == ctx.ca.sha256
    kept = sorted(p.name for p in (tmp_path / "node" / "pki").glob("cloud-*.before-join-*"))
    assert [name.split(".before-join-")[0] for name in kept] == ["cloud-cert.pem", "cloud-pk.pem"]
    assert standalone.sha256 != ctx.ca.sha256


async def test_join_refusals(tmp_path: Path) -> None:
    async with clc_join_endpoint(tmp_path / "clc") as (ctx, clc_url):
        expired = make_join_token(ctx.store, ctx.ca, "nc", "node-c", clc_url=clc_url, cluster="c1", ttl=-1)
        with pytest.raises(JoinError, match="expired"):
            await _join(tmp_path / "n1", expired)

        good = parse_join_token(
            make_join_token(ctx.store, ctx.ca, "nc", "node-d", clc_url=clc_url, cluster="c1")
        )
        wrong_secret = encode_join_token(msgspec.structs.replace(good, secret="guess"))
        with pytest.raises(JoinError, match="not known"):
            await _join(tmp_path / "n2", wrong_secret)

        # A token naming another CA (or a CLC impersonated on the way) is refused by the joiner, which
        # stores nothing.
        wrong_ca = encode_join_token(msgspec.structs.replace(good, ca_sha256="00" * 32))
        with pytest.raises(JoinError, match="does not match"):
            await _join(tmp_path / "n3", wrong_ca)
        assert not (tmp_path / "n3" / "pki" / "components").exists()

        # Not a join request at all.
        async with httpx.AsyncClient() as http:
            response = await http.post(clc_url + "/services/cluster/join", content=b"{}")
            assert response.status_code == 400 and response.json()["code"] == "BadMessage"
            deep = b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
            response = await http.post(clc_url + "/services/cluster/join", content=deep)
            assert response.status_code == 400 and response.json()["code"] == "BadMessage"
            response = await http.post(clc_url + "/services/cluster/other", content=b"{}")
            assert response.status_code == 404


async def test_bad_csr_leaves_the_token_unspent(tmp_path: Path) -> None:
    async with clc_join_endpoint(tmp_path / "clc") as (ctx, clc_url):
        token = make_join_token(ctx.store, ctx.ca, "nc", "node-f", clc_url=clc_url, cluster="c1")
        parsed = parse_join_token(token)
        async with httpx.AsyncClient() as http:
            bad = JoinRequest(parsed.token_id, parsed.secret, "not a CSR")
            response = await http.post(clc_url + "/services/cluster/join", content=msgspec.json.encode(bad))
            assert response.status_code == 400
        assert (await _join(tmp_path / "node", token)).name == "node-f"


def test_make_join_token_checks_its_arguments(tmp_path: Path) -> None:
    store = open_store("sqlite:state.db", tmp_path)
    ca = CloudCA.load_or_create(tmp_path / "pki")
    try:
        with pytest.raises(ValueError):
            make_join_token(store, ca, "clc", "x", clc_url="http://h:8773")
        with pytest.raises(ValueError):
            make_join_token(store, ca, "nc", "", clc_url="http://h:8773", cluster="c")
        with pytest.raises(ValueError, match="joins a cluster"):
            make_join_token(store, ca, "nc", "n", clc_url="http://h:8773")
        with pytest.raises(ValueError, match="names no cluster"):
            make_join_token(store, ca, "cc", "c", clc_url="http://h:8773", cluster="c")
        token = parse_join_token(
            make_join_token(store, ca, "nc", "n", clc_url="http://h:8773/", hosts=["h"], cluster="c")
        )
        assert (token.url, token.role, token.name, token.ca_sha256, token.cluster) == (
            "http://h:8773",
            "nc",
            "n",
            ca.sha256,
            "c",
        )
        assert revoke_join_tokens(store, "nc", "n") == 1
        # Deregistering a cluster forgets the unused tokens of its CC and of its nodes, not others'.
        make_join_token(store, ca, "cc", "c", clc_url="http://h:8773")
        make_join_token(store, ca, "nc", "n1", clc_url="http://h:8773", cluster="c")
        make_join_token(store, ca, "nc", "n2", clc_url="http://h:8773", cluster="other")
        assert revoke_cluster_join_tokens(store, "c") == 2
        assert revoke_join_tokens(store, "nc", "n2") == 1
    finally:
        store.close()


def test_a_token_made_before_tokens_named_the_cluster_still_joins(tmp_path: Path) -> None:
    """A row of the first schema (no cluster column) survives the migration and is redeemed as before:
    a certificate without a cluster (the NC then takes any CC of the cloud, and warns at start)."""
    store = open_store("sqlite:state.db", tmp_path)
    ca = CloudCA.load_or_create(tmp_path / "pki")
    try:
        store.migrate(JOIN_TOKENS.namespace, JOIN_TOKENS.steps[:1])
        store.write_sync(
            lambda tx: tx.execute(
                "INSERT INTO cluster_join_tokens(token_id, secret_sha256, role, name, hosts, created, expires) "
                "VALUES('00ff', ?, 'nc', 'node-old', '[]', 0, 1e12)",
                (hashlib.sha256(b"s").hexdigest(),),
            )
        )
        store.migrate(JOIN_TOKENS.namespace, JOIN_TOKENS.steps)
        key = new_key()
        request = JoinRequest("00ff", "s", make_csr(key, "nc", "node-old").decode())
        redeemed = store.write_sync(lambda tx: _redeem(tx, request, ca, "127.0.0.1", time.time()))
    finally:
        store.close()
    assert (redeemed.role, redeemed.name, redeemed.cluster) == ("nc", "node-old", None)
    assert cert_cluster(x509.load_pem_x509_certificate(redeemed.cert_pem)) is None


async def test_a_node_joined_without_a_cluster_joins_again_to_get_it(tmp_path: Path) -> None:
    """The way out of role-only checking for a node that joined before certificates named the cluster: a
    new token (register-node) makes it join again rather than count as joined already."""
    async with clc_join_endpoint(tmp_path / "clc") as (ctx, clc_url):
        old = Components.for_config(_joiner(tmp_path / "node"))
        old.write_ca_cert(ctx.ca.cert_pem)
        old.write_identity("nc", *ctx.ca.issue_component("nc", "node-h"))
        assert old.cluster_of("nc") is None
        token = make_join_token(ctx.store, ctx.ca, "nc", "node-h", clc_url=clc_url, cluster="c1")
        assert (await _join(tmp_path / "node", token)).name == "node-h"
        assert Components.for_config(_joiner(tmp_path / "node")).cluster_of("nc") == "c1"
        # Joined now: starting again with the same (spent) token asks nothing of the CLC.
        assert (await _join(tmp_path / "node", token)).name == "node-h"


def test_the_nc_listens_for_the_cc_its_certificate_names(
    cloud: tuple[CloudCA, Components], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from euca.roles.nc import own_cluster

    ca, components = cloud
    caplog.set_level(logging.WARNING, logger="euca.nc")
    assert own_cluster(components) == "cluster01"
    assert not caplog.records
    # A node joined before certificates named the cluster: role-only checking, said once at start.
    older = Components(tmp_path / "components")
    ensure_components(older, ca, [("nc", "node-old", [])])
    assert own_cluster(older) is None
    [warning] = caplog.records
    assert "names no cluster" in warning.getMessage() and "\n" not in warning.getMessage()
