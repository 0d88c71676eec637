# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Where two guest views differ, 512-byte sector by sector, as qemu-img rebase's compare_buffers() sees it.

qemu-img rebase writes (and so dirties in the image's enabled bitmaps) exactly the sectors where the old
and the new backing views differ; the engine copies whole clusters around them, and records these.
"""

from __future__ import annotations

import typing

from .directio import aligned_bytearray

Reader = typing.Callable[[memoryview, int], None]  # fills the view with the guest bytes at the offset

SECTOR = 512
BLOCK = 64 * 1024  # compared whole first: most blocks of a differing chunk are often equal
CHUNK = 2 << 20


def sector_differences(a: bytes | bytearray, b: bytes | bytearray, offset: int, length: int) -> list[tuple[int, int]]:
    """[(start, end)] of the sectors of a[:length] and b[:length] (guest offset ``offset``) that differ."""
    out = []
    for block in range(0, length, BLOCK):
        stop = min(length, block + BLOCK)
        if a[block:stop] == b[block:stop]:
            continue
        for sector in range(block, stop, SECTOR):
            end = min(stop, sector + SECTOR)
            if a[sector:end] != b[sector:end]:
                if out and out[-1][1] == offset + sector:
                    out[-1] = (out[-1][0], offset + end)
                else:
                    out.append((offset + sector, offset + end))
    return out


def differing_sectors(read_a: Reader, read_b: Reader, ranges: typing.Iterable[tuple[int, int]],
                      chunk: int = CHUNK) -> list[tuple[int, int]]:
    """The sectors of ranges [(start, end)] where read_a(view, offset) and read_b(view, offset) fill in different
    bytes, joined into ranges."""
    buf_a, buf_b = aligned_bytearray(chunk), aligned_bytearray(chunk)
    view_a, view_b = memoryview(buf_a), memoryview(buf_b)
    out = []
    for start, end in ranges:
        pos = start
        while pos < end:
            n = min(chunk, end - pos)
            read_a(view_a[:n], pos)
            read_b(view_b[:n], pos)
            if buf_a[:n] != buf_b[:n]:
                for s, e in sector_differences(buf_a, buf_b, pos, n):
                    if out and out[-1][1] == s:
                        out[-1] = (out[-1][0], e)
                    else:
                        out.append((s, e))
            pos += n
    return out
