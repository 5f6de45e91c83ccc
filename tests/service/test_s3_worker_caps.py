"""Connection caps hold in every walrus worker process (issue 13): with walrus.workers=2 each process admits at
most http.max_connections_per_client connections from one address and answers the rest 503 at once, so
one client holds at most workers x that cap; internal_networks is emptied so loopback counts as public."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.walrus_process import free_port, start_walrus, stop

CAP = 3
WORKERS = 2
ATTEMPTS = 30


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[int]:
    config = tmp_path / "euca.toml"
    config.write_text(f"[http]\ninternal_networks = []\nmax_connections_per_client = {CAP}\n")
    data_dir, port = tmp_path / "data", free_port()
    proc: subprocess.Popen[bytes] = start_walrus(data_dir, port, workers=WORKERS, config_file=config)
    try:
        yield port
    finally:
        stop(proc)


def test_each_worker_caps_one_client(capped: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", capped), timeout=30) for _ in range(ATTEMPTS)]
    try:
        busy = admitted = 0
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in socks:
            head = sock.recv(64)
            if head.startswith(b"HTTP/1.1 503"):
                busy += 1
            elif head.startswith(b"HTTP/1.1 "):
                admitted += 1
        assert 1 <= admitted <= CAP * WORKERS, (admitted, busy)
        assert busy == ATTEMPTS - admitted
    finally:
        for sock in socks:
            sock.close()
