"""Typed configuration: one TOML file (optional), overridden by command-line flags.

Every key is declared here with its default, so `euca --role all` runs with no file at all.
A bad key or value is refused at start with the offending key named (msgspec reports `$.walrus.port`).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

ROLE_NAMES = ("clc", "walrus", "sc", "cc", "nc")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class Listen(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    port: int = 8773

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range 0..65535")


class HttpLimits(msgspec.Struct, forbid_unknown_fields=True):
    max_header_bytes: int = 64 * 1024
    # Seconds a new connection has to send its whole first request head (from the connection's start),
    # and any later request head (from its first byte): a head trickled byte by byte is cut at this bound.
    header_timeout: float = 30.0
    # Seconds a keep-alive connection may wait, silent, for its next request.
    idle_timeout: float = 75.0
    # Seconds a request body may stall, or one send to the client may take.
    io_timeout: float = 120.0
    # A request body must average at least this many bytes per second (0: no minimum) once its first
    # `body_grace` seconds are spent: every byte received buys 1/body_min_rate s more, up to io_timeout
    # ahead. An upload at any usual speed never comes near it; one byte every few seconds is cut.
    body_min_rate: int = 1024
    body_grace: float = 30.0
    # The same both ways: a response must be taken by the client at an average of send_min_rate bytes per
    # second (0: no minimum) once its first body_grace seconds of waiting are spent, so a client that
    # stops reading a GET does not hold its connection (and the files it reads) for ever.
    send_min_rate: int = 1024
    # Connections one listener keeps open for clients outside internal_networks, and for any one such
    # client address; more are answered 503 and closed at once. A listener that requires client
    # certificates (the cluster listeners) has its own budget; internal_networks (this host's own callers)
    # are never refused. Public listeners together also keep within half the open-file limit (raised to
    # its hard limit at start), so files, the store and the other listeners always have descriptors.
    max_connections: int = 4096
    max_connections_per_client: int = 256
    internal_networks: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # On SIGTERM/SIGINT requests in flight get this long to finish.
    shutdown_grace: float = 30.0

    def __post_init__(self) -> None:
        for name in ("header_timeout", "idle_timeout", "io_timeout", "body_grace"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0")
        for name in ("max_header_bytes", "max_connections", "max_connections_per_client"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.body_min_rate < 0 or self.send_min_rate < 0:
            raise ValueError("body_min_rate and send_min_rate must not be negative")
        for network in self.internal_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as e:
                raise ValueError(f"internal_networks: {e}") from e


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    # "sqlite:PATH" (relative paths are under data_dir), or "postgresql://USER@HOST/DB" (any libpq URI: a
    # database several CLC and walrus processes may share; see ARCHITECTURE.md, "The store on PostgreSQL").
    url: str = "sqlite:state.db"
    # NORMAL survives a process crash (kill -9) in WAL mode; FULL also survives power loss.
    synchronous: str = "NORMAL"

    def __post_init__(self) -> None:
        if not self.url.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError(f"unsupported store url {self.url!r}: sqlite:PATH or postgresql://... are built")
        if self.synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {self.synchronous!r}")


class ClcConfig(msgspec.Struct, forbid_unknown_fields=True):
    listen: Listen = msgspec.field(default_factory=lambda: Listen(port=8773))
    # Seconds between the CLC's polls of each cluster (resources and instances).
    poll_interval: float = 5.0
    # A terminated instance stays visible in DescribeInstances this long (Eucalyptus: about an hour).
    terminated_ttl: float = 3600.0
    # An instance no cluster reports for this long is marked terminated (its node vanished).
    node_lost_timeout: float = 600.0
    # Where the CLC reaches Walrus (to read manifests, presign image parts); empty: this host's walrus port.
    walrus_url: str = ""
    # The public address pool starts as these when it is empty (then `euca admin add-public-addresses` /
    # `remove-public-addresses` change it): addresses, ranges a.b.c.d-a.b.c.e, or CIDRs, separated by commas.
    public_addresses: str = "10.99.0.10-10.99.0.40"
    # Every instance gets a public address from the pool at launch (as Eucalyptus did); false: only elastic IPs.
    auto_public_address: bool = True


class WalrusConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Same port as the EC2 API by default, as Eucalyptus; requests are told apart by path and signature.
    listen: Listen = msgspec.field(default_factory=lambda: Listen(port=8773))
    # Virtual-host-style addressing: "<bucket>.<domain>". Path style always works.
    domains: list[str] = msgspec.field(default_factory=lambda: ["s3.localhost", "walrus.localhost"])
    # Where object bytes live; relative to data_dir.
    objects_dir: str = "objects"
    # Processes serving S3 on walrus.listen (one Python process uses one core): this one plus workers-1 more
    # on the same port (SO_REUSEPORT), sharing the store and the objects directory. Needs a port of walrus's
    # own (not shared with the EC2 API); otherwise walrus runs in this process alone.
    workers: int = 1
    # Lifecycle: how often the rules are applied (seconds), and how long a lifecycle "day" is (86400; a
    # shorter day makes a test's rules expire in seconds, as RGW's rgw_lc_debug_interval does).
    lifecycle_interval: float = 3600.0
    lifecycle_day_seconds: float = 86400.0
    # Server access logs (PutBucketLogging) are delivered to their target buckets this often (seconds).
    log_delivery_interval: float = 300.0
    # S3 usage (walrus/usage.py): each process writes its request counts this often (seconds), and the role's
    # process samples what every bucket holds this often (a row only for a bucket that changed).
    usage_flush_interval: float = 10.0
    usage_sample_interval: float = 300.0
    # Object storage backend (issue 14): "disk" keeps object bytes under objects_dir; "s3" keeps them in an
    # external S3-compatible cluster (Ceph RGW, SeaweedFS, MinIO...) at backend_endpoint, in backend_bucket,
    # signed with backend_access_key/backend_secret_key (walrus/backend.py). Metadata stays in the store.
    backend: str = "disk"
    backend_endpoint: str = ""
    backend_access_key: str = ""
    backend_secret_key: str = ""
    backend_bucket: str = "walrus-objects"
    backend_region: str = "us-east-1"

    def __post_init__(self) -> None:
        if self.backend not in ("disk", "s3"):
            raise ValueError(f'walrus.backend must be "disk" or "s3", not {self.backend!r}')
        if self.backend == "s3" and not (self.backend_endpoint and self.backend_access_key):
            raise ValueError('walrus.backend = "s3" needs walrus.backend_endpoint and backend_access_key')
        if self.lifecycle_interval <= 0 or self.lifecycle_day_seconds <= 0 or self.log_delivery_interval <= 0:
            raise ValueError(
                "walrus.lifecycle_interval, lifecycle_day_seconds, log_delivery_interval must be positive"
            )
        if not 1 <= self.workers <= 64:
            raise ValueError(f"walrus.workers must be 1..64, not {self.workers}")


class ScConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Eucalyptus ran the SC on the CLC's 8773; here the SC answers cluster messages over mutual TLS, which
    # needs a listener of its own (a plain and a TLS role cannot share one), so the port after the NC's.
    listen: Listen = msgspec.field(default_factory=lambda: Listen(port=8776))
    # Where the volumes live: "files" (a directory of sparse raw files, exported to the nodes).
    backend: str = "files"
    # The files backend's directory; relative to data_dir.
    volumes_dir: str = "sc/volumes"
    # GiB the volumes of this SC may be promised in all (their sizes summed); 0: the size of the file
    # system holding volumes_dir.
    capacity_gb: int = 0
    # Attached volumes are served to the nodes over NBD by one qemu-storage-daemon (roles/sc/nbd.py): port 0
    # is a unix socket in the SC's directory (nodes on this host: a one-box), else TCP on nbd_host:nbd_port.
    nbd_host: str = "127.0.0.1"
    nbd_port: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.nbd_port <= 65535:
            raise ValueError("sc.nbd_port must be 0 (a unix socket) or a TCP port")
        if self.backend != "files":
            raise ValueError(f"sc.backend must be files, not {self.backend!r}")
        if self.capacity_gb < 0:
            raise ValueError("sc.capacity_gb must not be negative")


class CcConfig(msgspec.Struct, forbid_unknown_fields=True):
    listen: Listen = msgspec.field(default_factory=lambda: Listen(port=8774))
    # This CC's cluster name; the zone it serves is registered with the CLC under the same name.
    cluster: str = "cluster01"
    scheduler: str = "GREEDY"
    # Seconds between polls of each node; a node that misses a poll is marked down.
    poll_interval: float = 6.0
    # How many nodes are polled at once (64: a round over 1,000 nodes is 2,000 calls, which at 16 at once
    # took longer than poll_interval on a busy 2-core host; bench/scale.py).
    poll_fanout: int = 64
    # The VM network: instances get addresses from this subnet on this bridge (created by the setup, inside
    # `netns` when set), with DHCP served by the CC's dnsmasq.
    subnet: str = "10.77.0.0/24"
    bridge: str = "euca-br0"
    netns: str = ""

    def __post_init__(self) -> None:
        if self.scheduler.upper() not in ("GREEDY", "ROUNDROBIN", "POWERSAVE"):
            raise ValueError(f"scheduler must be GREEDY, ROUNDROBIN or POWERSAVE, not {self.scheduler!r}")


class NcConfig(msgspec.Struct, forbid_unknown_fields=True):
    listen: Listen = msgspec.field(default_factory=lambda: Listen(port=8775))
    libvirt_uri: str = "qemu:///system"
    hypervisor: str = "auto"  # "kvm", "qemu" (TCG) or "auto"
    # This node's registered name; empty: the host name.
    name: str = ""
    # Relative to data_dir.
    instances_dir: str = "nc/instances"
    cache_dir: str = "nc/cache"
    cache_max_gb: float = 20.0
    # What the node offers; 0: what the host has.
    cores: int = 0
    memory_mb: int = 0
    disk_gb: int = 0


class HttpsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The users' APIs (EC2, S3, IAM, STS) on HTTPS beside HTTP (issue 13), as Eucalyptus served them on 8443.

    port: -1 off, 0 any free port (tests), else the port (8443 as Eucalyptus), on `host` ("": clc.listen's
    host). cert/key: the operator's PEM files (relative: under data_dir); empty: a certificate the cloud CA
    issues for public_host, localhost and the S3 virtual-host domains (kept in data_dir/pki/https/)."""

    port: int = -1
    host: str = ""
    cert: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if not -1 <= self.port <= 65535:
            raise ValueError(f"https.port must be -1 (off) or 0..65535, not {self.port}")
        if bool(self.cert) != bool(self.key):
            raise ValueError("https.cert and https.key go together")


