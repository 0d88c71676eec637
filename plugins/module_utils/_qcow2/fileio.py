# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Positional file I/O used by every image, with the test-only fault hook.

Every write, truncate and flush the engine issues goes through BlockFile, so a crash test can stop
the process at exactly the Nth of them (BACKINGCHAIN_QCOW2_CRASH_AT=N) and check what is on disk.
"""

from __future__ import annotations

import errno
import os

from .errors import NoSpaceError, Qcow2Error

IOV_MAX = 1024

# ---- fault hook (tests only) -------------------------------------------------------------------
_io_events = 0
_crash_at = int(os.environ.get("BACKINGCHAIN_QCOW2_CRASH_AT", "0") or 0)


def io_event_count():
    """Number of writes, truncates and flushes issued so far by this process."""
    return _io_events


def set_crash_at(n):
    """Kill the process (SIGKILL) when the Nth write/flush is about to be issued; 0 disables."""
    global _crash_at
    _crash_at = n


def _io_event():
    global _io_events
    _io_events += 1
    if _crash_at and _io_events >= _crash_at:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def _raise_os_error(exc, path, what):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise NoSpaceError("No space left on device while %s %s" % (what, path), path) from exc
    raise Qcow2Error("I/O error while %s %s: %s" % (what, path, exc.strerror or exc), path) from exc


class BlockFile:
    """An open file with positional reads and writes."""

    def __init__(self, path, writable=False, create=False, exclusive=False):
        self.path = path
        self.writable = writable or create
        flags = os.O_RDWR if self.writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0)
        flags |= getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            raise Qcow2Error("Could not open '%s': No such file or directory" % path, path) from None
        except IsADirectoryError:
            raise Qcow2Error("Could not open '%s': Is a directory" % path, path) from None
        except PermissionError:
            raise Qcow2Error("Could not open '%s': Permission denied" % path, path) from None
        except FileExistsError:
            raise Qcow2Error("Could not create '%s': File exists" % path, path) from None
        except OSError as exc:
            _raise_os_error(exc, path, "opening")
        self.data_written = False
        self.written_end = 0  # one past the highest byte written through this object

    # ---- reads ----
    def pread(self, length, offset):
        """Read up to length bytes; shorter only at end of file."""
        try:
            data = os.pread(self.fd, length, offset)
            if len(data) == length or not data:
                return data
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(self.fd, length - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            return b"".join(parts)
        except OSError as exc:
            _raise_os_error(exc, self.path, "reading")

    def read_into(self, view, offset):
        """Fill the writable memoryview from offset; bytes past end of file read as zeros."""
        total = len(view)
        done = 0
        try:
            while done < total:
                n = os.preadv(self.fd, [view[done:]], offset + done)
                if n <= 0:
                    view[done:] = bytes(total - done)
                    break
                done += n
        except OSError as exc:
            _raise_os_error(exc, self.path, "reading")

    # ---- writes ----
    def pwrite(self, data, offset):
        _io_event()
        view = memoryview(data)
        self.written_end = max(self.written_end, offset + view.nbytes)
        try:
            while len(view):
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as exc:
            _raise_os_error(exc, self.path, "writing")
        self.data_written = True

    def pwritev(self, buffers, offset):
        """Write a list of buffers contiguously at offset (one syscall per IOV_MAX buffers)."""
        _io_event()
        try:
            pos = 0
            views = [memoryview(b) for b in buffers if len(b)]
            self.written_end = max(self.written_end, offset + sum(v.nbytes for v in views))
            while views:
                batch = views[:IOV_MAX]
                expected = sum(len(v) for v in batch)
                n = os.pwritev(self.fd, batch, offset + pos)
                pos += n
                if n == expected:
                    views = views[IOV_MAX:]
                    continue
                # short write: drop what was written and retry the rest
                rest = []
                skip = n
                for v in views:
                    if skip >= len(v):
                        skip -= len(v)
                        continue
                    rest.append(v[skip:])
                    skip = 0
                views = rest
        except OSError as exc:
            _raise_os_error(exc, self.path, "writing")
        self.data_written = True

    def truncate(self, length):
        _io_event()
        try:
            os.ftruncate(self.fd, length)
        except OSError as exc:
            _raise_os_error(exc, self.path, "resizing")

    def fallocate(self, offset, length):
        """Reserve blocks (preallocation=falloc); falls back to writing zeros where unsupported."""
        _io_event()
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self.write_zeros(offset, length)
            else:
                _raise_os_error(exc, self.path, "allocating")

    def reserve(self, offset, length):
        """Give the file blocks for [offset, offset+length) ahead of writes (fallocate; ftruncate where the
        filesystem cannot): writes into reserved blocks are several times faster than writes that grow the file."""
        _io_event()
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                _raise_os_error(exc, self.path, "allocating space for")
            if self.size() < offset + length:
                os.ftruncate(self.fd, offset + length)

    def punch_hole(self, offset, length):
        """Deallocate [offset, offset+length) keeping the file size (reads return zeros); False if unsupported."""
        fallocate = _libc_fallocate()
        if fallocate is None:
            return False
        _io_event()
        if fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            return False
        self.data_written = True
        return True

    def write_zeros(self, offset, length):
        chunk = bytes(min(length, 4 << 20))
        while length > 0:
            n = min(length, len(chunk))
            self.pwrite(chunk[:n] if n < len(chunk) else chunk, offset)
            offset += n
            length -= n

    def copy_from(self, src, src_offset, dst_offset, length, buffer=None):
        """Copy bytes from another BlockFile without going through Python where the kernel can."""
        _io_event()
        self.written_end = max(self.written_end, dst_offset + length)
        try:
            while length > 0:
                n = 0
                if _copy_file_range_ok:
                    try:
                        n = os.copy_file_range(src.fd, self.fd, length, src_offset, dst_offset)
                    except OSError as exc:
                        if exc.errno not in (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
                            raise
                        _disable_copy_file_range()
                        n = 0
                if n <= 0:
                    # past the source's end of file or no kernel copy: go through a buffer
                    step = min(length, 4 << 20)
                    data = src.pread(step, src_offset)
                    if len(data) < step:
                        data += bytes(step - len(data))
                    os.pwrite(self.fd, data, dst_offset)
                    n = step
                src_offset += n
                dst_offset += n
                length -= n
        except OSError as exc:
            _raise_os_error(exc, self.path, "copying into")
        self.data_written = True

    def flush(self):
        _io_event()
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            _raise_os_error(exc, self.path, "flushing")
        self.data_written = False

    def size(self):
        return os.fstat(self.fd).st_size

    def stat(self):
        return os.fstat(self.fd)

    def close(self):
        if self.fd >= 0:
            try:
                os.close(self.fd)
            finally:
                self.fd = -1


_copy_file_range_ok = hasattr(os, "copy_file_range")

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate = []


def _libc_fallocate():
    """libc's fallocate(2) through ctypes (the stdlib only has posix_fallocate), or None."""
    if not _fallocate:
        try:
            import ctypes
            import ctypes.util
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            func = libc.fallocate
            func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            func.restype = ctypes.c_int
            _fallocate.append(func)
        except (OSError, AttributeError):
            _fallocate.append(None)
    return _fallocate[0]


def _disable_copy_file_range():
    global _copy_file_range_ok
    _copy_file_range_ok = False
