# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The bits of one persistent dirty bitmap: guest byte ranges in and out.

Bit n of a bitmap stands for guest bytes [n * granularity, (n + 1) * granularity), clipped to the virtual size.
The bits live in data clusters named by the bitmap table (bit 0 = least significant bit of the first byte);
a table entry without a cluster reads as all zeros, or as all ones when its bit 0 is set. Ranges are set
as qemu's hbitmap_set does, rounded out to whole granules, whatever granularity they come from (so a merge
of bitmaps of different granularities gives what qemu's does).
"""

from __future__ import annotations

import re
import typing

from . import constants as C

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from array import array

    from .bitmaps import Bitmap
    from .image import Qcow2Image

_NONZERO_BYTES = re.compile(rb"[^\x00]+")
_FULL_BYTES = re.compile(rb"\xff+")
# per byte value: its runs of set bits, as (first bit, end bit)
_BYTE_RUNS = []
for _value in range(256):
    _runs = []
    for _bit in range(8):
        if _value >> _bit & 1:
            if _runs and _runs[-1][1] == _bit:
                _runs[-1] = (_runs[-1][0], _bit + 1)
            else:
                _runs.append((_bit, _bit + 1))
    _BYTE_RUNS.append(tuple(_runs))
del _value, _runs, _bit


def bit_runs(data: bytes | bytearray) -> list[tuple[int, int]]:
    """[(first bit, end bit)] of the set bits of data, in order, adjacent runs joined."""
    out = []

    def add(first: int, end: int) -> None:
        if out and out[-1][1] == first:
            out[-1][1] = end
        else:
            out.append([first, end])

    def add_bytes(start: int, stop: int) -> None:
        for index in range(start, stop):
            for first, end in _BYTE_RUNS[data[index]]:
                add(index * 8 + first, index * 8 + end)

    for span in _NONZERO_BYTES.finditer(data):
        start, stop = span.span()
        pos = start
        for full in _FULL_BYTES.finditer(data, start, stop):
            add_bytes(pos, full.start())
            add(full.start() * 8, full.end() * 8)
            pos = full.end()
        add_bytes(pos, stop)
    return [tuple(run) for run in out]


def set_bits(data: bytearray, lo: int, hi: int) -> None:
    """Set bits lo..hi (inclusive) of a bitmap cluster, bit 0 = least significant bit of byte 0."""
    first_byte, last_byte = lo // 8, hi // 8
    if first_byte == last_byte:
        data[first_byte] |= ((0xFF << (lo % 8)) & (0xFF >> (7 - hi % 8))) & 0xFF
        return
    data[first_byte] |= (0xFF << (lo % 8)) & 0xFF
    data[first_byte + 1:last_byte] = b"\xff" * (last_byte - first_byte - 1)
    data[last_byte] |= 0xFF >> (7 - hi % 8)


def table_entries_needed(size: int, granularity: int, cluster_size: int) -> int:
    """Bitmap table entries for a virtual size: one data cluster per cluster_size * 8 granules."""
    return -(-(-(-size // granularity)) // (8 * cluster_size))


def join_ranges(ranges: typing.Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent (start, end) pairs covering the same bytes as ranges."""
    out = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def set_ranges(bits: BitmapBits, ranges: typing.Iterable[tuple[int, int]]) -> bool:
    """Set every granule ranges [(start, end)] touch; True if a bit changed."""
    changed = False
    for start, end in ranges:
        changed = bits.set_range(start, end) or changed
    return changed


class BitmapBits:
    """The bits of one bitmap of an open image: read on demand, changed in memory (``changed``: table index ->
    bytearray of the whole data cluster), written by the caller (bitmaps.BitmapTracker in place, bitmap_store into
    fresh clusters)."""

    def __init__(self, img: Qcow2Image, bitmap: Bitmap, table: array) -> None:
        self.img = img
        self.bitmap = bitmap
        self.table = table
        self.cluster_size = img.geo.cluster_size
        self.bits_per_cluster = self.cluster_size * 8
        self.shift = bitmap.granularity_bits
        self.size = img.size
        self.changed: dict[int, bytearray] = {}

    def _all_ones(self, index: int) -> bool:
        entry = self.table[index]
        return bool(entry & C.BME_TABLE_ENTRY_FLAG_ALL_ONES and not entry & C.BME_TABLE_ENTRY_OFFSET_MASK)

    def cluster(self, index: int) -> bytes | bytearray:
        """The data of table entry index as bytes (a changed one as changed)."""
        data = self.changed.get(index)
        if data is not None:
            return data
        entry = self.table[index]
        offset = entry & C.BME_TABLE_ENTRY_OFFSET_MASK
        if offset:
            return self.img.file.pread(self.cluster_size, offset).ljust(self.cluster_size, b"\0")
        return (b"\xff" if self._all_ones(index) else b"\0") * self.cluster_size

    def set_range(self, start: int, end: int) -> bool:
        """Mark guest bytes [start, end) dirty: every granule they touch. True if a bit changed."""
        end = min(end, self.size)
        if end <= start:
            return False
        first_bit, last_bit = start >> self.shift, (end - 1) >> self.shift
        bpc = self.bits_per_cluster
        changed = False
        for index in range(first_bit // bpc, min(last_bit // bpc + 1, len(self.table))):
            if self._all_ones(index) and index not in self.changed:
                continue
            lo = max(first_bit, index * bpc) - index * bpc
            hi = min(last_bit, (index + 1) * bpc - 1) - index * bpc
            current = self.cluster(index)
            if _all_set(current, lo, hi):
                continue
            data = self.changed.get(index)
            if data is None:
                data = self.changed[index] = bytearray(current)
            set_bits(data, lo, hi)
            changed = True
        return changed

    def ranges(self) -> list[tuple[int, int]]:
        """The dirty guest byte ranges, [(start, end)], sorted and joined, clipped to the virtual size."""
        out = []
        bpc = self.bits_per_cluster
        for index in range(len(self.table)):
            entry = self.table[index]
            if index not in self.changed and not entry & C.BME_TABLE_ENTRY_OFFSET_MASK:
                if self._all_ones(index):
                    self._add(out, index * bpc, (index + 1) * bpc)
                continue
            for first, end in bit_runs(self.cluster(index)):
                self._add(out, index * bpc + first, index * bpc + end)
        return out

    def _add(self, out: list[tuple[int, int]], first_bit: int, end_bit: int) -> None:
        start, end = first_bit << self.shift, min(end_bit << self.shift, self.size)
        if end <= start:
            return
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))

    def is_empty(self) -> bool:
        for index in range(len(self.table)):
            entry = self.table[index]
            if index in self.changed or entry & C.BME_TABLE_ENTRY_OFFSET_MASK:
                if any(self.cluster(index)):
                    return False
            elif self._all_ones(index):
                return False
        return True


def _all_set(data: bytes | bytearray, lo: int, hi: int) -> bool:
    """True if bits lo..hi (inclusive) of data are all set."""
    first_byte, last_byte = lo // 8, hi // 8
    if first_byte == last_byte:
        mask = ((0xFF << (lo % 8)) & (0xFF >> (7 - hi % 8))) & 0xFF
        return data[first_byte] & mask == mask
    head = (0xFF << (lo % 8)) & 0xFF
    tail = 0xFF >> (7 - hi % 8)
    middle = data[first_byte + 1:last_byte]
    return (data[first_byte] & head == head and data[last_byte] & tail == tail
            and middle.count(0xFF) == len(middle))
