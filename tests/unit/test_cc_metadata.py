"""The metadata service's answers (pure): the tree, user data, IMDSv2 tokens, and who gets what."""

from __future__ import annotations

import pytest

from euca.protocol import cluster as c
from euca.roles.cc.filters import ChainNames, render
from euca.roles.cc.metadata import Catalog, MetadataRecord, Tokens, answer
from helpers.cc_nodes import spec

NOW = 1_000_000.0
FULL = MetadataRecord(
    instance_id="i-0000000a",
    local_ipv4="10.77.0.2",
    mac="d0:0d:00:00:00:0a",
    zone="cluster01",
    public_ipv4="203.0.113.10",
    reservation_id="r-00000001",
    image_id="emi-00000001",
    instance_type="m1.small",
    launch_index=0,
    kernel_id="eki-00000001",
    key_name="k",
    public_key="ssh-rsa AAAA k",
    user_data=b"#!/bin/sh\necho hi\n",
    security_groups=("default", "web"),
    manifest_path="images/hello.manifest.xml",
)
TOKENS = Tokens(b"k" * 32)


def get(path: str, r: MetadataRecord | None = FULL, **headers: str) -> tuple[int, bytes]:
    a = answer(r, "GET", path, {k.replace("_", "-").lower(): v for k, v in headers.items()}, TOKENS, NOW)
    return a.status, a.body


@pytest.mark.parametrize(
    "path, body",
    [
        ("/latest/meta-data/instance-id", b"i-0000000a"),
        ("/latest/meta-data/local-ipv4", b"10.77.0.2"),
        ("/latest/meta-data/public-ipv4", b"203.0.113.10"),
        ("/latest/meta-data/ami-id", b"emi-00000001"),
        ("/latest/meta-data/ami-launch-index", b"0"),
        ("/latest/meta-data/instance-type", b"m1.small"),
        ("/latest/meta-data/reservation-id", b"r-00000001"),
        ("/latest/meta-data/kernel-id", b"eki-00000001"),
        ("/latest/meta-data/mac", b"d0:0d:00:00:00:0a"),
        ("/latest/meta-data/placement/availability-zone", b"cluster01"),
        ("/latest/meta-data/local-hostname", b"euca-10-77-0-2.eucalyptus.internal"),
        ("/latest/meta-data/public-hostname", b"euca-203-0-113-10.eucalyptus.localhost"),
        ("/latest/meta-data/public-keys", b"0=k"),
        ("/latest/meta-data/public-keys/0/", b"openssh-key"),
        ("/latest/meta-data/public-keys/0/openssh-key", b"ssh-rsa AAAA k\n"),
        ("/latest/meta-data/block-device-mapping/", b"ami\nephemeral0\nroot"),
        ("/latest/meta-data/block-device-mapping/ami", b"/dev/vda"),
        ("/latest/meta-data/block-device-mapping/ephemeral0", b"vdb"),
        ("/latest/meta-data/security-groups", b"default\nweb"),
        ("/latest/meta-data/ami-manifest-path", b"images/hello.manifest.xml"),
        ("/latest/meta-data/placement", b"availability-zone"),
        ("/2009-04-04/meta-data/instance-id", b"i-0000000a"),
        ("/latest/user-data", b"#!/bin/sh\necho hi\n"),
        ("/latest/", b"meta-data/\nuser-data"),
    ],
)
def test_the_tree(path: str, body: bytes) -> None:
    assert get(path) == (200, body)


def test_the_listing_of_meta_data() -> None:
    status, body = get("/latest/meta-data/")
    entries = body.decode().split("\n")
    assert status == 200
    for entry in ("instance-id", "public-keys/", "placement/", "block-device-mapping/", "ami-manifest-path"):
        assert entry in entries
    assert "ramdisk-id" not in entries  # it has none


@pytest.mark.parametrize(
    "path",
    [
        "/latest/meta-data/nope",
        "/latest/nope",
        "/v9/meta-data/instance-id",
        "/2099-01-01/meta-data/instance-id",
        "/latest/meta-data/ramdisk-id",
        "/latest/meta-data/public-keys/1/openssh-key",
    ],
)
def test_unknown_keys_are_404(path: str) -> None:
    assert get(path)[0] == 404


def test_what_a_restarted_cc_knows_and_no_instance_gets_nothing() -> None:
    bare = MetadataRecord(instance_id="i-0000000a", local_ipv4="10.77.0.2", mac="d0:0d:00:00:00:0a", zone="c")
    assert get("/latest/meta-data/instance-id", bare) == (200, b"i-0000000a")
    assert get("/latest/user-data", bare)[0] == 404
    assert get("/latest/meta-data/public-keys", bare)[0] == 404
    assert get("/latest/meta-data/instance-id", None)[0] == 404


