"""The metadata service's answers (pure): the tree, user data, IMDSv2 tokens, and who gets what."""

from __future__ import annotations

import pytest

from euca.roles.cc.filters import ChainNames, render
from euca.roles.cc.metadata import MetadataRecord, Tokens, answer

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
        ("/latest/meta-data/block-device-mapping/", b"ami\nroot"),
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
    ["/latest/meta-data/nope", "/latest/nope", "/v9/meta-data/instance-id", "/latest/meta-data/ramdisk-id"],
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
