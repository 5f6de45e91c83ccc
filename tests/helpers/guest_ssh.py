"""ssh into real guests from a network namespace, as a user would: a key pair made with ssh-keygen (or the
one CreateKeyPair returned), OpenSSH's client run with `ip netns exec NS ssh -i KEY root@ADDRESS CMD`.
Host keys are not pinned (a guest's is made at its first boot, and an elastic IP moves between guests)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from helpers.polling import wait_until

SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "IdentitiesOnly=yes",
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=3",
)  # fmt: skip


def write_private_key(path: Path, pem: str) -> Path:
    """A private key file ssh accepts (mode 600, ending in a newline)."""
    path.write_text(pem if pem.endswith("\n") else pem + "\n")
    os.chmod(path, 0o600)
    return path


def make_key_pair(directory: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    """(private key file, public key line) from ssh-keygen."""
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, (directory / f"{name}.pub").read_text().strip()


def ssh(
    netns: str | None,
    key: Path,
    address: str,
    command: str,
    *,
    connect_timeout: int = 10,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`ssh root@address command` from namespace `netns` (the host's when None); returncode 255 is ssh's
    own failure (no connection, refused key). A hung command ends as returncode -9 after `timeout`."""
    argv = [
        "ssh",
        *SSH_OPTIONS,
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-i",
        str(key),
        f"root@{address}",
        command,
    ]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(argv, -9, out, f"ssh timed out after {timeout}s")


def ssh_ok(netns: str | None, key: Path, address: str, command: str, *, timeout: float = 60) -> str:
    """The command's output; AssertionError when ssh or the command fails."""
    done = ssh(netns, key, address, command, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"ssh root@{address} {command!r} from {netns}: exit {done.returncode}\n{done.stderr}{done.stdout}"
        )
    return done.stdout


def wait_for_ssh(
    netns: str | None,
    key: Path,
    address: str,
    detail: Callable[[], str] | None = None,
    deadline: float = 300,
) -> str:
    """Poll until `ssh root@address true` works; its `hostname`."""

    def probe() -> str | None:
        done = ssh(netns, key, address, "hostname", connect_timeout=5, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None

    return wait_until(
        f"ssh root@{address} from {netns}",
        probe,
        deadline=deadline,
        interval=2,
        detail=detail,
    )
