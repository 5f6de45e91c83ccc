"""Shared fixtures: a real euca running in-process on 127.0.0.1 (port 0, a temporary data dir), with the
admin account's credentials and a second account's, boto3 clients and a runner for the real `aws` CLI.

    def test_something(euca, s3_client, aws_cli):
        s3_client.create_bucket(Bucket="b")
        aws_cli("s3", "ls", "s3://b")

The server runs the supervisor in a background thread with its own trio.run; tests talk to it over HTTP
only, like any client. It is started once per test session (fixtures `euca`) and is shared, so tests use
unique bucket names (`bucket_name` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from euca.core.config import ROLE_NAMES, load_config
from euca.core.roles import RoleContext
from euca.core.supervisor import Supervisor, resolve_roles


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    account: str
    canonical_id: str


@dataclass
class EucaServer:
    url: str
    data_dir: Path
    region: str
    admin: Credentials
    other: Credentials
    ctx: RoleContext
    _cli_config: Path = field(default=Path("/dev/null"))

    def client(self, service: str = "s3", creds: Credentials | None = None, **config: Any) -> Any:
        """A boto3 client for this server (path-style addressing for S3), as `creds` (admin by default)."""
        import boto3
        from botocore.config import Config as BotoConfig

        creds = creds or self.admin
        s3_cfg = {"addressing_style": config.pop("addressing_style", "path")}
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=creds.access_key,
            aws_secret_access_key=creds.secret_key,
            config=BotoConfig(s3=s3_cfg, retries={"max_attempts": 1, "mode": "standard"}, **config),
        )

    def anonymous_client(self, service: str = "s3") -> Any:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config as BotoConfig

        return boto3.client(service, endpoint_url=self.url, region_name=self.region,
                            config=BotoConfig(signature_version=UNSIGNED, s3={"addressing_style": "path"},
                                              retries={"max_attempts": 1}))

    def aws(self, *args: str, creds: Credentials | None = None, check: bool = True,
            input: bytes | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the real `aws` CLI against this server; returns the CompletedProcess (text output)."""
        creds = creds or self.admin
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=creds.access_key,
            AWS_SECRET_ACCESS_KEY=creds.secret_key,
            AWS_DEFAULT_REGION=self.region,
            AWS_CONFIG_FILE=str(self._cli_config),
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            AWS_EC2_METADATA_DISABLED="true",
        )
        cmd = [_aws_executable(), "--endpoint-url", self.url, *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, input=input, timeout=timeout)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                             proc.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({proc.returncode}):\n{result.stderr}\n{result.stdout}")
        return result


def _aws_executable() -> str:
    here = Path(sys.executable).parent / "aws"
    return str(here) if here.exists() else "aws"


def start_euca(data_dir: Path, roles: str = "all", overrides: dict[str, Any] | None = None) -> Iterator[EucaServer]:
    """Run euca in a background thread until the generator is closed. Used by the `euca` fixture."""
    settings: dict[str, Any] = {"data_dir": str(data_dir), "log_level": "WARNING"}
    for role in ROLE_NAMES:
        settings[f"{role}.listen.host"] = "127.0.0.1"
        settings[f"{role}.listen.port"] = 0
    settings.update(overrides or {})
    config = load_config(None, settings)
    run, _ = resolve_roles(roles)
    supervisor = Supervisor(config, run)
    ready = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        async def serve() -> None:
            box["token"] = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                box["ctx"] = await nursery.start(supervisor.run)
                ready.set()

        try:
            trio.run(serve)
        except BaseException as e:  # surfaced to the fixture below
            box["error"] = e
        finally:
            ready.set()

    thread = threading.Thread(target=main, name="euca-server", daemon=True)
    thread.start()
    ready.wait(120)
    if "error" in box or "ctx" not in box:
        raise RuntimeError(f"euca did not start: {box.get('error')!r}")
    ctx: RoleContext = box["ctx"]
    token = box["token"]
    url = next(iter(ctx.endpoints.values()))
    url = ctx.endpoints.get("walrus", url)

    def second_account() -> Credentials:
        name = "user" + uuid.uuid4().hex[:8]
        account = ctx.identity.create_account(name)
        key = ctx.identity.create_access_key(name)
        return Credentials(key.access_key_id, key.secret_key, name, account.canonical_id)

    def admin_creds() -> Credentials:
        _, key, _ = ctx.identity.ensure_admin()
        return Credentials(key.access_key_id, key.secret_key, key.principal.account_name, key.principal.canonical_id)

    # Identity administration is synchronous on the store's writer: run it on the server's thread.
    admin = trio.from_thread.run_sync(admin_creds, trio_token=token)
    other = trio.from_thread.run_sync(second_account, trio_token=token)
    cli_config = data_dir / "aws-cli-config"
    cli_config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    server = EucaServer(url, data_dir, config.region, admin, other, ctx, cli_config)
    try:
        yield server
    finally:
        try:
            trio.from_thread.run_sync(supervisor.stop, trio_token=token)
        except trio.RunFinishedError:
            pass
        thread.join(60)


@pytest.fixture(scope="session")
def euca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    """One euca (every built role) for the whole test session, on 127.0.0.1 with a port the OS picked."""
    yield from start_euca(tmp_path_factory.mktemp("euca-data"))


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
