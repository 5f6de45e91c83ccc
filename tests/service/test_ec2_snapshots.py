"""EBS snapshots through the EC2 API (boto3 and the aws CLI): kept in Walrus by real SC roles, restored into
volumes in either zone. Zone A: a CLC, Walrus and an SC in this process, beside a stand-in CC. Zone B: a
stand-in CC and an SC that joined with a token and runs as a process of its own (to kill -9 it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from helpers.ec2 import error_code
from helpers.fake_cluster import FakeCluster, FakeNode, register_cluster
from helpers.instances import unique, wait_for
from helpers.seaweedfs import ON_BACKEND, backend_overrides
from helpers.server import EucaServer, admin_cli, join_sc_host, start_euca
from helpers.snapshots import (
    CHUNK,
    MIB,
    bucket_objects,
    file_sha256,
    snapshot_bucket,
    volume_path,
    wait_snapshot,
    write_random,
)
from helpers.walrus_process import free_port

ZONE = unique("zsnap")
GIB = 1024**3


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[EucaServer]:
    overrides: dict[str, Any] = {"clc.poll_interval": 0.2, "cc.cluster": ZONE, "sc.capacity_gb": 100}
    if ON_BACKEND:  # EUCA_TEST_WALRUS_BACKEND=s3: the snapshot chunks go to SeaweedFS through Walrus
        overrides |= backend_overrides(request.getfixturevalue("seaweedfs"))
    server = start_euca(tmp_path_factory.mktemp("euca-snapshots"), roles="clc,walrus,sc", overrides=overrides)
    yield next(server)
    server.close()


def _storage_up(cloud: EucaServer, cluster: str) -> bool:
    return any(
        line.startswith(f"SERVICE\tstorage\t{cluster}\t") and "\tup\t" in line
        for line in admin_cli(cloud, "describe-services").splitlines()
    )


class ScProcess:
    """Zone B's SC: joined with a token, run as `euca --role sc` in a process of its own."""

    def __init__(self, data_dir: Path, port: int):
        self.data_dir = data_dir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"sc-{port}.log"

    def start(self) -> None:
        args = [sys.executable, "-m", "euca.cli", "--role", "sc", "--data-dir", str(self.data_dir)]
        args += ["--set", "sc.listen.host=127.0.0.1", "--set", f"sc.listen.port={self.port}"]
        args += ["--set", "log_level=INFO"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))

    def kill_9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def zones(
    cloud: EucaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, ScProcess]]:
    """(zone A, its SC in this process; zone B, its SC a process of its own)."""
    zone_b = unique("zsnapb")
    cc_a = FakeCluster(cloud.ctx.ca, tmp_path_factory.mktemp("cc-a"), ZONE, [FakeNode(f"{ZONE}-n1")], 55)
    cc_b = FakeCluster(cloud.ctx.ca, tmp_path_factory.mktemp("cc-b"), zone_b, [FakeNode(f"{zone_b}-n1")], 55)
    with cc_a, cc_b:
        for fake in (cc_a, cc_b):
            register_cluster(cloud, fake)
        sc_port = cloud.ctx.endpoints["sc"].rsplit(":", 1)[1]
        admin_cli(cloud, "register-sc", ZONE, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")
        port = free_port()
        remote = tmp_path_factory.mktemp("sc-b") / "data"
        join_sc_host(cloud, zone_b, port, remote)
        sc_b = ScProcess(remote, port)
        sc_b.start()
        try:
            wait_for("both SCs up", lambda: _storage_up(cloud, ZONE) and _storage_up(cloud, zone_b))
            yield ZONE, zone_b, sc_b
        finally:
            sc_b.stop()


@pytest.fixture(scope="module")
def s3(cloud: EucaServer) -> Any:
    """S3 as the system account (the cloud admin's account here): the snapshot bucket is its own."""
    return cloud.client("s3")


def wait_volume(ec2: Any, volume_id: str, state: str = "available") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        (v,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        if v["State"] == "error" and state != "error":
            raise AssertionError(f"{volume_id} ended in error")
        return v if v["State"] == state else None

    found: dict[str, Any] = wait_for(f"{volume_id} {state}", check, timeout=120)
    return found


def new_volume(ec2: Any, zone: str, size: int = 1) -> str:
    volume_id: str = ec2.create_volume(AvailabilityZone=zone, Size=size)["VolumeId"]
    wait_volume(ec2, volume_id)
    return volume_id


def chunks(s3: Any, cloud: EucaServer) -> dict[str, int]:
    return bucket_objects(s3, snapshot_bucket(cloud.ctx), "chunks/")


def manifests(s3: Any, cloud: EucaServer) -> dict[str, int]:
    return bucket_objects(s3, snapshot_bucket(cloud.ctx), "manifests/")


def test_snapshot_incremental_and_restore_in_both_zones(
    cloud: EucaServer, ec2: Any, s3: Any, zones: tuple[str, str, ScProcess]
) -> None:
    """A full snapshot uploads the chunks that hold data; one after a few MiB changed uploads about that
    much; a volume restored from it (here or in the other zone) has the source's SHA-256."""
    zone_a, zone_b, sc_b = zones
    volume_id = new_volume(ec2, zone_a)
    path = volume_path(cloud.data_dir, volume_id)
    write_random(path, 0, 20 * MIB)  # chunks 0-4
    write_random(path, 600 * MIB + 123, 1 * MIB)  # chunk 150 (and 150's end)
    before = chunks(s3, cloud)
    made = ec2.create_snapshot(
        VolumeId=volume_id,
        Description="first",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "Name", "Value": "one"}]}],
    )
    assert made["State"] == "pending" and made["VolumeId"] == volume_id and made["VolumeSize"] == 1
    assert made["Description"] == "first" and made["SnapshotId"].startswith("snap-")
    assert made["Tags"] == [{"Key": "Name", "Value": "one"}] and made["Progress"] == "0%"
    first = wait_snapshot(ec2, made["SnapshotId"])
    assert first["Progress"] == "100%" and first["Tags"] == [{"Key": "Name", "Value": "one"}]
    full = {k: v for k, v in chunks(s3, cloud).items() if k not in before}
    assert len(full) == 6, full  # 5 + 1 chunks held data; 250 holes were never read
    assert f"manifests/{made['SnapshotId']}.json" in manifests(s3, cloud)

    write_random(path, 10 * MIB + 100, 3 * MIB)  # changes chunks 2 and 3 only
    grown = chunks(s3, cloud)
    second_id = ec2.create_snapshot(VolumeId=volume_id, Description="second")["SnapshotId"]
    wait_snapshot(ec2, second_id)
    added = {k: v for k, v in chunks(s3, cloud).items() if k not in grown}
    assert len(added) == 2 and sum(added.values()) == 2 * CHUNK  # ~3 MiB changed: 2 chunks travelled
    source_sha = file_sha256(path)

    for zone in (zone_a, zone_b):
        restored = ec2.create_volume(AvailabilityZone=zone, SnapshotId=second_id)
        assert restored["SnapshotId"] == second_id and restored["Size"] == 1
        wait_volume(ec2, restored["VolumeId"])
        where = cloud.data_dir if zone == zone_a else sc_b.data_dir
        assert file_sha256(volume_path(where, restored["VolumeId"])) == source_sha
        found = ec2.describe_volumes(Filters=[{"Name": "snapshot-id", "Values": [second_id]}])["Volumes"]
        assert restored["VolumeId"] in {v["VolumeId"] for v in found}
        ec2.delete_volume(VolumeId=restored["VolumeId"])

    bigger = ec2.create_volume(AvailabilityZone=zone_a, SnapshotId=made["SnapshotId"], Size=2)["VolumeId"]
    wait_volume(ec2, bigger)
    big_path = volume_path(cloud.data_dir, bigger)
    assert big_path.stat().st_size == 2 * GIB
    assert file_sha256(big_path, GIB) != source_sha  # the first snapshot: before the second write
    ec2.delete_volume(VolumeId=bigger)

    # Deleting the first snapshot sweeps the chunks only it named (the second names the rest).
    ec2.delete_snapshot(SnapshotId=made["SnapshotId"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_snapshots(SnapshotIds=[made["SnapshotId"]])
    assert error_code(e) == "InvalidSnapshot.NotFound"
    wait_for("the first snapshot's own chunks swept", lambda: len(chunks(s3, cloud)) == len(grown))
    assert f"manifests/{made['SnapshotId']}.json" not in manifests(s3, cloud)
    again = ec2.create_volume(AvailabilityZone=zone_a, SnapshotId=second_id)["VolumeId"]
    wait_volume(ec2, again)
    assert file_sha256(volume_path(cloud.data_dir, again)) == source_sha
    ec2.delete_volume(VolumeId=again)
    ec2.delete_snapshot(SnapshotId=second_id)
    ec2.delete_volume(VolumeId=volume_id)


def test_describe_filters_and_pages(cloud: EucaServer, ec2: Any, zones: tuple[str, str, ScProcess]) -> None:
    zone_a, _, _ = zones
    volume_id = new_volume(ec2, zone_a)
    ids = [ec2.create_snapshot(VolumeId=volume_id, Description=f"page {i}")["SnapshotId"] for i in range(6)]
    for snapshot_id in ids:
        wait_snapshot(ec2, snapshot_id)
    mine = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [volume_id]}])["Snapshots"]
    assert sorted(s["SnapshotId"] for s in mine) == sorted(ids)
    for name, values in [
        ("status", ["completed"]),
        ("description", ["page 3"]),
        ("volume-size", ["1"]),
        ("progress", ["100%"]),
        ("owner-id", [mine[0]["OwnerId"]]),
        ("snapshot-id", [ids[3]]),
    ]:
        found = ec2.describe_snapshots(
            Filters=[{"Name": "volume-id", "Values": [volume_id]}, {"Name": name, "Values": values}]
        )["Snapshots"]
        assert found and all(s["VolumeId"] == volume_id for s in found), name
    assert [
        s["SnapshotId"]
        for s in ec2.describe_snapshots(Filters=[{"Name": "description", "Values": ["page 3"]}])["Snapshots"]
    ] == [ids[3]]
    start = mine[0]["StartTime"].strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert ec2.describe_snapshots(Filters=[{"Name": "start-time", "Values": [start]}])["Snapshots"]
    ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "tier", "Value": "gold"}])
    tagged = ec2.describe_snapshots(Filters=[{"Name": "tag:tier", "Values": ["gold"]}])["Snapshots"]
    assert [s["SnapshotId"] for s in tagged] == [ids[1]]
    described = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[1]]}])["Tags"]
    assert described == [{"Key": "tier", "ResourceId": ids[1], "ResourceType": "snapshot", "Value": "gold"}]
    seen: list[str] = []
    kwargs: dict[str, Any] = {"MaxResults": 5, "Filters": [{"Name": "volume-id", "Values": [volume_id]}]}
    while True:
        page = ec2.describe_snapshots(**kwargs)
        assert len(page["Snapshots"]) <= 5
        seen += [s["SnapshotId"] for s in page["Snapshots"]]
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    assert sorted(seen) == sorted(ids)
    assert {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]} >= set(ids)
    for snapshot_id in ids:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    ec2.delete_volume(VolumeId=volume_id)


