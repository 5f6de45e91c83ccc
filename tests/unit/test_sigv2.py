"""SigV2 verification against botocore's HmacV1Auth, HmacV1QueryAuth (S3) and SigV2Auth (EC2 Query)."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, SigV2Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from euca.protocol import sigv2
from euca.protocol.sigv4 import SignatureError

CREDS = Credentials("AKIDV2EXAMPLE", "v2/secret+key=")


def _wire(request: AWSRequest):
    prepared = request.prepare()
    split = urlsplit(prepared.url)
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in prepared.headers.items()]
    if not any(k.lower() == "host" for k, _ in headers):
        headers.append(("Host", split.netloc))
    return prepared, split, headers


@pytest.mark.parametrize(
    "path,query",
    [
        ("/bucket/key.txt", ""),
        ("/bucket/dir/a%20b%2Bc.txt", ""),
        ("/bucket", "acl"),
        ("/bucket/key", "uploadId=abc&partNumber=2"),
        ("/bucket/key", "response-content-disposition=attachment%3B%20filename%3D%22x.txt%22&versionId=v1"),
        ("/bucket", "list-type=2&prefix=a&delimiter=%2F"),
        ("/bucket", "versioning"),
        ("/bucket", "delete"),
    ],
)
def test_botocore_hmacv1_header(path, query):
    url = f"http://127.0.0.1:19300{path}" + (f"?{query}" if query else "")
    request = AWSRequest(
        method="PUT", url=url, data=b"x", headers={"Content-Type": "text/plain", "x-amz-meta-Tag": " a  b "}
    )
    HmacV1Auth(CREDS).add_auth(request)
    _, split, headers = _wire(request)
    parsed = sigv2.parse_s3_header_auth("PUT", split.path, split.query, headers, now=time.time())
    assert parsed.access_key_id == CREDS.access_key
    parsed.verify(CREDS.secret_key)
    with pytest.raises(SignatureError) as e:
        parsed.verify("wrong")
    assert e.value.code == "SignatureDoesNotMatch"
    assert e.value.message.startswith("The request signature we calculated does not match")


def test_hmacv1_virtual_host_bucket():
    request = AWSRequest(method="GET", url="http://bkt.s3.example.com:19300/obj")
    request.auth_path = "/bkt/obj"
    HmacV1Auth(CREDS).add_auth(request)
    _, split, headers = _wire(request)
    parsed = sigv2.parse_s3_header_auth(
        "GET", split.path, split.query, headers, now=time.time(), virtual_bucket="bkt"
    )
    parsed.verify(CREDS.secret_key)
    wrong = sigv2.parse_s3_header_auth("GET", split.path, split.query, headers, now=time.time())
    with pytest.raises(SignatureError):
        wrong.verify(CREDS.secret_key)


def test_hmacv1_tampered_header_and_skew():
    request = AWSRequest(method="GET", url="http://127.0.0.1:19300/bucket/k", headers={"x-amz-meta-a": "1"})
    HmacV1Auth(CREDS).add_auth(request)
    _, split, headers = _wire(request)
    changed = [(k, "2" if k.lower() == "x-amz-meta-a" else v) for k, v in headers]
    with pytest.raises(SignatureError):
        sigv2.parse_s3_header_auth("GET", split.path, split.query, changed, now=time.time()).verify(
            CREDS.secret_key
        )
    with pytest.raises(SignatureError) as e:
        sigv2.parse_s3_header_auth("GET", split.path, split.query, headers, now=time.time() + 3600)
    assert e.value.code == "RequestTimeTooSkewed"
    no_date = [(k, v) for k, v in headers if k.lower() != "date"]
    with pytest.raises(SignatureError) as e:
        sigv2.parse_s3_header_auth("GET", split.path, split.query, no_date, now=time.time())
    assert e.value.code == "AccessDenied"


def test_hmacv1_with_x_amz_date_uses_empty_date_line():
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    headers = [("Host", "h"), ("x-amz-date", date)]
    to_sign = f"GET\n\n\n\nx-amz-date:{date}\n/bucket/k"
    signature = sigv2._hmac_b64(CREDS.secret_key, to_sign, "sha1")
    headers.append(("Authorization", f"AWS {CREDS.access_key}:{signature}"))
    sigv2.parse_s3_header_auth("GET", "/bucket/k", "", headers, now=time.time()).verify(CREDS.secret_key)


def test_botocore_hmacv1_query_presign():
    request = AWSRequest(method="GET", url="http://127.0.0.1:19300/bucket/some%20key?versionId=v1")
    HmacV1QueryAuth(CREDS, expires=120).add_auth(request)
    _, split, headers = _wire(request)
    headers = [(k, v) for k, v in headers if k.lower() not in ("date",)]
    parsed = sigv2.parse_s3_query_auth("GET", split.path, split.query, headers, now=time.time())
    parsed.verify(CREDS.secret_key)
    with pytest.raises(SignatureError) as e:
        sigv2.parse_s3_query_auth("GET", split.path, split.query, headers, now=time.time() + 121)
    assert (e.value.code, e.value.message) == ("AccessDenied", "Request has expired")
    tampered = split.query.replace("versionId=v1", "versionId=v2")
    with pytest.raises(SignatureError):
        sigv2.parse_s3_query_auth("GET", split.path, tampered, headers, now=time.time()).verify(
            CREDS.secret_key
        )


def test_boto3_s3v2_presigned_url():
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:19302",
        aws_access_key_id=CREDS.access_key,
        aws_secret_access_key=CREDS.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3", s3={"addressing_style": "path"}),
    )
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "x y+z"}, ExpiresIn=60)
    split = urlsplit(url)
    parsed = sigv2.parse_s3_query_auth(
        "GET", split.path, split.query, [("Host", split.netloc)], now=time.time()
    )
    parsed.verify(CREDS.secret_key)


@pytest.mark.parametrize("presign", [False, True])
def test_path_below_a_service_prefix(presign):
    """An endpoint of http://host/services/objectstorage: botocore signs the path below the prefix (its
    auth_path), other clients the whole path; both are the same resource. Another path is still refused."""
    url = "http://127.0.0.1:19300/services/objectstorage/bucket/a%20b?versionId=v1"
    request = AWSRequest(method="GET", url=url)
    request.auth_path = "/bucket/a%20b"
    (HmacV1QueryAuth(CREDS, expires=120) if presign else HmacV1Auth(CREDS)).add_auth(request)
    _, split, headers = _wire(request)
    parse = sigv2.parse_s3_query_auth if presign else sigv2.parse_s3_header_auth
    now = time.time()
    with pytest.raises(SignatureError):
        parse("GET", split.path, split.query, headers, now=now).verify(CREDS.secret_key)
    parse("GET", split.path, split.query, headers, now=now, mounted_path="/bucket/a%20b").verify(
        CREDS.secret_key
    )
    with pytest.raises(SignatureError):
        parse("GET", split.path, split.query, headers, now=now, mounted_path="/bucket/other").verify(
            CREDS.secret_key
        )
    whole = AWSRequest(method="GET", url=url)
    (HmacV1QueryAuth(CREDS, expires=120) if presign else HmacV1Auth(CREDS)).add_auth(whole)
    _, split, headers = _wire(whole)
    parse("GET", split.path, split.query, headers, now=now, mounted_path="/bucket/a%20b").verify(
        CREDS.secret_key
    )


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_botocore_sigv2_query_api(method):
    params = {
        "Action": "DescribeImages",
        "Version": "2016-11-15",
        "Owner.1": "self",
        "Filter.1.Value.1": "a b/c+d~e*",
    }
    if method == "POST":
        request = AWSRequest(method="POST", url="http://127.0.0.1:19300/services/compute", data=dict(params))
    else:
        request = AWSRequest(method="GET", url="http://127.0.0.1:19300/services/compute", params=dict(params))
    SigV2Auth(CREDS).add_auth(request)
    prepared, split, headers = _wire(request)
    if method == "POST":
        body = prepared.body.decode() if isinstance(prepared.body, bytes) else prepared.body
        form = dict(parse_qsl(body, keep_blank_values=True))
    else:
        form = dict(parse_qsl(split.query, keep_blank_values=True))
    parsed = sigv2.parse_query_api_auth(method, split.path, headers, form, service="ec2", now=time.time())
    assert parsed.digest == "sha256"
    parsed.verify(CREDS.secret_key)
    form["Owner.1"] = "amazon"
    with pytest.raises(SignatureError) as e:
        sigv2.parse_query_api_auth(method, split.path, headers, form, service="ec2", now=time.time()).verify(
            CREDS.secret_key
        )
    assert e.value.code == "SignatureDoesNotMatch"


def test_query_api_hmac_sha1_and_expires():
    params = {
        "Action": "DescribeRegions",
        "AWSAccessKeyId": CREDS.access_key,
        "SignatureVersion": "2",
        "SignatureMethod": "HmacSHA1",
        "Expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60)),
    }
    to_sign = sigv2.query_api_string_to_sign("GET", "ec2.example:8773", "/services/compute", params)
    params["Signature"] = sigv2._hmac_b64(CREDS.secret_key, to_sign, "sha1")
    headers = [("Host", "ec2.example:8773")]
    parsed = sigv2.parse_query_api_auth(
        "GET", "/services/compute", headers, params, service="ec2", now=time.time()
    )
    parsed.verify(CREDS.secret_key)
    with pytest.raises(SignatureError) as e:
        sigv2.parse_query_api_auth(
            "GET", "/services/compute", headers, params, service="ec2", now=time.time() + 120
        )
    assert e.value.code == "RequestExpired"


@pytest.mark.parametrize(
    "change,code",
    [
        ({"SignatureMethod": "HmacMD5"}, "InvalidParameterValue"),
        ({"SignatureVersion": "1"}, "InvalidParameterValue"),
        ({"Timestamp": None}, "MissingParameter"),
        ({"Signature": None}, "MissingParameter"),
        ({"Timestamp": "yesterday"}, "InvalidParameterValue"),
        ({"Timestamp": "2001-01-01T00:00:00Z"}, "RequestTimeTooSkewed"),
    ],
)
def test_query_api_parameter_errors(change, code):
    params = {
        "AWSAccessKeyId": "AKID",
        "Signature": "x",
        "SignatureVersion": "2",
        "SignatureMethod": "HmacSHA256",
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(SignatureError) as e:
        sigv2.parse_query_api_auth("GET", "/", [("Host", "h")], params, service="ec2", now=time.time())
    assert e.value.code == code


def test_canonical_resource_subresources():
    assert (
        sigv2.canonical_resource("/b/k", "uploadId=1&partNumber=2&foo=bar") == "/b/k?partNumber=2&uploadId=1"
    )
    assert sigv2.canonical_resource("/k", "acl", virtual_bucket="b") == "/b/k?acl"
    assert sigv2.canonical_resource("/b", "prefix=x&max-keys=3") == "/b"
    encoded = quote('attachment; filename="a b"', safe="")
    assert sigv2.canonical_resource("/b/k", f"response-content-disposition={encoded}") == (
        '/b/k?response-content-disposition=attachment; filename="a b"'
    )
