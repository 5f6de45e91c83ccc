"""Two CLCs sharing one PostgreSQL database (store.url), each with its own data dir and listener: what one
records the other answers, requests racing on both never break the one-writer rules the records modules
rely on (an address allocated once, a key pair name taken once), and an identity change made through one
holds on the other from the moment its notice arrives (two hosts: no mapped counter is shared)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from helpers import postgres
from helpers.iam import new_account, new_user
from helpers.polling import wait_until
from helpers.server import EucaServer, start_hosts

POOL = "10.99.7.10-10.99.7.29"  # 20 addresses


@pytest.fixture(scope="module")
def clcs(
    pg_cluster: postgres.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[EucaServer]]:
    url = pg_cluster.create_database("shared")
    yield from start_hosts(tmp_path_factory, "clc", "clc", {"store.url": url, "clc.public_addresses": POOL})


def _race(calls: list[Any]) -> list[Any]:
    """Run each call in its own thread at once; each one's result or ClientError."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except botocore.exceptions.ClientError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_both_clcs_answer_from_one_database(clcs: list[EucaServer], tmp_path: Path) -> None:
    a, b = (c.client("ec2") for c in clcs)
    # The admin account is one: made by the first CLC's start, found by the second's.
    assert clcs[0].admin.access_key == clcs[1].admin.access_key
    a.create_key_pair(KeyName="made-on-a")
    assert [k["KeyName"] for k in b.describe_key_pairs(KeyNames=["made-on-a"])["KeyPairs"]] == ["made-on-a"]
    b.delete_key_pair(KeyName="made-on-a")
    with pytest.raises(botocore.exceptions.ClientError):
        a.describe_key_pairs(KeyNames=["made-on-a"])


def test_racing_allocations_on_two_clcs_take_each_address_once(clcs: list[EucaServer]) -> None:
    clients = [c.client("ec2") for c in clcs]
    results = _race([lambda c=clients[i % 2]: c.allocate_address()["PublicIp"] for i in range(24)])
    taken = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if not isinstance(r, str)]
    assert len(taken) == 20 and len(set(taken)) == 20  # the whole pool, no address twice
    assert [e.response["Error"]["Code"] for e in refused] == ["InsufficientAddressCapacity"] * 4
    seen = {a["PublicIp"] for a in clients[1].describe_addresses()["Addresses"]}
    assert set(taken) <= seen
    for ip in taken:
        clients[0].release_address(PublicIp=ip)


def test_racing_key_pair_creates_take_the_name_once(clcs: list[EucaServer]) -> None:
    clients = [c.client("ec2") for c in clcs]
    results = _race(
        [lambda c=clients[i % 2]: c.create_key_pair(KeyName="raced")["KeyName"] for i in range(6)]
    )
    assert results.count("raced") == 1
    codes = {r.response["Error"]["Code"] for r in results if r != "raced"}
    assert codes == {"InvalidKeyPair.Duplicate"}


def _code(call: Callable[[], Any]) -> str | None:
    """The error code of a boto3 call, or None if it succeeded."""
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return str(e.response["Error"]["Code"])
    return None


def _policy(effect: str, action: str) -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": action, "Resource": "*"}]}
    )


def test_a_key_disabled_through_one_clc_is_refused_by_the_other(clcs: list[EucaServer]) -> None:
    a, b = clcs
    account = new_account(a)
    iam_a = a.client("iam", creds=account)
    user = new_user(iam_a, account, "roamer", _policy("Allow", "ec2:Describe*"))
    ec2_b = b.client("ec2", creds=user)
    ec2_b.describe_key_pairs()  # the key is known to b now, and cached there
    iam_a.update_access_key(UserName="roamer", AccessKeyId=user.access_key, Status="Inactive")
    code = wait_until(
        "b to refuse the key disabled through a", lambda: _code(ec2_b.describe_key_pairs), interval=0.05
    )
    assert code == "AuthFailure"
    iam_a.update_access_key(UserName="roamer", AccessKeyId=user.access_key, Status="Active")
    wait_until(
        "b to take the key enabled again",
        lambda: _code(ec2_b.describe_key_pairs) is None,
        interval=0.05,
    )
    iam_a.delete_access_key(UserName="roamer", AccessKeyId=user.access_key)
    code = wait_until(
        "b to refuse the key deleted through a", lambda: _code(ec2_b.describe_key_pairs), interval=0.05
    )
    assert code == "AuthFailure"


def test_a_policy_changed_through_one_clc_applies_on_the_other(clcs: list[EucaServer]) -> None:
    """Policies have no age limit in the caches: only the notice can make b see these changes."""
    a, b = clcs
    account = new_account(a)
    iam_a = a.client("iam", creds=account)
    user = new_user(iam_a, account, "mover")
    ec2_b = b.client("ec2", creds=user)
    assert _code(ec2_b.describe_key_pairs) == "UnauthorizedOperation"  # no policy, and that is cached on b
    iam_a.put_user_policy(UserName="mover", PolicyName="p", PolicyDocument=_policy("Allow", "ec2:*"))
    wait_until(
        "b to apply the policy put through a", lambda: _code(ec2_b.describe_key_pairs) is None, interval=0.05
    )
    iam_a.put_user_policy(
        UserName="mover", PolicyName="p", PolicyDocument=_policy("Allow", "ec2:DescribeRegions")
    )
    code = wait_until(
        "b to apply the policy narrowed through a", lambda: _code(ec2_b.describe_key_pairs), interval=0.05
    )
    assert code == "UnauthorizedOperation"
