"""A CORS preflight to a presigned URL (issue 11): the browser sends OPTIONS with the URL's query string
(X-Amz-Signature or Signature for another method); it is a preflight, answered by the bucket's CORS rules,
and no signature is checked."""

from __future__ import annotations

from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config


@pytest.mark.parametrize("signature", ["s3v4", "s3"])
def test_preflight_with_presigned_query(euca: Any, s3_client: Any, bucket: str, signature: str) -> None:
    rules = [
        {
            "AllowedMethods": ["PUT", "GET"],
            "AllowedOrigins": ["https://app.example.com"],
            "AllowedHeaders": ["*"],
        }
    ]
    s3_client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": rules})
    signer = boto3.client(
        "s3",
        endpoint_url=euca.url,
        region_name="us-east-1",
        aws_access_key_id=euca.admin.access_key,
        aws_secret_access_key=euca.admin.secret_key,
        config=Config(signature_version=signature, s3={"addressing_style": "path"}),
    )
    url = signer.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "up"}, ExpiresIn=300)
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type",
    }
    r = httpx.options(url, headers=preflight)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "PUT" in r.headers["access-control-allow-methods"]
    refused = httpx.options(url, headers={**preflight, "Origin": "https://other.example.org"})
    assert refused.status_code == 403
    # The URL itself still works for the PUT it signs, and only for it.
    assert httpx.put(url, content=b"x", headers={"Origin": "https://app.example.com"}).status_code == 200
    assert httpx.get(url).status_code == 403
