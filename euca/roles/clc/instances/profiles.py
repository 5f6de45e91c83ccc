"""Instance profiles (issue 12): RunInstances with IamInstanceProfile, and the role credentials each such
instance's metadata service serves (`iam/security-credentials/ROLE`).

At launch the profile is found by name or ARN in the caller's account (unknown: InvalidParameterValue, as
EC2 answers) and the caller must be allowed iam:PassRole on its role, as AWS checks. The association is
recorded with the instances (by instances/records.py) in the launch's
transaction, together with each instance's first credentials: an STS session of the role (euca.core.iam
.sessions, the same as AssumeRole's) named after the instance, valid CREDENTIALS_SECONDS. `refresh_due`
replaces the credentials of every live instance REFRESH_BEFORE ahead of their expiry (AWS makes new ones
available well before the old expire; SDKs refetch from 15 minutes before); the old stay valid until they
expire. A new key changes the instance's metadata_version (network_view.py), so its CC asks for the metadata
again and gets the new credentials with the next poll, through the existing PutInstanceMetadata path. Times
are the identity clock's (`Identity.clock`), which tests move.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from euca.core.authorize import identity_verdict, request_keys
from euca.core.iam import roles as iam_roles
from euca.core.iam import sessions
from euca.core.roles import RoleContext
from euca.core.store import Tx
from euca.protocol import cluster
from euca.protocol.ec2 import messages as m
from euca.protocol.ec2.filters import FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error
from euca.protocol.policy import ALLOW
from euca.protocol.query.wire import QueryError
from euca.roles.clc.app import Ec2Call, Handler
from euca.roles.clc.instances import records

log = logging.getLogger("euca.clc")

CREDENTIALS_SECONDS = 6 * 3600.0
REFRESH_BEFORE = 3600.0
# How often the CLC looks for credentials to replace (one indexed read when none is due).
REFRESH_CHECK_SECONDS = 5.0
_PROFILE_ARN = re.compile(r"^arn:aws:iam::(\d{12}):instance-profile/(?:[\x21-\x7e]*/)?([\w+=,.@-]{1,128})$")


@dataclass(frozen=True)
class Profile:
    """An instance profile as a launch found it."""

    account_id: str
    arn: str
    profile_id: str
    name: str
    role_arns: tuple[str, ...]


def _find(tx: Tx, account_id: str, spec: m.IamInstanceProfileSpecification) -> Profile:
    name = spec.name
    if spec.arn is not None:
        found = _PROFILE_ARN.match(spec.arn)
        if found is None or found.group(1) != account_id or (name is not None and name != found.group(2)):
            raise Ec2Error(
                "InvalidParameterValue",
                f"Value ({spec.arn}) for parameter iamInstanceProfile.arn is invalid. "
                "Invalid IAM Instance Profile ARN",
            )
        name = found.group(2)
    if not name:
        raise Ec2Error("InvalidParameterValue", "An IAM instance profile needs a name or an ARN.")
    try:
        profile = iam_roles.get_instance_profile(tx, account_id, name)
    except QueryError:
        profile = None
    if profile is None or (spec.arn is not None and profile["Arn"] != spec.arn):
        what, value = ("arn", spec.arn) if spec.arn is not None else ("name", name)
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({value}) for parameter iamInstanceProfile.{what} is invalid. "
            f"Invalid IAM Instance Profile {what}",
        )
    return Profile(
        account_id,
        str(profile["Arn"]),
        str(profile["InstanceProfileId"]),
        str(profile["InstanceProfileName"]),
        tuple(str(r["Arn"]) for r in profile["Roles"]),
    )


async def resolve(call: Ec2Call, spec: m.IamInstanceProfileSpecification) -> Profile:
    """The profile a RunInstances names, once the caller may pass its role (iam:PassRole)."""
    profile = await call.ctx.store.read(lambda tx: _find(tx, call.account_id, spec))
    keys = request_keys(call.principal, call.request, call.ctx.identity.clock())
    for role_arn in profile.role_arns:
        verdict = await identity_verdict(call.ctx.identity, call.principal, "iam:PassRole", role_arn, keys)
        if verdict != ALLOW:
            raise Ec2Error(
                "UnauthorizedOperation",
                f"You are not authorized to perform this operation. User: {call.principal.arn} is not "
                f"authorized to perform: iam:PassRole on resource: {role_arn}",
            )
    return profile


def associate(tx: Tx, profile: Profile, instance_ids: list[str], now: float) -> None:
    """In the launch's transaction: the instances' profile and their first credentials."""
    records.record_profile(tx, profile.account_id, instance_ids, profile.arn, profile.profile_id)
    for association in records.profile_associations(tx, instance_ids, live=False):
        _issue(tx, association, now)


def _issue(tx: Tx, a: records.ProfileAssociation, now: float) -> None:
    """New credentials of the profile's role as it is now (none when it has no role, or is gone)."""
    name = a.profile_arn.rsplit("/", 1)[-1]
    try:
        profile = iam_roles.get_instance_profile(tx, a.account_id, name)
    except QueryError:
        profile = None
    roles = profile["Roles"] if profile is not None and profile["Arn"] == a.profile_arn else []
    if not roles:
        records.set_profile_credentials(tx, a.instance_id, None, now, None)
        return
    role = roles[0]
    session = sessions.create(
        tx,
        a.account_id,
        "",
        now,
        CREDENTIALS_SECONDS,
        role_name=str(role["RoleName"]),
        role_id=str(role["RoleId"]),
        session_name=a.instance_id,
    )
    records.set_profile_credentials(tx, a.instance_id, session.access_key_id, now, session.expires)


