"""Revocation of component certificates (issue 13) over real mutual TLS on loopback.

A deregistered component's serial goes on the cloud CA's CRL; every cluster listener (ClusterApp) and caller
(ClusterClient) refuses a peer whose serial is on it, from the next call on (kept-alive connections too);
the CRL rides the CLC's DescribeResources to the CC and the CC's NcDescribeResource to its nodes; a
re-registered component gets a new certificate that works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from cryptography import x509

from euca.core.cluster_app import ClusterApp
from euca.core.cluster_client import ClusterClient
from euca.core.components import Components, ensure_components, revoke_component
from euca.core.config import HttpLimits, load_config
from euca.core.http import HttpServer, Peer, Request, Response
from euca.core.pki import CloudCA, make_crl, read_crl
from euca.protocol.cluster import (
    ClusterFault,
    DescribeInstances,
    DescribeResources,
    DescribeVolumes,
    InstancesReply,
    NcDescribeInstances,
    NcDescribeNode,
    NcDescribeResource,
    NodeReport,
    NodeResources,
    ResourcesReply,
    VolumesReply,
)

HANG_GUARD = 30
HOSTS = ["127.0.0.1"]


class Cloud:
    """The CLC host (CA, clc identity) and, each in its own directory as on its own host, a CC, an SC and
    two nodes of cluster01."""

    def __init__(self, base: Path):
        self.ca = CloudCA.load_or_create(base / "pki")
        self.clc = self._host(base / "pki" / "components", [("clc", "clc", HOSTS)])
        self.cc = self._host(base / "cc", [("cc", "cluster01", HOSTS)])
        self.node_a = self._host(base / "node-a", [("nc", "node-a", HOSTS)])
        self.node_b = self._host(base / "node-b", [("nc", "node-b", HOSTS)])

    def _host(self, directory: Path, roles: list[tuple[str, str, list[str]]]) -> Components:
        components = Components(directory)
        ensure_components(components, self.ca, roles, cluster="cluster01")
        return components

    def serial(self, components: Components, role: str) -> int:
        return x509.load_pem_x509_certificate(components.cert_path(role).read_bytes()).serial_number


@pytest.fixture
def cloud(tmp_path: Path) -> Cloud:
    return Cloud(tmp_path)


async def _nc_instances(message: NcDescribeInstances, peer: Peer) -> InstancesReply:
    return InstancesReply([])


async def _nc_resources(message: NcDescribeResource, peer: Peer) -> NodeResources:
    return NodeResources(node="n", state="up")


async def _nc_node(message: NcDescribeNode, peer: Peer) -> NodeReport:
    return NodeReport([], NodeResources(node="n", state="up"))


async def _cc_instances(message: DescribeInstances, peer: Peer) -> InstancesReply:
    return InstancesReply([])


async def _cc_resources(message: DescribeResources, peer: Peer) -> ResourcesReply:
    return ResourcesReply(cluster="cluster01", nodes=[], capacity=[])


NC_HANDLERS = {
    NcDescribeInstances: _nc_instances,
    NcDescribeResource: _nc_resources,
    NcDescribeNode: _nc_node,
}
CC_HANDLERS = {DescribeInstances: _cc_instances, DescribeResources: _cc_resources}


@asynccontextmanager
async def listener(components: Components, role: str, handlers: dict[type, object]) -> AsyncIterator[str]:
    """A cluster listener as the supervisor mounts it: the app checks the host's revocation list."""
    app = ClusterApp(
        role,
        handlers,  # type: ignore[arg-type]
        caller_name="cluster01" if role == "nc" else None,
        revocations=components.revocations,
    )

    async def dispatch(request: Request) -> Response:
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


