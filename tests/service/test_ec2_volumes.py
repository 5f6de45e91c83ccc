"""EBS volumes through the EC2 API (boto3 and the aws CLI) against a CLC whose zone has a real SC role (its
files backend, mutual TLS, in the same process) beside an in-process stand-in for the zone's CC, and a
second zone with a CC and no SC."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from click.testing import CliRunner

from euca.cli import main
from helpers.fake_cluster import FakeCluster, FakeNode
from helpers.instances import unique, wait_for
from helpers.server import join_sc_host, start_euca

ZONE = unique("zvol")
CAPACITY = 50  # GiB the SC promises in all: more than the tests hold at once


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # The SC's certificate names its cluster (cc.cluster): the zone registered below.
    server = start_euca(
        tmp_path_factory.mktemp("euca-volumes"),
        roles="clc,walrus,sc",
        overrides={"clc.poll_interval": 0.2, "cc.cluster": ZONE, "sc.capacity_gb": CAPACITY},
    )
    yield next(server)
    server.close()


def admin(euca: Any, *args: str) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(euca.data_dir), "admin", *args])
    assert result.exit_code == 0, result.output
    return result.output


def error_code(excinfo: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def _register(cloud: Any, fake: FakeCluster) -> None:
    admin(
        cloud,
        "register-cluster",
        fake.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(fake.port),
        "--no-join-token",
    )


@pytest.fixture(scope="module")
def zones(cloud: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(a zone with an SC, a zone without one)."""
    with_sc = FakeCluster(
        cloud.ctx.ca, tmp_path_factory.mktemp("fake-cc"), ZONE, [FakeNode(f"{ZONE}-n1")], 55
    )
    bare_name = unique("znosc")
    bare = FakeCluster(
        cloud.ctx.ca, tmp_path_factory.mktemp("fake-cc2"), bare_name, [FakeNode(f"{bare_name}-n1")], 55
    )
    with with_sc, bare:
        _register(cloud, with_sc)
        _register(cloud, bare)
        sc_port = cloud.ctx.endpoints["sc"].rsplit(":", 1)[1]
        out = admin(cloud, "register-sc", ZONE, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")
        assert out.startswith(f"STORAGE\t{ZONE}\thttps://127.0.0.1:{sc_port}")
        wait_for(
            "the SC polled up",
            lambda: (
                f"SERVICE\tstorage\t{ZONE}" in admin(cloud, "describe-services")
                and "\tup\t"
                in next(
                    line for line in admin(cloud, "describe-services").splitlines() if "\tstorage\t" in line
                )
            ),
        )
        yield ZONE, bare_name


@pytest.fixture(scope="module")
def ec2(cloud: Any) -> Any:
    return cloud.client("ec2")


def wait_volume(ec2: Any, volume_id: str, state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        (v,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        return v if v["State"] == state else None

    found: dict[str, Any] = wait_for(f"{volume_id} {state}", check)
    return found


def volume_file(cloud: Any, volume_id: str) -> Path:
    return Path(cloud.data_dir) / "sc" / "volumes" / f"{volume_id}.raw"


def test_create_describe_delete(cloud: Any, ec2: Any, zones: tuple[str, str]) -> None:
    zone, _ = zones
    made = ec2.create_volume(
        AvailabilityZone=zone,
        Size=2,
        VolumeType="gp2",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "data"}]}],
    )
    assert made["State"] == "creating"
    assert made["Size"] == 2 and made["AvailabilityZone"] == zone and made["VolumeType"] == "gp2"
    assert made["VolumeId"].startswith("vol-")
    v = wait_volume(ec2, made["VolumeId"], "available")
    assert v["Tags"] == [{"Key": "Name", "Value": "data"}]
    assert v["Attachments"] == []
    assert not v["Encrypted"]
    path = volume_file(cloud, made["VolumeId"])
    assert path.stat().st_size == 2 * 1024**3
    assert path.stat().st_blocks * 512 < 1024**2  # sparse
    ec2.delete_volume(VolumeId=made["VolumeId"])

    def gone() -> bool:
        try:
            ec2.describe_volumes(VolumeIds=[made["VolumeId"]])
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"] == "InvalidVolume.NotFound"
        return False

    wait_for("volume gone", gone)
    assert not path.exists()