def _is_due(a: records.ProfileAssociation, now: float) -> bool:
    if a.expires is None:  # no credentials: the profile had no role when last looked at
        return a.issued is None or now - a.issued >= REFRESH_BEFORE
    return a.expires - now <= REFRESH_BEFORE


def refresh_due(tx: Tx, now: float) -> int:
    """Replace the credentials of every live instance whose credentials are due; how many were."""
    due = [a for a in records.profile_associations(tx) if _is_due(a, now)]
    for a in due:
        _issue(tx, a, now)
    return len(due)


def any_due(tx: Tx, now: float) -> bool:
    return any(_is_due(a, now) for a in records.profile_associations(tx))


async def refresh_once(ctx: RoleContext) -> int:
    """Replace what is due now (one indexed read when nothing is); how many instances' credentials were."""
    now = ctx.identity.clock()
    if not await ctx.store.read(lambda tx: any_due(tx, now)):
        return 0
    count: int = await ctx.store.write(lambda tx: refresh_due(tx, now), durable=True)
    log.info("instance credentials refreshed count=%d", count)
    return count


async def run_refresher(ctx: RoleContext) -> None:
    """The CLC's loop that keeps instance credentials ahead of their expiry (never returns)."""
    while True:
        try:
            await refresh_once(ctx)
        except Exception:  # a store hiccup: tried again at the next check
            log.exception("instance credentials refresh failed")
        await trio.sleep(REFRESH_CHECK_SECONDS)


def instance_iam(tx: Tx, instance_ids: list[str]) -> dict[str, cluster.InstanceIam]:
    """What the metadata service of each of these instances serves under iam/."""
    out: dict[str, cluster.InstanceIam] = {}
    for a in records.profile_associations(tx, instance_ids):
        session = sessions.load(tx, a.access_key_id) if a.access_key_id else None
        if (
            session is None
        ):  # no role, or its session is gone: iam/info only (the key keeps the version steady)
            out[a.instance_id] = cluster.InstanceIam(
                a.profile_arn, a.profile_id, access_key_id=a.access_key_id, issued=a.issued or 0.0
            )
            continue
        out[a.instance_id] = cluster.InstanceIam(
            a.profile_arn,
            a.profile_id,
            role_name=session.role_name,
            access_key_id=session.access_key_id,
            secret_key=session.secret_key,
            token=session.token,
            expires=session.expires,
            issued=a.issued or 0.0,
        )
    return out


# -- DescribeIamInstanceProfileAssociations ----------------------------------------------------------------

ASSOCIATION_FILTERS: FilterSet[records.ProfileAssociation] = FilterSet(
    {
        "instance-id": lambda a: a.instance_id,
        "state": lambda a: "associated",
    }
)
ASSOCIATION_PAGES = PageLimits(5, 1000)


async def describe_associations(
    call: Ec2Call, req: m.DescribeIamInstanceProfileAssociationsRequest
) -> m.DescribeIamInstanceProfileAssociationsResult:
    """The account's live instances' profile associations (an instance's profile is fixed at launch here:
    Associate/Replace/DisassociateIamInstanceProfile are not built)."""
    account = call.account_id
    found = await call.ctx.store.read(lambda tx: records.profile_associations(tx, account_id=account))
    if req.association_ids:
        known = {a.association_id for a in found}
        missing = [i for i in req.association_ids if i not in known]
        if missing:
            raise Ec2Error(
                "InvalidAssociationID.NotFound", f"An association ID was not found: {', '.join(missing)}"
            )
        found = [a for a in found if a.association_id in set(req.association_ids)]
    found = ASSOCIATION_FILTERS.apply(req.filters, found)
    page, token = paginate(
        found, lambda a: a.association_id, req.max_results, req.next_token, ASSOCIATION_PAGES
    )
    return m.DescribeIamInstanceProfileAssociationsResult(
        iam_instance_profile_associations=[
            m.IamInstanceProfileAssociation(
                association_id=a.association_id,
                instance_id=a.instance_id,
                iam_instance_profile=m.IamInstanceProfile(arn=a.profile_arn, id=a.profile_id),
                state="associated",
                timestamp=datetime.fromtimestamp(a.associated, UTC),
            )
            for a in page
        ],
        next_token=token,
    )


HANDLERS: dict[str, Handler] = {"DescribeIamInstanceProfileAssociations": describe_associations}
