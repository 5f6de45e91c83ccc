"""The EC2 Query API against a running euca, through boto3 and the aws CLI (fixtures in tests/service/conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import botocore.exceptions
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from helpers.ec2 import error_code
from helpers.image_bundles import admin_signer, random_file, upload
from helpers.instances import unique
from helpers.signed import signed_ec2_post


def test_sigv2_form_post_and_query_get(euca: Any) -> None:
    """euca2ools and older SDKs sign the Query API with Signature Version 2, in the form or the query string."""
    from botocore.auth import SigV2Auth

    creds = BotoCredentials(euca.admin.access_key, euca.admin.secret_key)
    url = euca.url.rstrip("/") + "/services/compute"
    post = AWSRequest(
        method="POST",
        url=url,
        data={"Action": "DescribeRegions", "Version": "2016-11-15"},
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV2Auth(creds).add_auth(post)
    prepared = post.prepare()
    response = httpx.post(url, content=prepared.body, headers=dict(prepared.headers.items()))
    assert response.status_code == 200, response.text
    assert f"<regionName>{euca.region}</regionName>".encode() in response.content

    get = AWSRequest(
        method="GET", url=url, params={"Action": "DescribeAvailabilityZones", "Version": "2016-11-15"}
    )
    SigV2Auth(creds).add_auth(get)
    prepared = get.prepare()
    response = httpx.get(prepared.url)
    assert response.status_code == 200, response.text
    assert b"<zoneState>available</zoneState>" in response.content

    bad = httpx.get(prepared.url.replace("DescribeAvailabilityZones", "DescribeRegions"))
    assert bad.status_code == 401 and b"<Code>AuthFailure</Code>" in bad.content


def test_sigv4_get_with_query_string(euca: Any) -> None:
    url = euca.url.rstrip("/") + "/?Action=DescribeRegions&Version=2016-11-15"
    req = AWSRequest(method="GET", url=url)
    SigV4Auth(BotoCredentials(euca.admin.access_key, euca.admin.secret_key), "ec2", euca.region).add_auth(req)
    response = httpx.get(url, headers=dict(req.headers.items()))
    assert response.status_code == 200, response.text
    assert b"<DescribeRegionsResponse" in response.content


# -- regions, zones, account attributes ------------------------------------------------------------------


def test_regions_zones_and_account_attributes(euca: Any, ec2: Any) -> None:
    regions = ec2.describe_regions()["Regions"]
    assert [r["RegionName"] for r in regions] == [euca.region]
    assert regions[0]["Endpoint"].endswith("/services/compute")
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["State"], z["RegionName"]) for z in zones] == [
        ("euca-1a", "available", euca.region)
    ]
    assert (
        ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["gone"]}])["AvailabilityZones"]
        == []
    )
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_availability_zones(ZoneNames=["nowhere-1z"])
    assert error_code(err) == "InvalidParameterValue"
    attrs = ec2.describe_account_attributes(AttributeNames=["supported-platforms"])["AccountAttributes"]
    assert attrs == [{"AttributeName": "supported-platforms", "AttributeValues": [{"AttributeValue": "EC2"}]}]


def test_legacy_path_answers_too(euca: Any) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "ec2",
        endpoint_url=euca.url + "/services/compute",
        region_name=euca.region,
        aws_access_key_id=euca.admin.access_key,
        aws_secret_access_key=euca.admin.secret_key,
        config=Config(retries={"max_attempts": 1}),
    )
    assert client.describe_regions()["Regions"][0]["RegionName"] == euca.region


# -- errors ----------------------------------------------------------------------------------------------


def test_unknown_and_unbuilt_actions(euca: Any, ec2: Any) -> None:
    response = signed_ec2_post(euca, "Action=FrobnicateWidgets&Version=2016-11-15")
    assert response.status_code == 400
    assert b"<Code>InvalidAction</Code>" in response.content
    assert b"<RequestID>" in response.content
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_vpcs()
    assert error_code(err) == "UnsupportedOperation"


def test_bad_credentials_are_auth_failure(euca: Any) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    wrong = boto3.client(
        "ec2",
        endpoint_url=euca.url,
        region_name=euca.region,
        aws_access_key_id=euca.admin.access_key,
        aws_secret_access_key="not-the-secret",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(botocore.exceptions.ClientError) as err:
        wrong.describe_regions()
    assert error_code(err) == "AuthFailure"
    unsigned = boto3.client(
        "ec2",
        endpoint_url=euca.url,
        region_name=euca.region,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    with pytest.raises(botocore.exceptions.ClientError) as err:
        unsigned.describe_regions()
    assert error_code(err) == "AuthFailure"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("Action=DescribeImages&Filter.1.Value.1=x", "InvalidParameterValue"),
        ("Action=DescribeImages&Filter.1.Name=colour&Filter.1.Value.1=x", "InvalidParameterValue"),
        ("Action=DescribeImages&MaxResults=99999999999999999999999", "InvalidParameterValue"),
        ("Action=DescribeImages&MaxResults=x", "InvalidParameterValue"),
        ("Action=DescribeImages&NextToken=%00%01", "InvalidPaginationToken"),
        ("Action=DescribeImages&ImageId.1=emi-12345678&ImageId.1.Foo=1", "InvalidParameterValue"),
        ("Action=DescribeImages&Colour=red", "UnknownParameter"),
        ("Action=CreateTags&ResourceId.1=emi-12345678&Tag.1.Value=x", "InvalidParameterValue"),
        ("Action=CreateTags&ResourceId.1=&Tag.1.Key=x", "InvalidID"),
        ("Action=CreateKeyPair&KeyName=", "InvalidParameterValue"),
        ("Action=CreateKeyPair&KeyName=k&KeyType=dsa", "InvalidParameterValue"),
        ("Action=ImportKeyPair&KeyName=k&PublicKeyMaterial=AAAA", "InvalidKey.Format"),
        ("Action=DeleteKeyPair", "MissingParameter"),
        ("Action=ModifyImageAttribute&ImageId=emi-12345678", "MissingParameter"),
        ("Action=DescribeImageAttribute&ImageId=emi-12345678&Attribute=bootMode", "UnsupportedOperation"),
        ("Action=ResetImageAttribute&ImageId=emi-12345678&Attribute=kernel", "InvalidParameterValue"),
        ("Action=RegisterImage&Name=ab", "InvalidAMIName.Malformed"),
        ("Action=RegisterImage&Name=abc", "MissingParameter"),
        ("Action=RegisterImage&Name=abc&ImageLocation=nobucket", "InvalidParameterValue"),
        (
            "Action=RegisterImage&Name=abc&ImageLocation=b/m.xml&KernelId=eki-00000000",
            "InvalidAMIID.NotFound",
        ),
        ("Action=DescribeAvailabilityZones&ZoneName.1=verbose", None),
        ("Action=&Version=2016-11-15", "MissingAction"),
        ("Action=DescribeRegions&%ff=1", "MalformedQueryString"),
    ],
)
def test_malformed_requests_get_ec2_errors(euca: Any, body: str, code: str | None) -> None:
    response = signed_ec2_post(euca, body)
    assert response.status_code < 500, response.text
    if code is None:
        assert response.status_code == 200, response.text
    else:
        assert f"<Code>{code}</Code>".encode() in response.content, response.text


def test_get_password_data_of_an_unknown_instance(ec2: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.get_password_data(InstanceId="i-0123abcd")
    assert error_code(err) == "InvalidInstanceID.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.get_password_data(InstanceId="not-an-instance")
    assert error_code(err) == "InvalidInstanceID.Malformed"


def test_dry_run(ec2: Any) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_images(DryRun=True)
    assert error_code(err) == "DryRunOperation"


# -- key pairs -------------------------------------------------------------------------------------------


def test_create_key_pair_fingerprint_is_sha1_of_pkcs8(ec2: Any, ec2_other: Any) -> None:
    name = unique("kp")
    created = ec2.create_key_pair(KeyName=name)
    assert created["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = serialization.load_pem_private_key(created["KeyMaterial"].encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert created["KeyFingerprint"] == ":".join(f"{b:02x}" for b in hashlib.sha1(pkcs8).digest())
    assert created["KeyPairId"].startswith("key-")

    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.create_key_pair(KeyName=name)
    assert error_code(err) == "InvalidKeyPair.Duplicate"

    (info,) = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"]
    assert info["KeyFingerprint"] == created["KeyFingerprint"] and info["KeyType"] == "rsa"
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert info["PublicKey"].startswith(public.decode())

    # Another account neither sees it nor is stopped from using the same name.
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2_other.describe_key_pairs(KeyNames=[name])
    assert error_code(err) == "InvalidKeyPair.NotFound"
    assert name not in [k["KeyName"] for k in ec2_other.describe_key_pairs()["KeyPairs"]]
    ec2_other.create_key_pair(KeyName=name)
    ec2_other.delete_key_pair(KeyName=name)

    assert ec2.delete_key_pair(KeyName=name)["Return"] is True
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_key_pairs(KeyNames=[name])
    assert error_code(err) == "InvalidKeyPair.NotFound"
    ec2.delete_key_pair(KeyName=name)  # deleting what is gone succeeds, as in EC2


def test_import_key_pairs_rsa_and_ed25519(ec2: Any) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    openssh = rsa_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    der = rsa_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    name = unique("imported")
    result = ec2.import_key_pair(KeyName=name, PublicKeyMaterial=openssh + b" me@host\n")
    assert result["KeyFingerprint"] == ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())

    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_openssh = ed.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(ed_openssh.split()[1])
    ed_name = unique("ed")
    ed_result = ec2.import_key_pair(KeyName=ed_name, PublicKeyMaterial=ed_openssh)
    assert ed_result["KeyFingerprint"] == base64.b64encode(hashlib.sha256(blob).digest()).decode()

    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.import_key_pair(KeyName=unique("bad"), PublicKeyMaterial=b"ssh-rsa not-a-key")
    assert error_code(err) == "InvalidKey.Format"

    # No key material at all is a missing parameter, as EC2 answers it (not a badly formatted key).
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.import_key_pair(KeyName=unique("empty"), PublicKeyMaterial=b"")
    assert error_code(err) == "MissingParameter"

    found = ec2.describe_key_pairs(
        Filters=[{"Name": "key-type", "Values": ["ed25519"]}, {"Name": "key-name", "Values": ["ed-*"]}]
    )["KeyPairs"]
    assert ed_name in [k["KeyName"] for k in found] and name not in [k["KeyName"] for k in found]
    by_fp = ec2.describe_key_pairs(Filters=[{"Name": "fingerprint", "Values": [result["KeyFingerprint"]]}])
    assert [k["KeyName"] for k in by_fp["KeyPairs"]] == [name]
    assert ec2.delete_key_pair(KeyPairId=ed_result["KeyPairId"])["KeyPairId"] == ed_result["KeyPairId"]
    ec2.delete_key_pair(KeyName=name)


def test_import_accepts_openssh_rfc4716_pem_and_der(ec2: Any) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    openssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = base64.b64encode(base64.b64decode(openssh.split()[1])).decode()
    rfc4716 = "\n".join(
        ["---- BEGIN SSH2 PUBLIC KEY ----", 'Comment: "2048-bit RSA, converted by me@host from OpenSSH"']
        + [body[i : i + 70] for i in range(0, len(body), 70)]
        + ["---- END SSH2 PUBLIC KEY ----", ""]
    ).encode()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    expected = ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())
    for material in (openssh, rfc4716, pem, base64.b64encode(der)):
        name = unique("fmt")
        assert ec2.import_key_pair(KeyName=name, PublicKeyMaterial=material)["KeyFingerprint"] == expected
        ec2.delete_key_pair(KeyName=name)


def test_create_key_pair_with_tags_and_ed25519(ec2: Any) -> None:
    name = unique("tagged")
    created = ec2.create_key_pair(
        KeyName=name,
        KeyType="ed25519",
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "team", "Value": "infra"}]}],
    )
    assert created["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert created["Tags"] == [{"Key": "team", "Value": "infra"}]
    found = ec2.describe_key_pairs(Filters=[{"Name": "tag:team", "Values": ["infra"]}])["KeyPairs"]
    assert [k["KeyName"] for k in found] == [name]
    ec2.delete_key_pair(KeyName=name)
    assert (
        ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [created["KeyPairId"]]}])["Tags"] == []
    )


# -- instance types --------------------------------------------------------------------------------------


def test_instance_types(ec2: Any) -> None:
    paginator = ec2.get_paginator("describe_instance_types")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 5}))
    assert len(pages) > 1
    types = {t["InstanceType"]: t for page in pages for t in page["InstanceTypes"]}
    small = types["m1.small"]
    assert (
        small["VCpuInfo"]["DefaultVCpus"],
        small["MemoryInfo"]["SizeInMiB"],
        small["InstanceStorageInfo"]["TotalSizeInGB"],
    ) == (1, 256, 5)
    assert types["m3.2xlarge"]["VCpuInfo"]["DefaultVCpus"] == 4
    two_cpus = ec2.describe_instance_types(Filters=[{"Name": "vcpu-info.default-vcpus", "Values": ["2"]}])
    assert "c1.medium" in [t["InstanceType"] for t in two_cpus["InstanceTypes"]]
    assert "m1.small" not in [t["InstanceType"] for t in two_cpus["InstanceTypes"]]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_instance_types(InstanceTypes=["m9.huge"])
    assert error_code(err) == "InvalidInstanceType"


# -- images ----------------------------------------------------------------------------------------------


# RegisterImage reads and verifies a real bundle: one small bundle serves every image these tests register.
TINY_BUNDLE: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def tiny_bundle(euca: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("tiny-bundle")
    result = admin_signer(euca).bundle(random_file(tmp / "tiny.img", 4096), tmp / "bundle")
    TINY_BUNDLE["location"] = upload(euca.client("s3"), unique("ec2-api-images"), result)


def register(ec2: Any, **extra: Any) -> str:
    name = extra.pop("Name", unique("image"))
    image_id: str = ec2.register_image(Name=name, ImageLocation=TINY_BUNDLE["location"], **extra)["ImageId"]
    return image_id


def test_register_describe_and_deregister(ec2: Any, ec2_other: Any, account_ids: dict[str, str]) -> None:
    image_id = register(ec2, Architecture="x86_64", Description="a test image")
    assert image_id.startswith("emi-") and len(image_id) == 12
    (image,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert image["State"] == "available" and image["ImageType"] == "machine"
    assert image["OwnerId"] == account_ids["eucalyptus"] and image["Public"] is False
    assert image["RootDeviceType"] == "instance-store" and image["Description"] == "a test image"
    assert image_id in [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    # The cloud admins' images answer to Owner=amazon, and an account name stands for its account.
    for owner in ("amazon", "eucalyptus", account_ids["eucalyptus"]):
        assert image_id in [i["ImageId"] for i in ec2.describe_images(Owners=[owner])["Images"]]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_images(Owners=["no-such-account"])
    assert error_code(err) == "InvalidUserID.Malformed"

    # Private: the other account cannot see it, nor change it.
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2_other.describe_images(ImageIds=[image_id])
    assert error_code(err) == "InvalidAMIID.NotFound"
    assert image_id not in [i["ImageId"] for i in ec2_other.describe_images()["Images"]]

    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_images(ImageIds=["emi-nothex!"])
    assert error_code(err) == "InvalidAMIID.Malformed"

    ec2.deregister_image(ImageId=image_id)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_images(ImageIds=[image_id])
    assert error_code(err) == "InvalidAMIID.NotFound"


def test_launch_permissions(euca: Any, ec2: Any, ec2_other: Any, account_ids: dict[str, str]) -> None:
    other_id = account_ids[euca.other.account]
    image_id = register(ec2)

    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": other_id}]})
    perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
    assert perms == [{"UserId": other_id}]
    (seen,) = ec2_other.describe_images(ImageIds=[image_id])["Images"]
    assert seen["Public"] is False
    assert image_id in [i["ImageId"] for i in ec2_other.describe_images(ExecutableUsers=["self"])["Images"]]
    assert image_id not in [i["ImageId"] for i in ec2_other.describe_images(Owners=["self"])["Images"]]

    # Only the owner changes an image.
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2_other.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    assert error_code(err) == "AuthFailure"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2_other.deregister_image(ImageId=image_id)
    assert error_code(err) == "AuthFailure"

    # The old style (Attribute/OperationType/UserGroup) makes it public.
    ec2.modify_image_attribute(
        ImageId=image_id, Attribute="launchPermission", OperationType="remove", UserIds=[other_id]
    )
    ec2.modify_image_attribute(
        ImageId=image_id, Attribute="launchPermission", OperationType="add", UserGroups=["all"]
    )
    perms = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
    assert perms == [{"Group": "all"}]
    public = ec2_other.describe_images(
        ExecutableUsers=["all"], Filters=[{"Name": "is-public", "Values": ["true"]}]
    )
    assert image_id in [i["ImageId"] for i in public["Images"]]

    ec2.reset_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert image_id not in [i["ImageId"] for i in ec2_other.describe_images()["Images"]]

    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": "000000000000"}]})
    assert error_code(err) == "InvalidAMIAttributeItemValue"

    ec2.modify_image_attribute(ImageId=image_id, Description={"Value": "new words"})
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="description")["Description"] == {
        "Value": "new words"
    }
    assert ec2.describe_image_attribute(ImageId=image_id, Attribute="kernel")["KernelId"] == {}
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.describe_image_attribute(ImageId=image_id, Attribute="colour")
    assert error_code(err) == "InvalidParameterValue"
    ec2.deregister_image(ImageId=image_id)


def test_image_filters_tags_and_pages(ec2: Any, ec2_other: Any) -> None:
    run = uuid.uuid4().hex[:6]
    ids = [
        register(ec2, Name=f"pages-{run}-{n:02d}", Architecture="i386" if n % 2 else "x86_64")
        for n in range(7)
    ]
    ec2.create_tags(Resources=ids[:3], Tags=[{"Key": "run", "Value": run}, {"Key": "tier", "Value": "gold"}])

    tagged = ec2.describe_images(Filters=[{"Name": "tag:run", "Values": [run]}])["Images"]
    assert sorted(i["ImageId"] for i in tagged) == sorted(ids[:3])
    assert all({"Key": "tier", "Value": "gold"} in i["Tags"] for i in tagged)
    i386 = ec2.describe_images(
        Filters=[{"Name": "name", "Values": [f"pages-{run}-*"]}, {"Name": "architecture", "Values": ["i386"]}]
    )["Images"]
    assert sorted(i["ImageId"] for i in i386) == sorted(ids[1::2])

    pages = list(
        ec2.get_paginator("describe_images").paginate(
            Owners=["self"],
            Filters=[{"Name": "name", "Values": [f"pages-{run}-*"]}],
            PaginationConfig={"PageSize": 5},
        )
    )
    assert [len(p["Images"]) for p in pages] == [5, 2]
    assert sorted(i["ImageId"] for p in pages for i in p["Images"]) == sorted(ids)

    # Tags are the caller's own: the owner's tags on a public image stay private, the other account may add its own.
    ec2.modify_image_attribute(ImageId=ids[0], LaunchPermission={"Add": [{"Group": "all"}]})
    (seen,) = ec2_other.describe_images(ImageIds=[ids[0]])["Images"]
    assert "Tags" not in seen or seen["Tags"] == []
    ec2_other.create_tags(Resources=[ids[0]], Tags=[{"Key": "mine", "Value": "yes"}])
    (seen,) = ec2_other.describe_images(ImageIds=[ids[0]])["Images"]
    assert seen["Tags"] == [{"Key": "mine", "Value": "yes"}]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2_other.create_tags(Resources=[ids[1]], Tags=[{"Key": "a", "Value": "b"}])
    assert error_code(err) == "InvalidAMIID.NotFound"

    for image_id in ids:
        ec2.deregister_image(ImageId=image_id)
    assert ec2_other.describe_tags(Filters=[{"Name": "resource-id", "Values": [ids[0]]}])["Tags"] == []


# -- tags ------------------------------------------------------------------------------------------------


def test_tags_create_describe_delete(ec2: Any) -> None:
    image_id = register(ec2)
    key_id = ec2.create_key_pair(KeyName=unique("tagkp"))["KeyPairId"]
    ec2.create_tags(
        Resources=[image_id, key_id], Tags=[{"Key": "env", "Value": "prod"}, {"Key": "empty", "Value": ""}]
    )

    mine = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [image_id, key_id]}])["Tags"]
    assert sorted((t["ResourceId"], t["ResourceType"], t["Key"], t["Value"]) for t in mine) == sorted(
        [
            (image_id, "image", "env", "prod"),
            (image_id, "image", "empty", ""),
            (key_id, "key-pair", "env", "prod"),
            (key_id, "key-pair", "empty", ""),
        ]
    )
    images_only = ec2.describe_tags(
        Filters=[
            {"Name": "resource-type", "Values": ["image"]},
            {"Name": "resource-id", "Values": [image_id]},
            {"Name": "key", "Values": ["env"]},
        ]
    )["Tags"]
    assert [(t["ResourceId"], t["Value"]) for t in images_only] == [(image_id, "prod")]

    # A value given deletes only a tag with that value; no value deletes the key.
    ec2.delete_tags(Resources=[image_id], Tags=[{"Key": "env", "Value": "staging"}])
    ec2.delete_tags(Resources=[image_id], Tags=[{"Key": "empty"}])
    left = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [image_id]}])["Tags"]
    assert [(t["Key"], t["Value"]) for t in left] == [("env", "prod")]
    ec2.delete_tags(Resources=[key_id])
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [key_id]}])["Tags"] == []

    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.create_tags(Resources=["eni-12345678"], Tags=[{"Key": "a", "Value": "b"}])
    assert error_code(err) == "InvalidID"  # a kind of resource this cloud does not have
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.create_tags(Resources=["snap-12345678"], Tags=[{"Key": "a", "Value": "b"}])
    assert error_code(err) == "InvalidSnapshot.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.create_tags(Resources=[image_id], Tags=[{"Key": "aws:reserved", "Value": "b"}])
    assert error_code(err) == "InvalidParameterValue"
    ec2.deregister_image(ImageId=image_id)
    ec2.delete_key_pair(KeyPairId=key_id)


def test_describe_tags_caps_max_results_at_1000(ec2: Any) -> None:
    """EC2 answers a DescribeTags MaxResults above 1,000 with at most 1,000 tags rather than refusing it."""
    image_id = register(ec2)
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": "capped", "Value": "yes"}])
    found = ec2.describe_tags(MaxResults=5000, Filters=[{"Name": "resource-id", "Values": [image_id]}])
    assert [(t["ResourceId"], t["Key"]) for t in found["Tags"]] == [(image_id, "capped")]
    assert "NextToken" not in found
    with pytest.raises(botocore.exceptions.ClientError) as err:  # below the minimum is still refused
        ec2.describe_tags(MaxResults=4)
    assert error_code(err) == "InvalidParameterValue"
    ec2.deregister_image(ImageId=image_id)


def test_describe_tags_pages(ec2: Any) -> None:
    image_id = register(ec2)
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": f"k{n:02d}", "Value": str(n)} for n in range(12)])
    pages = list(
        ec2.get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-id", "Values": [image_id]}], PaginationConfig={"PageSize": 5}
        )
    )
    assert [len(p["Tags"]) for p in pages] == [5, 5, 2]
    assert [t["Key"] for p in pages for t in p["Tags"]] == [f"k{n:02d}" for n in range(12)]
    ec2.deregister_image(ImageId=image_id)


# -- the aws CLI -----------------------------------------------------------------------------------------


def test_aws_cli_key_pairs_images_and_tags(euca: Any) -> None:
    name = unique("cli")
    created = json.loads(euca.aws("ec2", "create-key-pair", "--key-name", name, "--output", "json").stdout)
    assert created["KeyName"] == name
    listed = json.loads(
        euca.aws(
            "ec2", "describe-key-pairs", "--filters", f"Name=key-name,Values={name}", "--output", "json"
        ).stdout
    )
    assert [k["KeyFingerprint"] for k in listed["KeyPairs"]] == [created["KeyFingerprint"]]

    image_id = json.loads(
        euca.aws(
            "ec2",
            "register-image",
            "--name",
            name,
            "--image-location",
            TINY_BUNDLE["location"],
            "--output",
            "json",
        ).stdout
    )["ImageId"]
    euca.aws("ec2", "create-tags", "--resources", image_id, "--tags", "Key=cli,Value=yes")
    images = json.loads(
        euca.aws(
            "ec2",
            "describe-images",
            "--owners",
            "self",
            "--filters",
            "Name=tag:cli,Values=yes",
            "--output",
            "json",
        ).stdout
    )["Images"]
    assert image_id in [i["ImageId"] for i in images]
    euca.aws(
        "ec2", "modify-image-attribute", "--image-id", image_id, "--launch-permission", "Add=[{Group=all}]"
    )
    attr = json.loads(
        euca.aws(
            "ec2",
            "describe-image-attribute",
            "--image-id",
            image_id,
            "--attribute",
            "launchPermission",
            "--output",
            "json",
        ).stdout
    )
    assert attr["LaunchPermissions"] == [{"Group": "all"}]
    failed = euca.aws("ec2", "describe-images", "--image-ids", "emi-00000000", check=False)
    assert failed.returncode != 0 and "InvalidAMIID.NotFound" in failed.stderr
    euca.aws("ec2", "deregister-image", "--image-id", image_id)
    euca.aws("ec2", "delete-key-pair", "--key-name", name)
