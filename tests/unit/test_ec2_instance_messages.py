"""Instance actions on the EC2 wire, without sockets: botocore serialises requests, euca parses them; euca
renders results, botocore parses them back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from euca.protocol.ec2 import messages as m
from euca.protocol.ec2 import wire


def parse(service_model: Any, action: str, params: dict[str, Any]) -> Any:
    body = create_serializer("ec2").serialize_to_request(params, service_model.operation_model(action))[
        "body"
    ]
    env = wire.envelope({k: str(v) for k, v in body.items()})
    return wire.parse_request(action, env.params, m.REQUEST_TYPES[action])


def parse_back(service_model: Any, action: str, body: bytes) -> dict[str, Any]:
    shape = service_model.operation_model(action).output_shape
    parsed: dict[str, Any] = create_parser("ec2").parse(
        {"body": body, "headers": {}, "status_code": 200}, shape
    )
    return parsed


def test_run_instances_request(service_model: Any) -> None:
    req = parse(
        service_model,
        "RunInstances",
        {
            "ImageId": "emi-12345678",
            "MinCount": 1,
            "MaxCount": 3,
            "InstanceType": "m1.small",
            "KeyName": "k",
            "SecurityGroups": ["default", "web"],
            "UserData": base64.b64encode(b"#!/bin/sh\n").decode(),
            "Placement": {"AvailabilityZone": "euca-1a"},
            "KernelId": "eki-00000001",
            "RamdiskId": "eri-00000002",
            "ClientToken": "tok",
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "a", "Value": "b"}]}],
        },
    )
    assert isinstance(req, m.RunInstancesRequest)
    assert (req.min_count, req.max_count, req.image_id, req.instance_type) == (
        1,
        3,
        "emi-12345678",
        "m1.small",
    )
    assert req.security_groups == ["default", "web"]
    assert base64.b64decode(req.user_data or "") == b"#!/bin/sh\n"
    assert req.placement is not None and req.placement.availability_zone == "euca-1a"
    assert (req.kernel_id, req.ramdisk_id, req.client_token) == ("eki-00000001", "eri-00000002", "tok")
    assert req.tag_specifications[0].tags[0].key == "a"


def test_reservation_renders_for_botocore(service_model: Any) -> None:
    launched = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    instance = m.Instance(
        instance_id="i-0123abcd",
        image_id="emi-12345678",
        state=m.InstanceState(code=16, name="running"),
        instance_type="m1.small",
        launch_time=launched,
        placement=m.Placement(availability_zone="euca-1a", tenancy="default"),
        private_ip_address="10.77.0.5",
        security_groups=[m.GroupIdentifier(group_name="default")],
        state_reason=m.StateReason(code="x", message="y"),
        tags=[m.Tag(key="k", value="v")],
    )
    reservation = m.Reservation(reservation_id="r-0123abcd", owner_id="123456789012", instances=[instance])
    parsed = parse_back(
        service_model, "RunInstances", wire.render_response("RunInstances", reservation, "req")
    )
    (i,) = parsed["Instances"]
    assert parsed["ReservationId"] == "r-0123abcd"
    assert i["InstanceId"] == "i-0123abcd" and i["State"] == {"Code": 16, "Name": "running"}
    assert i["LaunchTime"] == launched and i["Placement"]["AvailabilityZone"] == "euca-1a"
    assert i["SecurityGroups"] == [{"GroupName": "default"}] and i["Tags"] == [{"Key": "k", "Value": "v"}]

    described = m.DescribeInstancesResult(reservations=[reservation], next_token="t")
    parsed = parse_back(
        service_model, "DescribeInstances", wire.render_response("DescribeInstances", described, "r")
    )
    assert parsed["Reservations"][0]["Instances"][0]["PrivateIpAddress"] == "10.77.0.5"
    assert parsed["NextToken"] == "t"


def test_terminate_console_and_status_render(service_model: Any) -> None:
    change = m.InstanceStateChange(
        instance_id="i-0123abcd",
        current_state=m.InstanceState(code=32, name="shutting-down"),
        previous_state=m.InstanceState(code=16, name="running"),
    )
    body = wire.render_response(
        "TerminateInstances", m.TerminateInstancesResult(terminating_instances=[change]), "r"
    )
    (t,) = parse_back(service_model, "TerminateInstances", body)["TerminatingInstances"]
    assert t["CurrentState"]["Name"] == "shutting-down" and t["PreviousState"]["Code"] == 16

    out = m.GetConsoleOutputResult(
        instance_id="i-0123abcd", output=base64.b64encode(b"booted\n").decode(), timestamp=datetime.now(UTC)
    )
    parsed = parse_back(service_model, "GetConsoleOutput", wire.render_response("GetConsoleOutput", out, "r"))
    assert base64.b64decode(parsed["Output"]) == b"booted\n"

    ok = m.InstanceStatusSummary(
        status="ok", details=[m.InstanceStatusDetails(name="reachability", status="passed")]
    )
    status = m.InstanceStatus(
        instance_id="i-0123abcd",
        availability_zone="euca-1a",
        instance_state=m.InstanceState(code=16, name="running"),
        instance_status=ok,
        system_status=ok,
    )
    body = wire.render_response(
        "DescribeInstanceStatus", m.DescribeInstanceStatusResult(instance_statuses=[status]), "r"
    )
    (s,) = parse_back(service_model, "DescribeInstanceStatus", body)["InstanceStatuses"]
    assert s["InstanceStatus"]["Details"] == [{"Name": "reachability", "Status": "passed"}]
    assert s["AvailabilityZone"] == "euca-1a"
