# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Growing an image's virtual size (qemu-img resize, growth only).

A larger L1 table is written into fresh clusters first; one write of header bytes 24..47 then switches
size, L1 size and L1 offset together, and the old L1 is freed afterwards.

When the image has a backing file longer than its old size, the new area must read zeros, not the backing
file's data (qemu does the same: a truncate with BDRV_REQ_ZERO_WRITE). The zeros are written while the
header still has the old size (guests see nothing past it, and qemu accepts an L1 table larger than the
size needs), so the one write of the new size is the switch: interrupted anywhere, the image reads as
before, or grown with zeros.
"""

from __future__ import annotations

import contextlib
import struct
import typing

from . import constants as C
from .errors import InvalidArgumentError, UnsupportedError
from .header import OFFSET_L1, OFFSET_SIZE
from .layout import array_to_be

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .bitmaps import Bitmap
    from .image import Qcow2Image


def grow(img: Qcow2Image, new_size: int) -> bool:
    """Grow a writable Qcow2Image to new_size bytes; refuses to shrink."""
    img._require_writable()
    if new_size < img.size:
        raise InvalidArgumentError("Image %s is %d bytes; shrinking it to %d bytes is refused (it would discard data)"
                                   % (img.path, img.size, new_size), img.path)
    if new_size % 512:
        raise InvalidArgumentError("Image size must be a multiple of 512 bytes (got %d)" % new_size, img.path)
    if new_size == img.size:
        return False
    for verdict in img.bitmap_trust.verdicts:
        if not verdict.trusted:  # qemu-img resize refuses too: the bitmap's table could not follow the size
            raise UnsupportedError("Bitmap '%s' of %s is inconsistent and cannot be used (%s); remove it first "
                                   "(qemu-img bitmap --remove)" % (verdict.bitmap.name, img.path, verdict.reason),
                                   img.path)
    geo, hdr = img.geo, img.header
    new_l1_size = geo.size_to_l1(new_size)
    if new_l1_size > C.MAX_L1_BYTES // 8:
        raise InvalidArgumentError("Size %d is too large for cluster size %d (the L1 table would exceed 32 MiB)"
                                   % (new_size, geo.cluster_size), img.path)
    old_size = img.size
    # growing from 0 is how create() sizes a new overlay, whose backing file must show through
    with _backing_attached(img, old_size > 0) as backing:
        hide_end = min(new_size, backing.size) if backing is not None else 0
        if img.bitmaps is not None:
            img.bitmaps.finish()  # pending bits go into the current tables first
        tables = _bitmap_tables_needed(img, new_size)
        img.flush()
        switched = False
        if new_l1_size > len(img.l1):
            clusters = -(-new_l1_size * 8 // geo.cluster_size)
            first = img.refcounts.alloc(clusters)
            img.flush()  # the new L1's refcounts are on disk before anything points at it
            table = img.l1[:]
            table.extend([0] * (new_l1_size - len(table)))
            raw = array_to_be(table)
            img.file.pwrite(raw + bytes(clusters * geo.cluster_size - len(raw)), first << geo.cluster_bits)
            img.file.flush()
            old_offset, old_size_l1 = hdr.l1_table_offset, hdr.l1_size
            if hide_end > old_size or tables:
                img.write_header_bytes(OFFSET_L1, struct.pack(">IQ", new_l1_size, first << geo.cluster_bits))
            else:
                img.write_header_bytes(OFFSET_SIZE, struct.pack(">QIIQ", new_size, hdr.crypt_method, new_l1_size,
                                                                first << geo.cluster_bits))
                switched = True
            hdr.l1_size = new_l1_size
            hdr.l1_table_offset = first << geo.cluster_bits
            img.l1 = table
            img.invalidate_metadata_map()
            if old_offset and old_size_l1:
                old_first = old_offset >> geo.cluster_bits
                for i in range(-(-old_size_l1 * 8 // geo.cluster_size)):
                    img.refcounts.queue_decref(old_first + i)
        if hide_end > old_size:
            img.size = new_size  # in memory only, so the writer reaches the new area; the header still says old_size
            tracker, img.bitmaps = img.bitmaps, None  # not a guest write: qemu leaves the new area's bits clear
            try:
                img.write_zeroes(old_size, hide_end - old_size)
                img.flush()
            finally:
                img.size = old_size
                img.bitmaps = tracker
        if tables:
            _switch_with_bitmap_tables(img, new_size, tables)
        elif not switched:
            img.write_header_bytes(OFFSET_SIZE, struct.pack(">Q", new_size))
        hdr.size = new_size
        img.size = new_size
        img.flush()
    return True


def _bitmap_tables_needed(img: Qcow2Image, new_size: int) -> list[tuple[Bitmap, int]]:
    """[(bitmap, entries)] for the persistent bitmaps whose table must grow to cover new_size.

    qemu refuses to open an image whose bitmap table is not exactly as large as the size needs ("doesn't satisfy
    the constraints"), so the tables must change together with the size. Bitmaps flagged in use are exempt from that
    rule and are never rewritten (qemu does not store inconsistent bitmaps either).
    """
    bits_per_cluster = img.geo.cluster_size * 8
    out = []
    for bitmap in img.bitmap_trust.trusted():
        entries = -(-(-(-new_size // bitmap.granularity)) // bits_per_cluster)
        if entries != bitmap.table_size:
            out.append((bitmap, entries))
    return out


def _switch_with_bitmap_tables(img: Qcow2Image, new_size: int, tables: list[tuple[Bitmap, int]]) -> None:
    """Larger bitmap tables go into fresh clusters; the header write that switches to a directory naming them also
    sets the new size (bitmap_store.BitmapChange); the old tables are freed after."""
    from .bitmap_store import BitmapChange
    from .bitmaps import read_table
    change = BitmapChange(img)
    for bitmap, entries in tables:
        table = read_table(img, bitmap)
        table.extend([0] * (entries - len(table)))  # the new area: clusters of zero bits
        change.replace_table(bitmap.name, table)
    change.commit(size=new_size)


@contextlib.contextmanager
def _backing_attached(img: Qcow2Image, wanted: bool) -> typing.Iterator[None]:
    """img.backing, opening the backing chain for the duration when the caller opened the image without it."""
    if not wanted or img.backing is not None or not img.backing_filename:
        yield img.backing if wanted else None
        return
    from .chain import DEFAULT_POLICY, _backing_format, check_backing_reference, open_chain
    path = check_backing_reference(img.backing_filename, img.path, DEFAULT_POLICY)
    with open_chain(path, fmt=_backing_format(img, path)) as chain:
        img.backing = chain.top
        try:
            yield chain.top
        finally:
            img.backing = None
