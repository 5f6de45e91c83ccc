"""The one executable: `euca --role ROLES` runs roles; `euca admin ...` administers the cloud."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import trio

from euca import onebox
from euca.core.components import JoinError, MissingComponent, join_cloud, open_cloud_ca, parse_join_token
from euca.core.config import Config, ConfigError, load_config
from euca.core.credentials import write_user_credentials
from euca.core.euare_client import EuareClient, EuareError, Unreachable
from euca.core.euare_client import members as euare_members
from euca.core.euare_client import text as euare_text
from euca.core.identity import (
    ADMIN_ACCOUNT,
    ADMIN_USER,
    AccessKey,
    Identity,
    IdentityError,
    delete_account_tx,
)
from euca.core.logs import setup_logging
from euca.core.pki import CloudCA
from euca.core.store import Store, open_store
from euca.core.supervisor import RoleNotBuilt, Supervisor, resolve_roles, serve_until_signalled
from euca.images.bootimage import build_boot_image_command
from euca.images.cli import (
    bundle_image_command,
    install_image_command,
    register_command,
    unbundle_command,
    upload_bundle_command,
)


def _load(ctx: click.Context) -> Config:
    obj = ctx.obj
    overrides: dict[str, Any] = {}
    if obj["data_dir"]:
        overrides["data_dir"] = obj["data_dir"]
    if obj["host"]:
        for role in ("clc", "walrus", "sc", "cc", "nc"):
            overrides[f"{role}.listen.host"] = obj["host"]
    for item in obj["set"]:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key] = _coerce(value)
    try:
        return load_config(obj["config"], overrides)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


def _coerce(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--role", "roles", default=None, help="Roles to run: all, or a comma list of clc,walrus,sc,cc,nc."
)
@click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None, help="TOML configuration file."
)
@click.option("--data-dir", default=None, help="Where state, objects and credentials live.")
@click.option("--host", default=None, help="Listen address for every role (default 0.0.0.0).")
@click.option(
    "--set",
    "set_",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a configuration key, e.g. walrus.listen.port=9000.",
)
@click.option(
    "--join",
    "join_token",
    default=None,
    metavar="TOKEN",
    help="Join the cloud first with a token from `euca admin register-node`/`register-cluster` on the CLC host.",
)
@click.pass_context
def main(
    ctx: click.Context,
    roles: str | None,
    config: str | None,
    data_dir: str | None,
    host: str | None,
    set_: tuple[str, ...],
    join_token: str | None,
) -> None:
    """euca: a private cloud that speaks EC2 and S3."""
    ctx.obj = {"config": config, "data_dir": data_dir, "host": host, "set": set_}
    if ctx.invoked_subcommand is not None:
        return
    if roles is None:
        click.echo(ctx.get_help())
        return
    cfg = _load(ctx)
    setup_logging(cfg.log_level)
    try:
        run, skipped = resolve_roles(roles)
    except (ValueError, RoleNotBuilt) as e:
        raise click.ClickException(str(e)) from e
    log = logging.getLogger("euca")
    for name in skipped:
        log.warning("role %s is not built yet; not started", name)
    if not run:
        raise click.ClickException("no role to run")
    if join_token is not None:
        _join(cfg, join_token, run)
    try:
        trio.run(serve_until_signalled, Supervisor(cfg, run, start_hooks=onebox.start_hooks(run)))
    except (OSError, MissingComponent) as e:
        raise click.ClickException(f"cannot start: {e}") from e


def _join(cfg: Config, token_text: str, run: list[str]) -> None:
    """Fetch this host's component certificate (and the CA's, and an NC's node image key) with a token."""
    try:
        token = parse_join_token(token_text)
        if token.role not in run:
            raise JoinError(f"the token is for role {token.role}, which --role does not run")
        join_cloud(cfg, token_text)
    except JoinError as e:
        raise click.ClickException(f"cannot join: {e}") from e


@main.group()
def admin() -> None:
    """Accounts, users and access keys (run on the CLC host)."""


def _store(ctx: click.Context) -> tuple[Config, Store]:
    """The configuration and this host's store (its data directory made where missing)."""
    cfg = _load(ctx)
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    return cfg, open_store(cfg.store.url, cfg.data_path, cfg.store.synchronous)


def _identity(ctx: click.Context) -> tuple[Config, Identity]:
    cfg, store = _store(ctx)
    return cfg, Identity(store)


