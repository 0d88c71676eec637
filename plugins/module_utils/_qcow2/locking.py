# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qemu's image locking (block/file-posix.c), so the engine and qemu never write the same image.

qemu takes shared OFD read locks of one byte: byte 100+i when it *holds* permission i, byte 200+i when
it *does not share* permission i with others. A conflict is found by testing, with F_OFD_GETLK and a
write lock, the bytes another holder would have locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import typing

from .constants import LOCK_PERM_BASE, LOCK_SHARED_BASE
from .errors import ImageLockedError, Qcow2Error

PERM_CONSISTENT_READ = 0
PERM_WRITE = 1
PERM_WRITE_UNCHANGED = 2
PERM_RESIZE = 3
PERM_NAMES = ("consistent read", "write", "write unchanged", "resize")
_ALL_PERMS = (PERM_CONSISTENT_READ, PERM_WRITE, PERM_WRITE_UNCHANGED, PERM_RESIZE)

# Linux values; Python < 3.9 lacks the names.
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)

# struct flock { short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid; } + tail padding
_FLOCK = "hhqqi4x"

# What a qemu reader (qemu-img info/convert, a backing file of a running VM) holds: it reads and does
# not let anyone write or resize under it. A writer additionally holds write and resize.
READ_PERMS = (PERM_CONSISTENT_READ,)
READ_SHARED = (PERM_CONSISTENT_READ, PERM_WRITE_UNCHANGED)
WRITE_PERMS = (PERM_CONSISTENT_READ, PERM_WRITE, PERM_RESIZE)
WRITE_SHARED = (PERM_CONSISTENT_READ, PERM_WRITE_UNCHANGED)


def _flock(lock_type: int, offset: int) -> bytes:
    return struct.pack(_FLOCK, lock_type, os.SEEK_SET, offset, 1, 0)


def _set_lock(fd: int, offset: int, lock_type: int) -> None:
    fcntl.fcntl(fd, F_OFD_SETLK, _flock(lock_type, offset))


def _is_locked_by_other(fd: int, offset: int) -> bool:
    """True if another open file description holds a lock that conflicts with a write lock on offset."""
    result = fcntl.fcntl(fd, F_OFD_GETLK, _flock(fcntl.F_WRLCK, offset))
    return struct.unpack(_FLOCK, result)[0] != fcntl.F_UNLCK


def lock_bytes(perms: typing.Iterable[int], shared: typing.Iterable[int]) -> list[int]:
    """The bytes a holder of ``perms`` that shares ``shared`` locks."""
    held = [LOCK_PERM_BASE + p for p in perms]
    held += [LOCK_SHARED_BASE + p for p in _ALL_PERMS if p not in shared]
    return sorted(held)


def acquire(fd: int, path: str, write: bool) -> bool:
    """Lock like qemu does for a reader or a writer; raise ImageLockedError with qemu's wording on conflict."""
    perms, shared = (WRITE_PERMS, WRITE_SHARED) if write else (READ_PERMS, READ_SHARED)
    conflict = None
    try:
        for offset in lock_bytes(perms, shared):
            try:
                _set_lock(fd, offset, fcntl.F_RDLCK)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                # only a write lock conflicts with our read lock; qemu never takes one, something else does
                conflict = "Failed to lock byte %d" % offset
                break
        for p in perms if conflict is None else ():
            if _is_locked_by_other(fd, LOCK_SHARED_BASE + p):
                conflict = 'Failed to get "%s" lock' % PERM_NAMES[p]
                break
        if conflict is None:
            for p in _ALL_PERMS:
                if p not in shared and _is_locked_by_other(fd, LOCK_PERM_BASE + p):
                    conflict = 'Failed to get shared "%s" lock' % PERM_NAMES[p]
                    break
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            # No OFD locks here (old kernel, some network filesystems): qemu's locking=auto skips locking too
            return False
        else:
            raise Qcow2Error("Could not lock %s: %s" % (path, exc.strerror), path) from exc
    if conflict is not None:
        release(fd)
        raise ImageLockedError("%s\nIs another process using the image [%s]?" % (conflict, path), path)
    return True


def release(fd: int) -> None:
    """Drop every lock this open file description holds on qemu's bytes (one unlock over 100..204)."""
    try:
        fcntl.fcntl(fd, F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, LOCK_PERM_BASE,
                                                 LOCK_SHARED_BASE + 5 - LOCK_PERM_BASE, 0))
    except OSError:
        pass


def holders_conflict(path: str, write: bool) -> str | None:
    """Probe without keeping locks: the qemu-style conflict message, or None if the image is free."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            acquire(fd, path, write)
        except ImageLockedError as exc:
            return str(exc)
        return None
    finally:
        os.close(fd)


def refuse_if_held(path: str, write: bool = True) -> None:
    """ImageLockedError with qemu's message if another process holds path in a way a writer (or reader)
    conflicts with; plans use it so that check mode fails where the real run would."""
    conflict = holders_conflict(path, write)
    if conflict:
        raise ImageLockedError(conflict, path)


@contextlib.contextmanager
def held(path: str, write: bool = True) -> typing.Iterator[None]:
    """Hold qemu's writer (or reader) lock on path for a change made around the engine's own opens.

    ImageLockedError with qemu's message when a VM has the image open in a conflicting way. A reader lock
    still lets other readers in but keeps writers (a VM starting on the image) out.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        acquire(fd, path, write)
        try:
            yield
        finally:
            release(fd)
    finally:
        os.close(fd)
