"""A real euca running in-process on 127.0.0.1 (ports the OS picks, a given data dir), with the admin
account's credentials and a second account's, boto3 clients and a runner for the real `aws` CLI.

    server = start_euca(tmp_path / "data", roles="clc,walrus", overrides={"clc.poll_interval": 0.2})
    euca = next(server)
    try:
        euca.client("ec2").describe_instances()
    finally:
        server.close()

The server runs the supervisor in a background thread with its own trio.run; tests talk to it over HTTP
only, like any client.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner

from euca.cli import main
from euca.core.components import join_cloud
from euca.core.config import ROLE_NAMES, load_config
from euca.core.roles import RoleContext
from euca.core.supervisor import Supervisor, resolve_roles
from helpers import postgres
from helpers.aws_cli import run_aws


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

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            config=BotoConfig(
                signature_version=UNSIGNED, s3={"addressing_style": "path"}, retries={"max_attempts": 1}
            ),
        )

    def aws(
        self,
        *args: str,
        creds: Credentials | None = None,
        check: bool = True,
        input: bytes | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `aws` CLI against this server; returns the CompletedProcess (text output)."""
        creds = creds or self.admin
        return run_aws(
            self.url,
            self.region,
            creds.access_key,
            creds.secret_key,
            *args,
            config_file=self._cli_config,
            check=check,
            input=input,
            timeout=timeout,
        )


def start_euca(
    data_dir: Path, roles: str = "all", overrides: dict[str, Any] | None = None
) -> Iterator[EucaServer]:
    """Run euca in a background thread until the generator is closed."""
    settings: dict[str, Any] = {"data_dir": str(data_dir), "log_level": "WARNING"}
    for role in ROLE_NAMES:
        settings[f"{role}.listen.host"] = "127.0.0.1"
        settings[f"{role}.listen.port"] = 0
    settings.update(overrides or {})
    if "store.url" not in settings and (pg_url := postgres.store_url(data_dir)) is not None:
        settings["store.url"] = pg_url  # EUCA_TEST_STORE=postgresql: a database of its own
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
        except BaseException as e:  # surfaced to the caller below
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
        return Credentials(
            key.access_key_id, key.secret_key, key.principal.account_name, key.principal.canonical_id
        )

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


def admin_cli(euca: EucaServer, *args: str) -> str:
    """`euca admin ARGS` on this server's data dir, as an operator would run it; its output (it must succeed)."""
    result = CliRunner().invoke(main, ["--data-dir", str(euca.data_dir), "admin", *args])
    assert result.exit_code == 0, result.output
    return result.output


def join_sc_host(euca: EucaServer, zone: str, port: int, data_dir: Path) -> None:
    """`euca admin register-sc ZONE --host 127.0.0.1 --port PORT` as an operator would run it (its join token
    names this server's CLC), then `data_dir`, a fresh SC host, joins the cloud with that token."""
    clc_port = euca.url.rsplit(":", 1)[1]
    result = CliRunner().invoke(
        main,
        ["--data-dir", str(euca.data_dir), "--set", f"clc.listen.port={clc_port}", "admin", "register-sc"]
        + [zone, "--host", "127.0.0.1", "--port", str(port)],
    )
    assert result.exit_code == 0, result.output
    token = next(line.split("\t")[1] for line in result.output.splitlines() if line.startswith("JOINTOKEN\t"))
    join_cloud(load_config(None, {"data_dir": str(data_dir)}), token)


def start_hosts(
    tmp_path_factory: Any, name: str, roles: str, overrides: dict[str, Any], count: int = 2
) -> Iterator[list[EucaServer]]:
    """`count` servers as on hosts of their own (each its own data directory) with the same settings, e.g.
    one PostgreSQL store; stopped when the generator is closed."""
    servers = [
        start_euca(tmp_path_factory.mktemp(f"{name}{i}"), roles=roles, overrides=overrides)
        for i in range(count)
    ]
    try:
        yield [next(s) for s in servers]
    finally:
        for s in servers:
            s.close()
