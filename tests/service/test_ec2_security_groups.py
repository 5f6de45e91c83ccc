"""Security groups through the EC2 API (boto3 and the aws CLI), EC2-Classic semantics as Eucalyptus answered
them, against the session's euca (fixtures in tests/service/conftest.py). Groups in use by instances are
tested with instances in test_ec2_addresses.py (a CLC with a stand-in cluster)."""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions
import pytest

from helpers.ec2 import error_code
from helpers.instances import unique


def group(ec2: Any, name: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_security_groups(GroupNames=[name])["SecurityGroups"][0]
    return found


def tcp(port: int, cidr: str = "0.0.0.0/0") -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}


def test_default_group_made_on_first_use_admits_its_members(ec2_other: Any) -> None:
    default = group(ec2_other, "default")
    assert default["GroupId"].startswith("sg-") and default["Description"] == "default group"
    perms = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in default["IpPermissions"]}
    assert set(perms) == {("icmp", -1, -1), ("tcp", 0, 65535), ("udp", 0, 65535)}
    for p in perms.values():
        assert [g["GroupId"] for g in p["UserIdGroupPairs"]] == [default["GroupId"]]
    assert default["IpPermissionsEgress"] == []
    # the default group stays: neither made twice nor deleted
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.create_security_group(GroupName="default", Description="again")
    assert error_code(e) == "InvalidGroup.Reserved"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.delete_security_group(GroupName="default")
    assert error_code(e) == "InvalidGroup.Reserved"


def test_create_describe_delete_by_name_and_id(ec2: Any, account_ids: dict[str, str]) -> None:
    name = unique("web")
    made = ec2.create_security_group(
        GroupName=name,
        Description="web servers",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "tier", "Value": "front"}]}],
    )
    group_id = made["GroupId"]
    assert group_id.startswith("sg-") and made["Tags"] == [{"Key": "tier", "Value": "front"}]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_security_group(GroupName=name, Description="again")
    assert error_code(e) == "InvalidGroup.Duplicate"

    by_id = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    assert (by_id["GroupName"], by_id["Description"], by_id["OwnerId"]) == (
        name,
        "web servers",
        account_ids["eucalyptus"],
    )
    assert by_id["Tags"] == [{"Key": "tier", "Value": "front"}]
    for filters in (
        [{"Name": "group-name", "Values": [name]}],
        [{"Name": "description", "Values": ["web serv*"]}, {"Name": "group-id", "Values": [group_id]}],
        [{"Name": "tag:tier", "Values": ["front"]}, {"Name": "group-name", "Values": ["web-*"]}],
    ):
        found = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
        assert group_id in [g["GroupId"] for g in found], filters
    ec2.create_tags(Resources=[group_id], Tags=[{"Key": "env", "Value": "test"}])
    assert {"Key": "env", "Value": "test"} in group(ec2, name)["Tags"]

    ec2.delete_security_group(GroupId=group_id)
    for kwargs in ({"GroupIds": [group_id]}, {"GroupNames": [name]}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.describe_security_groups(**kwargs)
        assert error_code(e) == "InvalidGroup.NotFound"
    other = unique("gone")
    ec2.create_security_group(GroupName=other, Description="x")
    ec2.delete_security_group(GroupName=other)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_security_group(GroupName=other)
    assert error_code(e) == "InvalidGroup.NotFound"


def test_authorize_revoke_classic_and_ip_permissions(ec2: Any) -> None:
    name = unique("app")
    group_id = ec2.create_security_group(GroupName=name, Description="app")["GroupId"]
    # the classic flat parameters, by name
    ec2.authorize_security_group_ingress(
        GroupName=name, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8"
    )
    # IpPermissions by id: a port range with two CIDRs, UDP, ICMP echo, all protocols
    answer = ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8000,
                "ToPort": 8080,
                "IpRanges": [{"CidrIp": "192.168.0.0/16", "Description": "lan"}, {"CidrIp": "1.2.3.4/32"}],
            },
            {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "icmp", "FromPort": 8, "ToPort": 0, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "172.16.0.0/12"}]},
        ],
    )
    rules = answer["SecurityGroupRules"]
    assert len(rules) == 5 and all(r["SecurityGroupRuleId"].startswith("sgr-") for r in rules)
    assert all(r["GroupId"] == group_id and r["IsEgress"] is False for r in rules)

    perms = {
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in group(ec2, name)["IpPermissions"]
    }
    assert set(perms) == {
        ("tcp", 22, 22),
        ("tcp", 8000, 8080),
        ("udp", 53, 53),
        ("icmp", 8, 0),
        ("-1", None, None),
    }
    assert perms[("tcp", 8000, 8080)]["IpRanges"] == [
        {"CidrIp": "192.168.0.0/16", "Description": "lan"},
        {"CidrIp": "1.2.3.4/32"},
    ]
    found = ec2.describe_security_groups(
        Filters=[
            {"Name": "ip-permission.from-port", "Values": ["8000"]},
            {"Name": "ip-permission.cidr", "Values": ["1.2.3.4/32"]},
        ]
    )["SecurityGroups"]
    assert [g["GroupId"] for g in found] == [group_id]

    described = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    assert {r["SecurityGroupRuleId"] for r in described["SecurityGroupRules"]} >= {
        r["SecurityGroupRuleId"] for r in rules
    }
    assert len(described["SecurityGroupRules"]) == 6

    # the same rule again, alone or in a batch, adds nothing
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[tcp(22, "10.0.0.0/8")])
    assert error_code(e) == "InvalidPermission.Duplicate"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[tcp(23), tcp(22, "10.0.0.0/8")])
    assert error_code(e) == "InvalidPermission.Duplicate"
    assert ("tcp", 23, 23) not in {
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) for p in group(ec2, name)["IpPermissions"]
    }

    # revoke: classic, IpPermissions, rule id; a rule that is not there is NotFound
    ec2.revoke_security_group_ingress(
        GroupName=name, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8"
    )
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.revoke_security_group_ingress(
            GroupName=name, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8"
        )
    assert error_code(e) == "InvalidPermission.NotFound"
    ec2.revoke_security_group_ingress(
        GroupId=group_id, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "172.16.0.0/12"}]}]
    )
    udp_rule = next(r for r in rules if r["IpProtocol"] == "udp")["SecurityGroupRuleId"]
    revoked = ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=[udp_rule])
    assert [r["SecurityGroupRuleId"] for r in revoked["RevokedSecurityGroupRules"]] == [udp_rule]
    left = {(p["IpProtocol"], p.get("FromPort")) for p in group(ec2, name)["IpPermissions"]}
    assert left == {("tcp", 8000), ("icmp", 8)}


