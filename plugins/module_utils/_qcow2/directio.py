# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Direct (O_DIRECT) writes for bulk data: what they need and how to tell a write qualifies; aligned buffers.

Bulk copies write whole clusters that nobody reads back soon. Through the page cache every such write
first needs fresh cache pages (on the test VMs, where freed guest memory goes back to the host, that
alone made a copy several times slower) and is written to disk again by the final flush. A direct write
goes from the copy's buffer to the disk once. It needs the file offset, the length and the buffer's
address aligned; ALIGN (4 KiB) satisfies every common disk. Anything else goes through the page cache.

Reads want aligned buffers too. malloc places a large bytearray's data 16 bytes past a page boundary, and on
some CPUs the kernel copies from the page cache into such a buffer several times slower than into an aligned
one (5x measured here on AMD EPYC, for a destination 8 to 24 bytes past a 64-byte boundary): every buffer that
bulk data is read into comes from aligned_bytearray.
"""

from __future__ import annotations

import os

ALIGN = 4096

try:
    import ctypes
except ImportError:  # pragma: no cover - CPython always has it, but the engine must not depend on it
    ctypes = None


def open_direct(path: str) -> int | None:
    """A second, write-only descriptor on path that bypasses the page cache; None where the filesystem or
    platform cannot (tmpfs on older kernels, no O_DIRECT)."""
    flags = getattr(os, "O_DIRECT", 0)
    if not flags or ctypes is None:
        return None
    try:
        return os.open(path, os.O_WRONLY | flags | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def address(view: memoryview) -> int | None:
    """Memory address of a writable buffer's first byte; None when it cannot be known (read-only buffer)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError, AttributeError):  # AttributeError: no ctypes at all
        return None


def qualifies(views: list[memoryview], offset: int) -> bool:
    """True when a write of these buffers at offset meets direct I/O's alignment."""
    if offset % ALIGN:
        return False
    for view in views:
        if len(view) % ALIGN:
            return False
        where = address(view)
        if where is None or where % ALIGN:
            return False
    return True


def aligned_bytearray(size: int) -> bytearray:
    """size zero bytes in a bytearray whose data starts at an ALIGN boundary, when size is at least ALIGN (and
    the address can be known); a smaller one is not worth it.

    A bytearray (not mmap) because copies compare clusters with bytes.startswith, which mmap lacks. Deleting a
    bytearray's first bytes only moves its start, without copying, so the leading slack costs nothing (CPython
    copies the data only when a bytearray shrinks below half of its allocation: not here, from size >= ALIGN on).
    """
    if size < ALIGN:
        return bytearray(size)
    buf = bytearray(size + ALIGN)
    where = address(buf)
    del buf[:(ALIGN - where % ALIGN) % ALIGN if where is not None else 0]
    del buf[size:]
    return buf
