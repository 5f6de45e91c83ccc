"""A small synchronous client of the CLC's Euare (IAM) API, for `euca admin`: SigV4-signed Query POSTs to
<clc>/services/Euare as the cloud administrator, answers as XML elements, errors as `EuareError`s with IAM's
codes. `euca admin`'s account commands go through it, so the API is the one door to accounts."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlencode
from xml.etree import ElementTree

import httpx

from euca.protocol.errors import CodedError
from euca.protocol.sigv4 import SigningKey, sign_request

NS = "{https://iam.amazonaws.com/doc/2010-05-08/}"
VERSION = "2010-05-08"


class EuareError(CodedError):
    pass


class Unreachable(Exception):
    """No CLC answers at the endpoint (not running, or elsewhere)."""


class EuareClient:
    def __init__(self, endpoint: str, access_key_id: str, secret_key: str, region: str, timeout: float = 30):
        self.url = endpoint.rstrip("/") + "/services/Euare"
        self.key = SigningKey(access_key_id, secret_key, region, "iam")
        self.timeout = timeout

    def call(self, action: str, params: dict[str, str] | None = None) -> ElementTree.Element:
        """The action's result element (`<{action}Result>`, or the response root when it has none)."""
        body = urlencode({"Action": action, "Version": VERSION, **(params or {})}).encode()
        headers = sign_request(
            "POST",
            self.url,
            self.key,
            headers=[("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
            payload_hash=hashlib.sha256(body).hexdigest(),
            now=time.time(),
        )
        try:
            response = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout)
        except httpx.ConnectError as e:
            raise Unreachable(str(e)) from e
        try:
            root = ElementTree.fromstring(response.content)
        except ElementTree.ParseError:
            raise EuareError(
                "ServiceFailure", f"not an IAM answer (HTTP {response.status_code})", 500
            ) from None
        if response.status_code != 200:
            code = root.findtext(f"{NS}Error/{NS}Code") or "ServiceFailure"
            message = root.findtext(f"{NS}Error/{NS}Message") or ""
            raise EuareError(code, message, response.status_code)
        result = root.find(f"{NS}{action}Result")
        return result if result is not None else root


def text(element: ElementTree.Element, path: str) -> str:
    """The text at `path` (IAM's element names, without the namespace), "" when absent."""
    return element.findtext("/".join(NS + p for p in path.split("/"))) or ""


def members(element: ElementTree.Element, path: str) -> list[ElementTree.Element]:
    """The `<member>`s of the list at `path`."""
    return element.findall("/".join(NS + p for p in path.split("/")) + f"/{NS}member")