def test_imdsv2_tokens() -> None:
    put = answer(
        FULL, "PUT", "/latest/api/token", {"x-aws-ec2-metadata-token-ttl-seconds": "60"}, TOKENS, NOW
    )
    assert put.status == 200 and ("x-aws-ec2-metadata-token-ttl-seconds", "60") in put.headers
    token = put.body.decode()
    assert get("/latest/meta-data/instance-id", x_aws_ec2_metadata_token=token) == (200, b"i-0000000a")
    # Another instance cannot use it; an expired or forged one is 401.
    other = MetadataRecord(
        instance_id="i-0000000b", local_ipv4="10.77.0.3", mac="d0:0d:00:00:00:0b", zone="c"
    )
    assert get("/latest/meta-data/instance-id", other, x_aws_ec2_metadata_token=token)[0] == 401
    late = answer(FULL, "GET", "/latest/meta-data/", {"x-aws-ec2-metadata-token": token}, TOKENS, NOW + 61)
    assert late.status == 401
    assert get("/latest/meta-data/instance-id", x_aws_ec2_metadata_token="garbage")[0] == 401
    assert get("/latest/meta-data/instance-id", x_aws_ec2_metadata_token=token[:-2] + "AA")[0] == 401


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 400),
        ({"x-aws-ec2-metadata-token-ttl-seconds": "0"}, 400),
        ({"x-aws-ec2-metadata-token-ttl-seconds": "21601"}, 400),
        ({"x-aws-ec2-metadata-token-ttl-seconds": "abc"}, 400),
        ({"x-aws-ec2-metadata-token-ttl-seconds": "21600"}, 200),
        ({"x-aws-ec2-metadata-token-ttl-seconds": "60", "x-forwarded-for": "1.2.3.4"}, 403),
    ],
)
def test_token_requests(headers: dict[str, str], status: int) -> None:
    assert answer(FULL, "PUT", "/latest/api/token", headers, TOKENS, NOW).status == status


def test_other_methods_are_refused() -> None:
    assert answer(FULL, "POST", "/latest/meta-data/", {}, TOKENS, NOW).status == 405


def test_the_metadata_address_is_dnat_ed_to_the_listener() -> None:
    names = ChainNames.of("c1")
    text = render(names, "10.77.0.0/24", None, {}, metadata="10.77.0.1:80").text
    # Only from the cluster's own subnet: another cluster's CC in the same namespace has its own listener.
    rule = (
        f"-A {names.dnat} -s 10.77.0.0/24 -d 169.254.169.254/32 -p tcp -m tcp --dport 80"
        " -j DNAT --to-destination 10.77.0.1:80"
    )
    assert rule in text.splitlines()


def test_the_versions_at_the_root_each_serve_the_tree() -> None:
    status, body = get("/")
    versions = body.decode().split("\n")
    assert status == 200 and versions[0] == "1.0" and versions[-1] == "latest"
    # The ones cloud-init's EC2 data source tries, newest first, each with <version>/meta-data/instance-id.
    for version in ("2021-03-23", "2018-09-24", "2016-09-02", "2009-04-04", "latest"):
        assert version in versions
        assert get(f"/{version}/meta-data/instance-id") == (200, b"i-0000000a")
        assert get(f"/{version}/user-data") == (200, b"#!/bin/sh\necho hi\n")


def crawl(base: str) -> dict[str, object]:
    """The meta-data tree as cloud-init's EC2 data source materializes it: a listing's entry ending in "/"
    is a directory; "0=name" under public-keys/ means the key's formats are at public-keys/0/."""
    status, body = get(base)
    assert status == 200, base
    tree: dict[str, object] = {}
    for entry in body.decode().split("\n"):
        if entry.endswith("/"):
            tree[entry[:-1]] = crawl(base + entry)
        elif "=" in entry:
            ident, name = entry.split("=", 1)
            status, formats = get(f"{base}{ident}/")
            assert status == 200
            tree[name] = {f: get(f"{base}{ident}/{f}")[1].decode() for f in formats.decode().split("\n")}
        else:
            status, value = get(base + entry)
            assert status == 200, base + entry
            tree[entry] = value.decode()
    return tree


def test_cloud_inits_crawl_finds_what_it_reads() -> None:
    md = crawl("/2009-04-04/meta-data/")
    assert md["instance-id"] == "i-0000000a"
    assert md["placement"] == {"availability-zone": "cluster01"}
    assert md["public-keys"] == {"k": {"openssh-key": "ssh-rsa AAAA k\n"}}
    assert md["block-device-mapping"] == {"ami": "/dev/vda", "root": "/dev/vda", "ephemeral0": "vdb"}
    # is_vpc() is false when public-hostname or public-ipv4 is there (EC2-Classic).
    assert md["public-ipv4"] == "203.0.113.10" and md["public-hostname"]
    assert md["local-hostname"] == "euca-10-77-0-2.eucalyptus.internal"
    for key in ("ami-id", "ami-launch-index", "ami-manifest-path", "hostname", "instance-type", "local-ipv4"):
        assert key in md
    assert md["security-groups"] == "default\nweb"
    assert md["reservation-id"] == "r-00000001"


BASE = MetadataRecord(instance_id="i-00000001", local_ipv4="10.77.0.2", mac="d0:0d:00:00:00:01", zone="c")