def test_filters_and_pages(ec2: Any, zones: tuple[str, str]) -> None:
    zone, _ = zones
    tag = unique("batch")
    ids = [
        ec2.create_volume(
            AvailabilityZone=zone,
            Size=size,
            TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "batch", "Value": tag}]}],
        )["VolumeId"]
        for size in (1, 1, 3, 1, 1, 1)
    ]
    for volume_id in ids:
        wait_volume(ec2, volume_id, "available")
    mine = [{"Name": "tag:batch", "Values": [tag]}]
    listed = ec2.describe_volumes(Filters=mine)["Volumes"]
    assert sorted(v["VolumeId"] for v in listed) == sorted(ids)
    assert {v["VolumeType"] for v in listed} == {"standard"}
    big = ec2.describe_volumes(Filters=[*mine, {"Name": "size", "Values": ["3"]}])["Volumes"]
    assert [v["VolumeId"] for v in big] == [ids[2]]
    assert ec2.describe_volumes(Filters=[*mine, {"Name": "status", "Values": ["available"]}])["Volumes"]
    assert (
        len(ec2.describe_volumes(Filters=[*mine, {"Name": "availability-zone", "Values": [zone]}])["Volumes"])
        == 6
    )
    assert not ec2.describe_volumes(Filters=[*mine, {"Name": "attachment.instance-id", "Values": ["i-*"]}])[
        "Volumes"
    ]
    assert ec2.describe_volumes(Filters=[*mine, {"Name": "create-time", "Values": ["20*"]}])["Volumes"]
    pages = ec2.get_paginator("describe_volumes").paginate(Filters=mine, PaginationConfig={"PageSize": 5})
    seen = [v["VolumeId"] for page in pages for v in page["Volumes"]]
    assert sorted(seen) == sorted(ids)
    statuses = ec2.describe_volume_status(VolumeIds=ids[:2])["VolumeStatuses"]
    assert {s["VolumeStatus"]["Status"] for s in statuses} == {"ok"}
    attr = ec2.describe_volume_attribute(VolumeId=ids[0], Attribute="autoEnableIO")
    assert attr["VolumeId"] == ids[0] and attr["AutoEnableIO"]["Value"] is False
    for volume_id in ids:
        ec2.delete_volume(VolumeId=volume_id)


def test_client_token(ec2: Any, zones: tuple[str, str]) -> None:
    zone, _ = zones
    token = unique("tok")
    first = ec2.create_volume(AvailabilityZone=zone, Size=1, ClientToken=token)
    again = ec2.create_volume(AvailabilityZone=zone, Size=1, ClientToken=token)
    assert again["VolumeId"] == first["VolumeId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone, Size=2, ClientToken=token)
    assert error_code(e) == "IdempotentParameterMismatch"
    wait_volume(ec2, first["VolumeId"], "available")
    ec2.delete_volume(VolumeId=first["VolumeId"])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ({"Size": 0}, "InvalidParameterValue"),
        ({"Size": 16385}, "InvalidParameterValue"),
        ({"Size": 16385, "VolumeType": "gp2"}, "InvalidParameterValue"),
        ({"Size": 10, "VolumeType": "st1"}, "InvalidParameterValue"),
        ({"Size": 10, "VolumeType": "magnetic"}, "InvalidParameterValue"),
        ({"Size": 10, "VolumeType": "io1"}, "MissingParameter"),
        ({}, "MissingParameter"),
        ({"SnapshotId": "snap-12345678"}, "InvalidSnapshot.NotFound"),
        ({"SnapshotId": "nonsense"}, "InvalidSnapshotID.Malformed"),
        ({"Size": 1, "Encrypted": True}, "InvalidParameterValue"),
    ],
)
def test_create_refused(ec2: Any, zones: tuple[str, str], args: dict[str, Any], code: str) -> None:
    zone, _ = zones
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone, **args)
    assert error_code(e) == code


