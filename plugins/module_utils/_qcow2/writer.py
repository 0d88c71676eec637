# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Guest writes: in place where a cluster is ours alone, else into newly allocated clusters.

Each new cluster is written whole (copy-on-write of what the guest saw before: older data, zeros,
the backing file or a decompressed cluster), gets refcount 1, and only then is entered in the L2
table with OFLAG_COPIED; the cluster it replaces loses its reference after the L2 change is on disk.
"""

from __future__ import annotations

import typing

from array import array

from . import constants as C
from .directio import aligned_bytearray
from .errors import InvalidArgumentError
from .layout import COMPRESSED, NORMAL, UNALLOCATED, ZERO_ALLOC, ZERO_PLAIN, classify
from .zeros import zero_bytes

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .errors import CorruptionError
    from .image import Qcow2Image
    from .refcount.table import Refcounts


def _metadata_overwrite(img: Qcow2Image, what: str, host: int) -> CorruptionError:
    """qemu's overlap check: refuse, rather than let an in-place write destroy other metadata (and mark the image
    corrupt, as qemu does)."""
    return img.corrupt("Preventing invalid write on metadata: %s would be written at host offset %#x, which holds "
                       "other metadata; the image is corrupt (qemu-img check finds it)" % (what, host))


def _mask(first: int, last: int) -> int:
    """Bits first..last (inclusive) set."""
    return ((1 << (last + 1)) - 1) ^ ((1 << first) - 1)


class ClusterWriter:
    def __init__(self, image: Qcow2Image) -> None:
        self.img = image
        self.geo = image.geo
        self.v3 = image.header.version >= 3
        # zero writes leave zero clusters even where nothing lies below: a layer whose backing file may later grow
        # under it (a commit into it) must still read zeros there, not what the commit brought
        self.keep_zeroes = False

    @property
    def refcounts(self) -> Refcounts:
        return self.img.refcounts

    # ---- L2 tables ----
    def writable_l2(self, l1_index: int) -> int:
        """Host offset of an L2 table the active image alone owns, allocating or copying it as needed."""
        img, geo = self.img, self.geo
        entry = img.l1[l1_index]
        old = img.l2_table_offset(l1_index)
        if old and entry & C.OFLAG_COPIED:
            if img.overlaps_metadata(old >> geo.cluster_bits, active_l2=False):
                raise _metadata_overwrite(img, "the L2 table for L1 index %d" % l1_index, old)
            return old
        new = self.refcounts.alloc(1) << geo.cluster_bits
        for s in range(geo.slices_per_table):
            if old:
                src = img.l2_slice(old, s)
                copy = array(src.typecode, src)
            else:
                copy = array("Q", bytes(geo.slice_bytes))
            img.l2cache.put_new(new + s * geo.slice_bytes, copy)
        if old:
            self.refcounts.queue_decref(old >> geo.cluster_bits)  # shared with a snapshot: it keeps the old one
        img.set_l1_entry(l1_index, new | C.OFLAG_COPIED)
        return new

    def _slices(self, start: int, end: int) -> typing.Iterator[tuple[array.array, int, int, int, int]]:
        """Yield (table, key, first index, span start, span end) for each L2 slice the range touches."""
        geo = self.geo
        cb = geo.cluster_bits
        pos = start
        while pos < end:
            table_offset = self.writable_l2(pos >> geo.l1_shift)
            cluster = pos >> cb
            in_table = cluster & (geo.l2_entries - 1)
            key = table_offset + (in_table // geo.slice_entries) * geo.slice_bytes
            table = self.img.l2cache.get(key)
            idx = in_table % geo.slice_entries
            span_end = min(end, (cluster - idx + geo.slice_entries) << cb)
            yield table, key, idx, pos, span_end
            pos = span_end

    def release(self, entry: int, kind: int) -> None:
        """Queue the decrement of whatever host clusters an entry referenced."""
        cb = self.geo.cluster_bits
        if kind == COMPRESSED:
            for cluster in self.geo.compressed_host_clusters(entry):
                self.refcounts.queue_decref(cluster)
        elif entry & C.L2E_OFFSET_MASK and kind in (NORMAL, ZERO_ALLOC):
            if entry & C.L2E_OFFSET_MASK & (self.geo.cluster_size - 1):
                return  # qemu: "Cannot free unaligned cluster"; the cluster around it is not this entry's to free
            self.refcounts.queue_decref((entry & C.L2E_OFFSET_MASK) >> cb)

    # ---- data writes ----
    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.write_many([(offset, data)])

    def write_many(self, pieces: typing.Sequence[tuple[int, bytes | bytearray | memoryview]]) -> None:
        """write() of several guest ranges. The clusters among them that need a new host cluster get it from one
        allocation and are written with one call: a copy of scattered clusters pays for one allocation and one write
        per batch instead of per cluster."""
        inplace = []  # (host offset, data view)
        pending = []  # clusters needing a new host cluster: (L2 slice key, index, cluster start, write start, write end,
        #               entry, bitmap, kind, data view)
        cb = self.geo.cluster_bits
        last_cluster = -1
        for offset, data in pieces:
            if offset >> cb <= last_cluster:  # a cluster met twice: the first write must be entered before the second
                self._write_sorted(inplace, pending)
                inplace, pending = [], []
            view = memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            n = len(view)
            if offset < 0 or offset + n > self.img.size:
                raise InvalidArgumentError("Write of %d bytes at offset %d is beyond the end of the %d-byte image %s"
                                           % (n, offset, self.img.size, self.img.path))
            if not n:
                continue
            last_cluster = max(last_cluster, (offset + n - 1) >> cb)
            if self.img.bitmaps is not None:
                self.img.bitmaps.mark_dirty(offset, n)
            for table, key, idx, start, end in self._slices(offset, offset + n):
                self._sort_slice(table, key, idx, start, end, view[start - offset:end - offset], inplace, pending)
        self._write_sorted(inplace, pending)

    def _write_sorted(self, inplace: list[tuple[int, memoryview]], pending: list[tuple]) -> None:
        if pending:
            self._allocate_and_write(pending)
        self._write_inplace(inplace)

    def _sort_slice(self, table: array.array, key: int, idx: int, start: int, end: int, view: memoryview,
                    inplace: list[tuple[int, memoryview]], pending: list[tuple]) -> None:
        """Sort the clusters of one L2 slice's span into writes in place (clusters the image alone owns) and
        clusters needing a new host cluster."""
        geo, img = self.geo, self.img
        cb, cs, ext = geo.cluster_bits, geo.cluster_size, geo.extended_l2
        words = geo.l2_entry_words
        pos = start
        while pos < end:
            cstart = (pos >> cb) << cb
            wend = min(end, cstart + cs)
            entry = table[idx * words]
            bitmap = table[idx * 2 + 1] if ext else 0
            kind = classify(entry, ext)
            part = view[pos - start:wend - start]
            if kind in (NORMAL, ZERO_ALLOC) and entry & C.OFLAG_COPIED and entry & C.L2E_OFFSET_MASK & (cs - 1):
                raise img.corrupt("Preallocated zero/data cluster offset %#x unaligned (guest offset: %#x)"
                                  % (entry & C.L2E_OFFSET_MASK, cstart))
            if kind == NORMAL and entry & C.OFLAG_COPIED:
                host = entry & C.L2E_OFFSET_MASK
                if img.overlaps_metadata(host >> cb):
                    raise _metadata_overwrite(img, "guest data at offset %d" % pos, host)
                if ext:
                    new_bitmap, write_at, data = self._subcluster_inplace(cstart, pos, wend, bitmap, part)
                    inplace.append((host + write_at, data))
                    if new_bitmap != bitmap:
                        table[idx * 2 + 1] = new_bitmap
                        img.l2cache.mark_dirty(key)
                else:
                    inplace.append((host + (pos - cstart), part))
            else:
                pending.append((key, idx, cstart, pos, wend, entry, bitmap, kind, part))
            pos = wend
            idx += 1

    def _write_inplace(self, items: list[tuple[int, memoryview]]) -> None:
        f = self.img.file
        run_host, run = None, []
        run_end = None
        for host, data in items:
            if run and host == run_end:
                run.append(data)
                run_end += len(data)
                continue
            if run:
                f.pwritev(run, run_host)
            run_host, run, run_end = host, [data], host + len(data)
        if run:
            f.pwritev(run, run_host)

    def _visible(self, cstart: int) -> bytearray:
        """What the guest reads in a whole cluster right now (copy-on-write source)."""
        cs = self.geo.cluster_size
        buf = aligned_bytearray(cs)
        inside = min(cs, self.img.size - cstart)
        self.img.read_into(memoryview(buf)[:inside], cstart)
        return buf

    def _allocate_and_write(self, pending: list[tuple]) -> None:
        """Give the pending clusters (see write_many) new host clusters, in one run: write them, then enter them."""
        geo, img = self.geo, self.img
        cb, cs, ext = geo.cluster_bits, geo.cluster_size, geo.extended_l2
        first = self.refcounts.alloc(len(pending))
        buffers = []
        for _key, _idx, cstart, ws, we, _entry, _bitmap, _kind, part in pending:
            if ws == cstart and we == cstart + cs:
                buffers.append(part)
            else:
                buf = self._visible(cstart)
                buf[ws - cstart:we - cstart] = part
                buffers.append(buf)
        img.file.pwritev(buffers, first << cb)
        table, table_key = None, None
        for i, (key, idx, cstart, ws, we, entry, bitmap, kind, _part) in enumerate(pending):
            if key != table_key:  # fetched again, not kept from the sorting: the cache may have dropped it while clean
                table, table_key = img.l2cache.get(key), key
            host = (first + i) << cb
            self.release(entry, kind)
            if ext:
                sb = geo.subcluster_bits
                touched = _mask((ws - cstart) >> sb, (we - 1 - cstart) >> sb)
                if kind == COMPRESSED:
                    alloc, zero = C.EXTL2_ALLOC_MASK, 0
                elif entry & C.L2E_OFFSET_MASK:
                    alloc, zero = bitmap & C.EXTL2_ALLOC_MASK, bitmap >> 32
                else:
                    alloc, zero = 0, bitmap >> 32
                table[idx * 2] = host | C.OFLAG_COPIED
                table[idx * 2 + 1] = (alloc | touched) | ((zero & ~touched) << 32)
            else:
                table[idx] = host | C.OFLAG_COPIED
            img.l2cache.mark_dirty(key)  # at once: fetching the next slice may make room by flushing the dirty ones

    def _subcluster_inplace(self, cstart: int, ws: int, we: int, bitmap: int, part: memoryview) -> tuple[int, int, memoryview]:
        """Write into an owned cluster with subclusters: unallocated partial subclusters get copy-on-write."""
        sb = self.geo.subcluster_bits
        first, last = (ws - cstart) >> sb, (we - 1 - cstart) >> sb
        alloc = bitmap & C.EXTL2_ALLOC_MASK
        zero = bitmap >> 32
        touched = _mask(first, last)
        new_bitmap = (alloc | touched) | ((zero & ~touched) << 32)
        head_partial = ws - cstart != first << sb and not alloc >> first & 1
        tail_partial = we - cstart != (last + 1) << sb and not alloc >> last & 1
        if not head_partial and not tail_partial:
            return new_bitmap, ws - cstart, part
        lo, hi = first << sb, (last + 1) << sb
        buf = self._visible(cstart)[lo:hi]
        buf[ws - cstart - lo:we - cstart - lo] = part
        return new_bitmap, lo, buf

    # ---- zero writes ----
    def write_zeroes(self, offset: int, length: int, unmap: bool = True) -> None:
        img, geo = self.img, self.geo
        end = offset + length
        if offset < 0 or end > img.size:
            raise InvalidArgumentError("Zero write beyond the end of image %s" % img.path)
        if not length:
            return
        gran = geo.subcluster_size if geo.extended_l2 else geo.cluster_size
        a = -(-offset // gran) * gran
        b = (end // gran) * gran
        if end == img.size:
            b = max(b, min(end, -(-end // gran) * gran))  # the last partial cluster is whole for the guest
        if a >= b:
            self.write(offset, zero_bytes(length))
            return
        if offset < a:
            self.write(offset, zero_bytes(a - offset))
        if b < end:
            self.write(b, zero_bytes(end - b))
        if img.bitmaps is not None:
            img.bitmaps.mark_dirty(a, b - a)
        if not self.v3:
            self._zero_v2(a, b)
        elif geo.extended_l2:
            self._zero_subclusters(a, b, unmap)
        else:
            self._zero_clusters(a, b, unmap)

    def _nothing_below(self, start: int, end: int) -> bool:
        if self.keep_zeroes:
            return False
        backing = self.img.backing
        return backing is None or start >= backing.size

    def _skip_unallocated_table(self, pos: int, end: int) -> int:
        """Where a whole L2 table is absent and nothing lies below, the range already reads zeros."""
        geo, img = self.geo, self.img
        l1_index = pos >> geo.l1_shift
        if img.l2_table_offset(l1_index) or not self._nothing_below(pos, end):
            return pos
        return min(end, (l1_index + 1) << geo.l1_shift)

    def _table_spans(self, start: int, end: int) -> typing.Iterator[tuple[int, int]]:
        """Per L1 entry: (start, end) spans that need zeroing, skipping absent tables with nothing below."""
        shift = self.geo.l1_shift
        pos = start
        while pos < end:
            span_end = min(end, ((pos >> shift) + 1) << shift)
            if self.img.l2_table_offset(pos >> shift) or not self._nothing_below(pos, span_end):
                yield pos, span_end
            pos = span_end

    def _clusters_in(self, s: int, e: int) -> int:
        cb = self.geo.cluster_bits
        return ((e - 1) >> cb) - (s >> cb) + 1

    def _zero_clusters(self, start: int, end: int, unmap: bool) -> None:
        for span_start, span_end in self._table_spans(start, end):
            for table, key, idx, s, e in self._slices(span_start, span_end):
                for i in range(idx, idx + self._clusters_in(s, e)):
                    entry = table[i]
                    kind = classify(entry)
                    if kind == ZERO_PLAIN:
                        continue
                    if not unmap and kind in (NORMAL, ZERO_ALLOC) and entry & C.OFLAG_COPIED:
                        table[i] = (entry & C.L2E_OFFSET_MASK) | C.OFLAG_COPIED | C.OFLAG_ZERO
                    else:
                        self.release(entry, kind)
                        table[i] = C.OFLAG_ZERO
                self.img.l2cache.mark_dirty(key)

    def _zero_subclusters(self, start: int, end: int, unmap: bool) -> None:
        geo = self.geo
        cb, sb, cs = geo.cluster_bits, geo.subcluster_bits, geo.cluster_size
        compressed_parts = []  # partly zeroed compressed clusters need a real copy-on-write
        for span_start, span_end in self._table_spans(start, end):
            for table, key, idx, s, e in self._slices(span_start, span_end):
                p = s
                i = idx
                while p < e:
                    cstart = (p >> cb) << cb
                    cend = min(e, cstart + cs)
                    entry, bitmap = table[2 * i], table[2 * i + 1]
                    kind = classify(entry, True)
                    touched = _mask((p - cstart) >> sb, (cend - 1 - cstart) >> sb)
                    if kind == COMPRESSED and touched != C.EXTL2_ALLOC_MASK:
                        compressed_parts.append((p, cend - p))
                    else:
                        alloc = bitmap & C.EXTL2_ALLOC_MASK & ~touched
                        zero = (bitmap >> 32) | touched
                        if kind == COMPRESSED or (entry & C.L2E_OFFSET_MASK and not alloc and unmap):
                            self.release(entry, kind)
                            entry = 0
                        table[2 * i] = entry
                        table[2 * i + 1] = alloc | (zero << 32)
                    p = cend
                    i += 1
                self.img.l2cache.mark_dirty(key)
        for offset, length in compressed_parts:
            self.write(offset, zero_bytes(length))

    def _zero_v2(self, start: int, end: int) -> None:
        """v2 has no zero flag: drop clusters where nothing lies below, write zeros elsewhere."""
        cb, cs = self.geo.cluster_bits, self.geo.cluster_size
        for span_start, span_end in self._table_spans(start, end):
            pos = span_start
            while pos < span_end:
                cend = min(span_end, ((pos >> cb) + 1) << cb)
                whole = cend - pos == cs or cend == self.img.size
                if whole and self._nothing_below(pos, cend):
                    for table, key, idx, s, e in self._slices(pos, cend):
                        entry = table[idx]
                        kind = classify(entry)
                        if kind != UNALLOCATED:
                            self.release(entry, kind)
                            table[idx] = 0
                            self.img.l2cache.mark_dirty(key)
                else:
                    self.write(pos, zero_bytes(cend - pos))
                pos = cend
