"""Usage reports out of the CLC's store, for `euca admin report` and the Reporting path of the API.

Above the resources (it reads the usage log and, for the capacity report, the topology and the address pool),
as admin.py is. The figures are made by usage/report.py (pure) and rendered by usage/render.py.

The API is Eucalyptus's Reporting service: `GET|POST /services/Reporting?Action=GenerateReport&Type=instance
&Format=csv&StartDate=...&EndDate=...&TimeUnit=hours&SizeUnit=GB[&Account=...]`, signed as any Query API
request (SigV4 or SigV2, an access key of the caller). The answer is the report itself (text/csv,
application/json or text/html). The action is judged by the caller's identity policies like every other,
as `eureport:GenerateReport` (Eucalyptus's Reporting service let only its system admin in and named no IAM
action; `eureport` follows its `eu*` vendors for its own services and is the command's name): an account's
admin user is allowed without a policy, any other user or role only by a policy that allows it (an
explicit Deny wins). The cloud admin account (`eucalyptus`) sees every account or the one named, and the
capacity; any other caller sees its own account only (AccessDenied otherwise).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from euca.core.auth import AuthError, BodyTooLarge, authenticate_query
from euca.core.authorize import identity_verdict, request_keys
from euca.core.http import Request, Response
from euca.core.identity import Account, Identity
from euca.core.roles import RoleContext
from euca.core.store import Store, Tx
from euca.protocol.ec2 import wire
from euca.protocol.ec2.wire import Ec2Error
from euca.protocol.policy import ALLOW
from euca.roles.clc.addresses import records as addresses
from euca.roles.clc.topology import records as topology
from euca.roles.clc.usage import records as usage
from euca.roles.clc.usage import render, report
from euca.roles.clc.usage.report import Inputs, ReportError

log = logging.getLogger("euca.clc")

# The IAM action a report is judged as (see the module's docstring).
REPORT_ACTION = "eureport:GenerateReport"
GIB = 1024**3
MIB = 1024**2
DEFAULT_SPAN = 7 * 86400  # a report without a start covers the week before its end
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
}
MAX_BODY = 64 * 1024


def parse_time(text: str) -> float:
    """A report's start or end: an ISO 8601 date or date and time (UTC unless it says), or Unix seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"not a date or time: {text!r} (ISO 8601, e.g. 2026-12-01T00:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class ReportRequest:
    kind: str
    start: float
    end: float
    time_unit: str = "hours"
    size_unit: str = "GB"
    fmt: str = "csv"
    account_id: str | None = None  # one account's usage; None: every account's


def check(req: ReportRequest) -> None:
    report.columns_for(req.kind, req.time_unit, req.size_unit)
    report.check_units(req.time_unit, req.size_unit)
    if req.fmt not in render.FORMATS:
        raise ReportError(f"unknown format {req.fmt!r} (one of {', '.join(render.FORMATS)})")
    if req.end <= req.start:
        raise ReportError("the report's end must be after its start")


def capacity(tx: Tx) -> list[tuple[str, str, float, float, bool]]:
    """What each zone has and uses as its CC and SC last reported, and the public address pool."""
    out: list[tuple[str, str, float, float, bool]] = []
    storage = {sc.cluster: sc for sc in topology.list_storage(tx)}
    for c in topology.list_clusters(tx):
        up = [n for n in c.nodes if n.state == "up"]
        out.append(
            (
                c.zone,
                "cores",
                sum(n.cores_max for n in up),
                sum(n.cores_max - n.cores_free for n in up),
                False,
            )
        )
        out.append(
            (
                c.zone,
                "memory",
                sum(n.memory_mb_max for n in up) * MIB,
                sum(n.memory_mb_max - n.memory_mb_free for n in up) * MIB,
                True,
            )
        )
        out.append(
            (
                c.zone,
                "instance disk",
                sum(n.disk_gb_max for n in up) * GIB,
                sum(n.disk_gb_max - n.disk_gb_free for n in up) * GIB,
                True,
            )
        )
        sc = storage.get(c.name)
        if sc is not None:
            out.append((c.zone, "volume storage", sc.capacity_gb * GIB, sc.allocated_gb * GIB, True))
    pool = len(addresses.load_pool(tx))
    if pool:
        out.append((report.NO_ZONE, "public addresses", pool, pool - addresses.free_count(tx), False))
    return out


def read_inputs(tx: Tx, req: ReportRequest) -> Inputs:
    """What the report is made of (accounts and owners are the identity's, added by `produce`)."""
    if req.kind == "capacity":
        return Inputs(capacity=capacity(tx))
    if req.kind == "s3":
        return Inputs(samples=usage.s3_samples(tx, req.end), traffic=usage.s3_traffic(tx, req.start, req.end))
    kind = {"instance": usage.INSTANCE, "volume": usage.VOLUME, "snapshot": usage.SNAPSHOT}.get(
        req.kind, usage.ADDRESS
    )
    return Inputs(events=usage.events(tx, kind, req.end, req.account_id))


