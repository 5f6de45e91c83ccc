"""Pure parts of Walrus's S3 backend (walrus/backend.py) and the streamed calls of core/s3client.py it uses,
the latter against an httpx MockTransport that answers as S3 does."""

from __future__ import annotations

import httpx
import pytest

from euca.core import s3client
from euca.core.s3client import S3Client, S3ClientError
from euca.protocol import sigv4
from euca.roles.walrus.backend import BACKEND_MIN_PART, S3Backend, _ChunkStream

KEY = sigv4.SigningKey("AK", "SK", "us-east-1", "s3")


def test_iso_time_and_unescape() -> None:
    assert s3client._iso_time("1970-01-01T00:01:40.000Z") == 100.0
    assert s3client._unescape("&quot;a&amp;b&lt;&gt;&apos;") == "\"a&b<>'"


def test_server_side_copy_only_when_the_part_floor_allows() -> None:
    big = BACKEND_MIN_PART
    assert S3Backend._server_side([("a" * 32, 0, 10)])
    assert S3Backend._server_side([("a" * 32, 0, big), ("b" * 32, 0, 1)])
    assert not S3Backend._server_side([("a" * 32, 0, big - 1), ("b" * 32, 0, 1)])
    assert not S3Backend._server_side([(b"inline", 0, 6)])


async def test_chunk_stream_reads_in_bounded_pieces() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"abcdef"
        yield b"gh"

    stream = _ChunkStream(chunks())
    assert await stream.read(4) == b"abcd"
    assert await stream.read(4) == b"ef"
    assert await stream.read(4) == b"gh"
    assert await stream.read(4) == b""


LIST_PAGES = [
    b"<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>t/1</NextContinuationToken>"
    b"<Contents><Key>k&amp;1</Key><LastModified>1970-01-01T00:00:10.000Z</LastModified><Size>3</Size>"
    b"</Contents></ListBucketResult>",
    b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>k2</Key>"
    b"<LastModified>1970-01-01T00:00:20.000Z</LastModified><Size>5</Size></Contents></ListBucketResult>",
]


async def test_list_objects_follows_continuation_tokens() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256")
        seen.append(request.url.query.decode())
        return httpx.Response(200, content=LIST_PAGES[len(seen) - 1])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = S3Client(http, "http://backend", KEY)
        items = [item async for item in client.list_objects("bk")]
    assert [(i.key, i.size, i.last_modified) for i in items] == [("k&1", 3, 10.0), ("k2", 5, 20.0)]
    assert "continuation-token=t%2F1" in seen[1]


async def test_streamed_put_range_get_and_errors() -> None:
    stored: dict[str, bytes] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        key = request.url.path
        if request.method == "PUT":
            assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
            stored[key] = await request.aread()
            return httpx.Response(200, headers={"etag": '"x"'})
        if request.method == "GET":
            if key not in stored:
                return httpx.Response(404, content=b"<Error><Code>NoSuchKey</Code></Error>")
            first, last = request.headers["range"].removeprefix("bytes=").split("-")
            return httpx.Response(206, content=stored[key][int(first) : int(last) + 1])
        return httpx.Response(204)

    async def body():  # type: ignore[no-untyped-def]
        yield b"hello "
        yield b"world"

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = S3Client(http, "http://backend", KEY)
        await client.put_stream("bk", "obj", body(), 11)
        response = await client.open_range("bk", "obj", 6, 5)
        try:
            assert await response.aread() == b"world"
        finally:
            await response.aclose()
        with pytest.raises(S3ClientError) as e:
            await client.open_range("bk", "gone", 0, 1)
        assert e.value.code == "NoSuchKey"
        await client.delete_object("bk", "obj")
