"""The aws-chunked decoder: AWS's documented examples, botocore's encoder, arbitrary splits, tampering."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import zlib

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

from euca.protocol import sigv4
from euca.protocol.awschunked import MAX_LINE, AwsChunkedDecoder, ChunkedError
from euca.protocol.sigv4 import ChunkSignatureChain, SignatureError

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
KEY = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")

# sigv4-streaming.html, "Example: PUT Object": 65 KiB of 'a' in 64 KiB chunks.
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)
# sigv4-streaming-trailers.html uses the same payload with another seed; its chunk signatures chain from it.
TRAILER_DOC_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
TRAILER_DOC_CHUNKS = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
]


def chain(seed: str = DOC_SEED) -> ChunkSignatureChain:
    return ChunkSignatureChain(KEY, DATE, SCOPE, seed)


def decode(decoder: AwsChunkedDecoder, body: bytes, pieces: list[int] | None = None) -> bytes:
    out = []
    if pieces is None:
        out += decoder.feed(body)
    else:
        pos = 0
        for size in pieces:
            out += decoder.feed(body[pos : pos + size])
            pos += size
        out += decoder.feed(body[pos:])
    decoder.finish()
    return b"".join(out)


def signed_body(
    chunks: list[bytes], seed: str = DOC_SEED, trailers: list[tuple[str, str]] | None = None
) -> bytes:
    """An encoder for tests: chunk signatures chained from `seed`, optionally signed trailers."""
    signer = chain(seed)
    out = b""
    for data in [*chunks, b""]:
        signature = signer.expected_chunk(hashlib.sha256(data).hexdigest())
        signer.previous = signature
        out += b"%x;chunk-signature=%s\r\n" % (len(data), signature.encode()) + (
            data + b"\r\n" if data else b""
        )
    if trailers is not None:
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers))
        trailer_sig = signer.expected_trailer(hashlib.sha256(canonical.encode()).hexdigest())
        out += "".join(f"{n}:{v}\r\n" for n, v in trailers).encode()
        out += f"x-amz-trailer-signature:{trailer_sig}\r\n".encode()
    return out + b"\r\n"


def test_documented_example_whole():
    decoder = AwsChunkedDecoder(chain=chain(), decoded_length=66560)
    assert decode(decoder, DOC_BODY) == b"a" * 66560
    assert decoder.done and decoder.trailers == {}


def test_documented_example_byte_by_byte():
    decoder = AwsChunkedDecoder(chain=chain(), decoded_length=66560)
    out = []
    for i in range(len(DOC_BODY)):
        out += decoder.feed(DOC_BODY[i : i + 1])
    decoder.finish()
    assert b"".join(out) == b"a" * 66560


@pytest.mark.parametrize("seed", range(20))
def test_documented_example_random_splits(seed):
    rng = random.Random(seed)
    pieces = [rng.choice([1, 2, 3, 7, 85, 86, 87, 1000, 65535, 70000]) for _ in range(30)]
    decoder = AwsChunkedDecoder(chain=chain(), decoded_length=66560)
    assert decode(decoder, DOC_BODY, pieces) == b"a" * 66560


def test_trailer_documentation_chunk_chain():
    body = b"".join(
        [
            b"10000;chunk-signature=" + TRAILER_DOC_CHUNKS[0].encode() + b"\r\n" + b"a" * 65536 + b"\r\n",
            b"400;chunk-signature=" + TRAILER_DOC_CHUNKS[1].encode() + b"\r\n" + b"a" * 1024 + b"\r\n",
            b"0;chunk-signature=" + TRAILER_DOC_CHUNKS[2].encode() + b"\r\n\r\n",
        ]
    )
    decoder = AwsChunkedDecoder(chain=chain(TRAILER_DOC_SEED))
    assert decode(decoder, body) == b"a" * 66560


def test_wrong_seed_fails_on_first_chunk():
    decoder = AwsChunkedDecoder(chain=chain("0" * 64))
    with pytest.raises(SignatureError) as e:
        decoder.feed(DOC_BODY)
    assert e.value.code == "SignatureDoesNotMatch" and e.value.status == 403


def test_modified_data_byte_is_caught_at_chunk_end():
    body = bytearray(DOC_BODY)
    body[100] = ord("b")
    decoder = AwsChunkedDecoder(chain=chain())
    with pytest.raises(SignatureError) as e:
        decoder.feed(bytes(body))
    assert e.value.code == "SignatureDoesNotMatch"


def test_modified_last_chunk_and_final_signature():
    body = bytearray(DOC_BODY)
    body[-100] = ord("b")  # inside the 1 KiB chunk
    with pytest.raises(SignatureError):
        decode(AwsChunkedDecoder(chain=chain()), bytes(body))
    body = DOC_BODY.replace(b"b6c6ea8a", b"b6c6ea8b")
    with pytest.raises(SignatureError):
        decode(AwsChunkedDecoder(chain=chain()), body)


def test_reordered_chunks_fail():
    first, second = b"x" * 10000, b"y" * 10000
    body = signed_body([first, second])
    # Each framed chunk is "<size>;chunk-signature=<sig>\r\n<data>\r\n"; swap the first two.
    split_1 = body.index(first) + len(first) + 2
    split_2 = body.index(second) + len(second) + 2
    swapped = body[split_1:split_2] + body[:split_1] + body[split_2:]
    with pytest.raises(SignatureError) as e:
        decode(AwsChunkedDecoder(chain=chain()), swapped)
    assert e.value.code == "SignatureDoesNotMatch"


def test_signed_trailer_roundtrip_and_tamper():
    data = [b"hello " * 3000, b"world"]
    crc = base64.b64encode(zlib.crc32(b"".join(data)).to_bytes(4, "big")).decode()
    body = signed_body(data, trailers=[("x-amz-checksum-crc32", crc)])
    decoder = AwsChunkedDecoder(
        chain=chain(), signed_trailer=True, decoded_length=18005, expected_trailers=["x-amz-checksum-crc32"]
    )
    out = []
    for i in range(0, len(body), 7):
        out += decoder.feed(body[i : i + 7])
    decoder.finish()
    assert b"".join(out) == b"".join(data)
    assert decoder.trailers == {"x-amz-checksum-crc32": crc}

    tampered = body.replace(crc.encode(), b"AAAAAA==")
    with pytest.raises(SignatureError) as e:
        decode(AwsChunkedDecoder(chain=chain(), signed_trailer=True), tampered)
    assert e.value.code == "SignatureDoesNotMatch"


def test_signed_trailer_requires_trailer_signature():
    body = signed_body([b"abc"], trailers=[("x-amz-checksum-crc32", "AAAAAA==")])
    body = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    with pytest.raises(ChunkedError) as e:
        decode(AwsChunkedDecoder(chain=chain(), signed_trailer=True), body)
    assert e.value.code == "MalformedTrailerError"


def _botocore_unsigned_trailer(data: bytes, chunk_size: int = 65536) -> tuple[bytes, str]:
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    )
    body = wrapper.read()
    return body, base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 300000])
def test_botocore_unsigned_trailer(size):
    data = bytes(random.Random(size).getrandbits(8) for _ in range(size))
    body, crc = _botocore_unsigned_trailer(data)
    decoder = AwsChunkedDecoder(decoded_length=size, expected_trailers=["x-amz-checksum-crc32"])
    assert decode(decoder, body) == data
    assert decoder.trailers == {"x-amz-checksum-crc32": crc}


def test_botocore_unsigned_trailer_byte_by_byte():
    data = b"0123456789" * 1000
    body, crc = _botocore_unsigned_trailer(data, chunk_size=4096)
    decoder = AwsChunkedDecoder(decoded_length=len(data))
    assert decode(decoder, body, [1] * len(body)) == data
    assert decoder.trailers["x-amz-checksum-crc32"] == crc


def test_crc64nvme_trailer_from_botocore():
    checksums = pytest.importorskip("botocore.httpchecksum")
    cls = getattr(checksums, "CrtCrc64NvmeChecksum", None)
    if cls is None:
        pytest.skip("botocore has no CRC64NVME without awscrt")
    data = b"z" * 100000
    wrapper = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=cls, checksum_name="x-amz-checksum-crc64nvme")
    decoder = AwsChunkedDecoder(decoded_length=len(data), expected_trailers=["x-amz-checksum-crc64nvme"])
    assert decode(decoder, wrapper.read()) == data
    assert len(base64.b64decode(decoder.trailers["x-amz-checksum-crc64nvme"])) == 8


def test_missing_final_crlf_is_tolerated():
    body, crc = _botocore_unsigned_trailer(b"abc")
    assert body.endswith(b"\r\n\r\n")
    for cut in (body[:-2], body[:-4]):
        decoder = AwsChunkedDecoder()
        assert decode(decoder, cut) == b"abc"
        assert decoder.trailers == {"x-amz-checksum-crc32": crc}


def test_unsigned_chunked_without_trailers():
    decoder = AwsChunkedDecoder(decoded_length=5)
    assert decode(decoder, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n") == b"abcde"


@pytest.mark.parametrize(
    "body,code",
    [
        (b"3\r\nabc\r\n", "IncompleteBody"),  # no final chunk
        (b"5\r\nabc", "IncompleteBody"),  # truncated data
        (b"zz\r\nabc\r\n0\r\n\r\n", "InvalidRequest"),  # size not hex
        (b"3\r\nabcX\r\n0\r\n\r\n", "InvalidRequest"),  # data longer than announced
        (b"3\r\nabc\r\n0\r\n\r\ngarbage", "InvalidRequest"),  # bytes after the end
        (b"3\r\nabc\r\n0\r\nno-colon-here\r\n\r\n", "MalformedTrailerError"),
        (b"3" * (MAX_LINE + 10), "InvalidRequest"),  # unbounded size line
        (b"", "IncompleteBody"),
    ],
)
def test_framing_errors(body, code):
    with pytest.raises(ChunkedError) as e:
        decode(AwsChunkedDecoder(), body)
    assert e.value.code == code and e.value.status == 400


def test_decoded_length_checked_both_ways():
    with pytest.raises(ChunkedError) as e:
        decode(AwsChunkedDecoder(decoded_length=4), b"3\r\nabc\r\n0\r\n\r\n")
    assert e.value.code == "IncompleteBody"
    with pytest.raises(ChunkedError) as e:
        decode(AwsChunkedDecoder(decoded_length=2), b"3\r\nabc\r\n0\r\n\r\n")
    assert e.value.code == "IncompleteBody"


def test_signed_mode_needs_chunk_signatures():
    with pytest.raises(ChunkedError) as e:
        decode(AwsChunkedDecoder(chain=chain()), b"3\r\nabc\r\n0\r\n\r\n")
    assert e.value.code == "IncompleteSignature"


def test_expected_trailer_missing():
    with pytest.raises(ChunkedError) as e:
        decode(AwsChunkedDecoder(expected_trailers=["x-amz-checksum-sha256"]), b"3\r\nabc\r\n0\r\n\r\n")
    assert e.value.code == "MalformedTrailerError"


def test_payload_is_passed_through_not_buffered():
    # A large chunk fed in pieces comes out in pieces as they arrive (bounded memory).
    decoder = AwsChunkedDecoder()
    assert decoder.feed(b"100000\r\n") == []
    piece = b"q" * 4096
    assert decoder.feed(piece) == [piece]
    assert decoder.feed(piece) == [piece]