def test_zone_errors(ec2: Any, zones: tuple[str, str]) -> None:
    _, bare = zones
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone="no-such-zone", Size=1)
    assert error_code(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone=bare, Size=1)
    assert error_code(e) == "Unsupported"
    assert "no storage controller" in e.value.response["Error"]["Message"]


def test_unknown_and_malformed_ids(ec2: Any, cloud: Any, zones: tuple[str, str]) -> None:
    for call in (
        lambda: ec2.describe_volumes(VolumeIds=["vol-00000000"]),
        lambda: ec2.delete_volume(VolumeId="vol-00000000"),
        lambda: ec2.describe_volume_status(VolumeIds=["vol-00000000"]),
        lambda: ec2.describe_volume_attribute(VolumeId="vol-00000000", Attribute="autoEnableIO"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert error_code(e) == "InvalidVolume.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(VolumeIds=["volume-1"])
    assert error_code(e) == "InvalidVolumeID.Malformed"
    # another account's volume is not found for this one
    zone, _ = zones
    theirs = cloud.client("ec2", creds=cloud.other).create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_volume(VolumeId=theirs)
    assert error_code(e) == "InvalidVolume.NotFound"
    # ... but the cloud admin's verbose view shows every account's volumes (as euca-describe-volumes verbose)
    everyone = ec2.describe_volumes(VolumeIds=["verbose"])["Volumes"]
    assert theirs in {v["VolumeId"] for v in everyone}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cloud.client("ec2", creds=cloud.other).describe_volumes(VolumeIds=["verbose"])
    assert error_code(e) == "InvalidVolumeID.Malformed"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes(MaxResults=2)
    assert error_code(e) == "InvalidParameterValue"
    # Above 500 is answered with a page of at most 500, as EC2 documents (the aws CLI asks for 1000).
    assert theirs not in {v["VolumeId"] for v in ec2.describe_volumes(MaxResults=1000)["Volumes"]}


def test_aws_cli(cloud: Any, ec2: Any, zones: tuple[str, str]) -> None:
    zone, _ = zones
    made = json.loads(
        cloud.aws(
            "ec2", "create-volume", "--availability-zone", zone, "--size", "1", "--volume-type", "standard"
        ).stdout
    )
    wait_volume(ec2, made["VolumeId"], "available")
    listed = json.loads(cloud.aws("ec2", "describe-volumes", "--volume-ids", made["VolumeId"]).stdout)
    everything = json.loads(cloud.aws("ec2", "describe-volumes").stdout)  # paginated: MaxResults=1000
    assert made["VolumeId"] in {v["VolumeId"] for v in everything["Volumes"]}
    assert listed["Volumes"][0]["State"] == "available"
    tagged = cloud.aws("ec2", "create-tags", "--resources", made["VolumeId"], "--tags", "Key=k,Value=v")
    assert tagged.returncode == 0
    shown = json.loads(
        cloud.aws(
            "ec2",
            "describe-volumes",
            "--filters",
            "Name=tag:k,Values=v",
            "Name=volume-id,Values=" + made["VolumeId"],
        ).stdout
    )
    assert [v["VolumeId"] for v in shown["Volumes"]] == [made["VolumeId"]]
    cloud.aws("ec2", "delete-volume", "--volume-id", made["VolumeId"])


def test_sc_down_then_back(cloud: Any, ec2: Any, zones: tuple[str, str]) -> None:
    """A volume asked for while its SC cannot be reached stays creating; the poller makes it once the SC
    answers again (here: the SC registered at a wrong port, then at its own)."""
    zone, _ = zones
    sc_port = cloud.ctx.endpoints["sc"].rsplit(":", 1)[1]
    admin(cloud, "deregister-sc", zone)
    admin(cloud, "register-sc", zone, "--host", "127.0.0.1", "--port", "1", "--no-join-token")
    made = ec2.create_volume(AvailabilityZone=zone, Size=1)
    (v,) = ec2.describe_volumes(VolumeIds=[made["VolumeId"]])["Volumes"]
    assert v["State"] == "creating"
    admin(cloud, "deregister-sc", zone)
    admin(cloud, "register-sc", zone, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")
    wait_volume(ec2, made["VolumeId"], "available")
    assert volume_file(cloud, made["VolumeId"]).exists()
    # the same for a ModifyVolume: modifying while the SC is away, completed by the poller once it is back
    admin(cloud, "deregister-sc", zone)
    admin(cloud, "register-sc", zone, "--host", "127.0.0.1", "--port", "1", "--no-join-token")
    mod = ec2.modify_volume(VolumeId=made["VolumeId"], Size=2)["VolumeModification"]
    assert mod["ModificationState"] == "modifying"
    admin(cloud, "deregister-sc", zone)
    admin(cloud, "register-sc", zone, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")
    wait_for(
        "the volume grown",
        lambda: ec2.describe_volumes(VolumeIds=[made["VolumeId"]])["Volumes"][0]["Size"] == 2,
    )
    assert volume_file(cloud, made["VolumeId"]).stat().st_size == 2 * 1024**3
    ec2.delete_volume(VolumeId=made["VolumeId"])


def test_admin_sees_the_sc_space_in_zones_verbose(cloud: Any, ec2: Any, zones: tuple[str, str]) -> None:
    zone, bare = zones
    made = ec2.create_volume(AvailabilityZone=zone, Size=7)["VolumeId"]
    wait_volume(ec2, made, "available")

    def storage_row() -> str | None:
        rows = ec2.describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
        names = [r["ZoneName"] for r in rows]
        row = next((r for r in rows[names.index(zone) :] if r["ZoneName"] == "|- storage"), None)
        state = str(row["State"]) if row is not None else ""
        # "<GiB promised> / <GiB held> GiB files up", once a poll counted this volume
        return state if state.endswith("GiB files up") and int(state.split()[0]) >= 7 else None

    state = wait_for("the SC's space in the verbose zones", storage_row)
    assert state.endswith("GiB files up")
    rows = ec2.describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    names = [r["ZoneName"] for r in rows]
    bare_rows = names[names.index(bare) :]
    nxt = next((i for i, n in enumerate(bare_rows[1:], 1) if not n.startswith("|-")), len(bare_rows))
    assert "|- storage" not in bare_rows[:nxt]
    ec2.delete_volume(VolumeId=made)


def test_a_volume_beyond_the_sc_space_is_refused(ec2: Any, zones: tuple[str, str]) -> None:
    zone, _ = zones
    before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_volume(AvailabilityZone=zone, Size=CAPACITY + 1)
    assert error_code(e) == "InsufficientVolumeCapacity"
    assert {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]} == before


def test_one_box_registers_its_sc_and_volumes_survive_a_restart(tmp_path: Path) -> None:
    """`euca --role all` registers its own SC for its cluster at start; a volume made there is still
    there, available, after the whole cloud stops and starts again (the CLC's and the SC's tables)."""
    overrides = {"nc.libvirt_uri": "test:///default", "clc.poll_interval": 0.2, "cc.poll_interval": 0.2}
    server = start_euca(tmp_path / "onebox", roles="all", overrides=overrides)
    euca = next(server)
    try:
        services = admin(euca, "describe-services")
        cluster = euca.ctx.config.cc.cluster
        assert f"SERVICE\tstorage\t{cluster}\t{euca.ctx.config.zone}\t{euca.ctx.endpoints['sc']}" in services
        ec2 = euca.client("ec2")
        made = ec2.create_volume(AvailabilityZone=euca.ctx.config.zone, Size=1)["VolumeId"]
        wait_volume(ec2, made, "available")
    finally:
        server.close()
    server = start_euca(tmp_path / "onebox", roles="all", overrides=overrides)
    euca = next(server)
    try:
        ec2 = euca.client("ec2")
        (v,) = ec2.describe_volumes(VolumeIds=[made])["Volumes"]
        assert v["State"] == "available"
        # the SC listens on a new port (port 0): the one-box's registration followed it
        assert f"\t{euca.ctx.endpoints['sc']}\t" in admin(euca, "describe-services")
        ec2.delete_volume(VolumeId=made)
        wait_for(
            "the volume gone",
            lambda: not ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [made]}])["Volumes"],
        )
        assert not volume_file(euca, made).exists()
    finally:
        server.close()


