"""Where snapshots live and as whom the SCs write them: the system account's bucket in Walrus.

Eucalyptus's SC wrote snapshots to Walrus as a cloud component, with the credentials of the system account
(`eucalyptus`), into a bucket of that account that no user sees. So here: the CLC hands the SC the system
account's access key with each snapshot message (cluster.SnapshotStore, over the mutual-TLS link that only a
certificate of the cloud CA with OU=sc answers). The other way, the CLC presigning each request as it does
for the NCs' image parts, does not fit: a chunk's name is its SHA-256, known only once the SC read it, so
every chunk would cost the SC a round trip to the CLC for its URL, and a sweep lists and deletes. Handing the
key per message rather than at join keeps no secret on the SC's disk and follows a rotated key at once.
"""

from __future__ import annotations

from euca.core.identity import ADMIN_ACCOUNT
from euca.core.roles import RoleContext
from euca.protocol.cluster import SnapshotStore
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.images.bundles import walrus_endpoint


def bucket_name(ctx: RoleContext) -> str:
    """The system account's snapshot bucket: named after the cloud CA, so every CLC of this cloud agrees and
    no user can take the name before it (it is not guessable from outside)."""
    return f"euca-snapshots-{ctx.ca.sha256[:16]}"


async def snapshot_store(ctx: RoleContext) -> SnapshotStore:
    account = await ctx.identity.account_by_name(ADMIN_ACCOUNT)
    keys = await ctx.identity.account_access_keys(account.account_id) if account is not None else []
    active = [k for k in keys if k.active]
    if not active:
        raise Ec2Error(
            "Unavailable",
            "The system account has no active access key: the storage cannot reach Walrus.",
            503,
        )
    key = active[0]
    return SnapshotStore(
        endpoint=walrus_endpoint(ctx),
        bucket=bucket_name(ctx),
        access_key_id=key.access_key_id,
        secret_key=key.secret_key,
        region=ctx.config.region,
    )