async def test_deregistered_node_is_refused_by_its_cc(cloud: Cloud) -> None:
    async with (
        listener(cloud.node_a, "nc", NC_HANDLERS) as node_a,
        listener(cloud.node_b, "nc", NC_HANDLERS) as node_b,
    ):
        async with ClusterClient(cloud.cc, "cc") as cc:
            assert isinstance(
                await cc.call(node_a, NcDescribeInstances(), expect_name="node-a"), InstancesReply
            )
            assert isinstance(
                await cc.call(node_b, NcDescribeInstances(), expect_name="node-b"), InstancesReply
            )
            # deregister-node node-b: the CLC host revokes it; the CC holds the new list (from its poll).
            revoked = cloud.ca.revoke(cloud.ca.component_serials("nc", "node-b"))
            assert cloud.serial(cloud.node_b, "nc") in revoked.serials
            assert cloud.cc.revocations.accept(revoked.pem)
            # The next call is refused although a kept-alive connection to node-b was open.
            with pytest.raises(ClusterFault) as refused:
                await cc.call(node_b, NcDescribeInstances(), expect_name="node-b")
            assert refused.value.code == "Unauthorized" and "revoked" in refused.value.message
            # The other node is untouched.
            assert isinstance(
                await cc.call(node_a, NcDescribeInstances(), expect_name="node-a"), InstancesReply
            )


async def test_deregistered_cluster_is_refused_by_the_clc_and_its_nodes(cloud: Cloud) -> None:
    async with (
        listener(cloud.cc, "cc", CC_HANDLERS) as cc_url,
        listener(cloud.node_a, "nc", NC_HANDLERS) as node_url,
    ):
        async with ClusterClient(cloud.clc, "clc") as clc, ClusterClient(cloud.cc, "cc") as cc:
            assert isinstance(await clc.call(cc_url, DescribeInstances([])), InstancesReply)
            assert isinstance(
                await cc.call(node_url, NcDescribeInstances(), expect_name="node-a"), InstancesReply
            )
            revoked = cloud.ca.revoke(cloud.ca.component_serials("cc", "cluster01"))
            # The CLC caller: its host's list is the CA's (the CLC host writes it into its components).
            assert cloud.clc.revocations.accept(revoked.pem)
            with pytest.raises(ClusterFault) as refused:
                await clc.call(cc_url, DescribeInstances([]))
            assert refused.value.code == "Unauthorized"
            # A node that holds the list refuses the cluster's CC as a caller (403 from its listener).
            assert cloud.node_a.revocations.accept(revoked.pem)
            with pytest.raises(ClusterFault) as refused:
                await cc.call(node_url, NcDescribeInstances(), expect_name="node-a")
            assert refused.value.code == "Unauthorized" and refused.value.status == 403


async def test_the_list_rides_the_polls_to_cc_and_nodes(cloud: Cloud) -> None:
    revoked = cloud.ca.revoke(cloud.ca.component_serials("nc", "node-b"))
    assert cloud.clc.revocations.accept(revoked.pem)
    async with (
        listener(cloud.cc, "cc", CC_HANDLERS) as cc_url,
        listener(cloud.node_a, "nc", NC_HANDLERS) as node_url,
    ):
        async with ClusterClient(cloud.clc, "clc") as clc, ClusterClient(cloud.cc, "cc") as cc:
            await clc.call(cc_url, DescribeResources("cluster01", [], []))
            assert cloud.cc.revocations.current().number == revoked.number
            await cc.call(node_url, NcDescribeResource(), expect_name="node-a")
            assert cloud.node_a.revocations.current().serials == revoked.serials
            # The CC's usual poll of a node (one call) carries it as well.
            newer = cloud.ca.revoke([12345])
            assert cloud.cc.revocations.accept(newer.pem)
            await cc.call(node_url, NcDescribeNode(), expect_name="node-a")
            assert cloud.node_a.revocations.current().number == newer.number


def test_a_list_not_the_cas_or_older_is_ignored(cloud: Cloud, tmp_path: Path) -> None:
    newer = cloud.ca.revoke([1, 2])
    assert cloud.cc.revocations.accept(newer.pem)
    other = CloudCA.load_or_create(tmp_path / "other-pki")
    forged = make_crl(other.cert, other.key, [], newer.number + 5)
    assert not cloud.cc.revocations.accept(forged)
    with pytest.raises(ValueError):
        read_crl(forged, cloud.ca.cert)
    older = make_crl(cloud.ca.cert, cloud.ca.key, [], newer.number - 1)
    assert not cloud.cc.revocations.accept(older)
    assert not cloud.cc.revocations.accept(b"not a crl")
    assert cloud.cc.revocations.current().serials == {1, 2}


