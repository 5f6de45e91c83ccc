"""The EC2 Query wire format, without sockets: botocore serialises requests, euca parses them; euca renders
results and errors, botocore parses them back. Agreement with botocore's own code is the proof."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from euca.protocol.ec2 import filters, messages, wire
from euca.protocol.ec2.filters import Filter, FilterSet, PageLimits, paginate
from euca.protocol.ec2.wire import Ec2Error


def botocore_params(service_model: Any, action: str, params: dict[str, Any]) -> dict[str, str]:
    """The form fields botocore sends for `action`, as strings (what arrives on the wire)."""
    body = create_serializer("ec2").serialize_to_request(params, service_model.operation_model(action))[
        "body"
    ]
    return {k: str(v) for k, v in body.items()}


def parse(service_model: Any, action: str, params: dict[str, Any]) -> Any:
    env = wire.envelope(botocore_params(service_model, action, params))
    assert env.action == action
    assert env.version == "2016-11-15"
    return wire.parse_request(action, env.params, messages.REQUEST_TYPES[action])


def parse_back(service_model: Any, action: str, body: bytes, status: int = 200) -> dict[str, Any]:
    shape = service_model.operation_model(action).output_shape if status == 200 else None
    parsed: dict[str, Any] = create_parser("ec2").parse(
        {"body": body, "headers": {}, "status_code": status}, shape
    )
    return parsed


# -- requests --------------------------------------------------------------------------------------------


def test_describe_images_lists_filters_and_integers(service_model: Any) -> None:
    req = parse(
        service_model,
        "DescribeImages",
        {
            "ImageIds": ["emi-12345678", "emi-abcdef01"],
            "Owners": ["self", "123456789012"],
            "ExecutableUsers": ["all"],
            "Filters": [
                {"Name": "tag:role", "Values": ["web", "db*"]},
                {"Name": "state", "Values": ["available"]},
            ],
            "MaxResults": 10,
            "NextToken": "abc",
            "DryRun": True,
        },
    )
    assert isinstance(req, messages.DescribeImagesRequest)
    assert req.image_ids == ["emi-12345678", "emi-abcdef01"]
    assert req.owners == ["self", "123456789012"]
    assert req.executable_users == ["all"]
    assert req.filters == [
        Filter(name="tag:role", values=["web", "db*"]),
        Filter(name="state", values=["available"]),
    ]
    assert req.max_results == 10 and req.next_token == "abc" and req.dry_run is True


def test_blob_is_base64_decoded(service_model: Any) -> None:
    material = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI comment\n"
    req = parse(service_model, "ImportKeyPair", {"KeyName": "k", "PublicKeyMaterial": material})
    assert req.public_key_material == material


def test_nested_structures_and_tag_specifications(service_model: Any) -> None:
    req = parse(
        service_model,
        "ModifyImageAttribute",
        {
            "ImageId": "emi-12345678",
            "LaunchPermission": {
                "Add": [{"Group": "all"}, {"UserId": "123456789012"}],
                "Remove": [{"UserId": "1"}],
            },
            "Description": {"Value": "hello"},
        },
    )
    assert req.launch_permission.add == [
        messages.LaunchPermission(group="all"),
        messages.LaunchPermission(user_id="123456789012"),
    ]
    assert req.launch_permission.remove == [messages.LaunchPermission(user_id="1")]
    assert req.description == messages.AttributeValue(value="hello")
    req = parse(
        service_model,
        "CreateKeyPair",
        {
            "KeyName": "k",
            "TagSpecifications": [{"ResourceType": "key-pair", "Tags": [{"Key": "a", "Value": ""}]}],
        },
    )
    assert req.tag_specifications == [
        messages.TagSpecification(resource_type="key-pair", tags=[messages.Tag(key="a", value="")])
    ]


def test_old_style_attribute_parameters(service_model: Any) -> None:
    req = parse(
        service_model,
        "ModifyImageAttribute",
        {
            "ImageId": "emi-12345678",
            "Attribute": "launchPermission",
            "OperationType": "add",
            "UserIds": ["1", "2"],
        },
    )
    assert req.attribute == "launchPermission" and req.operation_type == "add" and req.user_ids == ["1", "2"]


def test_delete_tags_tells_empty_value_from_no_value(service_model: Any) -> None:
    req = parse(
        service_model,
        "DeleteTags",
        {"Resources": ["emi-12345678"], "Tags": [{"Key": "a"}, {"Key": "b", "Value": ""}]},
    )
    assert req.tags == [messages.Tag(key="a"), messages.Tag(key="b", value="")]


def test_list_indexes_sort_numerically_and_query_string_works() -> None:
    params = wire.parse_form("Action=DescribeKeyPairs&KeyName.10=j&KeyName.2=b&KeyName.1=a", b"", None)
    env = wire.envelope(params)
    req = wire.parse_request(env.action, env.params, messages.DescribeKeyPairsRequest)
    assert req.key_names == ["a", "b", "j"]
    assert env.version == wire.API_VERSION


def test_form_body_and_signature_fields_are_not_action_parameters() -> None:
    body = b"Action=DescribeRegions&Version=2014-06-15&AWSAccessKeyId=AK&Signature=x%2By&SignatureVersion=2&RegionName.1=r"
    env = wire.envelope(wire.parse_form("", body, "application/x-www-form-urlencoded; charset=utf-8"))
    assert env.version == "2014-06-15"
    assert env.params == {"RegionName.1": "r"}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Action": "DescribeImages", "MaxResults": "ten"}, "InvalidParameterValue"),
        ({"Action": "DescribeImages", "DryRun": "yes"}, "InvalidParameterValue"),
        ({"Action": "DescribeImages", "Bogus": "1"}, "UnknownParameter"),
        ({"Action": "DescribeImages", "Filter.1.Colour": "x"}, "UnknownParameter"),
        ({"Action": "DescribeImages", "ImageId.x": "emi-12345678"}, "UnknownParameter"),
        ({"Action": "CreateKeyPair"}, "MissingParameter"),
        ({"Action": "CreateTags", "ResourceId.1": "emi-12345678"}, "MissingParameter"),
        (
            {"Action": "ImportKeyPair", "KeyName": "k", "PublicKeyMaterial": "not base64!"},
            "InvalidParameterValue",
        ),
        ({"Action": "Frobnicate"}, "InvalidAction"),
        ({"Version": "2016-11-15"}, "MissingAction"),
    ],
)
def test_bad_requests_get_ec2_codes(params: dict[str, str], code: str) -> None:
    with pytest.raises(Ec2Error) as err:
        env = wire.envelope(params)
        wire.parse_request(env.action, env.params, messages.REQUEST_TYPES.get(env.action, messages.Wire))
    assert err.value.code == code
    assert err.value.status == 400


def test_missing_parameter_names_the_wire_name() -> None:
    with pytest.raises(Ec2Error) as err:
        wire.parse_request("ImportKeyPair", {"KeyName": "k"}, messages.ImportKeyPairRequest)
    assert err.value.code == "MissingParameter"
    assert "PublicKeyMaterial" in err.value.message


def test_every_request_type_matches_the_model() -> None:
    """Each declared request field is a member of the action's input shape (so the decoder can fill it)."""
    model = wire.model()
    for action, request_type in messages.REQUEST_TYPES.items():
        members = model.shapes[model.operations[action]["input"]["shape"]]["members"]
        info = request_type.__struct_encode_fields__
        unknown = [name for name in info if name not in members]
        assert not unknown, f"{action}: {unknown}"


