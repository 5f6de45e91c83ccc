"""What every test directory shares. Fixtures live in each directory's conftest.py (tests/service: a running
euca and its clients; tests/unit; tests/e2e), the code they call in tests/helpers."""

from __future__ import annotations
