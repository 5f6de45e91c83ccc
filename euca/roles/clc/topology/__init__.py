"""The cloud's topology: records.py owns the clusters (one per availability zone) and nodes an admin
registers and what the poller last heard from them; api.py answers DescribeRegions,
DescribeAvailabilityZones and DescribeAccountAttributes.

The admin CLI (euca/cli.py) reaches the records through this package's names below, which it imported from
the module topology.py this package replaced.
"""

from euca.core.store import Store
from euca.roles.clc.schema import TOPOLOGY, apply
from euca.roles.clc.topology.records import Cluster as Cluster
from euca.roles.clc.topology.records import Node as Node
from euca.roles.clc.topology.records import TopologyError as TopologyError
from euca.roles.clc.topology.records import deregister_cluster as deregister_cluster
from euca.roles.clc.topology.records import deregister_node as deregister_node
from euca.roles.clc.topology.records import list_clusters as list_clusters
from euca.roles.clc.topology.records import list_nodes as list_nodes
from euca.roles.clc.topology.records import register_cluster as register_cluster
from euca.roles.clc.topology.records import register_node as register_node
from euca.roles.clc.topology.records import service_url as service_url


def migrate(store: Store) -> None:
    apply(store, TOPOLOGY)