@contextmanager
def _as_failure(*refusals: type[Exception]) -> Iterator[None]:
    """A command's refusals (errors of these types) as its failure: their message, exit status 1."""
    try:
        yield
    except refusals as e:
        raise click.ClickException(str(e)) from e


# -- accounts: through the CLC's Euare API when the CLC runs (one door to accounts); directly in the store only
# when no CLC answers here (a cloud not started yet, or tests without a server) -----------------------------


def _euare(cfg: Config, identity: Identity) -> EuareClient | None:
    """A client of this cloud's Euare API as the cloud administrator, or None without an admin key."""
    try:
        found = identity.list_access_keys(ADMIN_ACCOUNT)
    except IdentityError:  # a cloud never started: no cloud administrator yet
        return None
    keys = [k for k in found if k.active and k.principal.user_name == ADMIN_USER]
    if not keys:
        return None
    return EuareClient(cfg.endpoint_url("clc"), keys[0].access_key_id, keys[0].secret_key, cfg.region)


def _through_euare(cfg: Config, identity: Identity, action: str, params: dict[str, str]) -> Any:
    """The Euare answer, or None when no CLC answers (the caller then acts on the store itself)."""
    client = _euare(cfg, identity)
    if client is None:
        return None
    try:
        return client.call(action, params)
    except Unreachable:
        return None
    except EuareError as e:
        if e.code in ("InvalidClientTokenId", "SignatureDoesNotMatch"):
            return None  # another cloud answers on this port (not the one of this data dir)
        raise click.ClickException(f"{e.code}: {e.message}") from e


@admin.command("create-account")
@click.argument("name")
@click.pass_context
def create_account(ctx: click.Context, name: str) -> None:
    """Create an account (with its admin user and one access key)."""
    cfg, identity = _identity(ctx)
    answer = _through_euare(cfg, identity, "CreateAccount", {"AccountName": name})
    with _as_failure(IdentityError):
        if answer is None:
            identity.create_account(name)
            key = identity.create_access_key(name, ADMIN_USER)
        else:
            created = _through_euare(
                cfg, identity, "CreateAccessKey", {"UserName": ADMIN_USER, "DelegateAccount": name}
            )
            key_id = euare_text(created, "AccessKey/AccessKeyId")
            key = next(k for k in identity.list_access_keys(name) if k.access_key_id == key_id)
        account = next(a for a in identity.list_accounts() if a.name == name)
    directory = _write_user_credentials(cfg, identity, key)
    click.echo(f"ACCOUNT\t{account.name}\t{account.account_id}")
    click.echo(f"ACCESSKEY\t{key.access_key_id}\t{key.secret_key}")
    click.echo(f"CREDENTIALS\t{directory}")


@admin.command("list-accounts")
@click.pass_context
def list_accounts(ctx: click.Context) -> None:
    cfg, identity = _identity(ctx)
    answer = _through_euare(cfg, identity, "ListAccounts", {})
    listed = (
        [euare_text(m, "AccountName") for m in euare_members(answer, "Accounts")]
        if answer is not None
        else [a.name for a in identity.list_accounts()]
    )
    known = {a.name: a for a in identity.list_accounts()}
    for name in listed:
        a = known[name]
        click.echo(f"ACCOUNT\t{a.name}\t{a.account_id}\t{a.canonical_id}")


@admin.command("delete-account")
@click.argument("name")
@click.option(
    "--recursive",
    is_flag=True,
    help="Also delete its users, groups, roles, policies, key pairs, security groups and elastic IPs.",
)
@click.pass_context
def delete_account(ctx: click.Context, name: str, recursive: bool) -> None:
    """Delete an account (through the CLC's API: refused while it has instances, volumes, snapshots, images
    or buckets; with no CLC answering, its identity only)."""
    cfg, identity = _identity(ctx)
    params = {"AccountName": name, **({"Recursive": "true"} if recursive else {})}
    if _through_euare(cfg, identity, "DeleteAccount", params) is None:
        try:
            identity.change_sync(lambda tx: delete_account_tx(tx, name, recursive))
        except (LookupError, PermissionError, IdentityError) as e:
            raise click.ClickException(f"cannot delete account {name}: {e or 'no such account'}") from e
    click.echo(f"ACCOUNT\t{name}\tdeleted")


@admin.command("create-user")
@click.option("--account", required=True)
@click.argument("name")
@click.pass_context
def create_user(ctx: click.Context, account: str, name: str) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        identity.create_user(account, name)
    click.echo(f"USER\t{account}\t{name}")


