#!/usr/bin/env bash
# The test command: installs what is missing (unless EUCA_SKIP_INSTALL=1), then ruff and mypy over euca/,
# then the whole pytest suite. Exits non-zero if any of the three fails. The last line printed is pytest's
# summary line (CI reads it). Extra arguments go to pytest, e.g. `scripts/test.sh -x tests/unit`.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if [ "${EUCA_SKIP_INSTALL:-0}" != 1 ]; then
    bash scripts/install-deps.sh || { echo "test.sh: install-deps failed" >&2; exit 1; }
fi

failed=()

echo "== ruff check euca"
"$PYTHON" -m ruff check euca || failed+=("ruff")

echo "== mypy euca"
"$PYTHON" -m mypy euca || failed+=("mypy")

args=("$@")
[ "${#args[@]}" -eq 0 ] && args=(tests)
echo "== pytest -q ${args[*]}"
log="$(mktemp -t euca-pytest.XXXXXX)"
trap 'rm -f "$log"' EXIT
"$PYTHON" -m pytest -q "${args[@]}" < /dev/null 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
case "$status" in
    0) ;;
    5) failed+=("pytest (no tests collected)") ;;
    *) failed+=("pytest (exit $status)") ;;
esac

summary="$(grep -E '(passed|failed|error|errors|skipped|no tests ran)( |,|$)' "$log" | grep -E ' in [0-9.]+s' | tail -n 1)"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}"
else
    echo "test.sh: ruff, mypy and pytest all green"
fi
# pytest's summary line last, whatever happened before it.
echo "${summary:-pytest produced no summary line (exit $status)}"
[ "${#failed[@]}" -eq 0 ]
