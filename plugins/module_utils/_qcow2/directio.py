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

Reads of data the page cache does not hold go around it too, when they qualify the same way: on the test VMs (whose
freed memory goes back to the host) reading a 1.3 GB backup chain just written took 2.0-2.4 s through the page
cache, which needs a fresh page for every 4 KiB read, and 0.65-0.96 s directly into the copy's reused buffers; a
restore of a store written long before also leaves the host's page cache to the guests. Data the page cache holds
(a layer a guest just wrote, say) is read from there: cached_pages() tells, from mincore().

Reads want aligned buffers too. malloc places a large bytearray's data 16 bytes past a page boundary, and on
some CPUs the kernel copies from the page cache into such a buffer several times slower than into an aligned
one (5x measured here on AMD EPYC, for a destination 8 to 24 bytes past a 64-byte boundary): every buffer that
bulk data is read into comes from aligned_bytearray.
"""

from __future__ import annotations

import mmap
import os

ALIGN = 4096

try:
    import ctypes
except ImportError:  # pragma: no cover - CPython always has it, but the engine must not depend on it
    ctypes = None


def open_direct(path: str) -> int | None:
    """A second, write-only descriptor on path that bypasses the page cache; None where the filesystem or
    platform cannot (tmpfs on older kernels, no O_DIRECT)."""
    return _open_around_cache(path, os.O_WRONLY) if ctypes is not None else None


def open_direct_read(path: str, identity: tuple[int, int]) -> int | None:
    """A read-only descriptor on path that bypasses the page cache, if path is still the file of identity (st_dev,
    st_ino); None where the filesystem or platform cannot."""
    fd = _open_around_cache(path, os.O_RDONLY) if _mincore is not None else None
    if fd is None:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != identity or fd >= _descriptor_budget():
        os.close(fd)  # renamed over since it was opened; or a deep chain, whose images need the descriptors more
        return None
    return fd


def _open_around_cache(path: str, access: int) -> int | None:
    """A descriptor on path opened with O_DIRECT and the access mode given; None where it cannot be."""
    flags = getattr(os, "O_DIRECT", 0)
    if not flags:
        return None
    try:
        return os.open(path, access | flags | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def _descriptor_budget() -> int:
    """Half the process's open file limit: descriptors are numbered lowest first, so a higher one means a process
    that already holds many (a chain hundreds of images deep)."""
    import resource  # only when a large read asks
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft // 2 if soft != resource.RLIM_INFINITY else 1 << 20


def cached_pages(fd: int, offset: int, length: int) -> tuple[int, int] | None:
    """(pages the page cache holds, pages) of the file's [offset, offset+length) (offset page-aligned); None when it
    cannot be told."""
    if _mincore is None or offset % mmap.PAGESIZE:
        return None
    where = _mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if where is None or where == _MAP_FAILED:
        return None
    try:
        pages = -(-length // mmap.PAGESIZE)
        vec = (ctypes.c_ubyte * pages)()
        if _mincore(where, length, vec) != 0:
            return None
        return pages - bytes(vec).count(0), pages  # bit 0 of each byte: resident (the other bits are always clear)
    finally:
        _munmap(where, length)


def _libc_calls():
    """mmap, mincore and munmap from libc (None each where there is no libc to call)."""
    if ctypes is None:
        return None, None, None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_call, mincore, munmap = libc.mmap, libc.mincore, libc.munmap
    except (OSError, AttributeError):
        return None, None, None
    mmap_call.restype = ctypes.c_void_p
    mmap_call.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64]
    mincore.restype = ctypes.c_int
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    munmap.restype = ctypes.c_int
    munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return mmap_call, mincore, munmap


_mmap, _mincore, _munmap = _libc_calls()
_MAP_FAILED = ctypes.c_void_p(-1).value if ctypes is not None else None


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
