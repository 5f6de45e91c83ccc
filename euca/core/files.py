"""File-system steps shared by every role that keeps bytes on disk: making a write durable, mapping a small
file that processes share."""

from __future__ import annotations

import mmap
import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries: a file created, renamed or unlinked in it survives a crash only after this."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def map_shared(path: Path, size: int) -> mmap.mmap:
    """`size` bytes of `path` mapped shared (the file made, owner-only, or extended with zeros to `size`):
    what one process writes there, every process that maps it sees at once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)
