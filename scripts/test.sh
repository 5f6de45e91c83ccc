#!/usr/bin/env bash
# The test command: installs what is missing (unless EUCA_SKIP_INSTALL=1), then the static checks (ruff check,
# ruff format --check, the import rules with import-linter, mypy with pyproject's settings), then the whole
# pytest suite. Every step runs even when an earlier one failed; exits non-zero if any failed, naming them
# ("test.sh: FAILED: ..."). The last line printed is pytest's summary line (CI reads it). Extra arguments go
# to pytest, e.g. `scripts/test.sh -x tests/unit`.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if [ "${EUCA_SKIP_INSTALL:-0}" != 1 ]; then
    bash scripts/install-deps.sh || { echo "test.sh: install-deps failed" >&2; exit 1; }
fi

failed=()

echo "== ruff check euca tests"
"$PYTHON" -m ruff check euca tests || failed+=("ruff check")

echo "== ruff format --check euca tests"
# One line per file to reformat (`ruff format euca tests` does it; `ruff format --diff` shows how).
"$PYTHON" -m ruff format --check --output-format concise euca tests || failed+=("ruff format")

# The import rules live in .importlinter (the layers, independent roles, no cycles); checked once it exists.
if [ -e .importlinter ]; then
    echo "== lint-imports"
    lint_imports="$("$PYTHON" -c 'import pathlib, sys; print(pathlib.Path(sys.executable).parent / "lint-imports")')"
    [ -x "$lint_imports" ] || lint_imports=lint-imports
    "$lint_imports" --no-cache || failed+=("lint-imports")
else
    echo "== lint-imports: skipped (no .importlinter yet)"
fi

# Strict or not is pyproject's [tool.mypy] (so a bare `mypy euca` checks the same).
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
    joined="$(printf '%s, ' "${failed[@]}")"
    echo "test.sh: FAILED: ${joined%, }"
else
    echo "test.sh: static checks and pytest all green"
fi
# pytest's summary line last, whatever happened before it.
echo "${summary:-pytest produced no summary line (exit $status)}"
[ "${#failed[@]}" -eq 0 ]