class Config(msgspec.Struct, forbid_unknown_fields=True):
    data_dir: str = ""
    region: str = "eucalyptus"
    zone: str = "euca-1a"
    # The address clients are told to use in the credentials files.
    public_host: str = "127.0.0.1"
    log_level: str = "INFO"
    # A process running both clc and walrus (the one-box) builds, bundles and registers the default machine
    # image at its first start; false skips that.
    default_image: bool = True
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    http: HttpLimits = msgspec.field(default_factory=HttpLimits)
    clc: ClcConfig = msgspec.field(default_factory=ClcConfig)
    walrus: WalrusConfig = msgspec.field(default_factory=WalrusConfig)
    sc: ScConfig = msgspec.field(default_factory=ScConfig)
    cc: CcConfig = msgspec.field(default_factory=CcConfig)
    nc: NcConfig = msgspec.field(default_factory=NcConfig)
    https: HttpsConfig = msgspec.field(default_factory=HttpsConfig)

    def __post_init__(self) -> None:
        # Absolute: paths under it go to programs that resolve them elsewhere (a qcow2 overlay's backing file
        # is relative to the overlay, dnsmasq changes to /), so `--data-dir rel` must not reach them relative.
        self.data_dir = os.path.abspath(self.data_dir or default_data_dir())

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.data_path / p

    def listen_for(self, role: str) -> Listen:
        section = getattr(self, role)
        listen: Listen = section.listen
        return listen

    def endpoint_url(self, role: str) -> str:
        return f"http://{self.public_host}:{self.listen_for(role).port}"


def default_data_dir() -> str:
    env = os.environ.get("EUCA_DATA_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/euca"
    return str(Path.home() / ".local/share/euca")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def _default_listen_ports(tree: dict[str, Any]) -> None:
    """A role's `listen` table that names no port keeps the role's own default port (the CC's 8774, ...):
    `--host` or `cc.listen.host` alone must not move a role to Listen's 8773."""
    defaults = Config()
    for role in ROLE_NAMES:
        section = tree.get(role)
        listen = section.get("listen") if isinstance(section, dict) else None
        if isinstance(listen, dict) and "port" not in listen:
            listen["port"] = defaults.listen_for(role).port


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Read the TOML file (if any), apply dotted-key overrides ("walrus.listen.port": 9000), validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                tree = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read configuration {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    _default_listen_ports(tree)
    try:
        return msgspec.convert(tree, Config)
    except msgspec.ValidationError as e:
        # msgspec names the key as `$.section.key`; keep that, it is what an operator needs.
        raise ConfigError(f"invalid configuration: {e}") from e