async def test_a_reregistered_node_gets_a_new_certificate_that_works(cloud: Cloud) -> None:
    old_serial = cloud.serial(cloud.node_b, "nc")
    revoked = cloud.ca.revoke(cloud.ca.component_serials("nc", "node-b"))
    cloud.cc.revocations.accept(revoked.pem)
    # register-node again: the CA host issues again what is revoked (a joined host joins with its new token).
    assert ensure_components(cloud.node_b, cloud.ca, [("nc", "node-b", HOSTS)], cluster="cluster01") == ["nc"]
    assert cloud.serial(cloud.node_b, "nc") != old_serial
    cloud.node_b.write_identity("nc", *_files(cloud.node_b))  # drop the cached TLS contexts
    async with listener(cloud.node_b, "nc", NC_HANDLERS) as node_b:
        async with ClusterClient(cloud.cc, "cc") as cc:
            assert isinstance(
                await cc.call(node_b, NcDescribeInstances(), expect_name="node-b"), InstancesReply
            )


def _files(components: Components) -> tuple[bytes, bytes]:
    return components.key_path("nc").read_bytes(), components.cert_path("nc").read_bytes()


def test_revoke_component_on_the_ca_host(tmp_path: Path) -> None:
    """What `euca admin deregister-*` runs: a one-box's own CC (issued before the CA kept its index too)."""
    config = load_config(None, {"data_dir": str(tmp_path), "cc.cluster": "cluster01"})
    ca = CloudCA.load_or_create(tmp_path / "pki")
    components = Components.for_config(config)
    ensure_components(
        components, ca, [("cc", "cluster01", HOSTS), ("nc", "node-a", HOSTS)], cluster="cluster01"
    )
    (tmp_path / "pki" / "issued.jsonl").unlink()  # as on a cloud made before revocation existed
    cc_serial = x509.load_pem_x509_certificate(components.cert_path("cc").read_bytes()).serial_number
    assert revoke_component(config, "cc", "cluster01") == [cc_serial]
    assert revoke_component(config, "cc", "cluster01") == []  # already revoked: no new list
    assert components.revocations.is_revoked(cc_serial)
    assert ca.revocations().number == 1
    nc_serial = x509.load_pem_x509_certificate(components.cert_path("nc").read_bytes()).serial_number
    assert revoke_component(config, "nc", cluster="cluster01") == [nc_serial]
    assert Components.for_config(config).revocations.current().serials == {cc_serial, nc_serial}


def test_admin_deregister_revokes(tmp_path: Path) -> None:
    """`euca admin deregister-node` / `deregister-sc` / `deregister-cluster` put the certificates the CA
    issued to those components on the CRL, and print them."""
    from click.testing import CliRunner

    from euca.cli import main

    def admin(*args: str) -> str:
        result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "admin", *args])
        assert result.exit_code == 0, result.output
        return result.output

    ca = CloudCA.load_or_create(tmp_path / "pki")
    clc_host = Components(tmp_path / "pki" / "components")
    ensure_components(clc_host, ca, [("clc", "clc", HOSTS)])
    admin("register-cluster", "c1", "--host", "127.0.0.1", "--no-join-token")
    admin("register-node", "--cluster", "c1", "--host", "127.0.0.2", "--name", "n1", "--no-join-token")
    admin("register-node", "--cluster", "c1", "--host", "127.0.0.3", "--name", "n2", "--no-join-token")
    admin("register-sc", "c1", "--host", "127.0.0.1", "--no-join-token")
    # What the joins issue on the CLC host (JoinApp signs their CSRs with the CA).
    n1 = Components(tmp_path / "n1")
    ensure_components(n1, ca, [("nc", "n1", HOSTS)], cluster="c1")
    n2 = Components(tmp_path / "n2")
    ensure_components(n2, ca, [("nc", "n2", HOSTS)], cluster="c1")
    cc = Components(tmp_path / "cc")
    ensure_components(cc, ca, [("cc", "c1", HOSTS), ("sc", "c1", HOSTS)])

    def serial(components: Components, role: str) -> int:
        return x509.load_pem_x509_certificate(components.cert_path(role).read_bytes()).serial_number

    out = admin("deregister-node", "n1")
    assert f"REVOKED\tnc\tn1\t{serial(n1, 'nc'):x}" in out
    assert ca.revocations().serials == {serial(n1, "nc")}
    admin("deregister-sc", "c1")
    admin("deregister-cluster", "c1")
    revoked = ca.revocations()
    assert revoked.serials == {serial(n1, "nc"), serial(n2, "nc"), serial(cc, "cc"), serial(cc, "sc")}
    # This host's roles see the list at once (the CLC host's components hold it too).
    assert clc_host.revocations.current().serials == revoked.serials