def test_errors(cloud: EucaServer, ec2: Any, zones: tuple[str, str, ScProcess]) -> None:
    zone_a, _, _ = zones

    def code(fn: Any, **kwargs: Any) -> str:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            fn(**kwargs)
        return error_code(e)

    assert code(ec2.create_snapshot, VolumeId="vol-12345678") == "InvalidVolume.NotFound"
    assert code(ec2.create_snapshot, VolumeId="volume-1") == "InvalidVolumeID.Malformed"
    assert code(ec2.describe_snapshots, SnapshotIds=["snap-12345678"]) == "InvalidSnapshot.NotFound"
    assert code(ec2.describe_snapshots, SnapshotIds=["snapshot-1"]) == "InvalidSnapshotID.Malformed"
    assert (
        code(ec2.describe_snapshots, SnapshotIds=["snap-12345678"], MaxResults=5)
        == "InvalidParameterCombination"
    )
    assert code(ec2.describe_snapshots, OwnerIds=["nobody!"]) == "InvalidUserID.Malformed"
    assert code(ec2.delete_snapshot, SnapshotId="snap-12345678") == "InvalidSnapshot.NotFound"
    assert code(ec2.delete_snapshot, SnapshotId="snap-x") == "InvalidSnapshotID.Malformed"
    assert (
        code(ec2.create_volume, AvailabilityZone=zone_a, SnapshotId="snap-12345678")
        == "InvalidSnapshot.NotFound"
    )
    assert (
        code(ec2.create_volume, AvailabilityZone=zone_a, SnapshotId="snap-?") == "InvalidSnapshotID.Malformed"
    )
    assert (
        code(ec2.describe_snapshot_attribute, SnapshotId="snap-12345678", Attribute="createVolumePermission")
        == "InvalidSnapshot.NotFound"
    )
    assert (
        code(ec2.copy_snapshot, SourceSnapshotId="snap-12345678", SourceRegion=cloud.region)
        == "InvalidSnapshot.NotFound"
    )
    volume_id = new_volume(ec2, zone_a, size=2)
    write_random(volume_path(cloud.data_dir, volume_id), 0, MIB)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_snapshot(ec2, snapshot_id)
    # sizes out of range: smaller than the snapshot, larger than any volume
    assert (
        code(ec2.create_volume, AvailabilityZone=zone_a, SnapshotId=snapshot_id, Size=1)
        == "InvalidParameterValue"
    )
    assert (
        code(ec2.create_volume, AvailabilityZone=zone_a, SnapshotId=snapshot_id, Size=16385)
        == "InvalidParameterValue"
    )
    assert (
        code(ec2.copy_snapshot, SourceSnapshotId=snapshot_id, SourceRegion="elsewhere")
        == "InvalidParameterValue"
    )
    assert (
        code(ec2.describe_snapshot_attribute, SnapshotId=snapshot_id, Attribute="kernel")
        == "InvalidParameterValue"
    )
    assert (
        code(ec2.reset_snapshot_attribute, SnapshotId=snapshot_id, Attribute="productCodes")
        == "InvalidParameterValue"
    )
    assert (
        code(
            ec2.modify_snapshot_attribute,
            SnapshotId=snapshot_id,
            Attribute="createVolumePermission",
            OperationType="add",
            GroupNames=["everyone"],
        )
        == "InvalidParameterValue"
    )
    assert (
        code(
            ec2.modify_snapshot_attribute,
            SnapshotId=snapshot_id,
            Attribute="createVolumePermission",
            OperationType="add",
            UserIds=["999999999999"],
        )
        == "InvalidUserID.Malformed"
    )
    # a deleted volume: no snapshot of it
    ec2.delete_volume(VolumeId=volume_id)
    wait_for(
        "the volume gone",
        lambda: not ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])["Volumes"],
    )
    assert code(ec2.create_snapshot, VolumeId=volume_id) == "InvalidVolume.NotFound"
    ec2.delete_snapshot(SnapshotId=snapshot_id)


