#!/usr/bin/env bash
# Regenerate constraints.txt: every package euca, its `test` and `nc` extras need, pinned, for CPython 3.11 on
# linux x86_64 (what CI and the one-box run), whatever machine this runs on. scripts/install-deps.sh installs
# with `-c constraints.txt`, so CI gets exactly these versions.
#
# Versions already in constraints.txt are kept while pyproject still allows them; pass --upgrade (or
# --upgrade-package NAME) to move to newer releases, then run scripts/test.sh before committing the result.
# The tool is uv (`uv pip compile`), fetched into a throwaway venv if it is not on PATH.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if command -v uv >/dev/null 2>&1; then
    UV=(uv)
else
    venv="$(mktemp -d -t euca-uv.XXXXXX)"
    trap 'rm -rf "$venv"' EXIT
    "$PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check uv
    UV=("$venv/bin/uv")
fi

"${UV[@]}" pip compile pyproject.toml --extra test --extra nc \
    --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
    --custom-compile-command "scripts/update-constraints.sh" \
    --quiet -o constraints.txt "$@"