def metadata(version: str, user_data: bytes = b"#!/bin/sh\n") -> c.InstanceMetadata:
    return c.InstanceMetadata(
        instance_id="i-00000001",
        version=version,
        reservation_id="r-00000009",
        image_id="emi-00000009",
        instance_type="m1.small",
        key_name="k",
        public_key="ssh-ed25519 AAAA k",
        user_data=user_data,
        security_groups=["web"],
        manifest_path="b/m.manifest.xml",
        block_devices=[c.BlockDevice("ami", "/dev/vda"), c.BlockDevice("root", "/dev/vda")],
    )


def view(*entries: tuple[str, str]) -> c.NetworkView:
    return c.NetworkView("v", [c.InstanceNetwork(i, metadata_version=v) for i, v in entries])


def test_the_catalog_knows_the_spec_until_the_clcs_metadata_arrives() -> None:
    catalog = Catalog()
    assert catalog.record(BASE) == BASE  # a restarted CC: the lease only
    catalog.note_launch(spec(1))
    launched = catalog.record(BASE)
    assert launched.reservation_id == spec(1).reservation_id and launched.security_groups is None
    # The view names a version it does not hold: it asks; once it has it, it does not ask again.
    assert catalog.wanted(view(("i-00000001", "a1"))) == ["i-00000001"]
    catalog.put([metadata("a1")])
    assert catalog.wanted(view(("i-00000001", "a1"))) == []
    r = catalog.record(BASE)
    assert (r.security_groups, r.public_key, r.user_data, r.image_id) == (
        ("web",),
        "ssh-ed25519 AAAA k",
        b"#!/bin/sh\n",
        "emi-00000009",
    )
    assert answer(r, "GET", "/latest/meta-data/block-device-mapping/", {}, TOKENS, NOW).body == b"ami\nroot"
    # A new version (say a volume attached) is asked for again; a view without the instance drops it.
    assert catalog.wanted(view(("i-00000001", "a2"))) == ["i-00000001"]
    assert catalog.wanted(view()) == []
    assert catalog.record(BASE).security_groups is None  # back to the spec
    catalog.forget("i-00000001")
    assert catalog.record(BASE) == BASE
    # A view from a CLC that sends no versions asks for nothing.
    assert catalog.wanted(view(("i-00000001", ""))) == []


# -- instance profiles (issue 12): meta-data/iam/ ----------------------------------------------------------

IAM = c.InstanceIam(
    profile_arn="arn:aws:iam::123456789012:instance-profile/app/web",
    profile_id="AIPAEXAMPLE",
    role_name="reader",
    access_key_id="ASIAEXAMPLEKEY",
    secret_key="secret",
    token="token",
    expires=1_767_247_200.0,  # 2026-01-01T06:00:00Z
    issued=1_767_225_600.0,  # 2026-01-01T00:00:00Z
)


def _iam_get(iam: c.InstanceIam | None, path: str) -> tuple[int, bytes]:
    r = MetadataRecord("i-1", "10.0.0.5", "d0:0d:00:00:00:01", "z1", iam=iam)
    got = answer(r, "GET", "/latest/meta-data/" + path, {}, Tokens(b"k" * 32), 0.0)
    return got.status, got.body


def test_iam_tree_serves_the_profile_and_the_role_credentials() -> None:
    import json

    assert _iam_get(IAM, "")[1].decode().split("\n").count("iam/") == 1
    assert _iam_get(IAM, "iam/") == (200, b"info\nsecurity-credentials/")
    assert _iam_get(IAM, "iam") == (200, b"info\nsecurity-credentials/")
    assert _iam_get(IAM, "iam/security-credentials/") == (200, b"reader")
    info = json.loads(_iam_get(IAM, "iam/info")[1])
    assert info == {
        "Code": "Success",
        "LastUpdated": "2026-01-01T00:00:00Z",
        "InstanceProfileArn": IAM.profile_arn,
        "InstanceProfileId": "AIPAEXAMPLE",
    }
    status, body = _iam_get(IAM, "iam/security-credentials/reader")
    assert status == 200 and json.loads(body) == {
        "Code": "Success",
        "LastUpdated": "2026-01-01T00:00:00Z",
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIAEXAMPLEKEY",
        "SecretAccessKey": "secret",
        "Token": "token",
        "Expiration": "2026-01-01T06:00:00Z",
    }
    assert _iam_get(IAM, "iam/security-credentials/other")[0] == 404


def test_iam_tree_without_a_role_or_profile() -> None:
    roleless = c.InstanceIam(IAM.profile_arn, IAM.profile_id, issued=IAM.issued)
    assert _iam_get(roleless, "iam/") == (200, b"info")
    assert _iam_get(roleless, "iam/security-credentials/")[0] == 404
    assert _iam_get(None, "iam/")[0] == 404
    assert b"iam/" not in _iam_get(None, "")[1]


def test_catalog_serves_the_credentials_the_clc_sent() -> None:
    catalog = Catalog()
    catalog.put([c.InstanceMetadata("i-1", "v1", "r-1", "emi-1", "m1.small", iam=IAM)])
    record = catalog.record(MetadataRecord("i-1", "10.0.0.5", "d0:0d:00:00:00:01", "z1"))
    assert record.iam == IAM
