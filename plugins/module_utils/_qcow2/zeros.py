# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Zero-filling and zero-testing without allocating a new buffer each time."""

from __future__ import annotations

_ZERO_CHUNK = bytes(4 << 20)
_ZERO_VIEW = memoryview(_ZERO_CHUNK)


def fill_zero(view: memoryview) -> None:
    """Zero a writable memoryview in place."""
    n = len(view)
    pos = 0
    while pos < n:
        step = min(n - pos, len(_ZERO_CHUNK))
        view[pos:pos + step] = _ZERO_VIEW[:step]
        pos += step


_zero_by_size = {}


def zero_bytes(n: int) -> bytes:
    """A cached bytes object of n zeros (for comparisons: bytes == bytes is a memcmp)."""
    z = _zero_by_size.get(n)
    if z is None:
        if len(_zero_by_size) > 32:
            _zero_by_size.clear()
        z = _zero_by_size[n] = bytes(n)
    return z


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True if bytes/bytearray/memoryview holds only zeros (memcmp speed, not a Python loop)."""
    if isinstance(data, memoryview):
        data = data.tobytes()  # comparing memoryviews is 100x slower than comparing bytes
    n = len(data)
    if n <= len(_ZERO_CHUNK):
        return data == zero_bytes(n)
    return data.count(0) == n
