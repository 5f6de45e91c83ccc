"""The image pipeline's last stage: the first regular member of the bundle's tar stream written into the
output file, chunk by chunk (ustar, GNU base-256 sizes and long names, pax headers), optionally hashing the
whole tar stream."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from euca.images.errors import ImageCorruptError, ImageDiskFullError

TAR_BLOCK = 512
MAX_TAR_META = 1024 * 1024
# Writeback of the image is started every this many bytes written (see _start_writeback).
WRITEBACK_STEP = 32 * 1024 * 1024


@dataclass(frozen=True)
class ImageWritten:
    name: str  # the tar member's name (the original image file name)
    size: int
    digest: str


# ---------------------------------------------------------------------------------------------------------
# Untar the first regular member into the output file, hashing the whole tar stream


def _tar_number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError as e:
        raise ImageCorruptError("bad number in a tar header") from e


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError as e:
            raise ImageCorruptError("bad pax header in the bundle's tar stream") from e
        if length <= 0:
            break
        record = data[space + 1 : pos + length - 1]
        k, _, v = record.partition(b"=")
        records[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        pos += length
    return records


class TarExtractor:
    """Writes the first regular member of a tar stream to `fd`; SHA1 over every byte of the stream.

    Understands what tar writers put before a member (GNU long names, pax headers). Once the member's data
    is written the rest of the stream (padding, end-of-archive blocks) is only hashed. With
    `hash_stream=False` the caller feeds `sha1` itself (the pipeline hashes in its inflate thread, so the
    hashing and the writing overlap).
    """

    def __init__(self, fd: int, expected_size: int | None = None, *, hash_stream: bool = True):
        self.fd = fd
        self.expected_size = expected_size
        self.sha1 = hashlib.sha1()
        self._hash_stream = hash_stream
        self._flushed = 0  # bytes up to which writeback has been started
        self.name: str | None = None
        self.size = 0
        self.written = 0
        self._header = bytearray()
        self._state = "header"  # header | meta | skip | data | rest
        self._remaining = 0
        self._meta = bytearray()
        self._meta_size = 0
        self._meta_type = b""
        self._long_name: str | None = None
        self._pax: dict[str, str] = {}

    def feed(self, pieces: Sequence[bytes | memoryview]) -> None:
        for piece in pieces:
            if self._hash_stream:
                self.sha1.update(piece)
            view = memoryview(piece)
            while view:
                view = self._consume(view)

    def _consume(self, view: memoryview) -> memoryview:
        state = self._state
        if state == "rest":
            return view[len(view) :]
        if state == "header":
            need = TAR_BLOCK - len(self._header)
            self._header += view[:need]
            if len(self._header) == TAR_BLOCK:
                block = bytes(self._header)
                self._header.clear()
                self._on_header(block)
            return view[need:]
        take = min(self._remaining, len(view))
        if state == "data":
            try:
                _write_all(self.fd, view[:take])
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ImageDiskFullError(f"no space left for the image: {e.strerror}") from e
                raise
            self.written += take
            if self.written - self._flushed >= WRITEBACK_STEP:
                self._start_writeback()
        elif state == "meta":
            keep = self._meta_size - len(self._meta)
            if keep > 0:
                self._meta += view[: min(take, keep)]
        self._remaining -= take
        if self._remaining == 0:
            self._end_of_span()
        return view[take:]

    def _on_header(self, block: bytes) -> None:
        if not any(block):
            raise ImageCorruptError("the bundle's tar stream holds no file")
        stored = _tar_number(block[148:156])
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != computed:
            raise ImageCorruptError("bad tar header checksum in the bundle")
        kind = block[156:157]
        size = _tar_number(block[124:136])
        if kind in (b"L", b"K", b"x", b"g"):
            if size > MAX_TAR_META:
                raise ImageCorruptError("oversized tar metadata record in the bundle")
            self._meta_type, self._meta_size = kind, size
            self._begin("meta", size + -size % TAR_BLOCK)
        elif kind in (b"0", b"\0", b"7"):
            name = self._long_name or self._pax.get("path")
            if name is None:
                name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if "size" in self._pax:
                try:
                    size = int(self._pax["size"])
                except ValueError as e:
                    raise ImageCorruptError("bad pax size in the bundle's tar stream") from e
            self.name, self.size = name, size
            if self.expected_size is not None and size != self.expected_size:
                raise ImageCorruptError(
                    f"the bundle holds {size} bytes, its manifest says {self.expected_size}"
                )
            self._begin("data", size)
        else:  # a directory, link, device...: not the image; skip its (normally empty) data
            self._long_name, self._pax = None, {}
            self._begin("skip", size + -size % TAR_BLOCK)

    def _begin(self, state: str, length: int) -> None:
        self._state, self._remaining = state, length
        if length == 0:
            self._end_of_span()

    def _end_of_span(self) -> None:
        state, self._state = self._state, "header"
        if state == "data":
            self._state = "rest"
        elif state == "meta":
            data = bytes(self._meta)
            self._meta.clear()
            if self._meta_type == b"L":
                self._long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif self._meta_type == b"x":
                self._pax = _pax_records(data)

    def _start_writeback(self) -> None:
        # The kernel would otherwise keep the whole image dirty in memory (it is under dirty_background
        # bytes on most nodes) and the final fsync would write it all while the pipeline waits. FADV_DONTNEED
        # starts writeback of the dirty range without waiting, and drops the pages of the range before it,
        # written back by now: the flush overlaps the download, and the image does not crowd the page cache.
        start = max(0, self._flushed - WRITEBACK_STEP)
        try:
            os.posix_fadvise(self.fd, start, self.written - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # only advice: the fsync at the end is what makes the image durable
        self._flushed = self.written

    def finish(self) -> ImageWritten:
        if self.name is None or self.written != self.size:
            raise ImageCorruptError("the bundle's tar stream ends before the image does")
        return ImageWritten(name=self.name, size=self.size, digest=self.sha1.hexdigest())


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]
