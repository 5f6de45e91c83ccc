"""EC2 input AWS refuses and euca must refuse too (issue 13, items 4 and 6): integers out of range before any
handler or query sees them, unknown API versions, reserved and control-character tag keys."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from helpers.signed import ec2_error_code, signed_ec2_post


@pytest.fixture(scope="module")
def ec2(euca: Any) -> Any:
    return euca.client("ec2")


def code(excinfo: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


@pytest.mark.parametrize("value", [9223372036854775807, 2**31, -(2**31) - 1, 10**30])
def test_integer_out_of_range_is_invalid_parameter_value(euca, value):
    r = signed_ec2_post(euca, f"Action=DescribeInstances&Version=2016-11-15&MaxResults={value}")
    assert r.status_code == 400 and ec2_error_code(r) == "InvalidParameterValue", r.text


def test_boto3_max_results_out_of_range(ec2):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_instances(MaxResults=9223372036854775807)
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_tags(MaxResults=2**40)
    assert code(e) == "InvalidParameterValue"
    # Within 32 bits: on to the action's own range check, as before.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.describe_instances(MaxResults=2147483647)
    assert "Expecting a value between 5 and 1000" in str(e.value)
    assert "Reservations" in ec2.describe_instances(MaxResults=1000)


def test_model_min_and_max_are_enforced(euca):
    # DescribeInstanceTypes' MaxResults is 5..100 in the model.
    r = signed_ec2_post(euca, "Action=DescribeInstanceTypes&Version=2016-11-15&MaxResults=101")
    assert r.status_code == 400 and ec2_error_code(r) == "InvalidParameterValue", r.text
    r = signed_ec2_post(euca, "Action=DescribeInstanceTypes&Version=2016-11-15&MaxResults=100")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("version", ["2099-01-01", "nonsense", "2016-13-45", "2005-01-01"])
def test_unknown_version_is_no_such_version(euca, version):
    r = signed_ec2_post(euca, f"Action=DescribeRegions&Version={version}")
    assert r.status_code == 400 and ec2_error_code(r) == "NoSuchVersion", r.text
    assert f"The requested version ({version}) of service AmazonEC2 does not exist" in r.text


@pytest.mark.parametrize("version", ["2016-11-15", "2014-06-15", "2009-11-30"])
def test_known_versions_are_answered(euca, version):
    r = signed_ec2_post(euca, f"Action=DescribeRegions&Version={version}")
    assert r.status_code == 200, r.text


def test_aws_prefixed_tag_keys_are_refused_by_create_and_delete(ec2):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_tags(Resources=["i-12345678"], Tags=[{"Key": "aws:owner", "Value": "x"}])
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_tags(Resources=["i-12345678"], Tags=[{"Key": "aws:owner"}])
    assert code(e) == "InvalidParameterValue"


def test_tag_key_with_nul_is_refused(ec2):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_tags(Resources=["i-12345678"], Tags=[{"Key": "a\x00b", "Value": "x"}])
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.delete_tags(Resources=["i-12345678"], Tags=[{"Key": "a\x00b"}])
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ec2.create_tags(Resources=["i-12345678"], Tags=[{"Key": "k", "Value": "v\x00"}])
    assert code(e) == "InvalidParameterValue"


def test_aws_cli_sees_the_aws_error_codes(aws_cli):
    out = aws_cli("ec2", "describe-instances", "--max-results", "9223372036854775807", check=False)
    assert out.returncode != 0 and "InvalidParameterValue" in out.stderr, out.stderr
    out = aws_cli("ec2", "delete-tags", "--resources", "i-12345678", "--tags", "Key=aws:x", check=False)
    assert out.returncode != 0 and "InvalidParameterValue" in out.stderr, out.stderr