@admin.command("list-users")
@click.option("--account", required=True)
@click.pass_context
def list_users(ctx: click.Context, account: str) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        for name in identity.list_users(account):
            click.echo(f"USER\t{account}\t{name}")


@admin.command("create-access-key")
@click.option("--account", required=True)
@click.option("--user", default=ADMIN_USER, show_default=True)
@click.option("--write-credentials/--no-write-credentials", default=True, show_default=True)
@click.pass_context
def create_access_key(ctx: click.Context, account: str, user: str, write_credentials: bool) -> None:
    cfg, identity = _identity(ctx)
    with _as_failure(IdentityError):
        key = identity.create_access_key(account, user)
    click.echo(f"ACCESSKEY\t{key.access_key_id}\t{key.secret_key}")
    if write_credentials:
        click.echo(f"CREDENTIALS\t{_write_user_credentials(cfg, identity, key)}")


@admin.command("list-access-keys")
@click.option("--account", default=None)
@click.pass_context
def list_access_keys(ctx: click.Context, account: str | None) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        keys = identity.list_access_keys(account)
    for k in keys:
        status = "Active" if k.active else "Inactive"
        click.echo(
            f"ACCESSKEY\t{k.principal.account_name}\t{k.principal.user_name}\t{k.access_key_id}\t{status}"
        )


@admin.command("disable-access-key")
@click.argument("access_key_id")
@click.pass_context
def disable_access_key(ctx: click.Context, access_key_id: str) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        identity.set_access_key_active(access_key_id, False)
    click.echo(f"ACCESSKEY\t{access_key_id}\tInactive")


@admin.command("enable-access-key")
@click.argument("access_key_id")
@click.pass_context
def enable_access_key(ctx: click.Context, access_key_id: str) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        identity.set_access_key_active(access_key_id, True)
    click.echo(f"ACCESSKEY\t{access_key_id}\tActive")


@admin.command("delete-access-key")
@click.argument("access_key_id")
@click.pass_context
def delete_access_key(ctx: click.Context, access_key_id: str) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        identity.delete_access_key(access_key_id)
    click.echo(f"ACCESSKEY\t{access_key_id}\tDeleted")


@admin.command("write-credentials")
@click.argument("account")
@click.argument("user", default=ADMIN_USER)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write (default <data-dir>/credentials/ACCOUNT/USER).",
)
@click.pass_context
def write_credentials_command(ctx: click.Context, account: str, user: str, directory: str | None) -> None:
    """Write a user's credentials directory: eucarc, AWS files, cert.pem/pk.pem, cloud-cert.pem.

    Uses the user's newest active access key (creating one if there is none); the certificate already in the
    directory is kept while it is registered, otherwise a new one is issued by the cloud CA and registered."""
    cfg, identity = _identity(ctx)
    with _as_failure(IdentityError):
        keys = [k for k in identity.list_access_keys(account) if k.active and k.principal.user_name == user]
        key = keys[-1] if keys else identity.create_access_key(account, user)
        written = _write_user_credentials(cfg, identity, key, Path(directory) if directory else None)
    if not keys:
        click.echo(f"ACCESSKEY\t{key.access_key_id}\t{key.secret_key}")
    click.echo(f"CREDENTIALS\t{written}")


@admin.command("list-certificates")
@click.option("--account", default=None)
@click.option("--user", default=None)
@click.pass_context
def list_certificates(ctx: click.Context, account: str | None, user: str | None) -> None:
    """Users' signing certificates (bundle manifests are verified against the active ones)."""
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        certs = identity.list_certificates(account, user if account else None)
    names = {a.account_id: a.name for a in identity.list_accounts()}
    for c in certs:
        status = "Active" if c.active else "Inactive"
        click.echo(
            f"CERTIFICATE\t{names.get(c.account_id, c.account_id)}\t{c.user_name}\t{c.certificate_id}\t"
            f"{status}\t{c.fingerprint}"
        )


@admin.command("disable-certificate")
@click.argument("certificate_id")
@click.pass_context
def disable_certificate(ctx: click.Context, certificate_id: str) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        identity.set_certificate_active(certificate_id, False)
    click.echo(f"CERTIFICATE\t{certificate_id}\tInactive")


@admin.command("enable-certificate")
@click.argument("certificate_id")
@click.pass_context
def enable_certificate(ctx: click.Context, certificate_id: str) -> None:
    _, identity = _identity(ctx)
    with _as_failure(IdentityError):
        identity.set_certificate_active(certificate_id, True)
    click.echo(f"CERTIFICATE\t{certificate_id}\tActive")


