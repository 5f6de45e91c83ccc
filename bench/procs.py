"""Process and port helpers the benchmarks share (Linux /proc)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        # As the servers do: a port with only TIME_WAIT leftovers of the previous run is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; everything after the last ')' is positional.
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def stop_tree(proc: subprocess.Popen[Any], wait: float, after_kill: float) -> None:
    """SIGTERM a server (SIGKILL when it is not gone in `wait` seconds, then up to `after_kill` seconds more),
    then SIGKILL what it had forked (workers) that outlived it. Nothing when it has already ended."""
    if proc.poll() is not None:
        return
    pids = [proc.pid, *descendants(proc.pid)]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=after_kill)
    for pid in pids[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
