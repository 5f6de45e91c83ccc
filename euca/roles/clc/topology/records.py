"""The cloud's topology (clc_clusters, clc_nodes): the only module that reads or writes it.

Clusters (one per availability zone, each with its CC) and nodes. An admin registers them (`euca admin
register-cluster`, `register-node`); the CLC's poller sends each CC its nodes and the instance types on every
poll, so a CC needs no configuration of its own and the topology is never a file edit. The poller also records
here what it last heard from each CC (state, node resources, capacity per type), which placement,
DescribeAvailabilityZones and `euca admin describe-nodes` read.

Functions take a store Tx, so the CLI (store.write_sync) and the CLC (await store.write) share them.
"""

from __future__ import annotations

import ipaddress
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from euca.core.store import Tx
from euca.protocol.cluster import NodeAddress, NodeResources, TypeCapacity

CC_PORT = 8774
NC_PORT = 8775
SC_PORT = 8776

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TopologyError(Exception):
    """A registration that cannot be done; the message says why."""


_nodes_codec = msgspec.json.Decoder(list[NodeResources])
_capacity_codec = msgspec.json.Decoder(list[TypeCapacity])
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Cluster:
    name: str
    zone: str
    url: str
    registered: float
    polled: float | None = None
    last_seen: float | None = None
    state: str = "unknown"  # up: its CC answered the last poll; down: it did not; unknown: not polled yet
    reason: str | None = None
    nodes: list[NodeResources] = field(default_factory=list)
    capacity: list[TypeCapacity] = field(default_factory=list)
    subnet: str | None = None  # its instances' private subnet; None: the CC's own (cc.subnet)

    @property
    def available(self) -> bool:
        return self.state == "up"


@dataclass(frozen=True)
class Node:
    name: str
    cluster: str
    url: str
    registered: float

    @property
    def address(self) -> NodeAddress:
        return NodeAddress(self.name, self.url)