# -- topology and instance types (the CLC's store; a running CLC picks changes up at its next poll) ---------


def _clc_store(ctx: click.Context) -> tuple[Config, Store]:
    from euca.roles.clc.schema import migrate

    cfg, store = _store(ctx)
    migrate(store)
    return cfg, store


def _ago(then: float | None, now: float) -> str:
    return "never" if then is None else f"{max(0.0, now - then):.0f}s ago"


def _print_join_token(
    cfg: Config, store: Store, role: str, name: str, host: str, cluster: str | None = None
) -> None:
    """A one-time token for a component on another host (`euca --role ROLE --join TOKEN` there). A node's
    token names its cluster: the certificate it joins with says so, and its NC answers only that CC."""
    try:
        from euca.roles.clc.join import make_join_token
    except ImportError:  # joining arrives with the transport work
        return
    ca = _cloud_ca(cfg)
    token = make_join_token(
        store, ca, role, name, clc_url=cfg.endpoint_url("clc"), hosts=[host], cluster=cluster
    )
    click.echo(f"JOINTOKEN\t{token}")


@admin.command("register-cluster")
@click.argument("name")
@click.option("--host", required=True, help="Where the cluster's CC answers.")
@click.option("--port", default=8774, show_default=True, type=int)
@click.option("--zone", default=None, help="The availability zone it serves (default: NAME).")
@click.option(
    "--subnet",
    default=None,
    help="Its instances' private subnet, e.g. 10.77.0.0/24 (default: the CC's cc.subnet). Clusters may share one.",
)
@click.option(
    "--join-token/--no-join-token", default=True, show_default=True, help="Print a join token for the CC."
)
@click.pass_context
def register_cluster(
    ctx: click.Context,
    name: str,
    host: str,
    port: int,
    zone: str | None,
    subnet: str | None,
    join_token: bool,
) -> None:
    """Register a cluster (one availability zone, one CC)."""
    from euca.roles.clc.topology import records as topology

    cfg, store = _clc_store(ctx)
    with _as_failure(topology.TopologyError):
        url = topology.service_url(host, port)
        cluster = store.write_sync(lambda tx: topology.register_cluster(tx, name, url, zone, subnet=subnet))
    click.echo(f"CLUSTER\t{cluster.name}\t{cluster.zone}\t{cluster.url}")
    if cluster.subnet:
        click.echo(f"SUBNET\t{cluster.name}\t{cluster.subnet}")
    _reissue_here(ctx, "cc", cluster.name)
    if join_token:
        _print_join_token(cfg, store, "cc", cluster.name, host)


@admin.command("modify-cluster")
@click.argument("name")
@click.option("--subnet", required=True, help="Its instances' private subnet; 'default': the CC's cc.subnet.")
@click.pass_context
def modify_cluster(ctx: click.Context, name: str, subnet: str) -> None:
    """Change a cluster's private subnet (refused while it runs instances; its CC moves at the next poll)."""
    from euca.roles.clc import admin
    from euca.roles.clc.topology.records import TopologyError

    _, store = _clc_store(ctx)
    wanted = None if subnet == "default" else subnet
    with _as_failure(TopologyError):
        cluster = store.write_sync(lambda tx: admin.set_cluster_subnet(tx, name, wanted))
    click.echo(f"SUBNET\t{cluster.name}\t{cluster.subnet or 'default'}")


@admin.command("describe-clusters")
@click.pass_context
def describe_clusters(ctx: click.Context) -> None:
    """Each cluster: its zone, its CC, its private subnet ('default': the CC's cc.subnet), its state."""
    from euca.roles.clc.topology import records as topology

    _, store = _clc_store(ctx)
    for c in store.read_sync(topology.list_clusters):
        click.echo(f"CLUSTER\t{c.name}\t{c.zone}\t{c.url}\t{c.subnet or 'default'}\t{c.state}")


def _reissue_here(ctx: click.Context, role: str, name: str, cluster: str | None = None) -> None:
    """A component of this host registered again after its deregistration: a new certificate (issue 13)."""
    from euca.core.components import reissue_revoked_here

    if reissue_revoked_here(_load(ctx), role, name, cluster=cluster):
        click.echo(f"REISSUED\t{role}\t{name}")


def _revoke_certificates(
    ctx: click.Context, role: str, name: str | None = None, *, cluster: str | None = None
) -> None:
    """A deregistered component's certificates go on the cloud CA's revocation list (issue 13)."""
    from euca.core.components import revoke_component

    serials = revoke_component(_load(ctx), role, name, cluster=cluster)
    if serials:
        click.echo(f"REVOKED\t{role}\t{name or cluster}\t{','.join(format(s, 'x') for s in serials)}")


