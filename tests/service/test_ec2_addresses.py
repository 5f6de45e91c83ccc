"""Public addresses (the operator's pool, elastic IPs, each instance's public address) and instances in
security groups, through the EC2 API (boto3 and the aws CLI) and `euca admin`, against a CLC whose cluster is
an in-process stand-in for a CC (helpers/fake_cluster.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import msgspec
import pytest
from click.testing import CliRunner

from euca.cli import main
from helpers.ec2 import error_code
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.instances import instances_of, register_tiny_image, unique, wait_for, wait_state
from helpers.server import admin_cli, start_euca

POOL = "10.99.5.10-10.99.5.29"  # 20 addresses


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = start_euca(
        tmp_path_factory.mktemp("euca-addresses"),
        roles="clc,walrus",
        overrides={"clc.poll_interval": 0.2, "clc.public_addresses": POOL},
    )
    yield next(server)
    server.close()


@pytest.fixture(scope="module")
def fake(cloud: Any, ec2: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    name = unique("zaddr")
    fake = FakeCluster(
        cloud.ctx.ca, tmp_path_factory.mktemp("fake-cc"), name, [FakeNode(f"{name}-n1", cores=16)], 55
    )
    fake.__enter__()
    register_with(cloud, ec2, fake)
    yield fake
    fake.__exit__(None, None, None)


@pytest.fixture(scope="module")
def zone(fake: FakeCluster) -> str:
    return str(fake.name)


@pytest.fixture(scope="module")
def image(cloud: Any, ec2: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    image_id = register_tiny_image(cloud, tmp_path_factory.mktemp("addr-image"))
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    return str(image_id)


def launch(ec2: Any, image: str, zone: str, count: int = 1, **kwargs: Any) -> list[str]:
    reservation = ec2.run_instances(
        ImageId=image, MinCount=count, MaxCount=count, Placement={"AvailabilityZone": zone}, **kwargs
    )
    return [str(i) for i in instances_of(reservation)]


def pool_state(cloud: Any) -> dict[str, str]:
    """public address -> free / assigned / allocated, from `euca admin describe-public-addresses`."""
    rows = [line.split("\t") for line in admin_cli(cloud, "describe-public-addresses").splitlines()]
    return {r[1]: r[2] for r in rows if r[0] == "ADDRESS"}


def test_the_pool_is_seeded_and_administered(cloud: Any) -> None:
    state = pool_state(cloud)
    assert len(state) == 20 and "10.99.5.10" in state and "10.99.5.29" in state
    assert "added 2 address(es); 1 already" in admin_cli(
        cloud, "add-public-addresses", "10.99.5.29-10.99.5.31"
    )
    assert "removed 2" in admin_cli(cloud, "remove-public-addresses", "10.99.5.30", "10.99.5.31")
    bad = CliRunner().invoke(
        main, ["--data-dir", str(cloud.data_dir), "admin", "add-public-addresses", "10.99.5.x"]
    )
    assert bad.exit_code != 0


def test_instances_get_public_addresses_and_groups(cloud: Any, ec2: Any, zone: str, image: str) -> None:
    web = unique("web")
    web_id = ec2.create_security_group(GroupName=web, Description="web")["GroupId"]
    ids = launch(ec2, image, zone, 2, SecurityGroups=[web], SecurityGroupIds=[web_id])
    running = wait_state(ec2, ids, "running")
    public = {i["PublicIpAddress"] for i in running.values()}
    assert len(public) == 2 and all(ip.startswith("10.99.5.") for ip in public)
    for i in running.values():
        assert i["PrivateIpAddress"].startswith("10.55.")
        assert i["PrivateDnsName"] == f"euca-{i['PrivateIpAddress'].replace('.', '-')}.eucalyptus.internal"
        assert i["PublicDnsName"] == f"euca-{i['PublicIpAddress'].replace('.', '-')}.eucalyptus.localhost"
        assert i["SecurityGroups"] == [{"GroupName": web, "GroupId": web_id}]
    found = ec2.describe_instances(Filters=[{"Name": "ip-address", "Values": sorted(public)[:1]}])[
        "Reservations"
    ]
    assert [i["InstanceId"] for r in found for i in r["Instances"]] in ([ids[0]], [ids[1]])
    found = ec2.describe_instances(Filters=[{"Name": "group-id", "Values": [web_id]}])["Reservations"]
    assert sorted(i["InstanceId"] for r in found for i in r["Instances"]) == sorted(ids)
    assert all(pool_state(cloud)[ip] == "assigned" for ip in public)
    # the group is in use while they run
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_security_group(GroupId=web_id)
    assert error_code(e) == "InvalidGroup.InUse"

    ec2.terminate_instances(InstanceIds=ids)
    ended = wait_state(ec2, ids, "terminated")
    assert all("PublicIpAddress" not in i for i in ended.values())
    assert all(pool_state(cloud)[ip] == "free" for ip in public)
    ec2.delete_security_group(GroupId=web_id)


def test_unknown_groups_at_launch(ec2: Any, zone: str, image: str) -> None:
    cases: list[dict[str, Any]] = [
        {"SecurityGroups": ["no-such-group"]},
        {"SecurityGroupIds": ["sg-00000000"]},
    ]
    for kwargs in cases:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            launch(ec2, image, zone, **kwargs)
        assert error_code(e) == "InvalidGroup.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        launch(ec2, image, zone, SecurityGroupIds=["web"])
    assert error_code(e) == "InvalidGroupId.Malformed"
    # no group named: the default group, by id and name
    (instance_id,) = launch(ec2, image, zone)
    default_id = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    shown = wait_state(ec2, [instance_id], "running")[instance_id]
    assert shown["SecurityGroups"] == [{"GroupName": "default", "GroupId": default_id}]
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")


def test_elastic_ips(cloud: Any, ec2: Any, ec2_other: Any, zone: str, image: str) -> None:
    first, second = launch(ec2, image, zone, 2)
    running = wait_state(ec2, [first, second], "running")
    system_ip = running[first]["PublicIpAddress"]

    eip = ec2.allocate_address()
    assert eip["Domain"] == "standard" and eip["AllocationId"].startswith("eipalloc-")
    ip = eip["PublicIp"]
    assert pool_state(cloud)[ip] == "allocated"
    listed = ec2.describe_addresses(PublicIps=[ip])["Addresses"]
    assert listed == [{"PublicIp": ip, "Domain": "standard", "AllocationId": eip["AllocationId"]}]

    # by public address (EC2-Classic): the instance's system address goes back to the pool
    association = ec2.associate_address(PublicIp=ip, InstanceId=first)["AssociationId"]
    assert association.startswith("eipassoc-")
    assert (
        ec2.describe_instances(InstanceIds=[first])["Reservations"][0]["Instances"][0]["PublicIpAddress"]
        == ip
    )
    assert pool_state(cloud)[system_ip] == "free"
    shown = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [first]}])["Addresses"]
    assert [(a["PublicIp"], a["AssociationId"]) for a in shown] == [(ip, association)]

    # moving it needs AllowReassociation
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=second)
    assert error_code(e) == "Resource.AlreadyAssociated"
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=second, AllowReassociation=True)
    after = {
        i: d["PublicIpAddress"]
        for i, d in wait_state(ec2, [first, second], "running").items()
        if "PublicIpAddress" in d
    }
    # the instance it left gets a public address from the pool again, as after a disassociate
    assert after.get(second) == ip and after.get(first) not in (None, ip)

    # releasing an associated address, or another account's, is refused
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.release_address(AllocationId=eip["AllocationId"])
    assert error_code(e) == "InvalidIPAddress.InUse"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.release_address(PublicIp=ip)
    assert error_code(e) == "AuthFailure"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.release_address(AllocationId=eip["AllocationId"])
    assert error_code(e) == "InvalidAllocationID.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.associate_address(PublicIp=ip, InstanceId=second)
    assert error_code(e) == "AuthFailure"
    assert ec2_other.describe_addresses()["Addresses"] == []

    # disassociate: the instance gets a public address from the pool again
    ec2.disassociate_address(PublicIp=ip)
    again = ec2.describe_instances(InstanceIds=[second])["Reservations"][0]["Instances"][0]
    assert again.get("PublicIpAddress") not in (None, ip)
    ec2.release_address(PublicIp=ip)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_addresses(PublicIps=[ip])
    assert error_code(e) == "InvalidAddress.NotFound"
    assert pool_state(cloud)[ip] == "free"

    # terminate disassociates an elastic IP (the account keeps it)
    kept = ec2.allocate_address(Domain="vpc")
    assert kept["Domain"] == "vpc"
    ec2.associate_address(AllocationId=kept["AllocationId"], InstanceId=first)
    ec2.terminate_instances(InstanceIds=[first, second])
    wait_state(ec2, [first, second], "terminated")
    (left,) = ec2.describe_addresses(AllocationIds=[kept["AllocationId"]])["Addresses"]
    assert "InstanceId" not in left and "AssociationId" not in left
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.associate_address(AllocationId=kept["AllocationId"], InstanceId=first)
    assert error_code(e) == "IncorrectInstanceState"
    ec2.release_address(AllocationId=kept["AllocationId"])


def test_bad_address_input(ec2: Any) -> None:
    for kwargs, code in (
        ({"PublicIp": "10.99.5.999"}, "InvalidParameterValue"),
        ({"PublicIp": "192.0.2.1"}, "InvalidAddress.NotFound"),
        ({"AllocationId": "eipalloc-00000000"}, "InvalidAllocationID.NotFound"),
        ({}, "MissingParameter"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.release_address(**kwargs)
        assert error_code(e) == code, kwargs
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.allocate_address(Domain="moon")
    assert error_code(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.allocate_address(Address="192.0.2.1")
    assert error_code(e) == "InvalidAddress.NotFound"
    eip = ec2.allocate_address()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.associate_address(PublicIp=eip["PublicIp"], InstanceId="i-00000000")
    assert error_code(e) == "InvalidInstanceID.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.disassociate_address(AssociationId="eipassoc-00000000")
    assert error_code(e) == "InvalidAssociationID.NotFound"
    ec2.release_address(AllocationId=eip["AllocationId"])


def test_admin_verbose_and_aws_cli(cloud: Any, ec2_other: Any) -> None:
    theirs = ec2_other.allocate_address()
    mine = json.loads(cloud.aws("ec2", "allocate-address").stdout)
    assert mine["PublicIp"].startswith("10.99.5.")
    # the cloud admin's verbose view: every address of the pool and who holds it (as Eucalyptus)
    verbose = {
        a["PublicIp"]: a for a in cloud.client("ec2").describe_addresses(PublicIps=["verbose"])["Addresses"]
    }
    assert len(verbose) >= 20
    assert verbose[theirs["PublicIp"]]["InstanceId"].startswith("available (")
    assert any(a.get("InstanceId") == "nobody" for a in verbose.values())
    # others see only their own
    assert [a["PublicIp"] for a in ec2_other.describe_addresses()["Addresses"]] == [theirs["PublicIp"]]
    listed = json.loads(cloud.aws("ec2", "describe-addresses", "--public-ips", mine["PublicIp"]).stdout)
    assert listed["Addresses"][0]["AllocationId"] == mine["AllocationId"]
    cloud.aws("ec2", "release-address", "--public-ip", mine["PublicIp"])
    ec2_other.release_address(PublicIp=theirs["PublicIp"])


def test_the_cluster_hears_groups_rules_and_addresses(ec2: Any, fake: FakeCluster, image: str) -> None:
    """What the CC's data path will enforce: each spec names its groups and public address, and every poll
    carries the cluster's network view, sent again at once when a rule changes."""
    app = unique("app")
    app_id = ec2.create_security_group(GroupName=app, Description="app")["GroupId"]
    (instance_id,) = launch(ec2, image, fake.name, SecurityGroupIds=[app_id])
    running = wait_state(ec2, [instance_id], "running")[instance_id]
    spec = next(s for s in fake.specs if s.instance_id == instance_id)
    assert spec.security_groups == [app_id] and spec.public_ip == running["PublicIpAddress"]

    def view_has(check: Any) -> bool:
        topology = fake.last_topology
        return bool(topology is not None and topology.network is not None and check(topology.network))

    wait_for(
        "the instance in the network view",
        lambda: view_has(
            lambda v: any(
                i.instance_id == instance_id and i.public_ip == running["PublicIpAddress"]
                for i in v.instances
            )
        ),
    )
    ec2.authorize_security_group_ingress(
        GroupId=app_id, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="198.51.100.0/24"
    )
    wait_for(
        "the rule in the network view",
        lambda: view_has(
            lambda v: any(
                g.group_id == app_id
                and g.member_ids == [instance_id]
                and [(r.protocol, r.from_port, r.cidr) for r in g.rules] == [("tcp", 22, "198.51.100.0/24")]
                for g in v.groups
            )
        ),
    )
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")
    wait_for(
        "the instance gone from the view",
        lambda: view_has(lambda v: all(i.instance_id != instance_id for i in v.instances)),
    )
    ec2.delete_security_group(GroupId=app_id)


