# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Writing the bitmaps of an image: a new directory, tables and data, switched to with one header write.

Nothing in use is changed in place: new tables, changed data clusters and the new directory go into
fresh clusters, their refcounts reach the disk, then one rewrite of the header (the bitmaps extension,
and the autoclear bit that says it is valid) switches to them, and only then are the old clusters
freed. Interrupted anywhere, the image holds the old bitmaps or the new ones, both consistent, with at
worst leaked clusters. qemu's update_ext_header_and_dir() keeps the same order.
"""

from __future__ import annotations

import copy
import struct
import typing

from . import constants as C
from .bitmap_bits import BitmapBits, set_ranges, table_entries_needed
from .bitmaps import Bitmap, invalid_table_entry, read_table
from .layout import array_to_be

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from array import array

    from .image import Qcow2Image


def directory_entry_size(name_size: int, extra_size: int = 0) -> int:
    """calc_dir_entry_size(): the fixed part, extra data and name, padded to 8 bytes."""
    return (24 + extra_size + name_size + 7) & ~7


def build_directory(bitmaps: typing.Iterable[Bitmap]) -> bytes:
    """The directory entries (bitmaps.BITMAP_DIR_ENTRY, then extra data and name), each padded to 8 bytes."""
    out = []
    for b in bitmaps:
        name = b.name.encode("utf-8")
        entry = struct.pack(">QIIBBHI", b.table_offset, b.table_size, b.flags, b.type, b.granularity_bits, len(name),
                            len(b.extra)) + b.extra + name
        out.append(entry + bytes(-len(entry) % 8))
    return b"".join(out)


def _clusters(img: Qcow2Image, nbytes: int) -> int:
    return -(-nbytes // img.geo.cluster_size)


def write_new(img: Qcow2Image, data: bytes | bytearray) -> int:
    """Write data into freshly allocated clusters (zero-padded to whole clusters); returns its offset."""
    n = _clusters(img, len(data))
    offset = img.refcounts.alloc(n) << img.geo.cluster_bits
    img.file.pwrite(bytes(data) + bytes(n * img.geo.cluster_size - len(data)), offset)
    return offset


class BitmapChange:
    """One change of an image's bitmaps, any number of edits written by commit() in one switch.

    ``bitmaps`` starts as copies of every bitmap qemu loads (in use ones included: they are carried over exactly
    as they are); the edits change the list and the copies, write new tables and data into fresh clusters, and
    record in ``freed`` the clusters that the new state no longer uses. The callers have checked the edits
    (bitmap_ops: qemu's checks)."""

    def __init__(self, img: Qcow2Image) -> None:
        img._require_writable()
        if img.bitmaps is not None:
            img.bitmaps.finish()  # recorded guest writes go into the current tables first
        self.img = img
        self.bitmaps = [copy.copy(b) for b in img.bitmap_trust.loaded()]
        self.freed: list[tuple[int, int]] = []  # (offset, length) of structures to free after the switch

    def find(self, name: str) -> Bitmap | None:
        return next((b for b in self.bitmaps if b.name == name), None)

    # ---- edits ----
    def add(self, name: str, granularity: int, enabled: bool) -> None:
        bitmap = Bitmap(0, 0, 0, C.BITMAP_AUTO if enabled else 0, C.BITMAP_TYPE_DIRTY_TRACKING,
                        granularity.bit_length() - 1, name, b"")
        self._new_empty_table(bitmap, table_entries_needed(self.img.size, granularity, self.img.geo.cluster_size))
        self.bitmaps.append(bitmap)

    def remove(self, name: str) -> None:
        bitmap = self.find(name)
        self._free_table(bitmap)
        self.bitmaps.remove(bitmap)

    def clear(self, name: str) -> None:
        bitmap = self.find(name)
        self._free_table(bitmap)
        self._new_empty_table(bitmap, bitmap.table_size)

    def set_enabled(self, name: str, enabled: bool) -> None:
        bitmap = self.find(name)
        bitmap.flags = (bitmap.flags | C.BITMAP_AUTO) if enabled else (bitmap.flags & ~C.BITMAP_AUTO)

    def merge(self, name: str, ranges: typing.Iterable[tuple[int, int]]) -> bool:
        """Set every granule of the bitmap that ranges touch; False if all were set already."""
        bitmap = self.find(name)
        bits = BitmapBits(self.img, bitmap, read_table(self.img, bitmap))
        if not set_ranges(bits, ranges):
            return False
        self._store_bits(bitmap, bits)
        return True

    def replace_table(self, name: str, table: array) -> None:
        """Give the bitmap a new table (the entries of a grown image, say)."""
        bitmap = self.find(name)
        self.freed.append((bitmap.table_offset, bitmap.table_size * 8))
        bitmap.table_offset, bitmap.table_size = write_new(self.img, array_to_be(table)), len(table)

    # ---- clusters ----
    def _free_table(self, bitmap: Bitmap) -> None:
        """The bitmap's table and every data cluster it names leave the image.

        The table of a bitmap in use was never validated (qemu does not load it either): a cluster is freed only
        if the bitmap alone holds it, so that a hostile table cannot free what the image still uses (qemu leaks
        the clusters of a table it cannot load; so does this)."""
        img = self.img
        cs, cb = img.geo.cluster_size, img.geo.cluster_bits
        table = read_table(img, bitmap)
        clusters = [bitmap.table_offset + i * cs for i in range(-(-bitmap.table_size * 8 // cs))]
        if invalid_table_entry(table, cs) is None:
            clusters += [entry & C.BME_TABLE_ENTRY_OFFSET_MASK for entry in table
                         if entry & C.BME_TABLE_ENTRY_OFFSET_MASK]
        for offset in clusters:
            if img.refcounts.get(offset >> cb) == 1 and not img.overlaps_metadata(offset >> cb):
                self.freed.append((offset, cs))

    def _new_empty_table(self, bitmap: Bitmap, entries: int) -> None:
        """Give bitmap a new table of entries that all read as zeros."""
        bitmap.table_offset = write_new(self.img, bytes(8 * entries))
        bitmap.table_size = entries

    def _store_bits(self, bitmap: Bitmap, bits: BitmapBits) -> None:
        """The changed data clusters go into fresh clusters, with a new table naming them."""
        table = bits.table[:]
        for index, data in bits.changed.items():
            old = table[index] & C.BME_TABLE_ENTRY_OFFSET_MASK
            if old:
                self.freed.append((old, self.img.geo.cluster_size))
            table[index] = write_new(self.img, data)
        self.replace_table(bitmap.name, table)

    def commit(self, size: int | None = None) -> None:
        """Switch the image to the edited bitmaps (one header write, which also sets a new virtual size: tables that
        fit it go with it), then free what they no longer use."""
        img = self.img
        hdr = img.header
        if size is not None:
            hdr.size = size
        old = hdr.bitmaps_ext
        if old:
            self.freed.append((old["bitmap_directory_offset"], old["bitmap_directory_size"]))
        if self.bitmaps:
            directory = build_directory(self.bitmaps)
            hdr.bitmaps_ext = {"nb_bitmaps": len(self.bitmaps), "bitmap_directory_size": len(directory),
                               "bitmap_directory_offset": write_new(img, directory)}
            hdr.autoclear_features |= C.AUTOCLEAR_BITMAPS
        else:
            hdr.bitmaps_ext = None  # qemu drops the extension with its last bitmap
            hdr.autoclear_features &= ~C.AUTOCLEAR_BITMAPS
        img.flush()  # tables, data, directory and their refcounts on disk before the header names them
        img.file.flush()
        img.rewrite_header()
        cb = img.geo.cluster_bits
        for offset, length in self.freed:
            for i in range(_clusters(img, length)):
                img.refcounts.queue_decref((offset >> cb) + i)
        img.invalidate_metadata_map()
        img.flush()
        if size is not None:
            img.size = size  # the tables now fit the new size: judge them against it
        img.reload_bitmaps()
