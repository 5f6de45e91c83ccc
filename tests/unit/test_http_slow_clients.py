"""A slow-client attack on a real HttpServer (loopback only, bounded in count and duration), while normal
clients are served: hundreds of connections trickling a request head a byte at a time, and bodies
trickled a byte at a time, from a dozen public addresses (127.0.0.2-13: all loopback on Linux); a normal
public client and an internal one (127.0.0.1) make their requests in the middle of it.

What is asserted is outcomes, never durations: every normal request is answered 200 while the attackers
hold their connections; every attacker is cut or refused (none outlives its budget of bytes); connections
over a client's cap are refused with 503 at once. The deadlines are scaled down (seconds, not tens of
seconds) so the test is quick; the ratio of trickle interval to deadline is what the attack in issue 13
used.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import trio

from euca.core.config import HttpLimits
from euca.core.http import Request, Response
from helpers.raw_http import HANG_GUARD, connect, one_request, serving

ATTACK_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 14)]  # 12 public client addresses
HEADS_PER_ADDRESS = 25  # 300 slow heads
SLOW_BODY_ADDRESS = "127.0.0.20"
SLOW_BODIES = 10
PER_CLIENT = 20  # so 5 of each address's 25 are over the cap
NORMAL_PUBLIC = "127.0.0.99"
INTERVAL = 1.0  # a byte a second: with a per-read timeout of header_timeout this would live forever
BYTE_BUDGET = 40  # an attacker still connected after this many bytes has not been cut

LIMITS = HttpLimits(
    header_timeout=3,
    idle_timeout=3,
    io_timeout=10,
    body_min_rate=1000,
    body_grace=3,
    max_connections=1000,
    max_connections_per_client=PER_CLIENT,
    internal_networks=["127.0.0.1/32"],
)

HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 100  # never finished within the budget
BODY_HEAD = b"PUT /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"


async def handler(request: Request) -> Response:
    body = await request.body.read_all(16 << 20)
    return Response(200, [("X-Md5", hashlib.md5(body).hexdigest())], b"ok")


async def attacker(
    port: int, source: str, prelude: bytes, trickled: bytes, connected: trio.Semaphore, outcomes: Counter[str]
) -> None:
    """Connect, send `prelude` whole, then `trickled` a byte per INTERVAL until the server ends it."""
    try:
        stream = await connect(port, source)
    except OSError:
        outcomes["refused"] += 1
        connected.release()
        return
    try:
        if prelude:
            await stream.send_all(prelude)
        connected.release()
        for count, byte in enumerate(trickled):
            if count >= BYTE_BUDGET:
                outcomes["survived"] += 1
                return
            with trio.move_on_after(INTERVAL):
                answer = await stream.receive_some(4096)
                if answer.startswith(b"HTTP/1.1 503 "):
                    outcomes["refused"] += 1
                    return
                if not answer:
                    outcomes["cut"] += 1
                    return
                outcomes[f"answered: {answer[:40]!r}"] += 1
                return
            await stream.send_all(bytes([byte]))
        outcomes["survived"] += 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        outcomes["cut"] += 1
    finally:
        await stream.aclose()


async def test_slow_clients_are_cut_and_refused_while_normal_clients_are_served() -> None:
    heads: Counter[str] = Counter()
    bodies: Counter[str] = Counter()
    attackers = len(ATTACK_ADDRESSES) * HEADS_PER_ADDRESS + SLOW_BODIES
    connected = trio.Semaphore(0, max_value=attackers)
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB at loopback speed: far above the minimum rate
    async with serving(handler, LIMITS) as server:
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                for source in ATTACK_ADDRESSES:
                    for _ in range(HEADS_PER_ADDRESS):
                        nursery.start_soon(attacker, server.port, source, b"", HEAD, connected, heads)
                for _ in range(SLOW_BODIES):
                    nursery.start_soon(
                        attacker, server.port, SLOW_BODY_ADDRESS, BODY_HEAD, b"z" * 100000, connected, bodies
                    )
                for _ in range(attackers):
                    await connected.acquire()
                # Every attacker is connected and the server holds their connections: now the normal clients.
                holding_when_served = server.admission.public_connections
                normal = [
                    await one_request(
                        server.port, b"GET /n HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", NORMAL_PUBLIC
                    ),
                    await one_request(
                        server.port,
                        b"PUT /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                        % len(big)
                        + big,
                        NORMAL_PUBLIC,
                    ),
                    await one_request(
                        server.port, b"GET /i HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.1"
                    ),
                ]
            # The attack is over: the server holds none of it.
            while server.admission.public_connections:
                await trio.sleep(0.05)
    admitted_heads = len(ATTACK_ADDRESSES) * PER_CLIENT
    assert [status for status, _ in normal] == [200, 200, 200], normal
    assert holding_when_served >= admitted_heads  # the normal clients were served in the middle of it
    assert heads == Counter(
        cut=admitted_heads, refused=len(ATTACK_ADDRESSES) * (HEADS_PER_ADDRESS - PER_CLIENT)
    ), heads
    assert bodies == Counter(cut=SLOW_BODIES), bodies
