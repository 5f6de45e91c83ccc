"""CLC: the EC2 Query API (regions and zones, key pairs, tags, instance types, images, instances) and the
poll of its clusters (poller.py), whose topology it keeps (topology.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from euca.core.cluster_client import ClusterClient
from euca.core.components import component_name
from euca.core.http import Request, Response
from euca.core.roles import RoleContext
from euca.protocol.ec2 import wire
from euca.roles.clc import images, instance_types, instances, join, keypairs, tags, topology, zones
from euca.roles.clc.app import Ec2Api, Handler
from euca.roles.clc.poller import Poller, PollSettings
from euca.roles.clc.schema import SCHEMA
from euca.roles.clc.topology import ClusterCaller, ClusterLink

log = logging.getLogger("euca.clc")

# Action -> handler. An action of the EC2 model missing here answers UnsupportedOperation.
HANDLERS: dict[str, Handler] = {
    "DescribeRegions": zones.describe_regions,
    "DescribeAvailabilityZones": zones.describe_availability_zones,
    "DescribeAccountAttributes": zones.describe_account_attributes,
    "CreateKeyPair": keypairs.create_key_pair,
    "ImportKeyPair": keypairs.import_key_pair,
    "DescribeKeyPairs": keypairs.describe_key_pairs,
    "DeleteKeyPair": keypairs.delete_key_pair,
    "CreateTags": tags.create_tags,
    "DeleteTags": tags.delete_tags,
    "DescribeTags": tags.describe_tags,
    "DescribeInstanceTypes": instance_types.describe_instance_types,
    "RegisterImage": images.register_image,
    "DescribeImages": images.describe_images,
    "DeregisterImage": images.deregister_image,
    "DescribeImageAttribute": images.describe_image_attribute,
    "ModifyImageAttribute": images.modify_image_attribute,
    "ResetImageAttribute": images.reset_image_attribute,
    "RunInstances": instances.run_instances,
    "DescribeInstances": instances.describe_instances,
    "TerminateInstances": instances.terminate_instances,
    "RebootInstances": instances.reboot_instances,
    "StopInstances": instances.stop_instances,
    "StartInstances": instances.start_instances,
    "GetConsoleOutput": instances.get_console_output,
    "DescribeInstanceStatus": instances.describe_instance_status,
}


class Ec2App:
    name = "clc"
    services = frozenset({"ec2"})
    path_prefixes = ("/services/compute", "/services/Eucalyptus")

    def __init__(self, ctx: RoleContext, cluster: ClusterLink | None = None):
        self.ctx = ctx
        self.api = Ec2Api(ctx, HANDLERS, cluster)

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
        ctx.store.migrate("clc", SCHEMA)
        images.migrate(ctx.store)  # the bundle manifests images were registered from
        topology.migrate(ctx.store)
        instances.migrate(ctx.store)
        wire.model()  # load the EC2 model (~50 ms) at start rather than on the first request
        # The CLC calls its CCs as component "clc" (mutual TLS); tests may hand in another caller.
        self._own_caller = caller is None
        self.caller: ClusterCaller = caller if caller is not None else ClusterClient(ctx.components, "clc")
        clc = ctx.config.clc
        self.poller = Poller(
            ctx.store, self.caller, PollSettings(clc.poll_interval, clc.node_lost_timeout, clc.terminated_ttl)
        )
        self.link = ClusterLink(
            caller=self.caller,
            node_image_cert_pem=lambda: ctx.components.node_image_cert_pem,
            poke=self.poller.poke,
        )
        # Components on other hosts join at POST /services/cluster/join with a token (join.py).
        self.apps = [Ec2App(ctx, self.link), join.JoinApp(ctx)]
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
                lambda tx: topology.register_local(tx, cfg.cc.cluster, cfg.zone, cc_url, node, nc_url, now)
            )
            for what in changed:
                log.info("one-box topology registered %s", what)
        with trio.move_on_after(10):
            await self.poller.poll_once()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.poller.run)
                task_status.started()
        finally:
            if self._own_caller and isinstance(self.caller, ClusterClient):
                with trio.CancelScope(shield=True):
                    await self.caller.aclose()


def create(ctx: RoleContext) -> ClcRole:
    return ClcRole(ctx)
