"""SigV4 verification against AWS's published test suite and against botocore's own signers."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import quote, unquote_to_bytes, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from euca.protocol import sigv4, sigv4_verify
from euca.protocol.sigv4 import SignatureError

# -- the aws-sig-v4-test-suite ("signature-v4-test-suite" in the AWS General Reference) ----------------

SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_TIME = sigv4.parse_amz_date("20150830T123600Z")
SUITE_CREDENTIAL = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
BASE = ["Host:example.amazonaws.com", "X-Amz-Date:20150830T123600Z"]

# (name, request line, extra header lines, body, signed headers, expected signature)
VECTORS = [
    (
        "get-vanilla",
        "GET /",
        [],
        "",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    (
        "get-vanilla-empty-query-key",
        "GET /?Param1=value1",
        [],
        "",
        "host;x-amz-date",
        "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
    ),
    (
        "get-vanilla-query-order-key",
        "GET /?Param1=value2&Param1=Value1",
        [],
        "",
        "host;x-amz-date",
        "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
    ),
    (
        "get-vanilla-query-order-key-case",
        "GET /?Param2=value2&Param1=value1",
        [],
        "",
        "host;x-amz-date",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    (
        "get-vanilla-query-order-value",
        "GET /?Param1=value2&Param1=value1",
        [],
        "",
        "host;x-amz-date",
        "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
    ),
    (
        "get-vanilla-query-unreserved",
        "GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz="
        "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        [],
        "",
        "host;x-amz-date",
        "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    ),
    (
        "get-vanilla-utf8-query",
        "GET /?\u1234=bar",
        [],
        "",
        "host;x-amz-date",
        "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    ),
    (
        "get-unreserved",
        "GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        [],
        "",
        "host;x-amz-date",
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    ),
    (
        "get-utf8",
        "GET /\u1234",
        [],
        "",
        "host;x-amz-date",
        "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
    ),
    (
        "get-header-key-duplicate",
        "GET /",
        ["My-Header1:value2", "My-Header1:value2", "My-Header1:value1"],
        "",
        "host;my-header1;x-amz-date",
        "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    ),
    (
        "get-header-value-order",
        "GET /",
        ["My-Header1:value4", "My-Header1:value1", "My-Header1:value3", "My-Header1:value2"],
        "",
        "host;my-header1;x-amz-date",
        "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
    ),
    (
        "get-header-value-trim",
        "GET /",
        ["My-Header1: value1", 'My-Header2: "a   b   c"'],
        "",
        "host;my-header1;my-header2;x-amz-date",
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    ),
    (
        "post-vanilla",
        "POST /",
        [],
        "",
        "host;x-amz-date",
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    ),
    (
        "post-vanilla-query",
        "POST /?Param1=value1",
        [],
        "",
        "host;x-amz-date",
        "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
    ),
    (
        "post-header-key-sort",
        "POST /",
        ["My-Header1:value1"],
        "",
        "host;my-header1;x-amz-date",
        "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
    ),
    (
        "post-header-value-case",
        "POST /",
        ["My-Header1:VALUE1"],
        "",
        "host;my-header1;x-amz-date",
        "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
    ),
    (
        "post-x-www-form-urlencoded",
        "POST /",
        ["Content-Type:application/x-www-form-urlencoded", "Content-Length:13"],
        "Param1=value1",
        "content-type;host;x-amz-date",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    ),
    (
        "post-x-www-form-urlencoded-parameters",
        "POST /",
        # The suite's request says charset=utf8 (no dash); only content-type, host and x-amz-date are signed.
        ["Content-Type:application/x-www-form-urlencoded; charset=utf8", "Content-Length:13"],
        "Param1=value1",
        "content-type;host;x-amz-date",
        "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
    ),
    (
        "post-sts-header-before",
        "POST /",
        [
            "X-Amz-Security-Token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAe"
            "MicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQ"
            "DYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8"
            "FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
        ],
        "",
        "host;x-amz-date;x-amz-security-token",
        "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
    ),
    # normalize-path group: every service but S3 removes dot segments and empty segments.
    (
        "get-relative",
        "GET /example/..",
        [],
        "",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    (
        "get-relative-relative",
        "GET /example1/example2/../..",
        [],
        "",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    (
        "get-slash",
        "GET //",
        [],
        "",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    (
        "get-slash-dot-slash",
        "GET /./",
        [],
        "",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    (
        "get-slash-pointless-dot",
        "GET /./example",
        [],
        "",
        "host;x-amz-date",
        "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
    ),
    (
        "get-slashes",
        "GET //example//",
        [],
        "",
        "host;x-amz-date",
        "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
    ),
    (
        "get-space",
        "GET /example space/",
        [],
        "",
        "host;x-amz-date",
        "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    ),
]


def _suite_request(request_line: str, extra: list[str], signed: str, signature: str):
    method, _, target = request_line.partition(" ")
    path, _, query = target.partition("?")
    headers = [tuple(line.split(":", 1)) for line in BASE + extra]
    headers.append(
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={SUITE_CREDENTIAL}, SignedHeaders={signed}, Signature={signature}",
        )
    )
    return method, path, query, headers


@pytest.mark.parametrize("name,line,extra,body,signed,signature", VECTORS, ids=[v[0] for v in VECTORS])
def test_aws_suite_vector(name, line, extra, body, signed, signature):
    method, path, query, headers = _suite_request(line, extra, signed, signature)
    parsed = sigv4_verify.parse_header_auth(
        method,
        path,
        query,
        headers,
        service="service",
        now=SUITE_TIME,
        body_sha256=hashlib.sha256(body.encode()).hexdigest(),
    )
    assert parsed.credential.scope == "20150830/us-east-1/service/aws4_request"
    parsed.verify(SUITE_SECRET)


@pytest.mark.parametrize(
    "name,line,extra,body,signed,signature", VECTORS[:6], ids=[v[0] for v in VECTORS[:6]]
)
def test_aws_suite_vector_wrong_secret(name, line, extra, body, signed, signature):
    method, path, query, headers = _suite_request(line, extra, signed, signature)
    parsed = sigv4_verify.parse_header_auth(method, path, query, headers, service="service", now=SUITE_TIME)
    with pytest.raises(SignatureError) as e:
        parsed.verify(SUITE_SECRET.replace("K", "X"))
    assert e.value.code == "SignatureDoesNotMatch"
    assert e.value.status == 403


def test_suite_canonical_request_and_string_to_sign():
    # get-vanilla-query-order-key-case: the documented creq and sts.
    query = sigv4.canonical_query("Param2=value2&Param1=value1")
    block = sigv4.canonical_headers(
        ["host", "x-amz-date"], [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]
    )
    creq = sigv4.canonical_request("GET", "/", query, block, ["host", "x-amz-date"], sigv4.EMPTY_SHA256)
    assert creq == (
        "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    sts = sigv4.string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", creq)
    assert sts.endswith("816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0")


def test_canonical_uri_rules():
    assert sigv4.canonical_uri("/a%20b//c/../d", service="s3") == "/a%20b//c/../d"
    assert sigv4.canonical_uri("/a%20b//c/../d", service="ec2") == "/a%2520b/d"
    assert sigv4.canonical_uri("", service="ec2") == "/"
    assert sigv4.canonical_uri("/\u1234", service="ec2") == "/%E1%88%B4"
    assert sigv4.canonical_query("acl") == "acl="
    assert sigv4.canonical_query("b=2&a=x+y&a=%7e") == "a=x%2By&a=~&b=2"
    assert sigv4.canonical_query("b=2&a=x%20y&a=%7e") == "a=x%20y&a=~&b=2"


# -- AWS's S3 examples (sig-v4-header-based-auth, sigv4-query-string-auth) --------------------------

S3_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
S3_EXAMPLE_TIME = sigv4.parse_amz_date("20130524T000000Z")


def test_s3_documented_get_object():
    headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    ]
    parsed = sigv4_verify.parse_header_auth(
        "GET", "/test.txt", "", headers, service="s3", now=S3_EXAMPLE_TIME
    )
    parsed.verify(S3_EXAMPLE_SECRET)


def test_s3_documented_presigned_get():
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
        "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    headers = [("Host", "examplebucket.s3.amazonaws.com")]
    parsed = sigv4_verify.parse_query_auth(
        "GET", "/test.txt", query, headers, service="s3", now=S3_EXAMPLE_TIME + 60
    )
    assert parsed.payload_hash == sigv4.UNSIGNED_PAYLOAD
    parsed.verify(S3_EXAMPLE_SECRET)
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_query_auth(
            "GET", "/test.txt", query, headers, service="s3", now=S3_EXAMPLE_TIME + 86401
        )
    assert (e.value.code, e.value.message) == ("AccessDenied", "Request has expired")
    tampered = query.replace("86400", "86401")
    parsed = sigv4_verify.parse_query_auth(
        "GET", "/test.txt", tampered, headers, service="s3", now=S3_EXAMPLE_TIME
    )
    with pytest.raises(SignatureError):
        parsed.verify(S3_EXAMPLE_SECRET)


# -- botocore's signers ---------------------------------------------------------------------------

CREDS = Credentials("AKIDBOTOCORE", "botocore/secret+key")


def _wire(request: AWSRequest):
    """What an HTTP client puts on the wire for a botocore request: method, raw path, raw query, headers, body."""
    prepared = request.prepare()
    split = urlsplit(prepared.url)
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in prepared.headers.items()]
    if not any(k.lower() == "host" for k, _ in headers):
        headers.append(("Host", split.netloc))
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    return prepared.method, split.path, split.query, headers, body


def _verify(
    request: AWSRequest, service: str, *, secret: str = CREDS.secret_key, query: bool = False, now=None
):
    method, path, raw_query, headers, body = _wire(request)
    parse = sigv4_verify.parse_query_auth if query else sigv4_verify.parse_header_auth
    parsed = parse(
        method,
        path,
        raw_query,
        headers,
        service=service,
        now=time.time() if now is None else now,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    parsed.verify(secret)
    return parsed


def test_botocore_sigv4_ec2_form_post():
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:19300/",
        data={
            "Action": "DescribeInstances",
            "Version": "2016-11-15",
            "Filter.1.Name": "tag:a b",
            "Filter.1.Value.1": "x/y+z",
        },
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(CREDS, "ec2", "eucalyptus").add_auth(request)
    parsed = _verify(request, "ec2")
    assert parsed.credential.region == "eucalyptus"


def test_botocore_sigv4_ec2_path_is_normalised_and_double_encoded():
    request = AWSRequest(
        method="GET", url="http://127.0.0.1:19300/services/./compute//a%20b?Action=DescribeRegions"
    )
    SigV4Auth(CREDS, "ec2", "us-east-1").add_auth(request)
    _verify(request, "ec2")


def test_botocore_sigv4_wrong_secret_and_tampered_header():
    request = AWSRequest(
        method="GET", url="http://127.0.0.1:19300/?Action=DescribeRegions", headers={"X-Amz-Meta-A": "1"}
    )
    SigV4Auth(CREDS, "ec2", "us-east-1").add_auth(request)
    with pytest.raises(SignatureError) as e:
        _verify(request, "ec2", secret="not the secret")
    assert e.value.code == "SignatureDoesNotMatch"
    request.headers["X-Amz-Meta-A"] = "2"
    with pytest.raises(SignatureError):
        _verify(request, "ec2")


S3_KEYS = [
    "plain.txt",
    "dir/sub dir/file name.txt",
    "odd!$&'()*+,;=:@~chars",
    "unicod\u00e9/\u65e5\u672c",
    "a%2Fb",
]


@pytest.mark.parametrize("key", S3_KEYS)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_botocore_s3_put_object(key, scheme):
    url = f"{scheme}://127.0.0.1:19300/bucket/{quote(key, safe='/~')}"
    request = AWSRequest(method="PUT", url=url, data=b"hello world", headers={"Content-Type": "text/plain"})
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    parsed = _verify(request, "s3")
    expected = hashlib.sha256(b"hello world").hexdigest() if scheme == "http" else sigv4.UNSIGNED_PAYLOAD
    if scheme == "https":
        # botocore signs the body over https too unless streaming+checksum; both forms must verify.
        assert parsed.payload_hash in (expected, hashlib.sha256(b"hello world").hexdigest())
    else:
        assert parsed.payload_hash == expected


@pytest.mark.parametrize(
    "query",
    [
        "uploads",
        "partNumber=3&uploadId=abc%2Bdef",
        "list-type=2&prefix=a%2Fb%20c&delimiter=%2F",
        "acl",
        "versionId=null",
    ],
)
def test_botocore_s3_subresource_queries(query):
    request = AWSRequest(method="GET", url=f"http://127.0.0.1:19300/bucket/key?{query}")
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    _verify(request, "s3")


def test_botocore_s3_any_region_in_scope():
    request = AWSRequest(method="GET", url="http://127.0.0.1:19300/bucket")
    S3SigV4Auth(CREDS, "s3", "eu-west-3").add_auth(request)
    parsed = _verify(request, "s3")
    assert parsed.credential.region == "eu-west-3"


def test_botocore_s3_presign_query_auth():
    request = AWSRequest(method="GET", url="http://127.0.0.1:19300/bucket/some%20key.txt?versionId=v1")
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=600).add_auth(request)
    parsed = _verify(request, "s3", query=True)
    assert parsed.presigned and parsed.payload_hash == sigv4.UNSIGNED_PAYLOAD
    with pytest.raises(SignatureError) as e:
        _verify(request, "s3", query=True, now=time.time() + 601)
    assert e.value.code == "AccessDenied" and e.value.message == "Request has expired"


def test_botocore_generic_presign_query_auth_ec2():
    request = AWSRequest(
        method="GET", url="http://127.0.0.1:19300/?Action=DescribeRegions&Version=2016-11-15"
    )
    SigV4QueryAuth(CREDS, "ec2", "us-east-1", expires=60).add_auth(request)
    _verify(request, "ec2", query=True)


def test_boto3_generate_presigned_url():
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:19301",
        aws_access_key_id=CREDS.access_key,
        aws_secret_access_key=CREDS.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    for method, params in [
        ("get_object", {"Bucket": "bkt", "Key": "a b/c+d.txt", "ResponseContentType": "text/x y"}),
        ("put_object", {"Bucket": "bkt", "Key": "k"}),
    ]:
        url = client.generate_presigned_url(method, Params=params, ExpiresIn=300)
        split = urlsplit(url)
        parsed = sigv4_verify.parse_query_auth(
            "GET" if method == "get_object" else "PUT",
            split.path,
            split.query,
            [("Host", split.netloc)],
            service="s3",
            now=time.time(),
        )
        parsed.verify(CREDS.secret_key)


# -- malformed and out-of-time requests ----------------------------------------------------------


def _signed_headers_request(**headers):
    request = AWSRequest(method="GET", url="http://127.0.0.1:19300/bucket", headers=headers)
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    return _wire(request)


def test_skewed_clock():
    method, path, query, headers, _ = _signed_headers_request()
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_header_auth(method, path, query, headers, service="s3", now=time.time() + 16 * 60)
    assert e.value.code == "RequestTimeTooSkewed" and e.value.status == 403
    sigv4_verify.parse_header_auth(method, path, query, headers, service="s3", now=time.time() + 14 * 60)


@pytest.mark.parametrize(
    "authorization,code",
    [
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws4_request, SignedHeaders=host",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab",
            "AuthorizationHeaderMalformed",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws5_request, SignedHeaders=host, Signature=ab",
            "AuthorizationHeaderMalformed",
        ),
        ("AWS4-HMAC-SHA256 garbage", "AuthorizationHeaderMalformed"),
        ("AWS4-ECDSA-P256-SHA256 Credential=x", "InvalidArgument"),
    ],
)
def test_malformed_authorization_header(authorization, code):
    headers = [
        ("Host", "h"),
        ("x-amz-date", "20150830T123600Z"),
        ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
    ]
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_header_auth(
            "GET", "/", "", headers + [("Authorization", authorization)], service="s3", now=SUITE_TIME
        )
    assert e.value.code == code and e.value.status == 400


def test_malformed_header_for_query_api_is_incomplete_signature():
    headers = [("Host", "h"), ("x-amz-date", "20150830T123600Z")]
    auth = ("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/ec2/aws4_request")
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_header_auth("GET", "/", "", headers + [auth], service="ec2", now=SUITE_TIME)
    assert e.value.code == "IncompleteSignature"
    assert "'Signature'" in e.value.message


def test_missing_date_and_credential_date_mismatch():
    auth = (
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKID/20150831/us-east-1/s3/aws4_request, SignedHeaders=host, Signature="
        + "0" * 64,
    )
    base = [("Host", "h"), ("x-amz-content-sha256", sigv4.EMPTY_SHA256), auth]
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_header_auth("GET", "/", "", base, service="s3", now=SUITE_TIME)
    assert e.value.code == "AccessDenied"
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_header_auth(
            "GET", "/", "", base + [("x-amz-date", "20150830T123600Z")], service="s3", now=SUITE_TIME
        )
    assert e.value.code == "AuthorizationHeaderMalformed"
    assert "Date is not the same as X-Amz-Date" in e.value.message


def test_s3_requires_content_sha256_and_checks_its_form():
    headers = [
        ("Host", "h"),
        ("x-amz-date", "20150830T123600Z"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={'0' * 64}",
        ),
    ]
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_header_auth("GET", "/", "", headers, service="s3", now=SUITE_TIME)
    assert e.value.code == "InvalidRequest"
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_header_auth(
            "GET", "/", "", headers + [("x-amz-content-sha256", "nope")], service="s3", now=SUITE_TIME
        )
    assert e.value.code == "InvalidArgument"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"X-Amz-Expires": "604801"}, "X-Amz-Expires must be less than a week (in seconds) that is 604800"),
        ({"X-Amz-Expires": "soon"}, "X-Amz-Expires should be a number"),
        ({"X-Amz-Algorithm": "AWS4-HMAC-SHA1"}, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'),
        (
            {"X-Amz-Date": "2015-08-30"},
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        ),
        ({"X-Amz-Signature": None}, "Query-string authentication version 4 requires"),
    ],
)
def test_presign_parameter_errors(change, message):
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": "AKID/20150830/us-east-1/s3/aws4_request",
        "X-Amz-Date": "20150830T123600Z",
        "X-Amz-Expires": "60",
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Signature": "0" * 64,
    }
    params.update(change)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items() if v is not None)
    with pytest.raises(SignatureError) as e:
        sigv4_verify.parse_query_auth("GET", "/b/k", query, [("Host", "h")], service="s3", now=SUITE_TIME)
    assert e.value.code == "AuthorizationQueryParametersError" and e.value.status == 400
    assert e.value.message.startswith(message)


def test_presign_max_week_is_accepted_and_future_dates_refused():
    request = AWSRequest(method="GET", url="http://127.0.0.1:19300/bucket/key")
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=604800).add_auth(request)
    _verify(request, "s3", query=True, now=time.time() + 604000)
    with pytest.raises(SignatureError) as e:
        _verify(request, "s3", query=True, now=time.time() - 3600)
    assert e.value.code == "AccessDenied"


def test_signing_key_is_the_documented_derivation():
    # The AWS General Reference example: secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215, us-east-1, iam.
    key = sigv4.signing_key(SUITE_SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/",
        "",
        "/bench/list/obj-000123",
        "/b/a.b_c~d-e/F9",
        "/b//k",
        "/b/k%2Fx",
        "/b/%7Etilde",
        "/b/a+b",
        "/b/sp ace",
        "/b/caf\u00e9",
        "/b/k=v&x",
        "/b/k\n",
    ],
)
def test_s3_reencoded_uri_is_the_decoded_path_encoded_again(raw_path: str) -> None:
    # A plain path is returned as it is: the same as decoding and encoding it again.
    expected = sigv4.uri_encode(unquote_to_bytes(sigv4.wire_bytes(raw_path or "/")), keep_slash=True)
    assert sigv4.s3_reencoded_uri(raw_path) == expected