@admin.command("deregister-cluster")
@click.argument("name")
@click.pass_context
def deregister_cluster(ctx: click.Context, name: str) -> None:
    """Remove a cluster and its nodes (refused while it runs instances)."""
    from euca.roles.clc import admin
    from euca.roles.clc.join import revoke_cluster_join_tokens
    from euca.roles.clc.topology.records import TopologyError

    _, store = _clc_store(ctx)
    with _as_failure(TopologyError):
        cluster = store.write_sync(lambda tx: admin.deregister_cluster(tx, name))
    revoke_cluster_join_tokens(store, cluster.name)  # unused tokens must not join a cluster that is gone
    _revoke_certificates(ctx, "cc", cluster.name)
    _revoke_certificates(ctx, "sc", cluster.name)
    _revoke_certificates(ctx, "nc", cluster=cluster.name)
    click.echo(f"CLUSTER\t{cluster.name}\t{cluster.zone}\tDeregistered")


@admin.command("register-node")
@click.option("--cluster", "cluster_name", required=True)
@click.option("--host", required=True, help="Where the node's NC answers.")
@click.option("--port", default=8775, show_default=True, type=int)
@click.option("--name", default=None, help="The node's name (default: the host; the NC's nc.name).")
@click.option(
    "--join-token/--no-join-token", default=True, show_default=True, help="Print a join token for the NC."
)
@click.pass_context
def register_node(
    ctx: click.Context, cluster_name: str, host: str, port: int, name: str | None, join_token: bool
) -> None:
    """Register a node of a cluster; its NC joins with the printed token (`euca --role nc --join TOKEN`)."""
    from euca.roles.clc.topology import records as topology

    cfg, store = _clc_store(ctx)
    node_name = name or host
    with _as_failure(topology.TopologyError):
        url = topology.service_url(host, port)
        node = store.write_sync(lambda tx: topology.register_node(tx, node_name, cluster_name, url))
    click.echo(f"NODE\t{node.name}\t{node.cluster}\t{node.url}")
    _reissue_here(ctx, "nc", node.name, node.cluster)
    if join_token:
        _print_join_token(cfg, store, "nc", node.name, host, cluster=node.cluster)


@admin.command("deregister-node")
@click.argument("name")
@click.pass_context
def deregister_node(ctx: click.Context, name: str) -> None:
    from euca.roles.clc.join import revoke_join_tokens
    from euca.roles.clc.topology import records as topology

    _, store = _clc_store(ctx)
    with _as_failure(topology.TopologyError):
        node = store.write_sync(lambda tx: topology.deregister_node(tx, name))
    revoke_join_tokens(store, "nc", node.name)  # an unused token would join it to its old cluster
    _revoke_certificates(ctx, "nc", node.name)
    click.echo(f"NODE\t{node.name}\t{node.cluster}\tDeregistered")


@admin.command("register-sc")
@click.argument("cluster")
@click.option("--host", required=True, help="Where the cluster's SC answers.")
@click.option("--port", default=8776, show_default=True, type=int)
@click.option(
    "--join-token/--no-join-token", default=True, show_default=True, help="Print a join token for the SC."
)
@click.pass_context
def register_sc(ctx: click.Context, cluster: str, host: str, port: int, join_token: bool) -> None:
    """Register the storage controller of a cluster (one per cluster: its zone's volumes). Its SC joins
    with the printed token (`euca --role sc --join TOKEN`); a one-box registers its own SC at start."""
    from euca.roles.clc.topology import records as topology

    cfg, store = _clc_store(ctx)
    with _as_failure(topology.TopologyError):
        url = topology.service_url(host, port)
        sc = store.write_sync(lambda tx: topology.register_storage(tx, cluster, url))
    click.echo(f"STORAGE\t{sc.cluster}\t{sc.url}")
    _reissue_here(ctx, "sc", sc.cluster)
    if join_token:
        _print_join_token(cfg, store, "sc", sc.cluster, host)


@admin.command("deregister-sc")
@click.argument("cluster")
@click.pass_context
def deregister_sc(ctx: click.Context, cluster: str) -> None:
    """Forget a cluster's storage controller (its zone then refuses CreateVolume)."""
    from euca.roles.clc.join import revoke_join_tokens
    from euca.roles.clc.topology import records as topology

    _, store = _clc_store(ctx)
    with _as_failure(topology.TopologyError):
        sc = store.write_sync(lambda tx: topology.deregister_storage(tx, cluster))
    revoke_join_tokens(store, "sc", sc.cluster)
    _revoke_certificates(ctx, "sc", sc.cluster)
    click.echo(f"STORAGE\t{sc.cluster}\tDeregistered")