def service_url(host: str, port: int) -> str:
    """Where a CC or NC answers: always TLS (the cluster listeners take only mutual-TLS calls)."""
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise TopologyError(f"invalid host {host!r}")
    if not 0 < port < 65536:
        raise TopologyError(f"invalid port {port}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"https://{host}:{port}"


def check_name(name: str, what: str) -> None:
    if not NAME_RE.match(name):
        raise TopologyError(f"invalid {what} name {name!r}: letters, digits, '.', '_' and '-', at most 64")


def _cluster(r: sqlite3.Row) -> Cluster:
    return Cluster(
        name=r["name"],
        zone=r["zone"],
        url=r["url"],
        registered=r["registered"],
        polled=r["polled"],
        last_seen=r["last_seen"],
        state=r["state"],
        reason=r["reason"],
        nodes=_nodes_codec.decode(r["nodes"]),
        capacity=_capacity_codec.decode(r["capacity"]),
        subnet=r["subnet"],
    )


def check_subnet(text: str) -> str:
    """A cluster's private subnet in its normal form (`10.77.0.0/24`): IPv4, /8 to /29 (a gateway and at
    least a few instances), host bits zero. Two clusters may share one: their traffic meets on the public
    addresses, never on the private ones."""
    try:
        network = ipaddress.IPv4Network(text.strip())
    except ValueError as e:
        raise TopologyError(f"invalid subnet {text!r}: {e}") from None
    if not 8 <= network.prefixlen <= 29:
        raise TopologyError(f"invalid subnet {text!r}: the prefix must be /8 to /29")
    if network.is_loopback or network.is_multicast or network.is_link_local or network.is_unspecified:
        raise TopologyError(f"invalid subnet {text!r}: not a subnet instances can use")
    return str(network)


def set_subnet(tx: Tx, name: str, subnet: str | None) -> Cluster:
    """Set (None: clear) the cluster's private subnet. Whether instances run there is not topology's to
    know: the administrator changes it through admin.set_cluster_subnet, which refuses then."""
    if get_cluster(tx, name) is None:
        raise TopologyError(f"no cluster {name}")
    tx.execute(
        "UPDATE clc_clusters SET subnet=? WHERE name=?",
        (None if subnet is None else check_subnet(subnet), name),
    )
    found = get_cluster(tx, name)
    assert found is not None
    return found


@dataclass(frozen=True)
class StorageController:
    """A cluster's SC, and what the poller last heard from it."""

    cluster: str
    url: str
    registered: float
    polled: float | None = None
    last_seen: float | None = None
    state: str = "unknown"  # as a Cluster's
    reason: str | None = None
    backend: str = ""
    capacity_gb: int = 0
    allocated_gb: int = 0

    @property
    def available(self) -> bool:
        return self.state == "up"


def _storage(r: sqlite3.Row) -> StorageController:
    return StorageController(
        cluster=r["cluster"],
        url=r["url"],
        registered=r["registered"],
        polled=r["polled"],
        last_seen=r["last_seen"],
        state=r["state"],
        reason=r["reason"],
        backend=r["backend"],
        capacity_gb=r["capacity_gb"],
        allocated_gb=r["allocated_gb"],
    )


def _node(r: sqlite3.Row) -> Node:
    return Node(r["name"], r["cluster"], r["url"], r["registered"])


# -- reading ---------------------------------------------------------------------------------------------


def list_clusters(tx: Tx) -> list[Cluster]:
    return [_cluster(r) for r in tx.all("SELECT * FROM clc_clusters ORDER BY zone")]


def get_cluster(tx: Tx, name: str) -> Cluster | None:
    row = tx.one("SELECT * FROM clc_clusters WHERE name=?", (name,))
    return _cluster(row) if row else None


def list_nodes(tx: Tx, cluster: str | None = None) -> list[Node]:
    if cluster is None:
        rows = tx.all("SELECT * FROM clc_nodes ORDER BY cluster, name")
    else:
        rows = tx.all("SELECT * FROM clc_nodes WHERE cluster=? ORDER BY name", (cluster,))
    return [_node(r) for r in rows]


# -- registration ----------------------------------------------------------------------------------------


def register_cluster(
    tx: Tx,
    name: str,
    url: str,
    zone: str | None = None,
    *,
    now: float | None = None,
    origin: str = "admin",
    subnet: str | None = None,
) -> Cluster:
    """Add a cluster serving `zone` (default: its name), its instances on `subnet` (default: the CC's own).
    Registering the same cluster again with the same URL and zone (and subnet, if one is given) changes
    nothing; a different one is refused (deregister first; the subnet: modify-cluster)."""
    zone = zone or name
    check_name(name, "cluster")
    check_name(zone, "zone")
    subnet = None if subnet is None else check_subnet(subnet)
    existing = get_cluster(tx, name)
    if existing is not None:
        if existing.url == url and existing.zone == zone and subnet in (None, existing.subnet):
            return existing
        raise TopologyError(f"cluster {name} is already registered (zone {existing.zone} at {existing.url})")
    other = tx.one("SELECT name FROM clc_clusters WHERE zone=?", (zone,))
    if other is not None:
        raise TopologyError(f"zone {zone} is already served by cluster {other['name']}")
    tx.execute(
        "INSERT INTO clc_clusters(name, zone, url, registered, origin, subnet) VALUES(?,?,?,?,?,?)",
        (name, zone, url, time.time() if now is None else now, origin, subnet),
    )
    found = get_cluster(tx, name)
    assert found is not None
    return found


def deregister_cluster(tx: Tx, name: str) -> Cluster:
    """Remove a cluster and its nodes. Whether instances still run there is not topology's to know: the
    administrator deregisters through admin.deregister_cluster, which refuses then."""
    cluster = get_cluster(tx, name)
    if cluster is None:
        raise TopologyError(f"no cluster {name}")
    tx.execute("DELETE FROM clc_nodes WHERE cluster=?", (name,))
    tx.execute("DELETE FROM clc_storage WHERE cluster=?", (name,))
    tx.execute("DELETE FROM clc_clusters WHERE name=?", (name,))
    return cluster


def register_node(
    tx: Tx, name: str, cluster: str, url: str, *, now: float | None = None, origin: str = "admin"
) -> Node:
    check_name(name, "node")
    if get_cluster(tx, cluster) is None:
        raise TopologyError(f"no cluster {cluster}; register it first")
    row = tx.one("SELECT * FROM clc_nodes WHERE name=?", (name,))
    if row is not None:
        node = _node(row)
        if node.cluster == cluster and node.url == url:
            return node
        raise TopologyError(f"node {name} is already registered (cluster {node.cluster} at {node.url})")
    at = time.time() if now is None else now
    tx.execute(
        "INSERT INTO clc_nodes(name, cluster, url, registered, origin) VALUES(?,?,?,?,?)",
        (name, cluster, url, at, origin),
    )
    return Node(name, cluster, url, at)


def deregister_node(tx: Tx, name: str) -> Node:
    row = tx.one("SELECT * FROM clc_nodes WHERE name=?", (name,))
    if row is None:
        raise TopologyError(f"no node {name}")
    tx.execute("DELETE FROM clc_nodes WHERE name=?", (name,))
    return _node(row)


def register_local(
    tx: Tx, cluster: str, zone: str, cc_url: str, node: str | None, nc_url: str | None, now: float
) -> list[str]:
    """One-box: the CC and NC running in this process become the cloud's first cluster and node, once
    (when no cluster is registered yet). Later starts only follow the local listeners' URLs (port 0 picks
    a new port each start) for what a one-box start registered. Returns what changed, for the log."""
    changed: list[str] = []
    if not tx.one("SELECT 1 FROM clc_clusters"):
        register_cluster(tx, cluster, cc_url, zone, now=now, origin="local")
        changed.append(f"cluster {cluster} zone={zone} url={cc_url}")
        if node is not None and nc_url is not None:
            register_node(tx, node, cluster, nc_url, now=now, origin="local")
            changed.append(f"node {node} url={nc_url}")
        return changed
    if tx.execute(
        "UPDATE clc_clusters SET url=? WHERE name=? AND origin='local' AND url!=?", (cc_url, cluster, cc_url)
    ):
        changed.append(f"cluster {cluster} url={cc_url}")
    if node is not None and nc_url is not None:
        if tx.execute(
            "UPDATE clc_nodes SET url=? WHERE name=? AND origin='local' AND url!=?", (nc_url, node, nc_url)
        ):
            changed.append(f"node {node} url={nc_url}")
    return changed


# -- storage controllers (one per cluster) ----------------------------------------------------------------


def list_storage(tx: Tx) -> list[StorageController]:
    return [_storage(r) for r in tx.all("SELECT * FROM clc_storage ORDER BY cluster")]


def get_storage(tx: Tx, cluster: str) -> StorageController | None:
    row = tx.one("SELECT * FROM clc_storage WHERE cluster=?", (cluster,))
    return _storage(row) if row else None


def cluster_of_zone(tx: Tx, zone: str) -> Cluster | None:
    row = tx.one("SELECT * FROM clc_clusters WHERE zone=?", (zone,))
    return _cluster(row) if row else None


def register_storage(
    tx: Tx, cluster: str, url: str, *, now: float | None = None, origin: str = "admin"
) -> StorageController:
    """The SC of `cluster` answers at `url`. The same again changes nothing; another URL is refused
    (deregister first): a cluster has one SC, as Eucalyptus's partition had."""
    if get_cluster(tx, cluster) is None:
        raise TopologyError(f"no cluster {cluster}; register it first")
    existing = get_storage(tx, cluster)
    if existing is not None:
        if existing.url == url:
            return existing
        raise TopologyError(f"cluster {cluster} has a storage controller already (at {existing.url})")
    tx.execute(
        "INSERT INTO clc_storage(cluster, url, registered, origin) VALUES(?,?,?,?)",
        (cluster, url, time.time() if now is None else now, origin),
    )
    found = get_storage(tx, cluster)
    assert found is not None
    return found


def deregister_storage(tx: Tx, cluster: str) -> StorageController:
    existing = get_storage(tx, cluster)
    if existing is None:
        raise TopologyError(f"cluster {cluster} has no storage controller")
    tx.execute("DELETE FROM clc_storage WHERE cluster=?", (cluster,))
    return existing


def register_local_storage(tx: Tx, cluster: str, sc_url: str, now: float) -> list[str]:
    """One-box: the SC running in this process serves the local cluster, registered once (when that
    cluster has none); later starts follow its URL. Returns what changed, for the log."""
    if get_cluster(tx, cluster) is None:
        return []
    existing = get_storage(tx, cluster)
    if existing is None:
        register_storage(tx, cluster, sc_url, now=now, origin="local")
        return [f"storage controller of {cluster} url={sc_url}"]
    if tx.execute(
        "UPDATE clc_storage SET url=? WHERE cluster=? AND origin='local' AND url!=?",
        (sc_url, cluster, sc_url),
    ):
        return [f"storage controller of {cluster} url={sc_url}"]
    return []


def record_storage_poll(
    tx: Tx,
    cluster: str,
    *,
    now: float,
    ok: bool,
    reason: str | None = None,
    backend: str = "",
    capacity_gb: int = 0,
    allocated_gb: int = 0,
) -> None:
    """The outcome of one poll of a cluster's SC (a failed one keeps the last numbers)."""
    if ok:
        tx.execute(
            "UPDATE clc_storage SET polled=?, last_seen=?, state='up', reason=NULL, backend=?, capacity_gb=?, "
            "allocated_gb=? WHERE cluster=?",
            (now, now, backend, capacity_gb, allocated_gb, cluster),
        )
    else:
        tx.execute(
            "UPDATE clc_storage SET polled=?, state='down', reason=? WHERE cluster=?", (now, reason, cluster)
        )


# -- what the poller heard -------------------------------------------------------------------------------


def record_poll(
    tx: Tx,
    cluster: str,
    *,
    now: float,
    ok: bool,
    reason: str | None = None,
    nodes: Sequence[NodeResources] | None = None,
    capacity: Sequence[TypeCapacity] | None = None,
) -> None:
    """The outcome of one poll of a cluster's CC. A failed poll keeps the last resources but marks the cluster
    down, so placement skips it."""
    if ok:
        tx.execute(
            "UPDATE clc_clusters SET polled=?, last_seen=?, state='up', reason=NULL, nodes=?, capacity=? "
            "WHERE name=?",
            (
                now,
                now,
                _encoder.encode(list(nodes or [])).decode(),
                _encoder.encode(list(capacity or [])).decode(),
                cluster,
            ),
        )
    else:
        tx.execute(
            "UPDATE clc_clusters SET polled=?, state='down', reason=? WHERE name=?", (now, reason, cluster)
        )


def record_resources(
    tx: Tx, cluster: str, nodes: Sequence[NodeResources], capacity: Sequence[TypeCapacity]
) -> None:
    """The CLC's own estimate after placing instances, until the next poll brings the CC's numbers."""
    tx.execute(
        "UPDATE clc_clusters SET nodes=?, capacity=? WHERE name=?",
        (_encoder.encode(list(nodes)).decode(), _encoder.encode(list(capacity)).decode(), cluster),
    )
