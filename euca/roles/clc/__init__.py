"""CLC: the EC2 Query API and the poll of its clusters.

Layout: one package per resource (topology: clusters and zones, keypairs, tags, instance_types, images,
security_groups, addresses, instances, volumes, snapshots), each with
- records.py: the only module that reads or writes the resource's tables (declared in schema.py), with the
  resource's rules; other modules call its functions, never its tables;
- api.py: the resource's EC2 handlers (typed request in, result Struct out) and its HANDLERS table, merged
  below; a large resource splits its handlers further (instances: launch.py, render.py; images: bundles.py).
The resource packages import each other one way only (no cycles: .importlinter checks it). tags imports no
other resource (any resource's records may call tags.records, any api tags.render's tag_list); instances,
which refer to images, key pairs, instance types and the topology, sit highest. A rule spanning two resources
that would make them import each other lives above both (admin.py: no deregistering a cluster that still runs
instances), and a table naming every resource of some sort is assembled here, not in a resource package
(TAGGABLE, handed to the tags API).
A new resource adds its migration to schema.py, its HANDLERS below, its records module's TAG_KIND (a
tags.records.ResourceKind: id prefixes, resource type, not-found code, visibility) to TAGGABLE if taggable,
and its tables to tests/unit/test_clc_records.py's owners (which fails when a module queries a table another
records module owns). Beside the packages: app.py (the EC2 Query endpoint: authentication, dispatch),
schema.py (every table and its migrations), admin.py (the administrator's rules that span resources),
cluster_link.py (how the CLC calls its CCs), placement.py (which zone takes a launch; pure), poller.py (the
poll loop), join.py (components joining the cloud), network_view.py (what each cluster's network enforces,
sent with every poll). Rules needing a higher resource are handed in here: DeleteSecurityGroup asks the
instances which use a group, AssociateAddress what state an instance is in, AttachVolume where an instance
runs (instance_place).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from euca.core.cluster_client import ClusterClient
from euca.core.components import component_name
from euca.core.http import Request, Response
from euca.core.roles import RoleContext
from euca.core.store import Tx
from euca.protocol.ec2 import wire
from euca.roles.clc import join, quota, reporting, schema
from euca.roles.clc.addresses import api as addresses_api
from euca.roles.clc.addresses import records as addresses_records
from euca.roles.clc.app import Ec2Api, Handler
from euca.roles.clc.cluster_link import ClusterCaller, ClusterLink
from euca.roles.clc.iam.app import IamApp, StsApp
from euca.roles.clc.images import api as images_api
from euca.roles.clc.images import records as images_records
from euca.roles.clc.instance_types import api as instance_types_api
from euca.roles.clc.instances import api as instances_api
from euca.roles.clc.instances import profiles as instance_profiles
from euca.roles.clc.instances import records as instances_records
from euca.roles.clc.keypairs import api as keypairs_api
from euca.roles.clc.keypairs import records as keypairs_records
from euca.roles.clc.poller import Poller, PollSettings
from euca.roles.clc.security_groups import api as security_groups_api
from euca.roles.clc.security_groups import records as security_groups_records
from euca.roles.clc.snapshots import api as snapshots_api
from euca.roles.clc.snapshots import records as snapshots_records
from euca.roles.clc.snapshots.poll import SnapshotPoll
from euca.roles.clc.snapshots.system import snapshot_store
from euca.roles.clc.tags import api as tags_api
from euca.roles.clc.tags import records as tags_records
from euca.roles.clc.tags.records import ResourceKind
from euca.roles.clc.topology import api as topology_api
from euca.roles.clc.topology import records as topology_records
from euca.roles.clc.volumes import api as volumes_api
from euca.roles.clc.volumes import attach as volumes_attach
from euca.roles.clc.volumes import records as volumes_records

log = logging.getLogger("euca.clc")

# Every taggable kind of resource (CreateTags and DeleteTags find a resource's kind by its id prefix).
TAGGABLE: tuple[ResourceKind, ...] = (
    images_records.TAG_KIND,
    keypairs_records.TAG_KIND,
    instances_records.TAG_KIND,
    security_groups_records.TAG_KIND,
    addresses_records.TAG_KIND,
    volumes_records.TAG_KIND,
    snapshots_records.TAG_KIND,
)

# Action -> handler, from each resource's api module. An action of the EC2 model missing here answers
# UnsupportedOperation.
HANDLERS: dict[str, Handler] = {
    **topology_api.HANDLERS,
    **keypairs_api.HANDLERS,
    **tags_api.handlers(TAGGABLE),
    **instance_types_api.HANDLERS,
    **images_api.HANDLERS,
    **instances_api.HANDLERS,
    **instance_profiles.HANDLERS,  # instance profiles (issue 12)
    **security_groups_api.handlers(instances_records.instances_using_group),
    **addresses_api.handlers(instances_records.instance_state),
    **volumes_api.HANDLERS,
    **volumes_attach.handlers(instances_records.instance_place),
    # Snapshots sit below volumes (CreateVolume with a SnapshotId reads them): the volume a snapshot is made
    # of is handed in; so, with EBS-backed images, will the images that use a snapshot (snapshots_api.no_images).
    **snapshots_api.handlers(
        lambda tx, account_id, volume_id: volumes_records.owned(
            tx, account_id, [volumes_records.check_volume_id(volume_id)]
        )[0]
    ),
}


def seed_public_addresses(ctx: RoleContext) -> None:
    """An empty public address pool starts as `clc.public_addresses`."""
    try:
        wanted = addresses_records.parse_ranges([ctx.config.clc.public_addresses])
    except ValueError as e:
        raise ValueError(f"clc.public_addresses: {e}") from None

    def seed(tx: Tx) -> list[str]:
        return addresses_records.add_to_pool(tx, wanted) if addresses_records.pool_is_empty(tx) else []

    added = ctx.store.write_sync(seed)
    if added:
        log.info("public address pool seeded count=%d first=%s last=%s", len(added), added[0], added[-1])


class Ec2App:
    name = "clc"
    services = frozenset({"ec2"})
    path_prefixes = ("/services/compute", "/services/Eucalyptus")

    def __init__(self, ctx: RoleContext, cluster: ClusterLink | None = None):
        self.ctx = ctx
        self.api = Ec2Api(
            ctx, HANDLERS, cluster, tags_of=tags_records.tags_of, check_quotas=quota.check_quotas
        )

    def claims(self, request: Request) -> bool:
        # EC2 Query requests: ?Action=... or a form POST to the root.
        if "Action=" in request.query:
            return True
        ctype = request.headers.get("content-type") or ""
        return (
            request.method == "POST"
            and request.path in ("", "/")
            and ctype.startswith("application/x-www-form-urlencoded")
        )

    async def handle(self, request: Request) -> Response:
        return await self.api(request)


class ClcRole:
    name = "clc"

    def __init__(self, ctx: RoleContext, *, caller: ClusterCaller | None = None):
        self.ctx = ctx
        schema.migrate(ctx.store)
        seed_public_addresses(ctx)
        wire.model()  # load the EC2 model (~50 ms) at start rather than on the first request
        # The CLC calls its CCs as component "clc" (mutual TLS); tests may hand in another caller.
        self._own_caller = caller is None
        self.caller: ClusterCaller = caller if caller is not None else ClusterClient(ctx.components, "clc")
        clc = ctx.config.clc
        self.poller = Poller(
            ctx.store,
            self.caller,
            PollSettings(clc.poll_interval, clc.node_lost_timeout, clc.terminated_ttl),
            snapshots=SnapshotPoll(
                ctx.store,
                self.caller,
                lambda: snapshot_store(ctx),
                restoring=lambda tx: any(
                    v.state == "creating" and v.snapshot_id for v in volumes_records.load_all_volumes(tx)
                ),
            ),
        )
        self.link = ClusterLink(
            caller=self.caller,
            node_image_cert_pem=lambda: ctx.components.node_image_cert_pem,
            poke=self.poller.poke,
        )
        # Components on other hosts join at POST /services/cluster/join with a token (join.py).
        self.apps = [Ec2App(ctx, self.link), join.JoinApp(ctx)]
        # Usage reports over the API (reporting.py): Eucalyptus's Reporting path.
        self.apps.append(reporting.ReportApp(ctx))
        # IAM (Euare) and STS on the same port (issue 12).
        self.apps += [IamApp(ctx), StsApp(ctx)]
        ctx.on_ready.append(self.on_ready)

    async def on_ready(self) -> None:
        """Every listener is up: on one box, the local CC and NC become the first cluster and node; then one
        poll, so zones and capacity are known before the cloud says it is ready."""
        ctx = self.ctx
        cc_url = ctx.endpoints.get("cc")
        if cc_url is not None:
            nc_url = ctx.endpoints.get("nc")
            node = component_name(ctx.config, "nc") if nc_url is not None else None
            cfg = ctx.config
            now = time.time()
            changed = await ctx.store.write(
                lambda tx: topology_records.register_local(
                    tx, cfg.cc.cluster, cfg.zone, cc_url, node, nc_url, now
                )
            )
            for what in changed:
                log.info("one-box topology registered %s", what)
        sc_url = ctx.endpoints.get("sc")
        if sc_url is not None:
            # This host's SC serves this host's cluster (registered above on a one-box, or by the admin).
            cluster_name, now = ctx.config.cc.cluster, time.time()
            for what in await ctx.store.write(
                lambda tx: topology_records.register_local_storage(tx, cluster_name, sc_url, now)
            ):
                log.info("one-box topology registered %s", what)
        with trio.move_on_after(10):
            await self.poller.poll_once()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.poller.run)
                # Instance profiles (issue 12): role credentials replaced ahead of their expiry.
                nursery.start_soon(instance_profiles.run_refresher, self.ctx)
                task_status.started()
        finally:
            if self._own_caller and isinstance(self.caller, ClusterClient):
                with trio.CancelScope(shield=True):
                    await self.caller.aclose()


def create(ctx: RoleContext) -> ClcRole:
    return ClcRole(ctx)