def test_sharing(
    cloud: EucaServer,
    ec2: Any,
    ec2_other: Any,
    account_ids: dict[str, str],
    zones: tuple[str, str, ScProcess],
) -> None:
    zone_a, _, _ = zones
    other = account_ids[cloud.other.account]
    volume_id = new_volume(ec2, zone_a)
    write_random(volume_path(cloud.data_dir, volume_id), 5 * MIB, MIB)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_snapshot(ec2, snapshot_id)

    def others_see() -> bool:
        return snapshot_id in {s["SnapshotId"] for s in ec2_other.describe_snapshots()["Snapshots"]}

    def permissions() -> list[dict[str, str]]:
        out: list[dict[str, str]] = ec2.describe_snapshot_attribute(
            SnapshotId=snapshot_id, Attribute="createVolumePermission"
        )["CreateVolumePermissions"]
        return out

    assert not others_see() and permissions() == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.create_volume(AvailabilityZone=zone_a, SnapshotId=snapshot_id)
    assert error_code(e) == "InvalidSnapshot.NotFound"
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot_id, Attribute="createVolumePermission", OperationType="add", UserIds=[other]
    )
    assert others_see() and permissions() == [{"UserId": other}]
    shared = ec2_other.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]
    assert snapshot_id in {s["SnapshotId"] for s in shared}
    owner = account_ids["eucalyptus"]
    by_owner = ec2_other.describe_snapshots(OwnerIds=[owner])["Snapshots"]
    assert snapshot_id in {s["SnapshotId"] for s in by_owner} and {s["OwnerId"] for s in by_owner} == {owner}
    assert snapshot_id not in {
        s["SnapshotId"] for s in ec2_other.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    }
    theirs = ec2_other.create_volume(AvailabilityZone=zone_a, SnapshotId=snapshot_id)["VolumeId"]
    wait_volume(ec2_other, theirs)
    assert file_sha256(volume_path(cloud.data_dir, theirs)) == file_sha256(
        volume_path(cloud.data_dir, volume_id)
    )
    ec2_other.delete_volume(VolumeId=theirs)
    # the owner's alone: another account can neither delete nor share it
    for fn, kwargs in [
        (ec2_other.delete_snapshot, {}),
        (ec2_other.describe_snapshot_attribute, {"Attribute": "createVolumePermission"}),
        (ec2_other.reset_snapshot_attribute, {"Attribute": "createVolumePermission"}),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            fn(SnapshotId=snapshot_id, **kwargs)
        assert error_code(e) == "InvalidSnapshot.NotFound"
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot_id, CreateVolumePermission={"Remove": [{"UserId": other}]}
    )
    assert not others_see()
    ec2.modify_snapshot_attribute(SnapshotId=snapshot_id, CreateVolumePermission={"Add": [{"Group": "all"}]})
    assert others_see() and permissions() == [{"Group": "all"}]
    public = ec2_other.describe_snapshots(RestorableByUserIds=["all"])["Snapshots"]
    assert snapshot_id in {s["SnapshotId"] for s in public}
    ec2.reset_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")
    assert not others_see() and permissions() == []
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    ec2.delete_volume(VolumeId=volume_id)