# -- responses -------------------------------------------------------------------------------------------


def test_describe_key_pairs_renders_what_botocore_reads(service_model: Any) -> None:
    created = datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)
    result = messages.DescribeKeyPairsResult(
        key_pairs=[
            messages.KeyPairInfo(
                key_pair_id="key-0123456789abcdef0",
                key_name='a <&> "b"',
                key_fingerprint="aa:bb",
                key_type="rsa",
                create_time=created,
                public_key="ssh-rsa AAAA a",
                tags=[messages.Tag(key="k", value="v")],
            )
        ]
    )
    body = wire.render_response("DescribeKeyPairs", result, "req-1")
    assert body.startswith(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeKeyPairsResponse xmlns="http://ec2'
    )
    parsed = parse_back(service_model, "DescribeKeyPairs", body)
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"
    (kp,) = parsed["KeyPairs"]
    assert kp["KeyName"] == 'a <&> "b"'
    assert kp["CreateTime"] == created
    assert kp["Tags"] == [{"Key": "k", "Value": "v"}]
    assert kp["PublicKey"] == "ssh-rsa AAAA a"


def test_empty_lists_are_present_and_none_is_absent(service_model: Any) -> None:
    body = wire.render_response("DescribeImages", messages.DescribeImagesResult(images=[]), "r")
    parsed = parse_back(service_model, "DescribeImages", body)
    assert parsed["Images"] == []
    assert "NextToken" not in parsed


