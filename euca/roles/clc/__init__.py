"""CLC: the EC2 Query API (regions and zones, key pairs, tags, instance types, images)."""

from __future__ import annotations

from typing import Any

import trio

from euca.core.http import Request, Response
from euca.core.supervisor import RoleContext
from euca.protocol.ec2 import wire
from euca.roles.clc import images, instance_types, keypairs, tags, zones
from euca.roles.clc.app import Ec2Api, Handler
from euca.roles.clc.schema import SCHEMA

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
}


class Ec2App:
    name = "clc"
    services = frozenset({"ec2"})
    path_prefixes = ("/services/compute", "/services/Eucalyptus")

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        self.api = Ec2Api(ctx, HANDLERS)

    def claims(self, request: Request) -> bool:
        # EC2 Query requests: ?Action=... or a form POST to the root.
        if "Action=" in request.query:
            return True
        ctype = request.headers.get("content-type") or ""
        return request.method == "POST" and request.path in ("", "/") and ctype.startswith(
            "application/x-www-form-urlencoded"
        )

    async def handle(self, request: Request) -> Response:
        return await self.api(request)


class ClcRole:
    name = "clc"

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        ctx.store.migrate("clc", SCHEMA)
        images.migrate(ctx.store)  # the bundle manifests images were registered from
        wire.model()  # load the EC2 model (~50 ms) at start rather than on the first request
        self.apps = [Ec2App(ctx)]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


def create(ctx: RoleContext) -> ClcRole:
    return ClcRole(ctx)
