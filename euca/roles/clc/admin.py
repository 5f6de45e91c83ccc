"""The administrator's rules that span resources (`euca admin ...`), above the resource packages they join.

Topology (clusters, nodes) sits below instances, which record the cluster each runs in; a rule that asks the
instances before changing the topology therefore lives here rather than in topology.records.

Functions take a store Tx, as the records functions do (the CLI calls them through store.write_sync).
"""

from __future__ import annotations

from euca.core.store import Tx
from euca.roles.clc.instances import records as instances
from euca.roles.clc.topology import records as topology
from euca.roles.clc.topology.records import Cluster, TopologyError


def deregister_cluster(tx: Tx, name: str) -> Cluster:
    """Remove a cluster and its nodes. Refused while instances still run in it (terminate them first)."""
    if topology.get_cluster(tx, name) is None:
        raise TopologyError(f"no cluster {name}")
    running = instances.count_unterminated(tx, name)
    if running:
        raise TopologyError(f"cluster {name} still has {running} instance(s); terminate them first")
    return topology.deregister_cluster(tx, name)


def set_cluster_subnet(tx: Tx, name: str, subnet: str | None) -> Cluster:
    """Change a cluster's private subnet (None: back to its CC's own). Refused while instances run in it:
    their addresses are of the old one. Its CC moves at its next poll."""
    if topology.get_cluster(tx, name) is None:
        raise TopologyError(f"no cluster {name}")
    running = instances.count_unterminated(tx, name)
    if running:
        raise TopologyError(
            f"cluster {name} still has {running} instance(s); its subnet changes only while it has none"
        )
    return topology.set_subnet(tx, name, subnet)