def test_the_cluster_gets_each_instances_metadata_once_and_again_after_a_restart(
    ec2: Any, fake: FakeCluster, image: str
) -> None:
    """The metadata service's data (key, user data, groups...) is not in every poll: the view names a version
    per instance, the CC asks for what it lacks, and the CLC sends it; a CC that forgot (restarted) asks again."""
    key = unique("k")
    material = ec2.create_key_pair(KeyName=key)
    web = unique("web")
    ec2.create_security_group(GroupName=web, Description="web")
    (instance_id,) = launch(
        ec2, image, fake.name, KeyName=key, SecurityGroups=[web], UserData="#!/bin/sh\necho hi\n"
    )
    wait_for("the instance's metadata at the CC", lambda: instance_id in fake.metadata)
    m = fake.metadata[instance_id]
    assert (m.key_name, m.user_data, m.security_groups, m.image_id) == (
        key,
        b"#!/bin/sh\necho hi\n",
        [web],
        image,
    )
    assert m.public_key and m.public_key.split()[0] in ("ssh-rsa", "ssh-ed25519")
    assert material["KeyFingerprint"]
    version = m.version
    topology = fake.last_topology
    assert topology is not None and topology.network is not None
    assert all(len(msgspec.json.encode(i)) < 300 for i in topology.network.instances)  # no user data in polls

    with fake.lock:
        fake.metadata.clear()  # a restarted CC
    wait_for("the metadata sent again", lambda: instance_id in fake.metadata)
    assert fake.metadata[instance_id].version == version
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")
    ec2.delete_key_pair(KeyName=key)