def test_an_sc_on_another_host_joins_with_a_token(
    cloud: Any, ec2: Any, zones: tuple[str, str], tmp_path: Path
) -> None:
    """`euca admin register-sc` prints a token; an SC with its own data dir joins with it (certificate OU=sc,
    CN=the cluster, from the cloud CA), and the zone that had no SC takes volumes on it."""
    from euca.core.components import Components

    _, bare = zones
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = tmp_path / "sc-host"
    join_sc_host(cloud, bare, port, remote)
    assert Components(remote / "pki" / "components").name("sc") == bare
    server = start_euca(remote, roles="sc", overrides={"sc.listen.port": port})
    next(server)
    try:
        made = ec2.create_volume(AvailabilityZone=bare, Size=1)["VolumeId"]
        wait_volume(ec2, made, "available")
        assert (remote / "sc" / "volumes" / f"{made}.raw").exists()
        ec2.delete_volume(VolumeId=made)
        wait_for("the volume gone", lambda: not (remote / "sc" / "volumes" / f"{made}.raw").exists())
    finally:
        server.close()
        admin(cloud, "deregister-sc", bare)


def test_modify_volume_grows_it(cloud: Any, ec2: Any, zones: tuple[str, str]) -> None:
    zone, _ = zones
    made = ec2.create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_volumes_modifications(VolumeIds=[made])
    assert error_code(e) == "InvalidVolumeModification.NotFound"
    wait_volume(ec2, made, "available")
    mod = ec2.modify_volume(VolumeId=made, Size=3, VolumeType="gp2")["VolumeModification"]
    assert (mod["VolumeId"], mod["OriginalSize"], mod["TargetSize"]) == (made, 1, 3)
    assert (mod["OriginalVolumeType"], mod["TargetVolumeType"]) == ("standard", "gp2")
    assert mod["ModificationState"] in ("modifying", "completed")
    wait_for(
        "the modification completed",
        lambda: (
            ec2.describe_volumes_modifications(VolumeIds=[made])["VolumesModifications"][0][
                "ModificationState"
            ]
            == "completed"
        ),
    )
    (v,) = ec2.describe_volumes(VolumeIds=[made])["Volumes"]
    assert (v["Size"], v["VolumeType"]) == (3, "gp2")
    assert volume_file(cloud, made).stat().st_size == 3 * 1024**3
    listed = ec2.describe_volumes_modifications(
        Filters=[
            {"Name": "modification-state", "Values": ["completed"]},
            {"Name": "volume-id", "Values": [made]},
        ]
    )["VolumesModifications"]
    assert [x["TargetSize"] for x in listed] == [3]
    for args, code in (
        ({"Size": 2}, "InvalidParameterValue"),  # volumes only grow
        ({"Size": 3}, "InvalidParameterCombination"),  # nothing changes
        ({"Size": 16385}, "InvalidParameterValue"),
        ({"Size": CAPACITY * 2}, "InsufficientVolumeCapacity"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.modify_volume(VolumeId=made, **args)
        assert error_code(e) == code, args
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.modify_volume(VolumeId="vol-00000000", Size=5)
    assert error_code(e) == "InvalidVolume.NotFound"
    # the aws CLI, as a user grows a volume
    out = json.loads(cloud.aws("ec2", "modify-volume", "--volume-id", made, "--size", "4").stdout)
    assert out["VolumeModification"]["TargetSize"] == 4
    wait_for("4 GiB", lambda: ec2.describe_volumes(VolumeIds=[made])["Volumes"][0]["Size"] == 4)
    ec2.delete_volume(VolumeId=made)