def produce(inputs: Inputs, accounts: list[Account], req: ReportRequest, now: float) -> str:
    """The report rendered (pure, given what was read)."""
    full = Inputs(
        events=inputs.events,
        samples=inputs.samples,
        traffic=inputs.traffic,
        owners={a.canonical_id: a.account_id for a in accounts},
        accounts={a.account_id: a.name for a in accounts},
        capacity=inputs.capacity,
    )
    made = report.build(
        req.kind,
        full,
        start=req.start,
        end=req.end,
        now=now,
        time_unit=req.time_unit,
        size_unit=req.size_unit,
        account_id=req.account_id,
    )
    return render.render(made, req.fmt)


def generate(store: Store, identity: Identity, req: ReportRequest, now: float | None = None) -> str:
    """The report, read and made on the calling thread (the CLI; the API runs this in a worker thread)."""
    check(req)
    inputs = store.read_sync(lambda tx: read_inputs(tx, req))
    return produce(inputs, identity.list_accounts(), req, time.time() if now is None else now)


# -- the API ---------------------------------------------------------------------------------------------


def _account_of(accounts: list[Account], text: str) -> str:
    for a in accounts:
        if text in (a.account_id, a.name):
            return a.account_id
    raise Ec2Error("InvalidParameterValue", f"No such account: {text}")


class ReportApp:
    """Eucalyptus's Reporting service path on the CLC (GenerateReport)."""

    name = "clc-reporting"
    services: frozenset[str] = frozenset()
    path_prefixes = ("/services/Reporting",)

    def __init__(self, ctx: RoleContext):
        self.ctx = ctx

    def claims(self, request: Request) -> bool:
        return False

    async def handle(self, request: Request) -> Response:
        request_id = wire.new_request_id()
        try:
            return await self._handle(request)
        except Ec2Error as e:
            return Response(
                e.status, [("Content-Type", "text/xml;charset=UTF-8")], wire.render_error(e, request_id)
            )
        except Exception:
            log.exception("report request failed request_id=%s", request_id)
            error = Ec2Error("InternalError", "An internal error has occurred.")
            return Response(
                500, [("Content-Type", "text/xml;charset=UTF-8")], wire.render_error(error, request_id)
            )

    async def _handle(self, request: Request) -> Response:
        try:
            params, auth = await authenticate_query(
                request,
                self.ctx.identity,
                service="ec2",
                region=self.ctx.config.region,
                max_body=MAX_BODY,
                parse_form=wire.parse_form,
            )
        except BodyTooLarge:
            raise Ec2Error("InvalidParameterValue", "The request body is too large.") from None
        except AuthError as e:
            raise Ec2Error("AuthFailure", e.message, 401 if e.status < 500 else e.status) from None
        principal = auth.principal
        if principal is None:
            raise Ec2Error("AuthFailure", "AWS was not able to validate the provided access credentials", 401)
        action = params.get("Action", "GenerateReport")
        if action != "GenerateReport":
            raise Ec2Error("InvalidAction", f"The action {action} is not valid for this web service.")
        keys = request_keys(principal, request, self.ctx.identity.clock())
        verdict = await identity_verdict(self.ctx.identity, principal, REPORT_ACTION, "*", keys)
        if verdict != ALLOW:
            raise Ec2Error("AccessDenied", f"You are not authorized to perform: {REPORT_ACTION}", 403)
        accounts = await trio.to_thread.run_sync(self.ctx.identity.list_accounts)
        wanted = params.get("Account")
        if principal.is_cloud_admin:
            account_id = _account_of(accounts, wanted) if wanted else None
        else:
            account_id = principal.account_id
            if wanted and _account_of(accounts, wanted) != account_id:
                raise Ec2Error("AccessDenied", "An account's users see their own account's usage only.", 403)
        req = self._request(params, account_id)
        if req.kind == "capacity" and not principal.is_cloud_admin:
            raise Ec2Error("AccessDenied", "The cloud's capacity is reported to the cloud admin only.", 403)
        inputs = await self.ctx.store.read(lambda tx: read_inputs(tx, req))
        text = await trio.to_thread.run_sync(produce, inputs, accounts, req, time.time())
        return Response(200, [("Content-Type", CONTENT_TYPES[req.fmt])], text.encode())

    @staticmethod
    def _request(params: dict[str, Any], account_id: str | None) -> ReportRequest:
        kind = params.get("Type")
        if not kind:
            raise Ec2Error("MissingParameter", "The request must contain the parameter Type")
        try:
            end = parse_time(params["EndDate"]) if params.get("EndDate") else time.time()
            start = parse_time(params["StartDate"]) if params.get("StartDate") else end - DEFAULT_SPAN
            req = ReportRequest(
                kind,
                start,
                end,
                params.get("TimeUnit", "hours"),
                params.get("SizeUnit", "GB"),
                params.get("Format", "csv").lower(),
                account_id,
            )
            check(req)
        except ReportError as e:
            raise Ec2Error("InvalidParameterValue", str(e)) from None
        return req
