"""What the IAM and STS tests share: the code of a refused call, new accounts and users with keys, the cloud
administrator's quotas (Limit policies) on an account, and calls raced against each other."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.exceptions import ClientError

from euca.core.euare_client import EuareClient
from helpers.server import Credentials, EucaServer


def session_client(euca: EucaServer, service: str, credentials: dict[str, Any]) -> Any:
    """A boto3 client of `euca` signing with temporary credentials, as STS hands them out (SessionToken) or
    the instance metadata service does (Token)."""
    token = credentials["SessionToken"] if "SessionToken" in credentials else credentials["Token"]
    return boto3.client(
        service,
        endpoint_url=euca.url,
        region_name=euca.region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=token,
    )


def refused(call: Callable[[], Any]) -> str:
    """The error code of a boto3 call that must fail."""
    try:
        call()
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    raise AssertionError("the call succeeded")


def new_account(euca: EucaServer) -> Credentials:
    """A fresh account (its admin user's keys), so a test sees only its own users."""
    name = "iam" + uuid.uuid4().hex[:8]
    account = euca.ctx.identity.create_account(name)
    key = euca.ctx.identity.create_access_key(name)
    return Credentials(key.access_key_id, key.secret_key, name, account.canonical_id)


def new_user(iam: Any, account: Credentials, name: str, *policies: str) -> Credentials:
    """A user of the account with an access key and the given inline policy documents."""
    iam.create_user(UserName=name)
    for i, document in enumerate(policies):
        iam.put_user_policy(UserName=name, PolicyName=f"p{i}", PolicyDocument=document)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"], account.account, account.canonical_id)


def limit(action: str, key: str, value: int) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Limit",
                    "Action": action,
                    "Resource": "*",
                    "Condition": {"NumericLessThanEquals": {key: str(value)}},
                }
            ],
        }
    )


def set_account_quota(euca: EucaServer, account: Credentials, name: str, document: str) -> None:
    """The cloud administrator's Limit policy on the account (its admin user), through Euare's DelegateAccount."""
    admin = EuareClient(euca.url, euca.admin.access_key, euca.admin.secret_key, euca.region)
    admin.call(
        "PutUserPolicy",
        {
            "UserName": "admin",
            "PolicyName": name,
            "PolicyDocument": document,
            "DelegateAccount": account.account,
        },
    )


def race(clients: list[Any], call: Callable[[Any], Any]) -> list[str]:
    """`call` on every client at once (each in its own thread, released together): the sorted outcomes,
    "done" or the error code."""
    start = threading.Barrier(len(clients))

    def one(client: Any) -> str:
        start.wait()
        try:
            call(client)
        except ClientError as e:
            return str(e.response["Error"]["Code"])
        return "done"

    with ThreadPoolExecutor(len(clients)) as pool:
        return sorted(pool.map(one, clients))
