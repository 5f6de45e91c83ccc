"""Client-side SigV4 (euca.protocol.sigv4.sign_request / presign_url): accepted by our verifier, and the same
signatures botocore computes for the same request at the same instant."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from euca.protocol import sigv4, sigv4_verify

NOW = 1_700_000_000.0
KEY = sigv4.SigningKey("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eucalyptus", "s3")


def _freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = dt.datetime.fromtimestamp(NOW, dt.UTC).replace(tzinfo=None)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: frozen)


def _verify(method: str, url: str, headers: list[tuple[str, str]], *, service: str, now: float = NOW) -> None:
    split = urlsplit(url)
    lowered = [(k.lower(), v) for k, v in headers]
    if any(k == "authorization" for k, _ in lowered):
        parsed = sigv4_verify.parse_header_auth(
            method, split.path, split.query, lowered, service=service, now=now
        )
    else:
        parsed = sigv4_verify.parse_query_auth(
            method, split.path, split.query, lowered, service=service, now=now
        )
    parsed.verify(KEY.secret_key)


@pytest.mark.parametrize(
    "path", ["/bucket/key", "/services/objectstorage/b/img.part.00", "/b/a%20b/c%2Bd~e.manifest.xml"]
)
def test_signed_get_matches_botocore_and_verifies(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    _freeze(monkeypatch)
    url = f"http://127.0.0.1:8773{path}"
    ours = sigv4.sign_request("GET", url, KEY, now=NOW)
    _verify("GET", url, ours, service="s3")
    request = AWSRequest(method="GET", url=url, headers={"X-Amz-Content-SHA256": sigv4.EMPTY_SHA256})
    S3SigV4Auth(Credentials(KEY.access_key_id, KEY.secret_key), "s3", KEY.region).add_auth(request)
    theirs = request.headers["Authorization"]
    assert dict(ours)["Authorization"].split("Signature=")[1] == theirs.split("Signature=")[1]


def test_presigned_url_matches_botocore_and_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    _freeze(monkeypatch)
    url = "http://127.0.0.1:8773/services/objectstorage/bucket/dir/img.part.07"
    ours = sigv4.presign_url("GET", url, KEY, expires=3600, now=NOW)
    _verify("GET", ours, [("host", "127.0.0.1:8773")], service="s3", now=NOW + 10)
    request = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials(KEY.access_key_id, KEY.secret_key), "s3", KEY.region, expires=3600).add_auth(
        request
    )
    assert ours.split("X-Amz-Signature=")[1] == request.url.split("X-Amz-Signature=")[1]
    with pytest.raises(sigv4.SignatureError) as e:
        _verify("GET", ours, [("host", "127.0.0.1:8773")], service="s3", now=NOW + 3601)
    assert e.value.code == "AccessDenied"
    with pytest.raises(sigv4.SignatureError):  # another host: the Host header is signed
        _verify("GET", ours, [("host", "10.0.0.1:8773")], service="s3", now=NOW + 10)


def test_default_port_left_out_of_host() -> None:
    signed = dict(sigv4.sign_request("GET", "http://walrus.example:80/b/k", KEY, now=NOW))
    assert signed["Host"] == "walrus.example"


def test_ec2_form_post_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    _freeze(monkeypatch)
    import hashlib

    body = b"Action=RegisterImage&Version=2016-11-15&ImageLocation=b%2Fimg.manifest.xml&Name=img"
    key = sigv4.SigningKey(KEY.access_key_id, KEY.secret_key, "eucalyptus", "ec2")
    url = "http://127.0.0.1:8773/services/compute"
    ctype = ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
    ours = sigv4.sign_request(
        "POST", url, key, headers=[ctype], payload_hash=hashlib.sha256(body).hexdigest(), now=NOW
    )
    split = urlsplit(url)
    parsed = sigv4_verify.parse_header_auth(
        "POST",
        split.path,
        "",
        [(k.lower(), v) for k, v in ours],
        service="ec2",
        now=NOW,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    parsed.verify(key.secret_key)
    request = AWSRequest(method="POST", url=url, data=body, headers={ctype[0]: ctype[1]})
    SigV4Auth(Credentials(key.access_key_id, key.secret_key), "ec2", key.region).add_auth(request)
    assert (
        dict(ours)["Authorization"].split("Signature=")[1]
        == request.headers["Authorization"].split("Signature=")[1]
    )


def test_presign_refuses_bad_expiry() -> None:
    with pytest.raises(ValueError):
        sigv4.presign_url("GET", "http://h/b/k", KEY, expires=8 * 24 * 3600, now=NOW)
    with pytest.raises(ValueError):
        sigv4.presign_url("GET", "/b/k", KEY, expires=60, now=NOW)