@admin.command("describe-services")
@click.pass_context
def describe_services(ctx: click.Context) -> None:
    """Each registered CC, SC and NC: where it answers and its state at the CLC's last poll."""
    import time

    from euca.roles.clc.topology import records as topology

    _, store = _clc_store(ctx)
    clusters, nodes, storage = store.read_sync(
        lambda tx: (topology.list_clusters(tx), topology.list_nodes(tx), topology.list_storage(tx))
    )
    scs = {sc.cluster: sc for sc in storage}
    now = time.time()
    for c in clusters:
        reason = f"\t{c.reason}" if c.reason and c.state != "up" else ""
        click.echo(
            f"SERVICE\tcluster\t{c.name}\t{c.zone}\t{c.url}\t{c.state}\t{_ago(c.last_seen, now)}{reason}"
        )
        sc = scs.get(c.name)
        if sc is not None:
            why = f"\t{sc.reason}" if sc.reason and sc.state != "up" else ""
            space = f"\t{sc.backend} {sc.allocated_gb}/{sc.capacity_gb} GiB" if sc.state == "up" else ""
            click.echo(
                f"SERVICE\tstorage\t{c.name}\t{c.zone}\t{sc.url}\t{sc.state}\t{_ago(sc.last_seen, now)}"
                f"{space}{why}"
            )
        reported = {n.node: n for n in c.nodes}
        for n in nodes:
            if n.cluster != c.name:
                continue
            res = reported.get(n.name)
            state = res.state if res is not None and c.state == "up" else "unknown"
            why = f"\t{res.reason}" if res is not None and res.reason and state != "up" else ""
            click.echo(f"SERVICE\tnode\t{n.name}\t{c.name}\t{n.url}\t{state}\t{_ago(c.last_seen, now)}{why}")


@admin.command("describe-nodes")
@click.pass_context
def describe_nodes(ctx: click.Context) -> None:
    """Nodes as their CC reported them at the last poll: state, cores/memory/disk free/max, instances."""
    from euca.roles.clc.instances import records as instance_records
    from euca.roles.clc.topology import records as topology

    _, store = _clc_store(ctx)

    def read(tx: Any) -> tuple[list[topology.Cluster], list[topology.Node], dict[str, list[str]]]:
        return topology.list_clusters(tx), topology.list_nodes(tx), instance_records.running_by_node(tx)

    clusters, nodes, running = store.read_sync(read)
    by_cluster = {c.name: c for c in clusters}
    for n in nodes:
        c = by_cluster[n.cluster]
        res = next((r for r in c.nodes if r.node == n.name), None)
        if res is None:
            click.echo(f"NODE\t{n.name}\t{n.cluster}\tunknown\tnot reported yet")
            continue
        click.echo(
            f"NODE\t{n.name}\t{n.cluster}\t{res.state}\tcores {res.cores_free}/{res.cores_max}\t"
            f"memory {res.memory_mb_free}/{res.memory_mb_max} MiB\tdisk {res.disk_gb_free}/{res.disk_gb_max} GiB\t"
            f"{res.hypervisor or '-'}\tinstances {','.join(running.get(n.name, [])) or '-'}"
        )


@admin.command("describe-instance-types")
@click.pass_context
def describe_instance_types(ctx: click.Context) -> None:
    """The instance types: cores, memory (MiB), disk (GiB)."""
    from euca.roles.clc.instance_types import records as instance_types

    _, store = _clc_store(ctx)
    for t in store.read_sync(instance_types.load_instance_types):
        click.echo(f"TYPE\t{t.name}\t{t.cpu}\t{t.memory_mib}\t{t.disk_gib}")


@admin.command("modify-instance-type")
@click.argument("name")
@click.option("--cpu", type=int, default=None, help="Cores.")
@click.option("--memory", type=int, default=None, help="Memory in MiB.")
@click.option("--disk", type=int, default=None, help="Disk in GiB.")
@click.pass_context
def modify_instance_type(
    ctx: click.Context, name: str, cpu: int | None, memory: int | None, disk: int | None
) -> None:
    """Change an instance type (new instances get the new size; running ones keep theirs)."""
    from euca.roles.clc.instance_types import records as instance_types

    if cpu is None and memory is None and disk is None:
        raise click.UsageError("give at least one of --cpu, --memory, --disk")
    _, store = _clc_store(ctx)
    with _as_failure(instance_types.InstanceTypeError):
        t = store.write_sync(
            lambda tx: instance_types.modify_instance_type(
                tx, name, cpu=cpu, memory_mib=memory, disk_gib=disk
            )
        )
    click.echo(f"TYPE\t{t.name}\t{t.cpu}\t{t.memory_mib}\t{t.disk_gib}")


