"""Volume and snapshot quotas (Eucalyptus's Limit policies) under concurrent requests, against a CLC whose
zone has a real SC role (files backend, in the same process) beside an in-process stand-in for the zone's
CC: the count is taken in the transaction that records the volume or snapshot, so exactly as many requests
as the limit allows get through, however they interleave."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from euca.cli import main
from helpers.fake_cluster import FakeCluster, FakeNode
from helpers.iam import limit, new_account, race, refused, set_account_quota
from helpers.instances import unique, wait_for
from helpers.server import EucaServer, start_euca

ZONE = unique("zquota")


def admin(euca: EucaServer, *args: str) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(euca.data_dir), "admin", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    server = start_euca(
        tmp_path_factory.mktemp("euca-storage-quotas"),
        roles="clc,walrus,sc",
        overrides={"clc.poll_interval": 0.2, "cc.cluster": ZONE, "sc.capacity_gb": 40},
    )
    euca = next(server)
    fake = FakeCluster(euca.ctx.ca, tmp_path_factory.mktemp("fake-cc"), ZONE, [FakeNode(f"{ZONE}-n1")], 55)
    with fake:
        admin(
            euca, "register-cluster", ZONE, "--host", "127.0.0.1", "--port", str(fake.port), "--no-join-token"
        )
        sc_port = euca.ctx.endpoints["sc"].rsplit(":", 1)[1]
        admin(euca, "register-sc", ZONE, "--host", "127.0.0.1", "--port", sc_port, "--no-join-token")

        def storage_up() -> bool:
            lines = admin(euca, "describe-services").splitlines()
            return any(f"\tstorage\t{ZONE}" in line and "\tup\t" in line for line in lines)

        wait_for("the SC polled up", storage_up)
        yield euca
    server.close()


def volume_state(ec2: Any, volume_id: str, state: str) -> None:
    wait_for(
        f"{volume_id} {state}",
        lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == state,
    )


def test_concurrent_volumes_cannot_pass_a_quota(cloud: EucaServer) -> None:
    account = new_account(cloud)
    set_account_quota(cloud, account, "volumes", limit("ec2:CreateVolume", "ec2:quota-volumenumber", 2))
    clients = [cloud.client("ec2", creds=account) for _ in range(5)]
    outcomes = race(clients, lambda ec2: ec2.create_volume(Size=1, AvailabilityZone=ZONE))
    assert outcomes == ["VolumeLimitExceeded"] * 3 + ["done"] * 2
    ec2 = clients[0]
    volumes = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    assert len(volumes) == 2
    # The GiB limit too, with a ClientToken retry of a volume already made never refused.
    set_account_quota(cloud, account, "volumes", limit("ec2:CreateVolume", "ec2:quota-volumetotalsize", 4))
    made = ec2.create_volume(Size=2, AvailabilityZone=ZONE, ClientToken="quota-retry")["VolumeId"]
    assert ec2.create_volume(Size=2, AvailabilityZone=ZONE, ClientToken="quota-retry")["VolumeId"] == made
    assert refused(lambda: ec2.create_volume(Size=1, AvailabilityZone=ZONE)) == "VolumeLimitExceeded"
    for volume_id in [*volumes, made]:
        volume_state(ec2, volume_id, "available")
        ec2.delete_volume(VolumeId=volume_id)


def test_concurrent_snapshots_cannot_pass_a_quota(cloud: EucaServer) -> None:
    account = new_account(cloud)
    ec2 = cloud.client("ec2", creds=account)
    volume_id = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    volume_state(ec2, volume_id, "available")
    set_account_quota(cloud, account, "snapshots", limit("ec2:CreateSnapshot", "ec2:quota-snapshotnumber", 2))
    clients = [cloud.client("ec2", creds=account) for _ in range(5)]
    outcomes = race(clients, lambda c: c.create_snapshot(VolumeId=volume_id))
    assert outcomes == ["SnapshotLimitExceeded"] * 3 + ["done"] * 2
    snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert len(snapshots) == 2
    for s in snapshots:
        wait_for(
            f"{s['SnapshotId']} settled",
            lambda s=s: (
                ec2.describe_snapshots(SnapshotIds=[s["SnapshotId"]])["Snapshots"][0]["State"]
                in ("completed", "error")
            ),
        )
        ec2.delete_snapshot(SnapshotId=s["SnapshotId"])
    ec2.delete_volume(VolumeId=volume_id)
