"""What every test directory shares. Fixtures live in each directory's conftest.py (tests/service: a running
euca and its clients; tests/unit; tests/e2e), the code they call in tests/helpers."""

from __future__ import annotations

import os

# Servers started by tests (in process or as subprocesses, which inherit this) do not build and register the
# one-box default image; a test that wants it sets EUCA_DEFAULT_IMAGE=1 for the server it starts.
os.environ["EUCA_DEFAULT_IMAGE"] = "0"