# -- the public address pool (elastic IPs and instances' public addresses) ----------------------------------


@admin.command("add-public-addresses")
@click.argument("ranges", nargs=-1, required=True)
@click.pass_context
def add_public_addresses(ctx: click.Context, ranges: tuple[str, ...]) -> None:
    """Add addresses to the public pool: a.b.c.d, a.b.c.d-a.b.c.e (inclusive) or a CIDR (its hosts)."""
    from euca.roles.clc.addresses import records as addresses

    try:
        wanted = addresses.parse_ranges(ranges)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    _, store = _clc_store(ctx)
    added = store.write_sync(lambda tx: addresses.add_to_pool(tx, wanted))
    click.echo(f"added {len(added)} address(es); {len(wanted) - len(added)} already in the pool")


@admin.command("remove-public-addresses")
@click.argument("ranges", nargs=-1, required=True)
@click.pass_context
def remove_public_addresses(ctx: click.Context, ranges: tuple[str, ...]) -> None:
    """Take free addresses out of the public pool (refused while one is allocated or assigned)."""
    from euca.roles.clc.addresses import records as addresses

    try:
        wanted = addresses.parse_ranges(ranges)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    _, store = _clc_store(ctx)
    with _as_failure(ValueError):
        removed = store.write_sync(lambda tx: addresses.remove_from_pool(tx, wanted))
    click.echo(f"removed {len(removed)} address(es)")


@admin.command("describe-public-addresses")
@click.pass_context
def describe_public_addresses(ctx: click.Context) -> None:
    """Every address of the public pool: free, an account's elastic IP, or assigned to an instance."""
    from euca.roles.clc.addresses import records as addresses

    _, store = _clc_store(ctx)
    for a in store.read_sync(addresses.load_pool):
        if a.account_id is None:
            click.echo(f"ADDRESS\t{a.public_ip}\tfree")
        elif a.auto:
            click.echo(f"ADDRESS\t{a.public_ip}\tassigned\t{a.account_id}\t{a.instance_id}")
        else:
            click.echo(
                f"ADDRESS\t{a.public_ip}\tallocated\t{a.account_id}\t{a.allocation_id}\t{a.instance_id or '-'}"
            )


# -- usage reports (Eucalyptus's eureport-generate-report; the same over the API: /services/Reporting) ------