def test_source_groups_by_name_id_and_other_account(
    ec2: Any, ec2_other: Any, account_ids: dict[str, str]
) -> None:
    db = unique("db")
    db_id = ec2.create_security_group(GroupName=db, Description="db")["GroupId"]
    app = unique("app")
    app_id = ec2.create_security_group(GroupName=app, Description="app")["GroupId"]
    # by name (own account) in the flat form: all of ICMP, TCP and UDP from that group, as EC2-Classic
    ec2.authorize_security_group_ingress(GroupName=db, SourceSecurityGroupName=app)
    perms = group(ec2, db)["IpPermissions"]
    assert {(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in perms} == {
        ("icmp", -1, -1),
        ("tcp", 0, 65535),
        ("udp", 0, 65535),
    }
    assert all(
        p["UserIdGroupPairs"] == [{"UserId": account_ids["eucalyptus"], "GroupId": app_id, "GroupName": app}]
        for p in perms
    )
    # another account's group, by name and owner, and by id
    theirs = unique("theirs")
    their_id = ec2_other.create_security_group(GroupName=theirs, Description="theirs")["GroupId"]
    other_account = ec2_other.describe_security_groups(GroupIds=[their_id])["SecurityGroups"][0]["OwnerId"]
    ec2.authorize_security_group_ingress(
        GroupId=db_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "UserIdGroupPairs": [{"GroupName": theirs, "UserId": other_account}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 3306,
                "ToPort": 3306,
                "UserIdGroupPairs": [{"GroupId": their_id}],
            },
        ],
    )
    pairs = [
        g
        for p in group(ec2, db)["IpPermissions"]
        if p["FromPort"] in (5432, 3306)
        for g in p["UserIdGroupPairs"]
    ]
    assert {(g["GroupId"], g["UserId"]) for g in pairs} == {(their_id, other_account)}
    # a group other groups' rules name is in use (theirs is named by ours; app by db)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.delete_security_group(GroupId=their_id)
    assert error_code(e) == "InvalidGroup.InUse"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_security_group(GroupName=app)
    assert error_code(e) == "InvalidGroup.InUse"
    # unknown source groups
    for pair in ({"GroupName": "no-such-group"}, {"GroupId": "sg-00000000"}, {"GroupName": theirs}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.authorize_security_group_ingress(
                GroupId=db_id,
                IpPermissions=[{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "UserIdGroupPairs": [pair]}],
            )
        assert error_code(e) == "InvalidGroup.NotFound", pair
    ec2.delete_security_group(GroupId=db_id)  # its rules go with it: app and theirs are free again
    ec2.delete_security_group(GroupId=app_id)
    ec2_other.delete_security_group(GroupId=their_id)


@pytest.mark.parametrize(
    ("permission", "code"),
    [
        (tcp(22, "10.0.0.0/33"), "InvalidParameterValue"),
        (tcp(22, "10.0.0.300/8"), "InvalidParameterValue"),
        (tcp(22, "10.0.0.1"), "InvalidParameterValue"),
        (tcp(70000), "InvalidParameterValue"),
        (
            {"IpProtocol": "tcp", "FromPort": 100, "ToPort": 99, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            "InvalidParameterValue",
        ),
        (
            {"IpProtocol": "udp", "FromPort": -1, "ToPort": 53, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            "InvalidParameterValue",
        ),
        ({"IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidParameterValue"),
        (
            {"IpProtocol": "icmp", "FromPort": 300, "ToPort": 0, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            "InvalidParameterValue",
        ),
        ({"IpProtocol": "gre", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "InvalidPermission.Malformed"),
        (
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
            "InvalidParameterValue",
        ),
        ({"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}, "MissingParameter"),
    ],
)
def test_bad_permissions_get_aws_codes(ec2: Any, permission: dict[str, Any], code: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.authorize_security_group_ingress(GroupName="default", IpPermissions=[permission])
    assert error_code(e) == code


def test_unknown_groups_egress_and_bad_names(ec2: Any) -> None:
    for kwargs in (
        {"GroupName": "no-such-group"},
        {"GroupId": "sg-00000000"},
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.authorize_security_group_ingress(**kwargs, IpPermissions=[tcp(22)])
        assert error_code(e) == "InvalidGroup.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_security_groups(GroupIds=["not-a-group"])
    assert error_code(e) == "InvalidGroupId.Malformed"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_security_group(GroupName="sg-mine", Description="x")
    assert error_code(e) == "InvalidParameterValue"
    default_id = group(ec2, "default")["GroupId"]
    # EC2-Classic groups have no egress rules; EC2 refused these calls for them
    for call in (ec2.authorize_security_group_egress, ec2.revoke_security_group_egress):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(GroupId=default_id, IpPermissions=[tcp(80)])
        assert error_code(e) == "InvalidParameterValue"
        assert "Only Amazon VPC security groups" in str(e.value)


def test_pagination(ec2_other: Any) -> None:
    names = [unique("page") for _ in range(7)]
    for name in names:
        ec2_other.create_security_group(GroupName=name, Description="p")
    seen: list[str] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"MaxResults": 5, "Filters": [{"Name": "group-name", "Values": ["page-*"]}]}
        if token:
            kwargs["NextToken"] = token
        answer = ec2_other.describe_security_groups(**kwargs)
        assert len(answer["SecurityGroups"]) <= 5
        seen += [g["GroupName"] for g in answer["SecurityGroups"]]
        token = answer.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(names)
    for name in names:
        ec2_other.delete_security_group(GroupName=name)


def test_aws_cli(euca: Any) -> None:
    name = unique("cli")
    made = json.loads(
        euca.aws("ec2", "create-security-group", "--group-name", name, "--description", "from the cli").stdout
    )
    euca.aws(
        "ec2",
        "authorize-security-group-ingress",
        "--group-name",
        name,
        "--protocol",
        "tcp",
        "--port",
        "22",
        "--cidr",
        "0.0.0.0/0",
    )
    shown = json.loads(euca.aws("ec2", "describe-security-groups", "--group-names", name).stdout)
    perms = shown["SecurityGroups"][0]["IpPermissions"]
    assert perms == [
        {
            "IpProtocol": "tcp",
            "FromPort": 22,
            "ToPort": 22,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            "Ipv6Ranges": [],
            "PrefixListIds": [],
            "UserIdGroupPairs": [],
        }
    ]
    bad = euca.aws(
        "ec2",
        "authorize-security-group-ingress",
        "--group-name",
        name,
        "--protocol",
        "tcp",
        "--port",
        "22",
        "--cidr",
        "0.0.0.0/0",
        check=False,
    )
    assert bad.returncode != 0 and "InvalidPermission.Duplicate" in bad.stderr
    euca.aws(
        "ec2",
        "revoke-security-group-ingress",
        "--group-name",
        name,
        "--protocol",
        "tcp",
        "--port",
        "22",
        "--cidr",
        "0.0.0.0/0",
    )
    euca.aws("ec2", "delete-security-group", "--group-id", made["GroupId"])


def test_admin_verbose_sees_every_account(ec2: Any, ec2_other: Any) -> None:
    """euca-describe-groups verbose: the cloud admin sees every account's groups; others only their own."""
    theirs = group(ec2_other, "default")["GroupId"]
    everyone = ec2.describe_security_groups(GroupNames=["verbose"])["SecurityGroups"]
    assert theirs in [g["GroupId"] for g in everyone]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2_other.describe_security_groups(GroupNames=["verbose"])
    assert error_code(e) == "InvalidGroup.NotFound"


def cli_error(euca: Any, *args: str, creds: Any = None) -> str:
    """The error code the aws CLI prints for a refused call (it exits non-zero)."""
    result = euca.aws("ec2", *args, creds=creds, check=False)
    assert result.returncode != 0, args
    start = result.stderr.index("(") + 1
    return str(result.stderr[start : result.stderr.index(")", start)])


def test_aws_cli_classic_forms_icmp_other_accounts_and_errors(
    euca: Any, ec2: Any, ec2_other: Any, account_ids: dict[str, str]
) -> None:
    """The aws CLI's forms of the calls a user makes (EC2-Classic): port ranges, ICMP type-code, a source
    group of another account named by owner, DescribeSecurityGroupRules, filters and pages, and the codes
    for bad input."""
    name = unique("clix")
    group_id = json.loads(
        euca.aws("ec2", "create-security-group", "--group-name", name, "--description", "cli").stdout
    )["GroupId"]
    ingress = ("authorize-security-group-ingress", "--group-name", name)
    euca.aws("ec2", *ingress, "--protocol", "tcp", "--port", "8000-8080", "--cidr", "10.1.0.0/16")
    euca.aws("ec2", *ingress, "--protocol", "icmp", "--port", "8-0", "--cidr", "0.0.0.0/0")
    euca.aws(
        "ec2",
        *ingress,
        "--ip-permissions",
        json.dumps(
            [{"IpProtocol": "icmp", "FromPort": 3, "ToPort": 4, "IpRanges": [{"CidrIp": "10.2.0.0/16"}]}]
        ),
    )
    # Another account's group as the source, named by name and owner (the classic form).
    theirs = unique("theirs")
    ec2_other.create_security_group(GroupName=theirs, Description="other account")
    other_account = group(ec2_other, theirs)["OwnerId"]
    euca.aws(
        "ec2",
        *ingress,
        "--source-group",
        theirs,
        "--group-owner",
        other_account,
        "--protocol",
        "tcp",
        "--port",
        "5432",
    )

    perms = json.loads(euca.aws("ec2", "describe-security-groups", "--group-ids", group_id).stdout)[
        "SecurityGroups"
    ][0]["IpPermissions"]
    by_kind = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")): p for p in perms}
    assert set(by_kind) == {("tcp", 8000, 8080), ("icmp", 8, 0), ("icmp", 3, 4), ("tcp", 5432, 5432)}
    [pair] = by_kind[("tcp", 5432, 5432)]["UserIdGroupPairs"]
    assert (pair["UserId"], pair["GroupName"]) == (other_account, theirs)

    rules = json.loads(
        euca.aws(
            "ec2", "describe-security-group-rules", "--filters", f"Name=group-id,Values={group_id}"
        ).stdout
    )["SecurityGroupRules"]
    assert len(rules) == 4 and all(r["SecurityGroupRuleId"].startswith("sgr-") for r in rules)
    assert {(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules if r["IpProtocol"] == "icmp"} == {
        ("icmp", 8, 0),
        ("icmp", 3, 4),
    }
    one = rules[0]["SecurityGroupRuleId"]
    only = json.loads(
        euca.aws("ec2", "describe-security-group-rules", "--security-group-rule-ids", one).stdout
    )["SecurityGroupRules"]
    assert [r["SecurityGroupRuleId"] for r in only] == [one]

    found = json.loads(
        euca.aws(
            "ec2",
            "describe-security-groups",
            "--filters",
            "Name=ip-permission.protocol,Values=icmp",
            f"Name=owner-id,Values={account_ids['eucalyptus']}",
            "Name=group-name,Values=clix-*",
        ).stdout
    )["SecurityGroups"]
    assert group_id in [g["GroupId"] for g in found]
    # The CLI pages through MaxResults pages itself (--page-size) and joins them.
    names = [unique("pg") for _ in range(7)]
    for n in names:
        ec2.create_security_group(GroupName=n, Description="page")
    paged = json.loads(
        euca.aws(
            "ec2", "describe-security-groups", "--page-size", "5", "--filters", "Name=group-name,Values=pg-*"
        ).stdout
    )["SecurityGroups"]
    assert set(names) <= {g["GroupName"] for g in paged}
    assert len(paged) == len({g["GroupId"] for g in paged})

    # Bad input: the codes EC2 answers.
    assert cli_error(euca, *ingress, "--protocol", "tcp", "--port", "22", "--cidr", "10.0.0.0/33") == (
        "InvalidParameterValue"
    )
    assert cli_error(euca, *ingress, "--protocol", "tcp", "--port", "22", "--cidr", "10.0.0.300/8") == (
        "InvalidParameterValue"
    )
    assert cli_error(euca, *ingress, "--protocol", "tcp", "--port", "70000", "--cidr", "0.0.0.0/0") == (
        "InvalidParameterValue"
    )
    assert cli_error(euca, *ingress, "--protocol", "icmp", "--port", "300-0", "--cidr", "0.0.0.0/0") == (
        "InvalidParameterValue"
    )
    assert cli_error(euca, *ingress, "--protocol", "tcp", "--port", "8000-8080", "--cidr", "10.1.0.0/16") == (
        "InvalidPermission.Duplicate"
    )
    assert (
        cli_error(
            euca,
            "revoke-security-group-ingress",
            "--group-name",
            name,
            "--protocol",
            "udp",
            "--port",
            "53",
            "--cidr",
            "0.0.0.0/0",
        )
        == "InvalidPermission.NotFound"
    )
    assert (
        cli_error(
            euca,
            "authorize-security-group-ingress",
            "--group-name",
            unique("nosuch"),
            "--protocol",
            "tcp",
            "--port",
            "22",
            "--cidr",
            "0.0.0.0/0",
        )
        == "InvalidGroup.NotFound"
    )
    # Egress is VPC's: EC2-Classic groups refuse it.
    for call in ("authorize-security-group-egress", "revoke-security-group-egress"):
        assert (
            cli_error(
                euca,
                call,
                "--group-id",
                group_id,
                "--ip-permissions",
                json.dumps(
                    [
                        {
                            "IpProtocol": "tcp",
                            "FromPort": 80,
                            "ToPort": 80,
                            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                        }
                    ]
                ),
            )
            == "InvalidParameterValue"
        )
    # Another account's group is not the caller's to change or delete.
    their_id = group(ec2_other, theirs)["GroupId"]
    assert cli_error(euca, "delete-security-group", "--group-id", their_id) in (
        "InvalidGroup.NotFound",
        "AuthFailure",
    )

    euca.aws("ec2", "delete-security-group", "--group-id", group_id)
    for n in names:
        ec2.delete_security_group(GroupName=n)
    ec2_other.delete_security_group(GroupName=theirs)


def test_describe_security_group_rules_pages_and_unknown_ids(ec2: Any) -> None:
    name = unique("rules")
    group_id = ec2.create_security_group(GroupName=name, Description="rules")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[tcp(1000 + k) for k in range(7)])
    seen: list[str] = []
    kwargs: dict[str, Any] = {"MaxResults": 5, "Filters": [{"Name": "group-id", "Values": [group_id]}]}
    while True:
        answer = ec2.describe_security_group_rules(**kwargs)
        assert len(answer["SecurityGroupRules"]) <= 5
        seen += [r["SecurityGroupRuleId"] for r in answer["SecurityGroupRules"]]
        if not answer.get("NextToken"):
            break
        kwargs["NextToken"] = answer["NextToken"]
    assert len(seen) == len(set(seen)) == 7
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_security_group_rules(SecurityGroupRuleIds=["sgr-0000000000000000"])
    assert error_code(e) == "InvalidSecurityGroupRuleId.NotFound"
    egress = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}, {"Name": "is-egress", "Values": ["true"]}]
    )["SecurityGroupRules"]
    assert egress == []  # EC2-Classic groups have ingress rules only
    ec2.delete_security_group(GroupId=group_id)
