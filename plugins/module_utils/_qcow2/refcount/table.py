# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The refcount table and blocks of an open image: lookups, increments, cluster allocation, growth.

Decrements are queued and applied only after the L2/L1 updates that dropped the references are on
disk (see Qcow2Image.flush), so a cluster is never reused while old metadata may still point at it.
"""

from __future__ import annotations

import struct
import typing
from array import array

from .. import constants as C
from ..errors import CorruptionError, UnsupportedError
from ..header import OFFSET_REFTABLE
from ..layout import array_to_be, be_array
from ..lru import MetadataCache
from .block import RefBlockCodec

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from ..image import Qcow2Image

REFBLOCK_CACHE_BYTES = 4 << 20


def check_reftable_size(nbytes: int, path: str) -> None:
    """qemu refuses to open an image whose refcount table exceeds 8 MiB; never write one (qemu: EFBIG)."""
    if nbytes > C.MAX_REFTABLE_BYTES:
        raise UnsupportedError("File too large: the image would need a refcount table of %d bytes, more than qemu's "
                               "limit of %d bytes" % (nbytes, C.MAX_REFTABLE_BYTES), path)


class Refcounts:
    def __init__(self, image: Qcow2Image) -> None:
        self.image = image
        self.file = image.file
        geo = image.geo
        self.geo = geo
        self.cs = geo.cluster_size
        self.cb = geo.cluster_bits
        self.rbb = geo.refblock_bits
        self.rbe = geo.refblock_entries
        self.codec = RefBlockCodec(geo.refcount_bits, geo.refblock_entries)
        hdr = image.header
        raw = self.file.pread(hdr.refcount_table_clusters * self.cs, hdr.refcount_table_offset)
        raw += bytes(hdr.refcount_table_clusters * self.cs - len(raw))
        self.table = be_array(raw)
        self.table_offset = hdr.refcount_table_offset
        self._dirty_table_sectors = set()
        self.cache = MetadataCache(max(4, REFBLOCK_CACHE_BYTES // self.cs), self._load_block, self._store_block,
                                   image.flush)
        self.free_hint = 0
        self.pending_decrefs = []
        self.max_allocated = 0  # one past the highest cluster handed out since open

    # ---- block access ----
    def _block_offset(self, t: int) -> int:
        if t >= len(self.table):
            return 0
        entry = self.table[t]
        offset = entry & C.REFT_OFFSET_MASK
        if offset & (self.cs - 1):
            raise CorruptionError("Refblock offset %#x unaligned (reftable index: %#x)" % (offset, t), self.image.path)
        if offset > C.MAX_CLUSTER_OFFSET:
            raise CorruptionError("Refblock offset %#x is past the largest host offset (reftable index: %#x)"
                                  % (offset, t), self.image.path)
        return offset

    def _load_block(self, offset: int) -> array.array:
        return self.codec.decode(self.file.pread(self.cs, offset))

    def _store_block(self, offset: int, block: bytearray | array.array) -> None:
        self.file.pwrite(self.codec.encode(block), offset)

    def get(self, ci: int) -> int:
        offset = self._block_offset(ci >> self.rbb)
        if not offset:
            return 0
        return self.codec.get(self.cache.get(offset), ci & (self.rbe - 1))

    def add(self, ci: int, delta: int) -> int:
        """Change one cluster's refcount now (callers order this against L2/L1 updates)."""
        t = ci >> self.rbb
        offset = self._block_offset(t)
        if not offset:
            if delta <= 0:
                raise CorruptionError("Cannot decrease refcount of cluster %d: it has none" % ci, self.image.path)
            self._create_block(t, self._free_cluster_in_range(t, exclude=ci))
            offset = self._block_offset(t)
        block = self.cache.get(offset)
        index = ci & (self.rbe - 1)
        value = self.codec.get(block, index) + delta
        if value < 0:
            raise CorruptionError("Refcount of cluster %d would drop below zero" % ci, self.image.path)
        if value > self.geo.refcount_max:
            raise CorruptionError("Refcount of cluster %d would exceed the %d-bit maximum" % (ci, self.geo.refcount_bits),
                                  self.image.path)
        self.codec.set(block, index, value)
        self.cache.mark_dirty(offset)
        if value == 0 and ci < self.free_hint:
            self.free_hint = ci
        return value

    def queue_decref(self, ci: int, count: int = 1) -> None:
        """Drop a reference once the metadata that held it is on disk."""
        self.pending_decrefs.append((ci, count))

    def apply_pending(self) -> list[int]:
        """Apply queued decrements; returns the clusters whose refcount reached zero."""
        freed = []
        pending, self.pending_decrefs = self.pending_decrefs, []
        for ci, count in pending:
            if self.add(ci, -count) == 0:
                freed.append(ci)
        return freed

    @property
    def dirty(self) -> bool:
        return self.cache.dirty or bool(self._dirty_table_sectors)

    def write_dirty(self) -> None:
        """Write changed blocks, then the table sectors that point at new blocks."""
        self.cache.write_dirty()
        if self._dirty_table_sectors:
            raw = array_to_be(self.table)
            for sector in sorted(self._dirty_table_sectors):
                self.file.pwrite(raw[sector * 512:(sector + 1) * 512], self.table_offset + sector * 512)
            self._dirty_table_sectors.clear()

    # ---- allocation ----
    def _create_block(self, t: int, at: int) -> None:
        """A new refblock for range t placed at cluster ``at`` inside that range, counting itself."""
        block = self.codec.empty()
        self.codec.set(block, at & (self.rbe - 1), 1)
        self.table[t] = at << self.cb
        self._dirty_table_sectors.add((t * 8) // 512)
        self.cache.put_new(at << self.cb, block)
        self.image.note_refblock(at)
        self.max_allocated = max(self.max_allocated, at + 1)

    def _free_cluster_in_range(self, t: int, exclude: int) -> int:
        first = t << self.rbb
        for ci in range(first, first + self.rbe):
            if ci != exclude and not self.image.overlaps_metadata(ci):
                return ci
        raise CorruptionError("No free cluster for a refcount block in range %d" % t, self.image.path)

    def _next_free(self, ci: int) -> int:
        while True:
            t = ci >> self.rbb
            offset = self._block_offset(t)
            if not offset:
                return ci
            found = self.codec.first_free(self.cache.get(offset), ci & (self.rbe - 1))
            if found is not None:
                return (t << self.rbb) + found
            ci = (t + 1) << self.rbb

    def _next_used(self, ci: int, limit: int) -> int:
        """First cluster in [ci, limit) with a non-zero refcount, else limit."""
        while ci < limit:
            t = ci >> self.rbb
            offset = self._block_offset(t)
            if offset:
                first = ci & (self.rbe - 1)
                found = self.codec.first_used(self.cache.get(offset), first, first + (limit - ci))
                if found is not None:
                    return min(limit, (t << self.rbb) + found)
            ci = (t + 1) << self.rbb
        return limit

    def find_free_run(self, n: int, start: int) -> int:
        ci = start
        while True:
            ci = self._next_free(ci)
            stop = self._next_used(ci, ci + n)
            if stop >= ci + n:
                return ci
            ci = stop + 1

    def alloc(self, n: int = 1) -> int:
        """Allocate n contiguous free clusters (refcount 1 each); returns the first cluster index.

        Ranges of the area that have no refcount block yet get one, placed just before the data
        (like qemu's refcount area), so a long run never needs blocks inside itself.
        """
        extra = 0
        while True:
            start = self.find_free_run(n + extra, self.free_hint)
            area_end = start + n + extra
            if (area_end - 1) >> self.rbb >= len(self.table):
                self._grow_table(area_end)
                continue
            missing = [t for t in range(start >> self.rbb, ((area_end - 1) >> self.rbb) + 1) if not self._block_offset(t)]
            if len(missing) > extra:
                extra = len(missing)
                continue
            data_start = start + len(missing)
            bad = next((ci for ci in range(start, data_start + n) if self.image.overlaps_metadata(ci)), None)
            if bad is not None:
                raise CorruptionError(
                    "Refusing to allocate cluster %d: it holds metadata but its refcount is 0; repair the image first"
                    % bad, self.image.path)
            for i, index in enumerate(missing):
                self.table[index] = (start + i) << self.cb
                self._dirty_table_sectors.add((index * 8) // 512)
                self.cache.put_new((start + i) << self.cb, self.codec.empty())
                self.image.note_refblock(start + i)
            for ci in range(start, data_start + n):
                self.add(ci, 1)
            self.free_hint = data_start + n
            self.max_allocated = max(self.max_allocated, data_start + n)
            self.image.reserve_file((data_start + n) << self.cb)
            return data_start

    # ---- growth of the refcount table (qcow2_refcount_area) ----
    def _grow_table(self, min_clusters: int) -> None:
        """Move the table to a larger one at the end of the file, with the blocks the new area needs.

        Everything new is written before the header points at it; the old table is freed afterwards,
        so a crash at any point leaves the old structure in force and at most leaked clusters.
        """
        self.image.flush()
        cs, rbb = self.cs, self.rbb
        old_entries = len(self.table)
        start = max(-(-self.file.size() // cs), self.max_allocated)
        needed_entries = max(-(-min_clusters // self.rbe), old_entries + max(1, old_entries // 2))
        nb = 0
        table_clusters = -(-needed_entries * 8 // cs)
        while True:
            area_end = start + nb + table_clusters
            entries = max(needed_entries, ((area_end - 1) >> rbb) + 1)
            new_table_clusters = -(-entries * 8 // cs)
            area_end = start + nb + new_table_clusters
            ranges = [r for r in range(start >> rbb, ((area_end - 1) >> rbb) + 1)
                      if r >= old_entries or not self._block_offset(r)]
            if len(ranges) == nb and new_table_clusters == table_clusters:
                break
            nb, table_clusters = len(ranges), new_table_clusters
        check_reftable_size(table_clusters * cs, self.image.path)
        table_start = start + nb
        new_table = array("Q", self.table)
        new_table.extend([0] * (table_clusters * cs // 8 - old_entries))
        new_blocks = {}
        for i, r in enumerate(ranges):
            new_table[r] = (start + i) << self.cb
            new_blocks[r] = self.codec.empty()
        for ci in range(start, table_start + table_clusters):
            r = ci >> rbb
            if r in new_blocks:
                self.codec.set(new_blocks[r], ci & (self.rbe - 1), 1)
            else:
                offset = self._block_offset(r)
                block = self.cache.get(offset)
                self.codec.set(block, ci & (self.rbe - 1), self.codec.get(block, ci & (self.rbe - 1)) + 1)
                self.cache.mark_dirty(offset)
        for r, block in new_blocks.items():
            self.file.pwrite(self.codec.encode(block), new_table[r] & C.REFT_OFFSET_MASK)
        self.cache.write_dirty()
        self.file.pwrite(array_to_be(new_table), table_start << self.cb)
        self.file.flush()
        old_offset, old_clusters = self.table_offset, self.image.header.refcount_table_clusters
        self.image.write_header_bytes(OFFSET_REFTABLE, struct.pack(">QI", table_start << self.cb, table_clusters))
        self.image.header.refcount_table_offset = table_start << self.cb
        self.image.header.refcount_table_clusters = table_clusters
        self.table = new_table
        self.table_offset = table_start << self.cb
        self.image.invalidate_metadata_map()  # the old table is about to become free clusters
        for r, block in new_blocks.items():
            self.cache.put_clean(new_table[r] & C.REFT_OFFSET_MASK, block)
        self.max_allocated = max(self.max_allocated, table_start + table_clusters)
        for i in range(old_clusters):
            self.queue_decref((old_offset >> self.cb) + i)
