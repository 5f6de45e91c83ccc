"""Usage reports agree with the events: a cloud (CLC, Walrus and a real SC in one process, an in-process
stand-in CC for its zone) runs known instances, volumes, an elastic IP and S3 requests for known times on a
fast clock (the usage log's and Walrus's, set by the test; signatures and polls keep the real one), and
`euca admin report` and the Reporting API give back those instance-hours, GB-hours and request counts to the
unit, in CSV and JSON. The HTML page is rendered by headless Chromium and its screenshot kept."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from click.testing import CliRunner

from euca.cli import main
from euca.roles.clc.usage import records as usage_records
from euca.roles.walrus import usage as walrus_usage
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.instances import instances_of, register_tiny_image, unique, wait_for, wait_state
from helpers.server import admin_cli, start_euca

ZONE = unique("zuse")
H = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the fast clock's start (before the real now, so nothing is open)
MIB = 1024 * 1024


class FastClock:
    """The clock the usage log and Walrus's counters stamp with; the test moves it."""

    def __init__(self, at: float):
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = start_euca(
        tmp_path_factory.mktemp("euca-usage"),
        roles="clc,walrus,sc",
        overrides={
            "clc.poll_interval": 0.2,
            "cc.cluster": ZONE,
            "sc.capacity_gb": 50,
            "walrus.usage_flush_interval": 0.1,
            "walrus.usage_sample_interval": 0.1,
        },
    )
    yield next(server)
    server.close()


@pytest.fixture(scope="module")
def clock() -> Iterator[FastClock]:
    fast = FastClock(T0 - H)
    usage_records.set_clock(fast)
    walrus_usage.set_clock(fast)
    yield fast
    usage_records.set_clock(time.time)
    walrus_usage.set_clock(time.time)