def test_copy_shares_the_chunks(
    cloud: EucaServer, ec2: Any, s3: Any, zones: tuple[str, str, ScProcess]
) -> None:
    zone_a, zone_b, sc_b = zones
    volume_id = new_volume(ec2, zone_a)
    path = volume_path(cloud.data_dir, volume_id)
    write_random(path, 40 * MIB, 6 * MIB)
    source = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_snapshot(ec2, source)
    held = chunks(s3, cloud)
    copy = ec2.copy_snapshot(SourceSnapshotId=source, SourceRegion=cloud.region, Description="the copy")
    copied = wait_snapshot(ec2, copy["SnapshotId"])
    assert copy["SnapshotId"] != source and copied["Description"] == "the copy" and copied["VolumeSize"] == 1
    assert chunks(s3, cloud) == held  # no chunk travelled
    ec2.delete_snapshot(SnapshotId=source)
    restored = ec2.create_volume(AvailabilityZone=zone_b, SnapshotId=copy["SnapshotId"])["VolumeId"]
    wait_volume(ec2, restored)
    assert file_sha256(volume_path(sc_b.data_dir, restored)) == file_sha256(path)
    ec2.delete_volume(VolumeId=restored)
    ec2.delete_snapshot(SnapshotId=copy["SnapshotId"])
    ec2.delete_volume(VolumeId=volume_id)


