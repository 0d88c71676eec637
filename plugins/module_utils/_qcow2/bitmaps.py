# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Persistent dirty bitmaps (qcow2 bitmaps extension): directory parsing, and keeping enabled bitmaps
true when the engine writes guest data.

Chosen behaviour (as qemu does for a read-write open): before the first guest write, every enabled
('auto') bitmap is flagged in_use on disk; the written ranges are recorded; when the image is closed
the bits are set in the bitmap data and in_use is cleared. A crash in between leaves the bitmaps
flagged in_use, which qemu treats as inconsistent: an incremental backup then starts over instead of
silently missing changes. Disabled bitmaps are left untouched, as qemu leaves them.
"""

from __future__ import annotations

from . import constants as C
from .deps import HAS_CONSTRUCT, require_construct
from .errors import FormatError
from .layout import array_to_be, be_array

if HAS_CONSTRUCT:
    from construct import Int8ub, Int16ub, Int32ub, Int64ub, Struct

    BITMAP_DIR_ENTRY = Struct(
        "bitmap_table_offset" / Int64ub,
        "bitmap_table_size" / Int32ub,
        "flags" / Int32ub,
        "type" / Int8ub,
        "granularity_bits" / Int8ub,
        "name_size" / Int16ub,
        "extra_data_size" / Int32ub,
    )

DIR_ENTRY_FIXED = 24
MAX_TABLE_ENTRIES = 0x8000000
MAX_PHYS_SIZE = 0x20000000  # qemu's BME_MAX_PHYS_SIZE: at most 512 MiB of bitmap data (table_size * cluster_size)
BITMAP_FLAG_NAMES = ((C.BITMAP_IN_USE, "in-use"), (C.BITMAP_AUTO, "auto"))


class Bitmap:
    def __init__(self, entry_offset, table_offset, table_size, flags, btype, granularity_bits, name, extra):
        self.entry_offset = entry_offset  # byte offset of the entry inside the directory
        self.table_offset = table_offset
        self.table_size = table_size
        self.flags = flags
        self.type = btype
        self.granularity_bits = granularity_bits
        self.name = name
        self.extra = extra

    @property
    def granularity(self):
        return 1 << self.granularity_bits

    @property
    def enabled(self):
        return bool(self.flags & C.BITMAP_AUTO)

    def flag_names(self):
        return [name for bit, name in BITMAP_FLAG_NAMES if self.flags & bit]


def read_directory(img):
    """The bitmaps the extension lists, validated like qemu's check_dir_entry()."""
    require_construct()
    ext = img.header.bitmaps_ext
    if not ext:
        return []
    raw = img.file.pread(ext["bitmap_directory_size"], ext["bitmap_directory_offset"])
    if len(raw) < ext["bitmap_directory_size"]:
        raise FormatError("Bitmap directory lies past the end of the file", img.path, "bitmap directory")
    out = []
    pos = 0
    for i in range(ext["nb_bitmaps"]):
        if pos + DIR_ENTRY_FIXED > len(raw):
            raise FormatError("Bitmap directory is shorter than its %d entries" % ext["nb_bitmaps"], img.path, "bitmap directory")
        e = BITMAP_DIR_ENTRY.parse(raw[pos:pos + DIR_ENTRY_FIXED])
        end = pos + DIR_ENTRY_FIXED + e.extra_data_size + e.name_size
        if end > len(raw):
            raise FormatError("Bitmap directory entry %d overruns the directory" % i, img.path, "bitmap directory")
        if e.name_size == 0 or e.name_size > C.MAX_BITMAP_NAME:
            raise FormatError("Bitmap directory entry %d has an invalid name length" % i, img.path, "bitmap name_size")
        if e.bitmap_table_offset % img.geo.cluster_size or e.bitmap_table_offset > C.MAX_CLUSTER_OFFSET:
            raise FormatError("Bitmap table offset of entry %d invalid" % i, img.path, "bitmap_table_offset")
        if e.bitmap_table_size > MAX_TABLE_ENTRIES or e.bitmap_table_size * img.geo.cluster_size > MAX_PHYS_SIZE:
            raise FormatError("Bitmap table of entry %d too large" % i, img.path, "bitmap_table_size")
        if e.flags & C.BITMAP_RESERVED_FLAGS:
            raise FormatError("Bitmap directory entry %d has reserved flags set" % i, img.path, "bitmap flags")
        extra = bytes(raw[pos + DIR_ENTRY_FIXED:pos + DIR_ENTRY_FIXED + e.extra_data_size])
        name = bytes(raw[pos + DIR_ENTRY_FIXED + e.extra_data_size:end]).decode("utf-8", "replace")
        out.append(Bitmap(pos, e.bitmap_table_offset, e.bitmap_table_size, e.flags, e.type, e.granularity_bits, name, extra))
        pos = (end + 7) & ~7
    return out


