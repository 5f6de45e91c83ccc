"""Fixtures shared by the unit tests (no server runs here: each test builds the pieces it exercises)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from euca.core.pki import CloudCA
from euca.core.store import Store, open_store
from euca.roles.clc import schema
from helpers import postgres
from helpers.bundle_keys import BundleKeys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> BundleKeys:
    """Cloud, user and node keys from a throwaway cloud CA, for bundling and unbundling images."""
    return BundleKeys(CloudCA.load_or_create(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="module")
def service_model() -> Any:
    """botocore's EC2 service model (what the SDKs send and expect)."""
    return botocore.session.get_session().get_service_model("ec2")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[postgres.Cluster]:
    """A private PostgreSQL cluster for the session (tests make a database each); skipped only where
    PostgreSQL's binaries are not installed."""
    if postgres.bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (initdb/pg_ctl: Debian package postgresql)")
    with postgres.cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def clc_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store with the CLC's schema (migrated, seeded), closed after the test: SQLite, and PostgreSQL
    (a database of its own in the session's private cluster), so the records modules run on both."""
    if request.param == "sqlite":
        s = Store(tmp_path / "state.db")
    else:
        cluster: postgres.Cluster = request.getfixturevalue("pg_cluster")
        s = open_store(cluster.create_database("clc"), tmp_path)
    schema.migrate(s)
    yield s
    s.close()
