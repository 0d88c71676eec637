# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Raw images: a base layer (golden raw bases, OpenStack-style _base files) or a flatten source/commit target."""

from __future__ import annotations

import errno
import os
import typing

from . import directio, locking
from .errors import InvalidArgumentError, ReadOnlyError
from .fileio import BlockFile
from .image import DATA, ZERO, Extent
from .zeros import zero_bytes


class RawImage:
    format_name = "raw"

    def __init__(self, path: str, writable: bool = False, force_share: bool = False) -> None:
        if writable and force_share:
            raise InvalidArgumentError("force_share is only allowed for read-only access")
        self.path = path
        self.writable = writable
        self.backing = None
        self.header = None
        self.file = BlockFile(path, writable)
        try:
            self.locked = False if force_share else locking.acquire(self.file.fd, path, writable)
        except BaseException:
            self.file.close()
            raise
        self.size = self.file.size()
        self._closed = False

    backing_filename = None
    backing_format = None
    cluster_size = 65536

    def extents(self, offset: int, length: int) -> list[Extent]:
        """Data and holes (holes read as zeros), from SEEK_DATA/SEEK_HOLE."""
        end = min(offset + length, self.size)
        out = []
        pos = offset
        fd = self.file.fd
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    out.append(Extent(pos, end - pos, DATA, pos))
                    break
                data = end
            if data > pos:
                out.append(Extent(pos, min(data, end) - pos, ZERO, 0))
                pos = min(data, end)
                if pos >= end:
                    break
            try:
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:
                hole = end
            hole = min(hole, end)
            out.append(Extent(pos, hole - pos, DATA, pos))
            pos = hole
        return out

    def read(self, offset: int, length: int) -> bytes:
        buf = directio.aligned_bytearray(length)
        self.read_into(memoryview(buf), offset)
        return buf

    def read_into(self, view: memoryview, offset: int) -> None:
        self.file.read_into(view, offset)

    def _require_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyError("Image %s is open read-only" % self.path, self.path)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._require_writable()
        self.file.pwrite(data, offset)

    def write_many(self, pieces: typing.Sequence[tuple[int, bytes | bytearray | memoryview]]) -> None:
        for offset, data in pieces:
            self.write(offset, data)

    def write_zeroes(self, offset: int, length: int, unmap: bool = True) -> None:
        """Zero a range: punch a hole as qemu does (the file stays sparse), write zeros where that fails."""
        self._require_writable()
        if unmap and self.file.punch_hole(offset, length):
            return
        pos = offset
        while pos < offset + length:
            n = min(offset + length - pos, 4 << 20)
            self.file.pwrite(zero_bytes(n), pos)
            pos += n

    def resize(self, new_size: int) -> None:
        self._require_writable()
        self.file.truncate(new_size)
        self.size = new_size

    def flush(self) -> None:
        if self.writable and self.file.data_written:
            self.file.flush()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self.locked:
                locking.release(self.file.fd)
            self.file.close()

    def __repr__(self) -> str:
        return "RawImage(%r)" % self.path