def read_table(img, bitmap):
    raw = img.file.pread(bitmap.table_size * 8, bitmap.table_offset)
    raw += bytes(bitmap.table_size * 8 - len(raw))
    return be_array(raw)


class BitmapTracker:
    """Records guest writes and sets them in the enabled bitmaps when the image closes."""

    def __init__(self, img):
        self.img = img
        self.bitmaps = [b for b in read_directory(img)
                        if b.enabled and not b.flags & C.BITMAP_IN_USE and b.type == C.BITMAP_TYPE_DIRTY_TRACKING
                        and not b.extra and C.MIN_CLUSTER_BITS <= b.granularity_bits <= 31]
        self.ranges = []
        self.marked_in_use = False

    def mark_dirty(self, offset, length):
        if not self.bitmaps or not length:
            return
        if not self.marked_in_use:
            self._set_in_use(True)
            self.marked_in_use = True
        if self.ranges and self.ranges[-1][1] >= offset and self.ranges[-1][0] <= offset:
            self.ranges[-1] = (self.ranges[-1][0], max(self.ranges[-1][1], offset + length))
        else:
            self.ranges.append((offset, offset + length))

    def _set_in_use(self, in_use):
        img = self.img
        dir_offset = img.header.bitmaps_ext["bitmap_directory_offset"]
        for b in self.bitmaps:
            b.flags = (b.flags | C.BITMAP_IN_USE) if in_use else (b.flags & ~C.BITMAP_IN_USE)
            img.file.pwrite(b.flags.to_bytes(4, "big"), dir_offset + b.entry_offset + 12)
        img.file.flush()

    def finish(self):
        """Write the recorded ranges into the bitmaps, then clear in_use."""
        if not self.marked_in_use:
            return
        img = self.img
        cs = img.geo.cluster_size
        bits_per_cluster = cs * 8
        for b in self.bitmaps:
            table = read_table(img, b)
            touched = {}
            for start, end in self.ranges:
                first_bit = start >> b.granularity_bits
                last_bit = (min(end, img.size) - 1) >> b.granularity_bits
                for index in range(first_bit // bits_per_cluster, last_bit // bits_per_cluster + 1):
                    if index >= len(table) or table[index] & C.BME_TABLE_ENTRY_FLAG_ALL_ONES and not table[index] & C.BME_TABLE_ENTRY_OFFSET_MASK:
                        continue
                    data = touched.get(index)
                    if data is None:
                        offset = table[index] & C.BME_TABLE_ENTRY_OFFSET_MASK
                        data = touched[index] = bytearray(img.file.pread(cs, offset).ljust(cs, b"\0") if offset else bytes(cs))
                    lo = max(first_bit, index * bits_per_cluster) - index * bits_per_cluster
                    hi = min(last_bit, (index + 1) * bits_per_cluster - 1) - index * bits_per_cluster
                    _set_bits(data, lo, hi)
            new_clusters = [i for i in touched if not table[i] & C.BME_TABLE_ENTRY_OFFSET_MASK]
            for index in new_clusters:
                table[index] = img.refcounts.alloc(1) << img.geo.cluster_bits
            for index, data in touched.items():
                img.file.pwrite(bytes(data), table[index] & C.BME_TABLE_ENTRY_OFFSET_MASK)
            if new_clusters:
                img.flush()  # data and refcounts on disk before the table points at the new clusters
                img.file.pwrite(array_to_be(table), b.table_offset)
            img.file.flush()
        self._set_in_use(False)
        self.marked_in_use = False
        self.ranges = []


def _set_bits(data, lo, hi):
    """Set bits lo..hi (inclusive) of a bitmap cluster, bit 0 = least significant bit of byte 0."""
    first_byte, last_byte = lo // 8, hi // 8
    if first_byte == last_byte:
        data[first_byte] |= ((0xFF << (lo % 8)) & (0xFF >> (7 - hi % 8))) & 0xFF
        return
    data[first_byte] |= (0xFF << (lo % 8)) & 0xFF
    data[first_byte + 1:last_byte] = b"\xff" * (last_byte - first_byte - 1)
    data[last_byte] |= 0xFF >> (7 - hi % 8)
