"""The real `aws` CLI, run against a server with given credentials and nothing of the caller's AWS setup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def aws_executable() -> str:
    """The `aws` installed beside this Python (a venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "aws"
    return str(here) if here.exists() else (shutil.which("aws") or "aws")


def run_aws(
    url: str,
    region: str,
    access_key: str,
    secret_key: str,
    *args: str,
    config_file: Path = Path("/dev/null"),
    check: bool = True,
    input: bytes | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`aws --endpoint-url URL ARGS` as the given key, outside any AWS_* of the environment; text output.
    With `check`, a non-zero exit raises AssertionError carrying the output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_DEFAULT_REGION=region,
        AWS_CONFIG_FILE=str(config_file),
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    cmd = [aws_executable(), "--endpoint-url", url, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, input=input, timeout=timeout)
    result = subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"aws {' '.join(args)} failed ({proc.returncode}):\n{result.stderr}\n{result.stdout}"
        )
    return result