def test_image_and_instance_types_round_trip(service_model: Any) -> None:
    image = messages.Image(
        image_id="emi-12345678",
        state="available",
        owner_id="123456789012",
        creation_date="2024-05-01T12:00:00.000Z",
        public=True,
        architecture="x86_64",
        image_type="machine",
        name="centos",
        image_location="bucket/centos.manifest.xml",
        kernel_id="eki-12345678",
        root_device_name="/dev/sda1",
        virtualization_type="paravirtual",
        tags=[messages.Tag(key="a", value="b")],
    )
    body = wire.render_response(
        "DescribeImages", messages.DescribeImagesResult(images=[image], next_token="t"), "r"
    )
    parsed = parse_back(service_model, "DescribeImages", body)
    (img,) = parsed["Images"]
    assert img["ImageId"] == "emi-12345678" and img["Public"] is True and img["KernelId"] == "eki-12345678"
    assert img["RootDeviceType"] == "instance-store" and img["ImageLocation"] == "bucket/centos.manifest.xml"
    assert img["Tags"] == [{"Key": "a", "Value": "b"}]
    assert parsed["NextToken"] == "t"

    info = messages.InstanceTypeInfo(
        instance_type="m1.small",
        v_cpu_info=messages.VCpuInfo(default_v_cpus=1),
        memory_info=messages.MemoryInfo(size_in_mib=256),
        instance_storage_info=messages.InstanceStorageInfo(
            total_size_in_gb=5, disks=[messages.DiskInfo(size_in_gb=5)]
        ),
    )
    body = wire.render_response(
        "DescribeInstanceTypes", messages.DescribeInstanceTypesResult(instance_types=[info]), "r"
    )
    (t,) = parse_back(service_model, "DescribeInstanceTypes", body)["InstanceTypes"]
    assert t["VCpuInfo"]["DefaultVCpus"] == 1
    assert t["MemoryInfo"]["SizeInMiB"] == 256
    assert t["InstanceStorageInfo"]["TotalSizeInGB"] == 5
    assert t["InstanceStorageInfo"]["Disks"] == [{"SizeInGB": 5, "Count": 1, "Type": "hdd"}]


def test_return_members_and_actions_without_output(service_model: Any) -> None:
    body = wire.render_response("DeleteKeyPair", messages.DeleteKeyPairResult(key_pair_id="key-1"), "r")
    parsed = parse_back(service_model, "DeleteKeyPair", body)
    assert parsed["Return"] is True and parsed["KeyPairId"] == "key-1"
    body = wire.render_response("CreateTags", None, "r")
    assert b"<return>true</return>" in body
    assert parse_back(service_model, "CreateTags", body)["ResponseMetadata"]["RequestId"] == "r"


def test_image_attribute_round_trip(service_model: Any) -> None:
    result = messages.ImageAttribute(
        image_id="emi-12345678",
        launch_permissions=[messages.LaunchPermission(group="all"), messages.LaunchPermission(user_id="1")],
        kernel_id=messages.AttributeValue(),
    )
    parsed = parse_back(
        service_model, "DescribeImageAttribute", wire.render_response("DescribeImageAttribute", result, "r")
    )
    assert parsed["LaunchPermissions"] == [{"Group": "all"}, {"UserId": "1"}]
    assert parsed["KernelId"] == {}


