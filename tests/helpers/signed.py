"""Raw signed requests, for what boto3 will not send (a Version it does not know, say)."""

from __future__ import annotations

from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials


def signed_ec2_post(euca: Any, body: str, path: str = "/") -> httpx.Response:
    """A SigV4-signed EC2 Query request with exactly `body` as its form."""
    url = euca.url.rstrip("/") + path
    req = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(BotoCredentials(euca.admin.access_key, euca.admin.secret_key), "ec2", euca.region).add_auth(req)
    return httpx.post(url, content=body.encode(), headers=dict(req.headers.items()))


def ec2_error_code(response: httpx.Response) -> str:
    return response.text.split("<Code>", 1)[1].split("</Code>", 1)[0]
