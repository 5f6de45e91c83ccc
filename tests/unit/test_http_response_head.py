"""The response head's header check (euca.core.http._response_event) agrees with h11's own validation: the
headers it hands h11 as already parsed are exactly those h11 would accept, and the others still meet h11's
error."""

from __future__ import annotations

import random

import h11
import pytest

from euca.core.http import _response_event

ODD_BYTES = b"\x00\x01\t\n\r \x7f\x80\xa0\xff:,;\"'()=a-Z0_~"


def _h11_accepts(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    try:
        h11.Response(status_code=status, headers=headers, reason=b"OK")
    except h11.LocalProtocolError:
        return False
    return True


def _fast_path(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether _response_event accepted the headers, and built the same event h11 builds."""
    try:
        event = _response_event(status, headers)
    except h11.LocalProtocolError:
        return False
    expected = h11.Response(status_code=status, headers=headers, reason=event.reason)
    assert event.headers == expected.headers
    assert event.status_code == expected.status_code
    assert event.http_version == expected.http_version
    return True


@pytest.mark.parametrize(
    "headers",
    [
        [(b"ETag", b'"abc"'), (b"Content-Length", b"4096"), (b"x-amz-meta-a", b"")],
        [(b"X-Weird", b"a  b\tc")],
        [(b"Bad Name", b"v")],
        [(b"", b"v")],
        [(b"X", b" leading")],
        [(b"X", b"trailing ")],
        [(b"X", b"new\nline")],
        [(b"X", b"cr\rhere")],
        [(b"X", b"nul\x00")],
        [(b"X", b"obs-text \xa0\xff ok")],
        [(b"X", b"ctl \x01 ok")],
        [(b"Content-Length", b"12, 12")],
        [(b"Content-Length", b"1"), (b"Content-Length", b"2")],
        [(b"Transfer-Encoding", b"gzip")],
        [(b"X", b"a"), (b"Y\n", b"b")],
        [],
    ],
)
def test_same_verdict_as_h11(headers: list[tuple[bytes, bytes]]) -> None:
    assert _fast_path(200, headers) == _h11_accepts(200, headers)


def test_same_verdict_as_h11_on_random_headers() -> None:
    rng = random.Random(11)
    for _ in range(10000):
        headers = [
            (
                bytes(rng.choice(ODD_BYTES) for _ in range(rng.randint(0, 4))),
                bytes(rng.choice(ODD_BYTES) for _ in range(rng.randint(0, 6))),
            )
            for _ in range(rng.randint(1, 3))
        ]
        assert _fast_path(200, headers) == _h11_accepts(200, headers), headers


def test_status_out_of_range_still_refused() -> None:
    with pytest.raises(h11.LocalProtocolError):
        _response_event(99, [(b"X", b"y")])