def _report_options(f: Any) -> Any:
    """The options `euca admin report` and `euca report` share (eureport-generate-report's)."""
    options = [
        click.option(
            "--type",
            "kind",
            type=click.Choice(["instance", "volume", "snapshot", "elastic-ip", "s3", "capacity"]),
            default="instance",
            show_default=True,
        ),
        click.option(
            "--start", help="ISO 8601 date/time (UTC) or Unix seconds; default: a week before --end."
        ),
        click.option("--end", help="ISO 8601 date/time (UTC) or Unix seconds; default: now."),
        click.option(
            "--time-unit",
            type=click.Choice(["seconds", "minutes", "hours", "days"]),
            default="hours",
            show_default=True,
        ),
        click.option(
            "--size-unit",
            type=click.Choice(["B", "KB", "MB", "GB"], case_sensitive=False),
            default="GB",
            show_default=True,
        ),
        click.option(
            "--format", "fmt", type=click.Choice(["csv", "json", "html"]), default="csv", show_default=True
        ),
        click.option(
            "--account", help="One account's usage (name or id); default: every account you may see."
        ),
        click.option(
            "--output", "-o", type=click.Path(dir_okay=False), help="Write the report here (default: stdout)."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _emit_report(kind: str, text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text)
        click.echo(f"REPORT\t{kind}\t{output}")
    else:
        click.echo(text, nl=False)


@admin.command("report")
@_report_options
@click.pass_context
def report(
    ctx: click.Context,
    kind: str,
    start: str | None,
    end: str | None,
    time_unit: str,
    size_unit: str,
    fmt: str,
    account: str | None,
    output: str | None,
) -> None:
    """Usage of instances, volumes, snapshots, elastic IPs, S3, or the cloud's capacity, over a time range,
    grouped zone -> account -> user, as CSV, JSON or an HTML page with charts (every account's: run on the
    CLC host; `euca report` asks a CLC over the API with your keys)."""
    import time

    from euca.roles.clc import reporting
    from euca.roles.clc.usage.report import ReportError

    _, store = _clc_store(ctx)
    identity = Identity(store)
    with _as_failure(ReportError):
        end_at = reporting.parse_time(end) if end else time.time()
        start_at = reporting.parse_time(start) if start else end_at - reporting.DEFAULT_SPAN
        account_id = None
        if account:
            found = [a for a in identity.list_accounts() if account in (a.account_id, a.name)]
            if not found:
                raise click.ClickException(f"no such account: {account}")
            account_id = found[0].account_id
        req = reporting.ReportRequest(kind, start_at, end_at, time_unit, size_unit, fmt, account_id)
        text = reporting.generate(store, identity, req)
    _emit_report(kind, text, output)


@main.command("report")
@_report_options
@click.option("-U", "--url", envvar="EC2_URL", default=None, help="The cloud's EC2 URL [EC2_URL].")
@click.option(
    "-I",
    "--access-key-id",
    envvar=["AWS_ACCESS_KEY_ID", "EC2_ACCESS_KEY"],
    default=None,
    help="[AWS_ACCESS_KEY_ID]",
)
@click.option(
    "-S",
    "--secret-key",
    envvar=["AWS_SECRET_ACCESS_KEY", "EC2_SECRET_KEY"],
    default=None,
    help="[AWS_SECRET_ACCESS_KEY]",
)
@click.option("--region", envvar="AWS_DEFAULT_REGION", default="eucalyptus", show_default=True)
def report_client(
    kind: str,
    start: str | None,
    end: str | None,
    time_unit: str,
    size_unit: str,
    fmt: str,
    account: str | None,
    output: str | None,
    url: str | None,
    access_key_id: str | None,
    secret_key: str | None,
    region: str,
) -> None:
    """A usage report from the cloud's Reporting API, signed with your keys (a sourced eucarc): the cloud
    admin sees every account, an account's admin its own."""
    import time
    from urllib.parse import quote, urlencode

    import httpx

    from euca.protocol.sigv4 import SigningKey, sign_request

    if not url or not access_key_id or not secret_key:
        raise click.ClickException("no endpoint or credentials: source your eucarc or pass --url, -I and -S")
    params = {"Action": "GenerateReport", "Type": kind, "TimeUnit": time_unit, "SizeUnit": size_unit}
    params |= {"Format": fmt, **({"StartDate": start} if start else {}), **({"EndDate": end} if end else {})}
    if account:
        params["Account"] = account
    base = url.split("/services/", 1)[0].rstrip("/")
    target = f"{base}/services/Reporting?{urlencode(params, quote_via=quote)}"
    headers = sign_request(
        "GET", target, SigningKey(access_key_id, secret_key, region, "ec2"), now=time.time()
    )
    try:
        answer = httpx.get(target, headers=headers, timeout=300)
    except httpx.HTTPError as e:
        raise click.ClickException(f"cannot reach {base}: {e}") from e
    if answer.status_code != 200:
        text = answer.text
        code = (
            text.split("<Code>", 1)[-1].split("</Code>", 1)[0]
            if "<Code>" in text
            else str(answer.status_code)
        )
        message = (
            text.split("<Message>", 1)[-1].split("</Message>", 1)[0] if "<Message>" in text else text[:200]
        )
        raise click.ClickException(f"{code}: {message}")
    _emit_report(kind, answer.text, output)


def _write_user_credentials(
    cfg: Config, identity: Identity, key: AccessKey, directory: Path | None = None
) -> str:
    return str(write_user_credentials(cfg, identity, _cloud_ca(cfg), key, directory))


def _cloud_ca(cfg: Config) -> CloudCA:
    """The cloud CA, for commands that issue certificates. Made on first use on a fresh host; refused on a
    host that joined a cloud (only the CLC host holds the CA key, and a second CA there would split it)."""
    ca = open_cloud_ca(cfg)
    if not ca.has_key:
        raise click.ClickException(
            "this host joined a cloud and has no CA key: run this command on the CLC host"
        )
    return ca


main.add_command(bundle_image_command)
main.add_command(unbundle_command)
main.add_command(build_boot_image_command)
main.add_command(upload_bundle_command)
main.add_command(register_command)
main.add_command(install_image_command)


if __name__ == "__main__":
    main()