def cli_error(cloud: Any, *args: str, creds: Any = None) -> str:
    """The error code the aws CLI prints for a refused call (it exits non-zero)."""
    result = cloud.aws("ec2", *args, creds=creds, check=False)
    assert result.returncode != 0, args
    start = result.stderr.index("(") + 1
    return str(result.stderr[start : result.stderr.index(")", start)])


def test_aws_cli_addresses_errors_and_the_admins_verbose_view(
    cloud: Any, ec2: Any, zone: str, image: str, account_ids: dict[str, str]
) -> None:
    (instance_id,) = launch(ec2, image, zone)
    system_ip = wait_state(ec2, [instance_id], "running")[instance_id]["PublicIpAddress"]
    eip = json.loads(cloud.aws("ec2", "allocate-address", "--domain", "standard").stdout)
    ip = eip["PublicIp"]
    cloud.aws("ec2", "associate-address", "--public-ip", ip, "--instance-id", instance_id)
    assert cli_error(cloud, "release-address", "--public-ip", ip) == "InvalidIPAddress.InUse"
    assert cli_error(cloud, "release-address", "--public-ip", ip, creds=cloud.other) == "AuthFailure"
    assert cli_error(cloud, "release-address", "--public-ip", "10.99.5.999") == "InvalidParameterValue"
    assert cli_error(cloud, "release-address", "--allocation-id", "eipalloc-00000000") == (
        "InvalidAllocationID.NotFound"
    )
    assert (
        cli_error(
            cloud, "associate-address", "--public-ip", ip, "--instance-id", instance_id, creds=cloud.other
        )
        == "AuthFailure"
    )
    assert cli_error(cloud, "disassociate-address", "--association-id", "eipassoc-00000000") == (
        "InvalidAssociationID.NotFound"
    )
    assert cli_error(cloud, "associate-address", "--public-ip", ip, "--instance-id", "i-00000000") == (
        "InvalidInstanceID.NotFound"
    )
    shown = json.loads(
        cloud.aws("ec2", "describe-addresses", "--filters", f"Name=instance-id,Values={instance_id}").stdout
    )["Addresses"]
    assert [(a["PublicIp"], a["InstanceId"]) for a in shown] == [(ip, instance_id)]

    # The cloud admin's verbose form (euca-describe-addresses verbose): every address of the pool, with
    # what holds it and its owner, as Eucalyptus answered: "<instance or available> (<owner>)", "nobody".
    verbose = {
        a["PublicIp"]: a.get("InstanceId")
        for a in json.loads(cloud.aws("ec2", "describe-addresses", "--public-ips", "verbose").stdout)[
            "Addresses"
        ]
    }
    owner = account_ids["eucalyptus"]
    assert verbose[ip] == f"{instance_id} ({owner})"
    assert system_ip not in verbose or verbose[system_ip] == "nobody"  # back in the pool once the EIP came
    assert "nobody" in verbose.values()
    # Others asking for "verbose" get no such view: it is not an address.
    assert cli_error(cloud, "describe-addresses", "--public-ips", "verbose", creds=cloud.other) == (
        "InvalidParameterValue"
    )
    cloud.aws("ec2", "disassociate-address", "--public-ip", ip)
    cloud.aws("ec2", "release-address", "--public-ip", ip)
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_each_clusters_subnet_is_the_admins(cloud: Any, ec2: Any, fake: FakeCluster, image: str) -> None:
    """`euca admin register-cluster --subnet` / `modify-cluster --subnet` / `describe-clusters`: the subnet is
    recorded at the CLC, sent to the cluster's CC with every poll, and changes only while it has no instances."""
    out = admin_cli(cloud, "modify-cluster", fake.name, "--subnet", "10.55.0.0/24")
    assert out.strip() == f"SUBNET\t{fake.name}\t10.55.0.0/24"
    wait_for(
        "the subnet at the CC",
        lambda: fake.last_topology is not None and fake.last_topology.subnet == "10.55.0.0/24",
    )
    rows = [line.split("\t") for line in admin_cli(cloud, "describe-clusters").splitlines()]
    assert [r[4] for r in rows if r[1] == fake.name] == ["10.55.0.0/24"]

    # Another cluster may share it.
    other = unique("zshare")
    out = admin_cli(
        cloud,
        "register-cluster",
        other,
        "--host",
        "127.0.0.1",
        "--port",
        "9",
        "--subnet",
        "10.55.0.0/24",
        "--no-join-token",
    )
    assert f"SUBNET\t{other}\t10.55.0.0/24" in out.splitlines()
    bad = CliRunner().invoke(
        main,
        ["--data-dir", str(cloud.data_dir), "admin", "modify-cluster", other, "--subnet", "10.55.0.1/24"],
    )
    assert bad.exit_code != 0 and "invalid subnet" in bad.output
    admin_cli(cloud, "deregister-cluster", other)

    # While an instance runs there, the subnet stays.
    (instance_id,) = launch(ec2, image, fake.name)
    wait_state(ec2, [instance_id], "running")
    refused = CliRunner().invoke(
        main,
        ["--data-dir", str(cloud.data_dir), "admin", "modify-cluster", fake.name, "--subnet", "10.56.0.0/24"],
    )
    assert refused.exit_code != 0 and "still has 1 instance" in refused.output
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")
    assert "default" in admin_cli(cloud, "modify-cluster", fake.name, "--subnet", "default")
    wait_for(
        "the CC back on its own", lambda: fake.last_topology is not None and fake.last_topology.subnet is None
    )
