"""A private PostgreSQL cluster for tests: initdb + pg_ctl in a temporary directory, on a unix socket only.

Debian's `postgresql` package (scripts/install-deps.sh) provides the binaries, under
/usr/lib/postgresql/<major>/bin. PostgreSQL refuses to run as root, so as root the cluster runs as the
`postgres` user (or `nobody`) that owns its directory. Each test server gets a database of its own
(`create_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# EUCA_TEST_STORE=postgresql: the service tests' servers (helpers.server.start_euca) keep their state in
# PostgreSQL, a fresh database each, instead of SQLite.
STORE_ENV = "EUCA_TEST_STORE"


def wanted() -> bool:
    return os.environ.get(STORE_ENV, "sqlite") in ("postgresql", "postgres", "pg")


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are (the newest Debian major, else PATH); None if PostgreSQL is not installed."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def _major(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def _run_as() -> str | None:
    """The user the server runs as: ourselves, or as root an unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


@dataclass
class Cluster:
    directory: Path
    socket_dir: Path
    user: str  # the database superuser the tests connect as
    _names: Iterator[int]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}"

    def create_database(self, prefix: str = "euca") -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def cluster(*, fast: bool = True) -> Iterator[Cluster]:
    """A running cluster, stopped and removed on exit. `fast`: no fsync (tests do not survive power loss)."""
    bins = bin_dir()
    if bins is None:
        raise FileNotFoundError("PostgreSQL's initdb/pg_ctl are not installed (Debian package postgresql)")
    run_as = _run_as()
    top = Path(tempfile.mkdtemp(prefix="euca-pg-"))
    data, sockets = top / "data", top / "run"
    sockets.mkdir()
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for path in (top, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    top.chmod(0o755)
    user = "euca"
    kwargs: dict[str, object] = {"user": run_as} if run_as else {}
    settings = [
        "-c listen_addresses=''",
        f"-c unix_socket_directories={sockets}",
        "-c max_connections=300",
        "-c shared_buffers=64MB",
    ]
    if fast:
        settings += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
    try:
        subprocess.run(
            [
                bins / "initdb",
                "-D",
                data,
                "-U",
                user,
                "--auth=trust",
                "--locale=C",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **kwargs,  # type: ignore[call-overload]
        )
        subprocess.run(
            [
                bins / "pg_ctl",
                "start",
                "-D",
                data,
                "-w",
                "-t",
                "60",
                "-l",
                top / "log",
                "-o",
                " ".join(settings),
            ],
            check=True,
            capture_output=True,
            **kwargs,  # type: ignore[call-overload]
        )
        try:
            yield Cluster(top, sockets, user, itertools.count(1))
        finally:
            subprocess.run(
                [bins / "pg_ctl", "stop", "-D", data, "-m", "immediate", "-w"],
                capture_output=True,
                **kwargs,  # type: ignore[call-overload]
            )
    finally:
        shutil.rmtree(top, ignore_errors=True)


# -- the switch for the service tests ------------------------------------------------------------------

_active: Cluster | None = None
_urls: dict[Path, str] = {}  # data dir -> its store's database, for every server and CLI on that data dir


def active() -> Cluster | None:
    """The session's cluster when EUCA_TEST_STORE=postgresql (session_store() started it), else None."""
    return _active


def store_url(data_dir: Path) -> str | None:
    """The store URL of servers on `data_dir` under the switch: a fresh database the first time, the same
    one again for a restart on that data dir; None when the switch is off (SQLite in the data dir)."""
    if _active is None:
        return None
    key = Path(data_dir).resolve()
    if key not in _urls:
        _urls[key] = _active.create_database()
    return _urls[key]


def registered_url(data_dir: Path) -> str | None:
    """The database servers on `data_dir` use under the switch, if one was made; None otherwise."""
    return _urls.get(Path(data_dir).resolve())


def settings_for(data_dir: Path) -> list[str]:
    """`--set` values for an `euca` process on `data_dir` (empty when the switch is off)."""
    url = store_url(data_dir)
    return [] if url is None else [f"store.url={url}"]


@contextlib.contextmanager
def session_store() -> Iterator[Cluster | None]:
    """For the service tests' session: with EUCA_TEST_STORE=postgresql, a cluster that start_euca and the
    in-process CLI (`euca --data-dir D admin ...`) use, a database per data dir; otherwise nothing."""
    global _active
    if not wanted():
        yield None
        return
    import msgspec

    import euca.cli

    original = euca.cli.load_config

    def load_config(path: Any = None, overrides: dict[str, Any] | None = None) -> Any:
        config = original(path, overrides)
        url = _urls.get(config.data_path.resolve())
        if url is not None and config.store.url == "sqlite:state.db":
            config = msgspec.structs.replace(config, store=msgspec.structs.replace(config.store, url=url))
        return config

    with cluster() as c:
        _active = c
        euca.cli.load_config = load_config  # type: ignore[assignment]
        try:
            yield c
        finally:
            euca.cli.load_config = original
            _active = None
            _urls.clear()