@pytest.fixture(scope="module")
def zone(cloud: Any, ec2: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    fake = FakeCluster(
        cloud.ctx.ca, tmp_path_factory.mktemp("fake-cc"), ZONE, [FakeNode(f"{ZONE}-n1", cores=8)], 57
    )
    with fake:
        register_with(cloud, ec2, fake)
        sc_port = cloud.ctx.endpoints["sc"].rsplit(":", 1)[1]
        admin_cli(cloud, "register-sc", ZONE, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")
        wait_for(
            "the SC polled up",
            lambda: (
                f"SERVICE\tstorage\t{ZONE}" in admin_cli(cloud, "describe-services")
                and "up"
                in admin_cli(cloud, "describe-services").split(f"SERVICE\tstorage\t{ZONE}")[1].split("\n")[0]
            ),
        )
        yield ZONE


def report(cloud: Any, kind: str, fmt: str, *extra: str) -> str:
    return admin_cli(
        cloud,
        "report",
        "--type",
        kind,
        "--format",
        fmt,
        "--start",
        "2026-01-01T00:00:00Z",
        "--end",
        "2026-01-01T04:00:00Z",
        *extra,
    )


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def line(table: list[dict[str, str]], level: str, **match: str) -> dict[str, str]:
    found = [r for r in table if r["level"] == level and all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (level, match, table)
    return found[0]


def reporting_api(cloud: Any, creds: Any, **params: str) -> httpx.Response:
    """GET /services/Reporting?Action=GenerateReport&..., signed (SigV4) with `creds`."""
    url = (
        cloud.url.rstrip("/")
        + "/services/Reporting?"
        + str(httpx.QueryParams({"Action": "GenerateReport", **params}))
    )
    req = AWSRequest(method="GET", url=url)
    SigV4Auth(BotoCredentials(creds.access_key, creds.secret_key), "ec2", cloud.region).add_auth(req)
    return httpx.get(url, headers=dict(req.headers.items()))


@pytest.fixture(scope="module")
def usage(
    cloud: Any,
    ec2: Any,
    ec2_other: Any,
    zone: str,
    clock: FastClock,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Runs the scenario once on the fast clock; what it made (ids, names)."""
    image_id = register_tiny_image(cloud, tmp_path_factory.mktemp("usage-image"))
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    s3_other = cloud.client("s3", creds=cloud.other, request_checksum_calculation="when_required")
    bucket = unique("usage")

    clock.at = T0
    placement = {"AvailabilityZone": zone}
    mine = instances_of(
        ec2.run_instances(
            ImageId=image_id, MinCount=2, MaxCount=2, InstanceType="m1.small", Placement=placement
        )
    )
    theirs = instances_of(
        ec2_other.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="c1.medium", Placement=placement
        )
    )
    wait_state(ec2, mine, "running")
    wait_state(ec2_other, theirs, "running")
    my_volume = ec2.create_volume(AvailabilityZone=zone, Size=10)["VolumeId"]
    their_volume = ec2_other.create_volume(AvailabilityZone=zone, Size=4)["VolumeId"]
    eip = ec2.allocate_address()
    ec2.associate_address(InstanceId=mine[1], PublicIp=eip["PublicIp"])
    s3_other.create_bucket(Bucket=bucket)
    s3_other.put_object(Bucket=bucket, Key="one-mib", Body=b"x" * MIB)
    for _ in range(2):
        assert len(s3_other.get_object(Bucket=bucket, Key="one-mib")["Body"].read()) == MIB
    # Walrus flushes its counts and samples the bucket (stamped T0) before the clock moves on.
    wait_for(
        "S3 usage flushed and sampled",
        lambda: (
            (t := rows(report(cloud, "s3", "csv", "--size-unit", "KB")))
            and any(
                r["resource"] == bucket and r["requests"] == "4" and r["max stored (KB)"] == "1024" for r in t
            )
        ),
    )

    clock.at = T0 + 2 * H
    ec2.terminate_instances(InstanceIds=mine[:1])
    ec2.delete_volume(VolumeId=my_volume)
    clock.at = T0 + 3 * H
    ec2.terminate_instances(InstanceIds=mine[1:])
    ec2_other.terminate_instances(InstanceIds=theirs)
    ec2_other.delete_volume(VolumeId=their_volume)
    ec2.release_address(PublicIp=eip["PublicIp"])
    wait_state(ec2, mine, "terminated")
    wait_state(ec2_other, theirs, "terminated")
    clock.at = T0 + 5 * H  # after the reports' range: nothing more lands in it
    return {
        "mine": mine,
        "theirs": theirs,
        "bucket": bucket,
        "ip": eip["PublicIp"],
        "my_volume": my_volume,
        "their_volume": their_volume,
        "admin": cloud.admin.account,
        "other": cloud.other.account,
    }


def test_instance_hours_to_the_unit_in_csv_and_json(cloud: Any, usage: dict[str, Any]) -> None:
    table = rows(report(cloud, "instance", "csv"))
    admin, other = usage["admin"], usage["other"]
    assert line(table, "zone", zone=ZONE)["time (hours)"] == "8"
    assert line(table, "account", account=admin)["time (hours)"] == "5"
    assert line(table, "account", account=admin)["instances"] == "2"
    assert line(table, "user", account=admin, user="admin")["time (hours)"] == "5"
    a1, a2 = usage["mine"]
    assert line(table, "resource", resource=a1)["time (hours)"] == "2"
    assert line(table, "resource", resource=a2)["time (hours)"] == "3"
    (o1,) = usage["theirs"]
    theirs = line(table, "resource", resource=o1)
    assert (theirs["account"], theirs["type"], theirs["time (hours)"]) == (other, "c1.medium", "3")
    assert line(table, "account", account=other)["time (hours)"] == "3"

    minutes = rows(report(cloud, "instance", "csv", "--time-unit", "minutes"))
    assert line(minutes, "zone", zone=ZONE)["time (minutes)"] == "480"

    doc = json.loads(report(cloud, "instance", "json"))
    (z,) = [z for z in doc["zones"] if z["zone"] == ZONE]
    accounts = {a["account"]: a for a in z["accounts"]}
    assert accounts[admin]["totals"] == {"instances": 2, "type": "m1.small", "time (hours)": 5}
    assert accounts[other]["users"][0]["resources"] == [
        {"id": o1, "instances": 1, "type": "c1.medium", "time (hours)": 3}
    ]
    # The chart's series: instances running in 24 spans of 10 minutes (2 for 2 hours, then 1 for 1 hour).
    assert doc["series"]["accounts"][admin] == [2] * 12 + [1] * 6 + [0] * 6


def test_volume_gb_hours_and_elastic_ip_hours(cloud: Any, usage: dict[str, Any]) -> None:
    table = rows(report(cloud, "volume", "csv"))
    assert line(table, "resource", resource=usage["my_volume"])["GB-hours"] == "20"  # 10 GiB for 2 h
    assert line(table, "resource", resource=usage["their_volume"])["GB-hours"] == "12"  # 4 GiB for 3 h
    zone_line = line(table, "zone", zone=ZONE)
    assert (zone_line["volumes"], zone_line["max size (GB)"], zone_line["GB-hours"]) == ("2", "10", "32")
    ips = rows(report(cloud, "elastic-ip", "csv"))
    ip = line(ips, "resource", resource=usage["ip"])
    assert (ip["allocated (hours)"], ip["associated (hours)"]) == ("3", "3")


def test_s3_requests_and_bytes_to_the_unit(cloud: Any, usage: dict[str, Any]) -> None:
    table = rows(report(cloud, "s3", "csv", "--size-unit", "KB"))
    b = line(table, "resource", resource=usage["bucket"])
    assert b["account"] == usage["other"]
    # CreateBucket, PutObject, 2 GetObjects; 1 MiB in, 2 MiB out; 1 MiB held for the 4 hours of the range.
    assert (b["requests"], b["in (KB)"], b["out (KB)"]) == ("4", "1024", "2048")
    assert (b["max stored (KB)"], b["KB-hours"]) == ("1024", "4096")
    doc = json.loads(report(cloud, "s3", "json", "--size-unit", "MB", "--account", usage["other"]))
    (z,) = doc["zones"]
    (account,) = z["accounts"]
    assert account["account"] == usage["other"]
    (res,) = [r for r in account["users"][0]["resources"] if r["id"] == usage["bucket"]]
    assert res == {
        "id": usage["bucket"],
        "buckets": 1,
        "max stored (MB)": 1,
        "MB-hours": 4,
        "requests": 4,
        "in (MB)": 1,
        "out (MB)": 2,
    }


def test_capacity_report(cloud: Any, usage: dict[str, Any]) -> None:
    table = rows(report(cloud, "capacity", "csv"))
    cores = line(table, "resource", zone=ZONE, resource="cores")
    assert cores["total"] == "8"
    assert line(table, "resource", zone=ZONE, resource="volume storage (GB)")["total"] == "50"


def test_reporting_api_for_the_cloud_admin_and_an_account_admin(cloud: Any, usage: dict[str, Any]) -> None:
    params = {
        "Type": "instance",
        "Format": "csv",
        "StartDate": "2026-01-01T00:00:00Z",
        "EndDate": "2026-01-01T04:00:00Z",
    }
    everyone = reporting_api(cloud, cloud.admin, **params)
    assert everyone.status_code == 200 and everyone.headers["content-type"].startswith("text/csv")
    assert everyone.text == report(cloud, "instance", "csv")
    own = reporting_api(cloud, cloud.other, **params)
    assert own.status_code == 200
    accounts = {r["account"] for r in rows(own.text) if r["level"] == "account"}
    assert accounts == {usage["other"]}
    assert line(rows(own.text), "account", account=usage["other"])["time (hours)"] == "3"
    refused = reporting_api(cloud, cloud.other, Account=usage["admin"], **params)
    assert refused.status_code == 403 and "<Code>AccessDenied</Code>" in refused.text
    assert reporting_api(cloud, cloud.other, **{**params, "Type": "capacity"}).status_code == 403
    capacity = reporting_api(cloud, cloud.admin, **{**params, "Type": "capacity"})
    assert capacity.status_code == 200 and "cores" in capacity.text
    one = reporting_api(cloud, cloud.admin, Account=usage["other"], **{**params, "Format": "json"})
    assert one.headers["content-type"] == "application/json"
    assert [a["account"] for z in one.json()["zones"] for a in z["accounts"]] == [usage["other"]]
    bad = reporting_api(cloud, cloud.admin, **{**params, "TimeUnit": "weeks"})
    assert bad.status_code == 400 and "<Code>InvalidParameterValue</Code>" in bad.text
    missing = reporting_api(cloud, cloud.admin, Format="csv")
    assert missing.status_code == 400 and "<Code>MissingParameter</Code>" in missing.text
    # A user of an account who is not its admin is refused.
    name = unique("viewer")
    admin_cli(cloud, "create-user", "--account", usage["other"], name)
    key_line = admin_cli(
        cloud, "create-access-key", "--account", usage["other"], "--user", name, "--no-write-credentials"
    )
    _, key_id, secret = key_line.split("\n")[0].split("\t")
    viewer = type(cloud.other)(key_id, secret, usage["other"], cloud.other.canonical_id)
    assert reporting_api(cloud, viewer, **params).status_code == 403
    # ... until a policy allows eureport:GenerateReport: then its own account only; a Deny wins again.
    iam = cloud.client("iam", creds=cloud.other)
    statement = {"Effect": "Allow", "Action": "eureport:GenerateReport", "Resource": "*"}
    iam.put_user_policy(
        UserName=name, PolicyName="reports", PolicyDocument=json.dumps({"Statement": [statement]})
    )
    allowed = reporting_api(cloud, viewer, **params)
    assert allowed.status_code == 200, allowed.text
    assert {r["account"] for r in rows(allowed.text) if r["level"] == "account"} == {usage["other"]}
    assert reporting_api(cloud, viewer, Account=usage["admin"], **params).status_code == 403
    deny = {"Effect": "Deny", "Action": "eureport:*", "Resource": "*"}
    iam.put_user_policy(UserName=name, PolicyName="no", PolicyDocument=json.dumps({"Statement": [deny]}))
    assert reporting_api(cloud, viewer, **params).status_code == 403
    unsigned = httpx.get(cloud.url.rstrip("/") + "/services/Reporting?Action=GenerateReport&Type=instance")
    assert unsigned.status_code in (400, 401, 403)


def test_euca_report_asks_the_api_with_the_users_keys(cloud: Any, usage: dict[str, Any]) -> None:
    """`euca report` (an account admin's client, from a sourced eucarc) gets what the API answers."""
    env = {
        "EC2_URL": cloud.url.rstrip("/") + "/services/compute",
        "AWS_ACCESS_KEY_ID": cloud.other.access_key,
        "AWS_SECRET_ACCESS_KEY": cloud.other.secret_key,
    }
    span = ["--start", "2026-01-01T00:00:00Z", "--end", "2026-01-01T04:00:00Z"]
    result = CliRunner().invoke(main, ["report", "--type", "volume", *span], env=env)
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert {r["account"] for r in table if r["level"] == "account"} == {usage["other"]}
    assert line(table, "resource", resource=usage["their_volume"])["GB-hours"] == "12"
    refused = CliRunner().invoke(main, ["report", "--account", usage["admin"], *span], env=env)
    assert refused.exit_code != 0 and "AccessDenied" in refused.output


def test_html_page_rendered_by_chromium(cloud: Any, usage: dict[str, Any], tmp_path: Path) -> None:
    page = tmp_path / "instance-report.html"
    admin_cli(
        cloud,
        "report",
        "--type",
        "instance",
        "--format",
        "html",
        "--start",
        "2026-01-01T00:00:00Z",
        "--end",
        "2026-01-01T04:00:00Z",
        "--output",
        str(page),
    )
    text = page.read_text()
    assert "<script" not in text and "<svg" in text
    assert f">{usage['mine'][0]}<" in text and f"account {usage['other']}" in text
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (scripts/install-deps.sh installs Debian's)")
    shot = tmp_path / "instance-report.png"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,1100",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    print(f"usage report screenshot: {shot}")