def test_rendering_a_member_the_model_lacks_is_a_bug() -> None:
    with pytest.raises(ValueError):
        wire.render_response("DescribeRegions", {"Regions": [], "Colour": "red"}, "r")


def test_errors_render_as_ec2_errors(service_model: Any) -> None:
    body = wire.render_error(Ec2Error("InvalidKeyPair.NotFound", "The key pair 'x<y' does not exist"), "rid")
    parsed = parse_back(service_model, "DescribeKeyPairs", body, status=400)
    assert parsed["Error"] == {
        "Code": "InvalidKeyPair.NotFound",
        "Message": "The key pair 'x<y' does not exist",
    }
    assert parsed["ResponseMetadata"]["RequestId"] == "rid"
    assert Ec2Error("AuthFailure", "x").status == 401
    assert Ec2Error("DryRunOperation", "x").status == 412


# -- filters and pages -----------------------------------------------------------------------------------


class Thing:
    def __init__(self, name: str, size: int, tags: dict[str, str]):
        self.name, self.size, self.tags = name, size, tags


THINGS = FilterSet[Thing]({"name": lambda t: t.name, "size": lambda t: t.size}, tags=lambda t: t.tags)


def test_filters_and_values_or_filters_and_tags() -> None:
    items = [
        Thing("web-1", 1, {"role": "web"}),
        Thing("db-1", 2, {"role": "db", "env": ""}),
        Thing("x", 1, {}),
    ]

    def names(fs: list[Filter]) -> list[str]:
        return [t.name for t in THINGS.apply(fs, items)]

    assert names([Filter(name="name", values=["web-*", "x"])]) == ["web-1", "x"]
    assert names([Filter(name="size", values=["1"]), Filter(name="name", values=["?"])]) == ["x"]
    assert names([Filter(name="tag:role", values=["d?"])]) == ["db-1"]
    assert names([Filter(name="tag-key", values=["env"])]) == ["db-1"]
    assert names([Filter(name="tag-value", values=["web"])]) == ["web-1"]
    assert names([Filter(name="tag:env", values=[""])]) == ["db-1"]
    assert names([]) == ["web-1", "db-1", "x"]
    with pytest.raises(Ec2Error) as err:
        names([Filter(name="colour", values=["red"])])
    assert err.value.code == "InvalidParameterValue"


def test_wildcards_escape() -> None:
    assert filters.wildcard_pattern(r"a\*b").fullmatch("a*b")
    assert not filters.wildcard_pattern(r"a\*b").fullmatch("axxb")
    assert filters.wildcard_pattern("a*b").fullmatch("axxb")
    assert filters.wildcard_pattern("a.b").fullmatch("a.b") and not filters.wildcard_pattern("a.b").fullmatch(
        "axb"
    )


def test_pages_cover_everything_once_even_when_items_change() -> None:
    items = [f"i-{n:03d}" for n in range(23)]
    seen: list[str] = []
    token = None
    while True:
        page, token = paginate(items, lambda s: s, 5, token)
        seen.extend(page)
        if token is None:
            break
        items = items + ["i-000a"]  # added behind the cursor: not repeated, nothing skipped
    assert seen == [f"i-{n:03d}" for n in range(23)]
    assert paginate(items, lambda s: s, None, None)[1] is None


@pytest.mark.parametrize("max_results", [0, 4, 1001])
def test_max_results_bounds(max_results: int) -> None:
    with pytest.raises(Ec2Error) as err:
        paginate(["a"], lambda s: s, max_results, None, PageLimits(5, 1000))
    assert err.value.code == "InvalidParameterValue"


def test_bad_token() -> None:
    with pytest.raises(Ec2Error) as err:
        paginate(["a"], lambda s: s, 5, "!!!")
    assert err.value.code == "InvalidPaginationToken"