def test_aws_cli(cloud: EucaServer, ec2: Any, zones: tuple[str, str, ScProcess]) -> None:
    zone_a, _, _ = zones
    volume_id = new_volume(ec2, zone_a)
    out = cloud.aws("ec2", "create-snapshot", "--volume-id", volume_id, "--description", "from the cli")
    snapshot_id = json.loads(out.stdout)["SnapshotId"]
    wait_snapshot(ec2, snapshot_id)
    # describe-snapshots sends MaxResults=1000 and follows the pages
    listed = json.loads(cloud.aws("ec2", "describe-snapshots", "--owner-ids", "self").stdout)["Snapshots"]
    assert snapshot_id in {s["SnapshotId"] for s in listed}
    attr = json.loads(
        cloud.aws(
            "ec2",
            "describe-snapshot-attribute",
            "--snapshot-id",
            snapshot_id,
            "--attribute",
            "createVolumePermission",
        ).stdout
    )
    assert attr["CreateVolumePermissions"] == []
    cloud.aws("ec2", "delete-snapshot", "--snapshot-id", snapshot_id)
    refused = cloud.aws("ec2", "describe-snapshots", "--snapshot-ids", snapshot_id, check=False)
    assert refused.returncode != 0 and "InvalidSnapshot.NotFound" in refused.stderr
    ec2.delete_volume(VolumeId=volume_id)


