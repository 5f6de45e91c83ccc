"""Logging for every euca process (the role process and walrus workers alike): one line per event on
stderr, `time logger level message`, the message itself `what key=value ...`."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=FORMAT,
        datefmt=DATE_FORMAT,
        stream=sys.stderr,
    )
    # httpx logs every request at INFO; the listener's access log already has one line per cluster call.
    logging.getLogger("httpx").setLevel(logging.WARNING)