async def test_a_node_registered_again_joins_again(tmp_path: Path) -> None:
    """A joined node deregistered (its certificate revoked) and registered again starts with the new token:
    it joins again and gets a new certificate, instead of counting as joined with the revoked one."""
    from euca.core.components import join_cloud
    from euca.core.roles import Dispatcher
    from euca.core.supervisor import Supervisor
    from euca.roles.clc.join import JoinApp, make_join_token

    cfg = load_config(None, {"data_dir": str(tmp_path / "clc"), "cc.cluster": "c1"})
    ctx = Supervisor(cfg, ["clc"]).open_context()
    server = HttpServer(Dispatcher([JoinApp(ctx)]), "127.0.0.1", 0, HttpLimits(header_timeout=10))  # type: ignore[list-item]
    node_cfg = load_config(None, {"data_dir": str(tmp_path / "node")})
    try:
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                url = f"http://127.0.0.1:{await nursery.start(server.serve)}"
                first = make_join_token(ctx.store, ctx.ca, "nc", "n1", clc_url=url, cluster="c1")
                await trio.to_thread.run_sync(join_cloud, node_cfg, first)
                node = Components.for_config(node_cfg)
                old = x509.load_pem_x509_certificate(node.cert_path("nc").read_bytes()).serial_number
                assert old in ctx.ca.component_serials("nc", "n1")  # the CA recorded what it signed
                ctx.ca.revoke([old])  # deregister-node
                again = make_join_token(ctx.store, ctx.ca, "nc", "n1", clc_url=url, cluster="c1")
                await trio.to_thread.run_sync(join_cloud, node_cfg, again)
                new = x509.load_pem_x509_certificate(node.cert_path("nc").read_bytes()).serial_number
                assert new != old and new not in ctx.ca.revocations().serials
                # Started again with the same token: joined already, nothing asked of the CLC.
                await trio.to_thread.run_sync(join_cloud, node_cfg, again)
                assert x509.load_pem_x509_certificate(node.cert_path("nc").read_bytes()).serial_number == new
                server.shutdown()
    finally:
        ctx.store.close()


async def test_a_component_of_the_ca_host_registered_again_is_reissued_and_reloaded(tmp_path: Path) -> None:
    """A one-box's own SC deregistered (revoked), then registered again: `register-sc` issues it a new
    certificate and the running listener presents it from its next handshake, with no restart."""
    from click.testing import CliRunner

    from euca.cli import main

    def admin(*args: str) -> str:
        result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "admin", *args])
        assert result.exit_code == 0, result.output
        return result.output

    config = load_config(None, {"data_dir": str(tmp_path), "cc.cluster": "c1"})
    ca = CloudCA.load_or_create(tmp_path / "pki")
    here = Components.for_config(config)
    ensure_components(here, ca, [("clc", "clc", HOSTS), ("sc", "c1", HOSTS)])
    admin("register-cluster", "c1", "--host", "127.0.0.1", "--no-join-token")
    admin("register-sc", "c1", "--host", "127.0.0.1", "--no-join-token")

    async def volumes(message: DescribeVolumes, peer: Peer) -> VolumesReply:
        return VolumesReply([])

    ask = DescribeVolumes()
    async with listener(here, "sc", {DescribeVolumes: volumes}) as url, ClusterClient(here, "clc") as clc:
        await clc.call(url, ask, expect_name="c1")
        assert "REVOKED\tsc\tc1" in admin("deregister-sc", "c1")
        with pytest.raises(ClusterFault) as refused:
            await clc.call(url, ask, expect_name="c1")
        assert "revoked" in refused.value.message
        assert "REISSUED\tsc\tc1" in admin("register-sc", "c1", "--host", "127.0.0.1", "--no-join-token")
        assert here.reload_changed() == ["sc"]  # what the supervisor's watch_certificates does
        assert isinstance(await clc.call(url, ask, expect_name="c1"), VolumesReply)
        assert here.reload_changed() == []
