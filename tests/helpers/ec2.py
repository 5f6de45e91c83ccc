"""What the EC2 API tests share beyond their fixtures (tests/service/conftest.py)."""

from __future__ import annotations

import botocore.exceptions
import pytest


def error_code(excinfo: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    """The EC2 error code of a refused boto3 call."""
    return str(excinfo.value.response["Error"]["Code"])
