"""Instances through the EC2 API (boto3 and the aws CLI) against a running CLC whose clusters are in-process
stand-ins for CCs (helpers/fake_cluster.py: the real mutual-TLS cluster listener and messages, simulated nodes).

The CLC here runs alone (roles clc,walrus) so each test registers the zones it needs with
`euca admin register-cluster`, as an admin would, and they are deregistered after it. Tests that run guests
through the real CC and NC roles live with those roles.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from click.testing import CliRunner

from euca.cli import main
from euca.protocol import bundle as b
from helpers.ec2 import error_code
from helpers.fake_cluster import FakeCluster, FakeNode, register_with
from helpers.image_bundles import admin_signer, random_file, upload
from helpers.instances import describe, instances_of, register_tiny_image, unique, wait_for, wait_state
from helpers.server import admin_cli, start_euca

POLL = 0.2


def start(data_dir: Path, **overrides: Any) -> Iterator[Any]:
    settings = {"clc.poll_interval": POLL, **overrides}
    yield from start_euca(data_dir, roles="clc,walrus", overrides=settings)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = start(tmp_path_factory.mktemp("euca-instances"))
    euca = next(server)
    yield euca
    server.close()


def zone_state(ec2: Any, zone: str) -> str | None:
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    return next((z["State"] for z in zones if z["ZoneName"] == zone), None)


@pytest.fixture
def zones(cloud: Any, ec2: Any, ec2_other: Any, tmp_path: Path) -> Iterator[Callable[..., FakeCluster]]:
    """`zones("name", [FakeNode(...)])` -> a registered stand-in CC serving that zone, available."""
    made: list[FakeCluster] = []

    def make(name: str, nodes: list[FakeNode] | None = None) -> FakeCluster:
        fake = FakeCluster(
            cloud.ctx.ca, tmp_path / name, name, nodes or [FakeNode(f"{name}-n1")], random.randint(10, 250)
        )
        fake.__enter__()
        made.append(fake)
        register_with(cloud, ec2, fake)
        return fake

    yield make
    for fake in made:
        fake.refuse_calls = False
        fake.run_fault = None
        for client in (ec2, ec2_other):
            alive = [
                i["InstanceId"]
                for r in client.describe_instances(
                    Filters=[
                        {"Name": "availability-zone", "Values": [fake.name]},
                        {"Name": "instance-state-name", "Values": ["pending", "running", "shutting-down"]},
                    ]
                )["Reservations"]
                for i in r["Instances"]
            ]
            if alive:
                client.terminate_instances(InstanceIds=alive)
        wait_for(
            f"instances of {fake.name} terminated",
            lambda f=fake: (
                not ec2.describe_instances(
                    Filters=[
                        {"Name": "availability-zone", "Values": [f.name]},
                        {"Name": "instance-state-name", "Values": ["pending", "running", "shutting-down"]},
                    ]
                )["Reservations"]
            ),
        )
        admin_cli(cloud, "deregister-cluster", fake.name)
        fake.__exit__(None, None, None)


# -- images: a real tiny bundle, registered as machine, kernel and ramdisk images, public -----------------


@pytest.fixture(scope="module")
def images(cloud: Any, ec2: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("instance-images")
    signer = admin_signer(cloud)
    s3 = cloud.client("s3")
    bucket = unique("instance-images")
    out: dict[str, str] = {}
    for kind in ("machine", "kernel", "ramdisk"):
        result = signer.bundle(
            random_file(tmp / f"{kind}.img", 4096), tmp / kind, image_type=kind, prefix=f"{kind}.img"
        )
        location = upload(s3, bucket, result, prefix=f"{kind}/", create=kind == "machine")
        image_id = ec2.register_image(Name=unique(kind), ImageLocation=location)["ImageId"]
        ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
        out[kind] = image_id
    assert out["machine"].startswith("emi-") and out["kernel"].startswith("eki-")
    return out


@pytest.fixture(scope="module")
def key_name(ec2: Any) -> str:
    name = unique("key")
    ec2.create_key_pair(KeyName=name)
    return name


# -- tests ----------------------------------------------------------------------------------------------


def test_run_describe_terminate(
    cloud: Any, ec2: Any, zones: Any, images: dict[str, str], key_name: str
) -> None:
    zone = unique("za")
    fake = zones(zone, [FakeNode(f"{zone}-n1", cores=8)])
    web = [{"Name": "group-name", "Values": ["web"]}]
    if not ec2.describe_security_groups(Filters=web)["SecurityGroups"]:
        ec2.create_security_group(GroupName="web", Description="web")
    reservation = ec2.run_instances(
        ImageId=images["machine"],
        MinCount=2,
        MaxCount=2,
        InstanceType="m1.small",
        KeyName=key_name,
        SecurityGroups=["default", "web"],
        UserData="#!/bin/sh\necho hello\n",
        Placement={"AvailabilityZone": zone},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": "web"}]}],
    )
    account = {a.name: a.account_id for a in cloud.ctx.identity.list_accounts()}["eucalyptus"]
    assert reservation["ReservationId"].startswith("r-") and len(reservation["ReservationId"]) == 10
    assert reservation["OwnerId"] == account
    ids = instances_of(reservation)
    assert len(ids) == 2 and all(i.startswith("i-") and len(i) == 10 for i in ids)
    first = reservation["Instances"][0]
    assert first["State"]["Name"] in ("pending", "running") and first["InstanceType"] == "m1.small"
    assert first["Placement"]["AvailabilityZone"] == zone and first["KeyName"] == key_name
    assert [g["GroupName"] for g in first["SecurityGroups"]] == ["default", "web"]
    assert {i["AmiLaunchIndex"] for i in reservation["Instances"]} == {0, 1}
    assert first["Tags"] == [{"Key": "role", "Value": "web"}]

    # What the CC got: one RunInstances with both specs, sized by the type, with a download manifest for
    # the nodes' image certificate, the user data and the key's public half.
    assert [[s.instance_id for s in call] for call in fake.run_calls] == [ids]
    spec = fake.specs[0]
    assert (spec.vm_type.cores, spec.vm_type.memory_mb, spec.vm_type.disk_gb) == (1, 256, 5)
    assert spec.user_data == b"#!/bin/sh\necho hello\n" and spec.key_name == key_name
    assert spec.public_key and spec.public_key.startswith("ssh-rsa ")
    manifest = b.parse_download_manifest(spec.machine.download_manifest.encode())
    node_cert = b.load_certificate(cloud.ctx.components.node_image_cert_pem)
    assert manifest.image_id == images["machine"] and manifest.recipient == b.certificate_fingerprint(
        node_cert
    )
    assert spec.kernel is None and spec.ramdisk is None
    # ...and the topology it learns from the CLC's polls (the stand-in reports capacity from its own nodes,
    # so its zone was available after a poll that came between register-cluster and register-node)
    wait_for(
        "the node in the CC's topology",
        lambda: (
            fake.last_topology is not None and [n.name for n in fake.last_topology.nodes] == [f"{zone}-n1"]
        ),
    )
    assert fake.last_topology is not None
    assert "m1.small" in [t.name for t in fake.last_topology.vm_types]

    running = wait_state(ec2, ids, "running")
    assert all(i["PrivateIpAddress"].startswith(f"10.{fake.subnet}.") for i in running.values())
    assert all(i["PrivateDnsName"].startswith("euca-10-") for i in running.values())
    statuses = ec2.describe_instance_status(InstanceIds=ids)["InstanceStatuses"]
    assert {s["InstanceStatus"]["Status"] for s in statuses} == {"ok"} and len(statuses) == 2

    changes = ec2.terminate_instances(InstanceIds=ids)["TerminatingInstances"]
    assert {(c["PreviousState"]["Name"], c["CurrentState"]["Name"]) for c in changes} == {
        ("running", "shutting-down")
    }
    assert fake.terminate_calls and sorted(fake.terminate_calls[0]) == sorted(ids)
    ended = wait_state(ec2, ids, "terminated")
    assert all(i["StateReason"]["Code"] == "Client.UserInitiatedShutdown" for i in ended.values())
    # terminating again is harmless
    again = ec2.terminate_instances(InstanceIds=ids[:1])["TerminatingInstances"][0]
    assert again["PreviousState"]["Name"] == again["CurrentState"]["Name"] == "terminated"
    # a terminated instance no longer shows in the default DescribeInstanceStatus
    assert ec2.describe_instance_status(InstanceIds=ids)["InstanceStatuses"] == []
    assert (
        len(ec2.describe_instance_status(InstanceIds=ids, IncludeAllInstances=True)["InstanceStatuses"]) == 2
    )


def test_client_token_makes_run_instances_idempotent(ec2: Any, zones: Any, images: dict[str, str]) -> None:
    zone = unique("zt")
    fake = zones(zone)
    token = unique("token")
    args = {
        "ImageId": images["machine"],
        "MinCount": 1,
        "MaxCount": 2,
        "Placement": {"AvailabilityZone": zone},
    }
    first = ec2.run_instances(ClientToken=token, **args)
    second = ec2.run_instances(ClientToken=token, **args)
    assert second["ReservationId"] == first["ReservationId"]
    assert instances_of(second) == instances_of(first)
    assert len(fake.run_calls) == 1
    assert first["Instances"][0]["ClientToken"] == token
    described = ec2.describe_instances(Filters=[{"Name": "client-token", "Values": [token]}])["Reservations"]
    assert [r["ReservationId"] for r in described] == [first["ReservationId"]]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(ClientToken=token, **{**args, "MaxCount": 3})
    assert error_code(e) == "IdempotentParameterMismatch"
    # without a token, the same request runs again
    third = ec2.run_instances(**args)
    assert third["ReservationId"] != first["ReservationId"]


def test_filters_and_pages(ec2: Any, zones: Any, images: dict[str, str], key_name: str) -> None:
    zone = unique("zf")
    zones(zone, [FakeNode(f"{zone}-n1", cores=16, memory_mb=8192)])
    small = ec2.run_instances(
        ImageId=images["machine"],
        MinCount=4,
        MaxCount=4,
        KeyName=key_name,
        Placement={"AvailabilityZone": zone},
    )
    medium = ec2.run_instances(
        ImageId=images["machine"],
        MinCount=3,
        MaxCount=3,
        InstanceType="m1.medium",
        Placement={"AvailabilityZone": zone},
    )
    small_ids, medium_ids = instances_of(small), instances_of(medium)
    everything = small_ids + medium_ids
    ec2.create_tags(Resources=small_ids[:2], Tags=[{"Key": "tier", "Value": "front"}])
    wait_state(ec2, everything, "running")

    def ids(**kwargs: Any) -> set[str]:
        reservations = ec2.describe_instances(**kwargs)["Reservations"]
        return {i["InstanceId"] for r in reservations for i in r["Instances"]} & set(everything)

    def f(name: str, *values: str) -> dict[str, Any]:
        return {"Name": name, "Values": list(values)}

    assert ids(Filters=[f("instance-type", "m1.medium")]) == set(medium_ids)
    assert ids(Filters=[f("key-name", key_name)]) == set(small_ids)
    assert ids(Filters=[f("reservation-id", small["ReservationId"])]) == set(small_ids)
    assert ids(Filters=[f("availability-zone", zone), f("instance-state-name", "running")]) == set(everything)
    assert ids(Filters=[f("instance-state-name", "pending", "terminated")]) == set()
    assert ids(Filters=[f("image-id", images["machine"])]) == set(everything)
    assert ids(Filters=[f("tag:tier", "fr*")]) == set(small_ids[:2])
    assert ids(Filters=[f("tag-key", "tier")]) == set(small_ids[:2])
    assert ids(Filters=[f("instance-id", medium_ids[0], small_ids[0])]) == {medium_ids[0], small_ids[0]}
    assert ids(Filters=[f("instance-state-code", "16"), f("instance-type", "m1.small")]) == set(small_ids)
    assert ids(InstanceIds=[medium_ids[1]]) == {medium_ids[1]}
    # one reservation per RunInstances, with only the instances that matched
    reservations = ec2.describe_instances(Filters=[f("instance-id", *small_ids[:2])])["Reservations"]
    assert [(r["ReservationId"], len(r["Instances"])) for r in reservations] == [(small["ReservationId"], 2)]

    pages = list(
        ec2.get_paginator("describe_instances").paginate(
            Filters=[f("availability-zone", zone)], PaginationConfig={"PageSize": 5}
        )
    )
    seen = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
    assert len(pages) == 2 and sorted(seen) == sorted(everything) and len(seen) == len(set(seen))

    for kwargs, code in [
        ({"InstanceIds": small_ids[:1], "MaxResults": 5}, "InvalidParameterCombination"),
        ({"MaxResults": 2}, "InvalidParameterValue"),
        ({"Filters": [f("no-such-filter", "x")]}, "InvalidParameterValue"),
        ({"InstanceIds": ["i-00000000"]}, "InvalidInstanceID.NotFound"),
        ({"InstanceIds": ["instance-1"]}, "InvalidInstanceID.Malformed"),
        ({"NextToken": "garbage!"}, "InvalidPaginationToken"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_instances(**kwargs)
        assert error_code(e) == code, kwargs


def test_pages_without_filters_and_a_few_ids(ec2: Any, zones: Any, images: dict[str, str]) -> None:
    """Without filters a page is read from the store as one (launch order after the token, one more than
    asked); the walk still sees every instance once, and describing a few ids reads only those."""
    zone = unique("zp")
    zones(zone, [FakeNode(f"{zone}-n1", cores=16, memory_mb=8192)])
    mine = instances_of(
        ec2.run_instances(
            ImageId=images["machine"], MinCount=7, MaxCount=7, Placement={"AvailabilityZone": zone}
        )
    )
    wait_state(ec2, mine, "running")
    everything = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    pages = list(ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
    seen = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
    assert all(sum(len(r["Instances"]) for r in p["Reservations"]) <= 5 for p in pages)
    assert len(seen) == len(set(seen)) and set(seen) == everything and set(mine) <= everything
    assert len(pages) == -(-len(everything) // 5)
    reservations = ec2.describe_instances(InstanceIds=[mine[5], mine[1]])["Reservations"]
    assert [i["InstanceId"] for r in reservations for i in r["Instances"]] == [mine[1], mine[5]]


def test_instances_are_visible_only_to_their_account(
    ec2: Any, ec2_other: Any, zones: Any, images: dict[str, str]
) -> None:
    zone = unique("zx")
    zones(zone)
    mine = instances_of(
        ec2.run_instances(
            ImageId=images["machine"], MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone}
        )
    )
    theirs = instances_of(
        ec2_other.run_instances(
            ImageId=images["machine"], MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone}
        )
    )
    visible = {
        i["InstanceId"] for r in ec2_other.describe_instances()["Reservations"] for i in r["Instances"]
    }
    assert theirs[0] in visible and mine[0] not in visible
    for call in (
        lambda: ec2_other.describe_instances(InstanceIds=mine),
        lambda: ec2_other.terminate_instances(InstanceIds=mine),
        lambda: ec2_other.reboot_instances(InstanceIds=mine),
        lambda: ec2_other.get_console_output(InstanceId=mine[0]),
        lambda: ec2_other.describe_instance_status(InstanceIds=mine),
        lambda: ec2_other.create_tags(Resources=mine, Tags=[{"Key": "k", "Value": "v"}]),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert error_code(e) == "InvalidInstanceID.NotFound"
    assert describe(ec2, mine)[mine[0]]["State"]["Name"] in ("pending", "running")
    # euca-describe-instances verbose: the cloud admin sees every account's instances
    everyone = {
        i["InstanceId"]
        for r in ec2.describe_instances(InstanceIds=["verbose"])["Reservations"]
        for i in r["Instances"]
    }
    assert {mine[0], theirs[0]} <= everyone
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.describe_instances(InstanceIds=["verbose"])
    assert error_code(e) == "InvalidInstanceID.Malformed"


def test_capacity_is_counted_and_insufficient_capacity(ec2: Any, zones: Any, images: dict[str, str]) -> None:
    zone = unique("zc")
    zones(zone, [FakeNode(f"{zone}-n1", cores=3, memory_mb=4096, disk_gb=100)])
    args = {"ImageId": images["machine"], "Placement": {"AvailabilityZone": zone}}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(MinCount=4, MaxCount=4, **args)
    assert error_code(e) == "InsufficientInstanceCapacity"
    # as many as fit, up to MaxCount
    assert len(instances_of(ec2.run_instances(MinCount=1, MaxCount=2, **args))) == 2
    # the CLC counts what it just placed, before the next poll tells it
    assert len(instances_of(ec2.run_instances(MinCount=1, MaxCount=5, **args))) == 1
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(MinCount=1, MaxCount=1, **args)
    assert error_code(e) == "InsufficientInstanceCapacity"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(MinCount=1, MaxCount=1, InstanceType="m1.large", **args)
    assert error_code(e) == "InsufficientInstanceCapacity"


def test_placement_across_zones(ec2: Any, zones: Any, images: dict[str, str]) -> None:
    big, small = unique("zbig"), unique("zsmall")
    zones(big, [FakeNode(f"{big}-n1", cores=6)])
    zones(small, [FakeNode(f"{small}-n1", cores=2)])
    machine = images["machine"]

    def zone_of(reservation: dict[str, Any]) -> set[str]:
        return {i["Placement"]["AvailabilityZone"] for i in reservation["Instances"]}

    # no zone: the one with the most free slots for the type; all of a request in one zone
    first = ec2.run_instances(ImageId=machine, MinCount=5, MaxCount=5)
    assert zone_of(first) == {big} and len(first["Instances"]) == 5
    # now big has 1 free, small 2: a request for 2 goes to small even though 1 + 2 would be 3
    assert zone_of(ec2.run_instances(ImageId=machine, MinCount=2, MaxCount=2)) == {small}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(ImageId=machine, MinCount=2, MaxCount=2)
    assert error_code(e) == "InsufficientInstanceCapacity"
    assert zone_of(ec2.run_instances(ImageId=machine, MinCount=1, MaxCount=1)) == {big}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(
            ImageId=machine, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "nowhere-1z"}
        )
    assert error_code(e) == "InvalidParameterValue"


def test_reboot_console_output_and_password_data(
    cloud: Any, ec2: Any, ec2_other: Any, zones: Any, images: dict[str, str]
) -> None:
    zone = unique("zr")
    fake = zones(zone)
    (instance_id,) = instances_of(
        ec2.run_instances(
            ImageId=images["machine"], MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone}
        )
    )
    wait_state(ec2, [instance_id], "running")
    output = ec2.get_console_output(InstanceId=instance_id)
    assert output["InstanceId"] == instance_id
    assert f"euca-guest: booted {instance_id}" in output["Output"]  # botocore decodes the base64
    ec2.reboot_instances(InstanceIds=[instance_id])
    assert fake.reboots(instance_id) == 1
    assert ec2.get_console_output(InstanceId=instance_id)["Output"].count("booted") == 2
    text = cloud.aws("ec2", "get-console-output", "--instance-id", instance_id, "--output", "text").stdout
    assert f"euca-guest: booted {instance_id}" in text

    # A Linux instance has no Windows password: EC2 answers with empty password data, not an error;
    # another account's instance is not found.
    password = ec2.get_password_data(InstanceId=instance_id)
    assert (password["InstanceId"], password["PasswordData"]) == (instance_id, "")
    assert isinstance(password["Timestamp"], datetime)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.get_password_data(InstanceId=instance_id)
    assert error_code(e) == "InvalidInstanceID.NotFound"

    for action in ("stop_instances", "start_instances"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            getattr(ec2, action)(InstanceIds=[instance_id])
        assert error_code(e) == "UnsupportedOperation"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.stop_instances(InstanceIds=["i-00000000"])
    assert error_code(e) == "InvalidInstanceID.NotFound"

    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")
    # a terminated instance has no console left, and cannot be rebooted
    assert ec2.get_console_output(InstanceId=instance_id).get("Output") in (None, "")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.reboot_instances(InstanceIds=[instance_id])
    assert error_code(e) == "IncorrectInstanceState"


def test_kernel_and_ramdisk_overrides(ec2: Any, zones: Any, images: dict[str, str]) -> None:
    zone = unique("zk")
    fake = zones(zone)
    reservation = ec2.run_instances(
        ImageId=images["machine"],
        MinCount=1,
        MaxCount=1,
        KernelId=images["kernel"],
        RamdiskId=images["ramdisk"],
        Placement={"AvailabilityZone": zone},
    )
    instance = reservation["Instances"][0]
    assert (instance["KernelId"], instance["RamdiskId"]) == (images["kernel"], images["ramdisk"])
    (spec,) = fake.specs
    assert (
        spec.kernel is not None and spec.kernel.image_id == images["kernel"] and spec.kernel.kind == "kernel"
    )
    assert spec.ramdisk is not None and spec.ramdisk.image_id == images["ramdisk"]
    assert b.parse_download_manifest(spec.kernel.download_manifest.encode()).image_type == "kernel"


def test_bad_requests(ec2: Any, zones: Any, images: dict[str, str]) -> None:
    zone = unique("ze")
    zones(zone)
    base = {
        "ImageId": images["machine"],
        "MinCount": 1,
        "MaxCount": 1,
        "Placement": {"AvailabilityZone": zone},
    }
    for change, code in [
        ({"ImageId": "emi-00000000"}, "InvalidAMIID.NotFound"),
        ({"ImageId": "ami-nope"}, "InvalidAMIID.Malformed"),
        ({"ImageId": images["kernel"]}, "InvalidParameterValue"),
        ({"KernelId": images["ramdisk"]}, "InvalidParameterValue"),
        ({"KernelId": "eki-00000000"}, "InvalidAMIID.NotFound"),
        ({"KeyName": "no-such-key"}, "InvalidKeyPair.NotFound"),
        ({"InstanceType": "m9.enormous"}, "InvalidParameterValue"),
        ({"MinCount": 3, "MaxCount": 2}, "InvalidParameterValue"),
        ({"MinCount": 0}, "InvalidParameterValue"),
        ({"SubnetId": "subnet-12345678"}, "InvalidParameterCombination"),
        (
            {"TagSpecifications": [{"ResourceType": "volume", "Tags": [{"Key": "a", "Value": "b"}]}]},
            "InvalidParameterValue",
        ),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.run_instances(**{**base, **change})
        assert error_code(e) == code, change
    for call, code in [
        (lambda: ec2.terminate_instances(InstanceIds=["i-zzzz"]), "InvalidInstanceID.Malformed"),
        (
            lambda: ec2.terminate_instances(InstanceIds=["i-00000000", "i-00000001"]),
            "InvalidInstanceID.NotFound",
        ),
        (lambda: ec2.get_console_output(InstanceId="i-00000000"), "InvalidInstanceID.NotFound"),
        (lambda: ec2.describe_instance_status(InstanceIds=["i-00000000"]), "InvalidInstanceID.NotFound"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert error_code(e) == code


def test_a_cluster_fault_terminates_the_instances_with_its_reason(
    ec2: Any, zones: Any, images: dict[str, str]
) -> None:
    zone = unique("zq")
    fake = zones(zone)
    fake.run_fault = ("InternalError", "the node's disk is full")
    token = unique("t")
    args = {
        "ImageId": images["machine"],
        "MinCount": 2,
        "MaxCount": 2,
        "Placement": {"AvailabilityZone": zone},
    }
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(ClientToken=token, **args)
    assert error_code(e) == "InternalError"
    # (botocore retries an InternalError once: each attempt is a failed reservation of its own)
    failed = ec2.describe_instances(Filters=[{"Name": "availability-zone", "Values": [zone]}])["Reservations"]
    assert failed and {i["State"]["Name"] for r in failed for i in r["Instances"]} == {"terminated"}
    reason = failed[0]["Instances"][0]["StateReason"]
    assert reason["Code"] == "Server.InternalError" and "disk is full" in reason["Message"]
    # a failed launch does not hold on to its client token: the client's retry is a new attempt
    fake.run_fault = None
    retried = ec2.run_instances(ClientToken=token, **args)
    assert retried["ReservationId"] not in {r["ReservationId"] for r in failed}
    assert {i["State"]["Name"] for i in retried["Instances"]} <= {"pending", "running"}

    fake.run_fault = ("InsufficientInstanceCapacity", "all nodes busy")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(
            ImageId=images["machine"], MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone}
        )
    assert error_code(e) == "InsufficientInstanceCapacity"


def test_zones_from_clusters_and_verbose(
    cloud: Any, ec2: Any, ec2_other: Any, zones: Any, images: dict[str, str]
) -> None:
    zone = unique("zv")
    fake = zones(zone, [FakeNode(f"{zone}-n1", cores=4, memory_mb=1024, disk_gb=40)])
    rows = ec2.describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    names = [r["ZoneName"] for r in rows]
    at = names.index(zone)
    assert names[at + 1] == "|- vm types" and rows[at + 1]["State"] == "free / max   cpu   ram  disk"
    small = next(r for r in rows[at:] if r["ZoneName"] == "|- m1.small")
    assert small["State"] == "0004 / 0004    1    256     5"
    large = next(r for r in rows[at:] if r["ZoneName"] == "|- m1.large")
    assert large["State"].startswith("0002 / 0002    2    512")
    assert rows[at]["State"].startswith("127.0.0.1 arn:euca:eucalyptus:")
    # not an admin: plain zones
    plain = ec2_other.describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    assert zone in [z["ZoneName"] for z in plain] and not any(z["ZoneName"].startswith("|-") for z in plain)
    # a CC that stops answering makes its zone unavailable, and nothing is placed there
    fake.refuse_calls = True
    wait_for("zone unavailable", lambda: zone_state(ec2, zone) == "unavailable")
    assert "down" in admin_cli(cloud, "describe-services")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.run_instances(
            ImageId=images["machine"], MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone}
        )
    assert error_code(e) == "InsufficientInstanceCapacity"
    fake.refuse_calls = False
    wait_for("zone available again", lambda: zone_state(ec2, zone) == "available")


def test_a_cc_whose_certificate_names_another_cluster_is_refused(
    cloud: Any, ec2: Any, tmp_path: Path
) -> None:
    with FakeCluster(cloud.ctx.ca, tmp_path / "impostor", "zimp", cert_name="someone-else") as fake:
        admin_cli(
            cloud,
            "register-cluster",
            "zimp",
            "--host",
            "127.0.0.1",
            "--port",
            str(fake.port),
            "--no-join-token",
        )
        try:
            line = wait_for(
                "the poll to refuse it",
                lambda: (
                    next(
                        (x for x in admin_cli(cloud, "describe-services").splitlines() if "\tzimp\t" in x), ""
                    ).find("Unauthorized")
                    >= 0
                    and next(x for x in admin_cli(cloud, "describe-services").splitlines() if "\tzimp\t" in x)
                ),
            )
            assert "\tdown\t" in line and "someone-else" in line
            assert zone_state(ec2, "zimp") == "unavailable"
            assert fake.last_topology is None  # it was never told anything
        finally:
            admin_cli(cloud, "deregister-cluster", "zimp")


def test_admin_describe_services_and_nodes(cloud: Any, ec2: Any, zones: Any, images: dict[str, str]) -> None:
    zone = unique("zs")
    zones(zone, [FakeNode(f"{zone}-n1", cores=4), FakeNode(f"{zone}-n2", cores=2)])
    (instance_id,) = instances_of(
        ec2.run_instances(
            ImageId=images["machine"], MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone}
        )
    )
    wait_state(ec2, [instance_id], "running")
    services = admin_cli(cloud, "describe-services")
    line = next(x for x in services.splitlines() if f"\tcluster\t{zone}\t" in x)
    assert "\tup\t" in line
    assert f"\tnode\t{zone}-n1\t{zone}\t" in services
    nodes = wait_for(
        "the poll to report the instance's resources",
        lambda: (out := admin_cli(cloud, "describe-nodes")) and "cores 3/4" in out and out,
    )
    n1 = next(x for x in nodes.splitlines() if x.startswith(f"NODE\t{zone}-n1\t"))
    assert "\tup\t" in n1 and f"instances {instance_id}" in n1
    assert "cores 2/2" in next(x for x in nodes.splitlines() if x.startswith(f"NODE\t{zone}-n2\t"))
    # a cluster with instances cannot be deregistered
    result = CliRunner().invoke(
        main, ["--data-dir", str(cloud.data_dir), "admin", "deregister-cluster", zone]
    )
    assert result.exit_code != 0 and "terminate them first" in result.output


def test_instance_type_edits_reach_describe_and_run(
    cloud: Any, ec2: Any, zones: Any, images: dict[str, str]
) -> None:
    zone = unique("zi")
    fake = zones(zone, [FakeNode(f"{zone}-n1", cores=8)])
    try:
        admin_cli(cloud, "modify-instance-type", "t1.micro", "--cpu", "2", "--memory", "300")
        (t,) = ec2.describe_instance_types(InstanceTypes=["t1.micro"])["InstanceTypes"]
        assert (t["VCpuInfo"]["DefaultVCpus"], t["MemoryInfo"]["SizeInMiB"]) == (2, 300)
        wait_for(
            "the CC to hear of the new size",
            lambda: (
                fake.last_topology
                and any(v.name == "t1.micro" and v.cores == 2 for v in fake.last_topology.vm_types)
            ),
        )
        ec2.run_instances(
            ImageId=images["machine"],
            MinCount=1,
            MaxCount=1,
            InstanceType="t1.micro",
            Placement={"AvailabilityZone": zone},
        )
        spec = fake.specs[-1]
        assert (spec.vm_type.cores, spec.vm_type.memory_mb) == (2, 300)
    finally:
        admin_cli(cloud, "modify-instance-type", "t1.micro", "--cpu", "1", "--memory", "256")


def test_aws_cli_run_describe_terminate(cloud: Any, zones: Any, images: dict[str, str]) -> None:
    import json

    zone = unique("zcli")
    zones(zone)
    out = cloud.aws(
        "ec2",
        "run-instances",
        "--image-id",
        images["machine"],
        "--count",
        "2",
        "--instance-type",
        "m1.small",
        "--placement",
        f"AvailabilityZone={zone}",
        "--user-data",
        "hello",
    ).stdout
    ids = [i["InstanceId"] for i in json.loads(out)["Instances"]]
    assert len(ids) == 2
    listed = json.loads(
        cloud.aws(
            "ec2",
            "describe-instances",
            "--filters",
            f"Name=availability-zone,Values={zone}",
            "--query",
            "Reservations[].Instances[].InstanceId",
        ).stdout
    )
    assert sorted(listed) == sorted(ids)
    gone = json.loads(cloud.aws("ec2", "terminate-instances", "--instance-ids", *ids).stdout)
    assert {c["CurrentState"]["Name"] for c in gone["TerminatingInstances"]} <= {
        "shutting-down",
        "terminated",
    }


# -- node loss, forgetting, and a CLC restart: clouds of their own -----------------------------------------


def test_lost_instances_terminate_and_terminated_ones_are_forgotten(
    tmp_path: Path, images: dict[str, str]
) -> None:
    server = start(tmp_path / "short", **{"clc.node_lost_timeout": 1.0, "clc.terminated_ttl": 1.0})
    euca = next(server)
    try:
        ec2 = euca.client("ec2")
        image_id = register_tiny_image(euca, tmp_path)
        with FakeCluster(euca.ctx.ca, tmp_path / "zl", "zl") as fake:
            admin_cli(
                euca,
                "register-cluster",
                "zl",
                "--host",
                "127.0.0.1",
                "--port",
                str(fake.port),
                "--no-join-token",
            )
            wait_for("zone available", lambda: zone_state(ec2, "zl") == "available")
            ids = instances_of(ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2))
            wait_state(ec2, ids, "running")
            fake.forget(ids[0])  # its node vanished
            lost = wait_for(
                "the lost instance terminated",
                lambda: (d := describe(ec2, ids)) and d[ids[0]]["State"]["Name"] == "terminated" and d,
            )
            assert lost[ids[0]]["StateReason"]["Code"] == "Server.InternalError"
            assert lost[ids[1]]["State"]["Name"] == "running"
            # terminated instances disappear after the TTL
            wait_for(
                "the lost instance forgotten",
                lambda: (
                    ids[0]
                    not in {
                        i["InstanceId"]
                        for r in ec2.describe_instances()["Reservations"]
                        for i in r["Instances"]
                    }
                ),
            )
            ec2.terminate_instances(InstanceIds=[ids[1]])
    finally:
        server.close()


def test_a_restarted_clc_keeps_its_instances(tmp_path: Path) -> None:
    data = tmp_path / "restart"
    server = start(data)
    euca = next(server)
    with FakeCluster(euca.ctx.ca, tmp_path / "zr", "zr") as fake:
        try:
            ec2 = euca.client("ec2")
            image_id = register_tiny_image(euca, tmp_path)
            admin_cli(
                euca,
                "register-cluster",
                "zr",
                "--host",
                "127.0.0.1",
                "--port",
                str(fake.port),
                "--no-join-token",
            )
            wait_for("zone available", lambda: zone_state(ec2, "zr") == "available")
            ids = instances_of(ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2))
            before = wait_state(ec2, ids, "running")
        finally:
            server.close()
        # the instances keep running in the cluster while the CLC is away; a new CLC on the same data finds them
        server = start(data)
        euca = next(server)
        try:
            ec2 = euca.client("ec2")
            wait_for("zone available after restart", lambda: zone_state(ec2, "zr") == "available")
            after = wait_state(ec2, ids, "running")
            assert {i: after[i]["PrivateIpAddress"] for i in ids} == {
                i: before[i]["PrivateIpAddress"] for i in ids
            }
            ec2.terminate_instances(InstanceIds=ids)
            wait_state(ec2, ids, "terminated")
            assert len(fake.run_calls) == 1
        finally:
            server.close()


# -- one box: the real CC and NC roles in the same process, libvirt's test:///default driver ---------------


def test_one_box_runs_instances_through_the_real_cc_and_nc(tmp_path: Path) -> None:
    """`euca --role all` registers its own CC and NC at start; instances go CLC -> CC -> NC over mutual TLS.
    The NC drives libvirt's test driver, so no guest boots (real guests are in tests/e2e)."""
    overrides = {"nc.libvirt_uri": "test:///default", "clc.poll_interval": POLL, "cc.poll_interval": POLL}
    server = start_euca(tmp_path / "onebox", roles="all", overrides=overrides)
    euca = next(server)
    try:
        ec2 = euca.client("ec2")
        assert zone_state(ec2, euca.ctx.config.zone) == "available"  # polled before the cloud said ready
        image_id = register_tiny_image(euca, tmp_path)
        reservation = ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2, InstanceType="m1.small")
        ids = instances_of(reservation)
        assert {i["Placement"]["AvailabilityZone"] for i in reservation["Instances"]} == {
            euca.ctx.config.zone
        }
        running = wait_state(ec2, ids, "running")
        assert all(i["PrivateIpAddress"].startswith("10.77.0.") for i in running.values())
        nodes = wait_for(
            "the local node to report the instances",
            lambda: (out := admin_cli(euca, "describe-nodes")) and all(i in out for i in ids) and out,
        )
        assert nodes.startswith("NODE\t") and "\tup\t" in nodes
        ec2.reboot_instances(InstanceIds=ids[:1])
        assert ec2.get_console_output(InstanceId=ids[0])["InstanceId"] == ids[0]
        ec2.terminate_instances(InstanceIds=ids)
        wait_state(ec2, ids, "terminated")
    finally:
        server.close()