def test_kill_9_of_the_sc_mid_upload(
    cloud: EucaServer, ec2: Any, s3: Any, zones: tuple[str, str, ScProcess]
) -> None:
    """kill -9 of an SC while it uploads a snapshot: after its restart the snapshot ends `error`, the volume is
    intact and available, nothing of it is restorable, and its chunks are swept once it is deleted."""
    _, zone_b, sc_b = zones
    volume_id = new_volume(ec2, zone_b)
    path = volume_path(sc_b.data_dir, volume_id)
    write_random(path, 0, 512 * MIB)
    sha = file_sha256(path)
    held = chunks(s3, cloud)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_for("a few chunks uploaded", lambda: len(chunks(s3, cloud)) - len(held) >= 2, timeout=120)
    sc_b.kill_9()
    # killed before the end: there is no manifest (if the upload won the race, the snapshot completes)
    finished = f"manifests/{snapshot_id}.json" in manifests(s3, cloud)
    sc_b.start()
    ended = wait_for(
        "the snapshot ended",
        lambda: next(
            (
                s
                for s in ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
                if s["State"] != "pending"
            ),
            None,
        ),
        timeout=120,
    )
    assert ended["State"] == ("completed" if finished else "error"), ended
    wait_for("the SC up again", lambda: _storage_up(cloud, zone_b))
    assert file_sha256(path) == sha
    (v,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert v["State"] == "available"
    if ended["State"] == "error":
        assert f"manifests/{snapshot_id}.json" not in manifests(s3, cloud)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.create_volume(AvailabilityZone=zone_b, SnapshotId=snapshot_id)
        assert error_code(e) == "IncorrectState"
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    wait_for("the chunks it left swept", lambda: set(chunks(s3, cloud)) <= set(held), timeout=120)
    # the volume still snapshots whole after the restart
    again = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_snapshot(ec2, again, timeout=300)
    restored = ec2.create_volume(AvailabilityZone=zone_b, SnapshotId=again)["VolumeId"]
    wait_volume(ec2, restored)
    assert file_sha256(volume_path(sc_b.data_dir, restored)) == sha
    ec2.delete_volume(VolumeId=restored)
    ec2.delete_snapshot(SnapshotId=again)
    ec2.delete_volume(VolumeId=volume_id)


def test_snapshots_survive_a_restart_of_the_cloud(tmp_path: Path) -> None:
    """The CLC's and the SC's tables and the bucket survive a stop and start of the whole cloud: a snapshot
    is still completed and restores the same bytes, and the next one is still incremental."""
    zone = unique("zrestart")
    sc_port = free_port()  # the same across the restart: the SC is registered at it
    overrides = {"clc.poll_interval": 0.2, "cc.cluster": zone, "sc.listen.port": sc_port}

    def start() -> tuple[Iterator[EucaServer], EucaServer]:
        server = start_euca(tmp_path / "cloud", roles="clc,walrus,sc", overrides=overrides)
        return server, next(server)

    server, euca = start()
    cc = FakeCluster(euca.ctx.ca, tmp_path / "cc", zone, [FakeNode(f"{zone}-n1")], 55)
    with cc:
        try:
            port = str(cc.port)
            admin_cli(
                euca, "register-cluster", zone, "--host", "127.0.0.1", "--port", port, "--no-join-token"
            )
            admin_cli(
                euca, "register-sc", zone, "--host", "127.0.0.1", "--port", str(sc_port), "--no-join-token"
            )
            wait_for("the SC up", lambda: _storage_up(euca, zone))
            ec2 = euca.client("ec2")
            volume_id = new_volume(ec2, zone)
            path = volume_path(euca.data_dir, volume_id)
            write_random(path, 0, 10 * MIB)
            snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
            wait_snapshot(ec2, snapshot_id)
        finally:
            server.close()
        server, euca = start()
        try:
            wait_for("the SC up", lambda: _storage_up(euca, zone))
            ec2 = euca.client("ec2")
            s3 = euca.client("s3")
            (s,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
            assert s["State"] == "completed" and s["Progress"] == "100%"
            restored = ec2.create_volume(AvailabilityZone=zone, SnapshotId=snapshot_id)["VolumeId"]
            wait_volume(ec2, restored)
            assert file_sha256(volume_path(euca.data_dir, restored)) == file_sha256(path)
            before = bucket_objects(s3, snapshot_bucket(euca.ctx), "chunks/")
            write_random(path, 0, MIB)
            second = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
            wait_snapshot(ec2, second)
            after = bucket_objects(s3, snapshot_bucket(euca.ctx), "chunks/")
            assert len(set(after) - set(before)) == 1  # one chunk changed: one travelled
        finally:
            server.close()
