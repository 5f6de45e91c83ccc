"""aws-chunked payload decoding (S3 streaming uploads), incremental and sans-I/O.

The body of a streaming upload is framed inside the HTTP body (which may itself be HTTP-chunked):

    <hex size>[;chunk-signature=<64 hex>]\\r\\n<size bytes>\\r\\n      ... repeated ...
    0[;chunk-signature=<64 hex>]\\r\\n                                  the final, empty chunk
    <name>:<value>\\r\\n ...                                           trailing headers (checksums), if any
    [x-amz-trailer-signature:<64 hex>\\r\\n]                           signed trailers only
    \\r\\n

`AwsChunkedDecoder.feed(data)` takes bytes split anywhere and returns the payload pieces decoded so far;
`finish()` is called at the end of the HTTP body. Memory stays bounded: a framing line is at most
MAX_LINE bytes and the trailer at most MAX_TRAILER bytes; payload bytes are passed through, never buffered.
Chunk signatures (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]) are checked as each chunk ends, chained from
the request's seed signature; any failure raises ChunkedError with the code S3 answers.
"""

from __future__ import annotations

import hashlib

from euca.protocol.sigv4 import ChunkSignatureChain, SignatureError, is_signature_hex

MAX_LINE = 4096
MAX_TRAILER = 16 * 1024
MAX_CHUNK_SIZE = 1 << 40

TRAILER_SIGNATURE = "x-amz-trailer-signature"

_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)
_HEX = frozenset(b"0123456789abcdefABCDEF")


class ChunkedError(SignatureError):
    """An aws-chunked body that is malformed or whose chunk signatures do not verify."""

    default_status = 400


def _malformed(detail: str) -> ChunkedError:
    return ChunkedError("InvalidRequest", f"The aws-chunked request body is malformed: {detail}")


def _malformed_trailer() -> ChunkedError:
    return ChunkedError(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not conform to our published schema.",
    )


def _incomplete() -> ChunkedError:
    return ChunkedError(
        "IncompleteBody",
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
    )


class AwsChunkedDecoder:
    def __init__(
        self,
        *,
        chain: ChunkSignatureChain | None = None,
        signed_trailer: bool = False,
        decoded_length: int | None = None,
        expected_trailers: list[str] | None = None,
    ):
        """`chain`: verify chunk signatures (signed modes); `signed_trailer`: require x-amz-trailer-signature;
        `decoded_length`: x-amz-decoded-content-length, checked; `expected_trailers`: names from x-amz-trailer."""
        if signed_trailer and chain is None:
            raise ValueError("a signed trailer needs the chunk signature chain")
        self.chain = chain
        self.signed_trailer = signed_trailer
        self.decoded_length = decoded_length
        self.expected_trailers = [t.strip().lower() for t in expected_trailers or [] if t.strip()]
        self.trailers: dict[str, str] = {}
        self.decoded = 0
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0
        self._chunk_signature = ""
        self._hasher = hashlib.sha256() if chain is not None else None
        self._trailer_lines: list[tuple[str, str]] = []
        self._trailer_bytes = 0
        self._trailer_signature: str | None = None

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                piece = data if (pos == 0 and take == end) else data[pos : pos + take]
                pos += take
                self._remaining -= take
                self.decoded += take
                if self.decoded_length is not None and self.decoded > self.decoded_length:
                    raise _incomplete()
                if self._hasher is not None:
                    self._hasher.update(piece)
                out.append(piece)
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state == _DATA_END:
                # Exactly CRLF after the chunk data; it may arrive split.
                need = b"\r\n"[len(self._line) :]
                got = data[pos : pos + len(need)]
                if need[: len(got)] != got:
                    raise _malformed("chunk data not followed by CRLF")
                pos += len(got)
                self._line += got
                if len(self._line) == 2:
                    self._line.clear()
                    self._end_chunk()
                    self._state = _HEADER
            elif state == _DONE:
                if data[pos:].strip(b"\r\n"):
                    raise _malformed("data after the final chunk")
                pos = end
            else:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline + 1
                self._line += data[pos:stop]
                pos = stop
                limit = MAX_LINE if state == _HEADER else MAX_TRAILER
                if len(self._line) > limit:
                    raise _malformed("line too long") if state == _HEADER else _malformed_trailer()
                if newline >= 0:
                    line = bytes(self._line[:-1])
                    self._line.clear()
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    if state == _HEADER:
                        self._chunk_header(line)
                    else:
                        self._trailer_line(line)
        return out

    def finish(self) -> None:
        """The HTTP body ended: the payload must be complete (raises IncompleteBody otherwise)."""
        if self._state == _TRAILER:
            # Lenient about the very last CRLF (or the last trailer line's), which some clients omit.
            if self._line:
                line = bytes(self._line).rstrip(b"\r")
                self._line.clear()
                self._trailer_line(line)
            if self._state == _TRAILER:
                self._trailer_line(b"")
        if self._state != _DONE:
            raise ChunkedError("IncompleteBody", "The request body terminated unexpectedly")
        if self.decoded_length is not None and self.decoded != self.decoded_length:
            raise _incomplete()

    # -- framing --------------------------------------------------------------------------------

    def _chunk_header(self, line: bytes) -> None:
        size_part, _, extension = line.partition(b";")
        size_part = size_part.strip()
        if not size_part or len(size_part) > 16 or not _HEX.issuperset(size_part):
            raise _malformed("bad chunk size")
        size = int(size_part, 16)
        if size > MAX_CHUNK_SIZE:
            raise _malformed("chunk too large")
        if self.chain is not None:
            name, _, value = extension.decode("latin-1").partition("=")
            signature = value.strip().lower()
            if name.strip() != "chunk-signature" or not is_signature_hex(signature):
                raise ChunkedError("IncompleteSignature", "The chunk signature is missing or malformed.")
            self._chunk_signature = signature
        if size == 0:
            self._end_chunk()
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA

    def _end_chunk(self) -> None:
        if self.chain is None:
            return
        assert self._hasher is not None
        # The hasher restarts at every chunk, so the final empty chunk hashes as EMPTY_SHA256.
        digest = self._hasher.hexdigest()
        self._hasher = hashlib.sha256()
        self.chain.check_chunk(self._chunk_signature, digest)

    def _trailer_line(self, line: bytes) -> None:
        if not line.strip():
            self._finish_trailer()
            return
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > MAX_TRAILER:
            raise _malformed_trailer()
        name, sep, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if not sep or not name:
            raise _malformed_trailer()
        value = value.strip()
        if name == TRAILER_SIGNATURE:
            self._trailer_signature = value
        else:
            self._trailer_lines.append((name, value))

    def _finish_trailer(self) -> None:
        if self.signed_trailer:
            assert self.chain is not None
            if self._trailer_signature is None or not is_signature_hex(self._trailer_signature.lower()):
                raise _malformed_trailer()
            # Signed like canonical headers: "name:value\n" per trailer, sorted by name (as the AWS SDKs sign them).
            canonical = "".join(f"{name}:{value}\n" for name, value in sorted(self._trailer_lines))
            self.chain.check_trailer(
                self._trailer_signature, hashlib.sha256(canonical.encode("latin-1")).hexdigest()
            )
        self.trailers = dict(self._trailer_lines)
        for name in self.expected_trailers:
            if name not in self.trailers:
                raise _malformed_trailer()
        self._state = _DONE
