"""Instances: records.py owns the reservation and instance tables and the instance rules; reconcile.py is the
pure rule by which the table follows what CCs report; api.py answers the EC2 instance actions, launch.py
RunInstances, render.py the Instance/Reservation structures both answer with.

`migrate` is for the admin CLI (euca/cli.py), which migrated the module instances.py this package replaced;
everything else calls schema.migrate.
"""

from euca.core.store import Store
from euca.roles.clc.schema import INSTANCES, apply


def migrate(store: Store) -> None:
    apply(store, INSTANCES)
