#!/usr/bin/env bash
# Install what euca and its tests need on a Debian 12 machine, then euca itself (editable, with test extras).
# Idempotent and fast on reruns: apt runs only when a package is missing, pip only when euca is not importable
# with its test tools (set EUCA_FORCE_PIP=1 to reinstall anyway, e.g. after pyproject changed).
# Run as root (apt); as another user it skips apt and says what is missing.
set -euo pipefail

cd "$(dirname "$0")/.."

# What the tests need now, and what the coming roles need (libvirt, qemu, networking): cheap to have early.
APT_PACKAGES=(
    python3 python3-venv python3-pip python3-dev build-essential git ca-certificates curl
    pkg-config libvirt-dev libvirt-daemon-system qemu-system-x86 qemu-utils
    busybox-static dnsmasq-base iptables iproute2 sqlite3
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    # dpkg -s also answers for removed-but-configured packages; insist on "install ok installed".
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing Debian packages (run as root to install): ${missing[*]}" >&2
    else
        echo "install-deps: apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    echo "install-deps: Debian packages present"
fi

PYTHON="${PYTHON:-python3}"
PIP=("$PYTHON" -m pip)
# Debian's own python refuses system-wide pip installs (PEP 668) unless told; a venv or pyenv python does not care.
if "$PYTHON" -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)' \
    && [ -e "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    PIP+=(--break-system-packages)
fi

need_pip=0
if [ "${EUCA_FORCE_PIP:-0}" = 1 ]; then
    need_pip=1
elif ! "$PYTHON" - <<'PY' >/dev/null 2>&1
import importlib.metadata as md, pathlib, sys
import euca, pytest, pytest_trio, boto3, awscli, ruff, mypy, trio, h11, httpx, msgspec, click, cryptography, isal  # noqa
# The installed euca must be this checkout (editable), not another copy.
here = pathlib.Path.cwd().resolve()
sys.exit(0 if pathlib.Path(euca.__file__).resolve().is_relative_to(here) else 1)
PY
then
    need_pip=1
fi

if [ "$need_pip" = 1 ]; then
    echo "install-deps: pip install -e .[test]"
    "${PIP[@]}" install -q --disable-pip-version-check -e '.[test]'
else
    echo "install-deps: euca and test tools installed"
fi

# libvirt-python (the `nc` extra) builds against libvirt-dev; only a node controller needs it, so a failure
# here is reported, not fatal.
if ! "$PYTHON" -c 'import libvirt' >/dev/null 2>&1; then
    echo "install-deps: pip install -e .[nc] (libvirt-python)"
    "${PIP[@]}" install -q --disable-pip-version-check -e '.[nc]' \
        || echo "install-deps: warning: libvirt-python did not install; the nc role will not start" >&2
fi
echo "install-deps: done"
