"""DeleteAccount as Eucalyptus had it: an account that still holds resources is refused (DeleteConflict)
unless Recursive; Recursive releases its elastic IPs and deletes its key pairs with its identity, but still
refuses while it has instances, volumes, snapshots or images (their guests and bytes live on the nodes, SCs
and Walrus: terminated or deleted by their own calls first)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from euca.core.euare_client import EuareClient, EuareError
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.iam import new_account, refused
from helpers.instances import instances_of, register_tiny_image, wait_state
from helpers.server import EucaServer, admin_cli, start_euca

ZONE = "zdel"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EucaServer]:
    server = start_euca(
        tmp_path_factory.mktemp("euca-delete-account"),
        roles="clc,walrus",
        overrides={"clc.poll_interval": 0.2},
    )
    yield next(server)
    server.close()


def delete(cloud: EucaServer, name: str, recursive: bool = False) -> str:
    """DeleteAccount's error code, or "" when it succeeded."""
    admin = EuareClient(cloud.url, cloud.admin.access_key, cloud.admin.secret_key, cloud.region)
    params = {"AccountName": name, **({"Recursive": "true"} if recursive else {})}
    try:
        admin.call("DeleteAccount", params)
    except EuareError as e:
        return e.code
    return ""


def test_an_account_with_resources(cloud: EucaServer, tmp_path: Path) -> None:
    image_id = register_tiny_image(cloud, tmp_path)
    cloud.client("ec2").modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    admin_cli(cloud, "add-public-addresses", "10.99.6.40-10.99.6.43")
    account = new_account(cloud)
    ec2 = cloud.client("ec2", creds=account)
    ec2.create_key_pair(KeyName="k1")
    address = ec2.allocate_address()["PublicIp"]
    # Key pairs and elastic IPs: refused without Recursive, released and deleted with it.
    assert delete(cloud, account.account) == "DeleteConflict"
    with FakeCluster(cloud.ctx.ca, tmp_path / "cc", ZONE, [FakeNode(f"{ZONE}-n1", cores=8)], 80) as fake:
        register_with(cloud, cloud.client("ec2"), fake)
        (instance_id,) = instances_of(ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1))
        # A live instance: refused even with Recursive (terminate it first), and nothing was changed.
        assert delete(cloud, account.account, recursive=True) == "DeleteConflict"
        assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["k1"]
        assert [a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]] == [address]
        ec2.terminate_instances(InstanceIds=[instance_id])
        wait_state(ec2, [instance_id], "terminated")
    assert delete(cloud, account.account) == "DeleteConflict"
    assert delete(cloud, account.account, recursive=True) == ""
    assert refused(lambda: ec2.describe_key_pairs()) == "AuthFailure"
    rows = [line.split("\t") for line in admin_cli(cloud, "describe-public-addresses").splitlines()]
    assert {r[1]: r[2] for r in rows if r[0] == "ADDRESS"}[address] == "free"
    assert delete(cloud, account.account) == "NoSuchEntity"


def test_an_empty_account_goes_without_recursive(cloud: EucaServer) -> None:
    account = new_account(cloud)
    assert delete(cloud, account.account) == ""
