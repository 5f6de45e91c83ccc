#!/usr/bin/env bash
# Install what euca and its tests need on a Debian 12 machine, then euca itself (editable, with test extras),
# at the versions pinned in constraints.txt (scripts/update-constraints.sh regenerates it).
# Idempotent and fast on reruns: apt runs only when a package is missing, pip only when euca is not this
# checkout or an installed version differs from constraints.txt (EUCA_FORCE_PIP=1 reinstalls anyway).
# Run as root (apt); as another user it skips apt and says what is missing.
#
# Prints one line per step; each step's full output goes to a log file, whose tail is shown only when the
# step fails (the log is kept then, and removed after a clean run).
set -euo pipefail

cd "$(dirname "$0")/.."

# What the tests need now, and what the coming roles need (libvirt, qemu, networking): cheap to have early.
APT_PACKAGES=(
    python3 python3-venv python3-pip python3-dev build-essential git ca-certificates curl
    pkg-config libvirt-dev libvirt-daemon-system qemu-system-x86 qemu-utils
    busybox-static dnsmasq-base iptables iproute2 sqlite3
    # PostgreSQL (store.url = "postgresql://..."): the tests start private clusters with its initdb and pg_ctl
    postgresql
    # the default guest image's ssh server (copied into it), and the ssh client the e2e tests log in with
    dropbear-bin openssh-client
    # qemu-storage-daemon: the SC serves attached volumes over NBD (also pulled in by qemu-system-x86)
    qemu-system-common
    # Headless Chromium: the usage report's HTML page is rendered to a screenshot in its test.
    chromium
)
CONSTRAINTS=constraints.txt

LOG="$(mktemp -t euca-install-deps.XXXXXX.log)"
keep_log=0
trap '[ "$keep_log" = 1 ] || rm -f "$LOG"' EXIT

say() { echo "install-deps: $*"; }

# step DESCRIPTION COMMAND...: one line saying what ran, how it ended and how long it took; the command's
# output goes to the log, and its last lines to stderr if it fails. Returns the command's status.
step() {
    local what="$1" start status
    shift
    start=$SECONDS
    echo "== install-deps: $what" >>"$LOG"
    set +e
    "$@" >>"$LOG" 2>&1 </dev/null
    status=$?
    set -e
    if [ "$status" -eq 0 ]; then
        say "$what: ok ($((SECONDS - start))s)"
    else
        keep_log=1
        say "$what: FAILED (exit $status, $((SECONDS - start))s); the last lines of $LOG:" >&2
        tail -n 40 "$LOG" | sed 's/^/    /' >&2
    fi
    return "$status"
}

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    # dpkg -s also answers for removed-but-configured packages; insist on "install ok installed".
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages (run as root to install): ${missing[*]}" >&2
    else
        export DEBIAN_FRONTEND=noninteractive
        step "apt-get update" apt-get update -q
        step "apt-get install ${#missing[@]} packages (${missing[*]})" \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
else
    say "Debian packages present"
fi

PYTHON="${PYTHON:-python3}"
PIP=("$PYTHON" -m pip)
# Debian's own python refuses system-wide pip installs (PEP 668) unless told; a venv or pyenv python does not care.
if "$PYTHON" -c 'import sys; sys.exit(0 if sys.prefix == sys.base_prefix else 1)' \
    && [ -e "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    PIP+=(--break-system-packages)
fi
PIP_INSTALL=("${PIP[@]}" install --disable-pip-version-check -c "$CONSTRAINTS")

# Exit 0 when euca is this checkout (editable) and every package pinned in constraints.txt that is installed,
# or that the test extra needs, is at its pinned version; otherwise say (into the log) what differs.
installed_as_pinned() {
    "$PYTHON" - "$CONSTRAINTS" <<'PY'
import importlib.metadata as md, pathlib, re, sys

try:
    import euca
except ImportError:
    sys.exit("euca is not installed")
here = pathlib.Path.cwd().resolve()
if not pathlib.Path(euca.__file__).resolve().is_relative_to(here):
    sys.exit(f"the installed euca is {euca.__file__}, not this checkout")
# libvirt-python (the nc extra) is checked only where installed: it is optional (see below).
optional = {"libvirt-python"}
wrong = []
for line in pathlib.Path(sys.argv[1]).read_text().splitlines():
    m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
    if not m:
        continue
    name, pinned = m.groups()
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        if name.lower() not in optional:
            wrong.append(f"{name} missing (pinned {pinned})")
        continue
    if have != pinned:
        wrong.append(f"{name} {have} (pinned {pinned})")
sys.exit("not as pinned: " + ", ".join(wrong) if wrong else 0)
PY
}

if [ "${EUCA_FORCE_PIP:-0}" = 1 ] || ! installed_as_pinned >>"$LOG" 2>&1; then
    step "pip install -e .[test] -c $CONSTRAINTS" "${PIP_INSTALL[@]}" -e '.[test]' || exit 1
else
    say "euca and test tools installed as pinned"
fi

# libvirt-python (the `nc` extra) builds against libvirt-dev; only a node controller needs it, so a failure
# here is reported, not fatal.
if ! "$PYTHON" -c 'import libvirt' >/dev/null 2>&1; then
    step "pip install -e .[nc] -c $CONSTRAINTS (libvirt-python)" "${PIP_INSTALL[@]}" -e '.[nc]' \
        || say "warning: libvirt-python did not install; the nc role will not start" >&2
fi
say "done"
