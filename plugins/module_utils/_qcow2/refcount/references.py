# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Counting every reference the metadata makes to host clusters (qemu's calculate_refcounts).

Used by check (compare with the refcounts on disk) and by metadata_commit (the refcounts a new state
must have). Problems found on the way are reported with qemu-img check's wording. RefMap holds the counts,
one per cluster of the file, sparse when the file is huge.
"""

from __future__ import annotations

import typing

from array import array

from .. import constants as C
from ..bitmaps import invalid_table_entry, read_table
from ..errors import Qcow2Error
from ..layout import COMPRESSED, NORMAL, UNALLOCATED, ZERO_ALLOC, be_array, classify, nonzero_entries

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from ..image import Qcow2Image
    from ..snapshot_table import Snapshot

DENSE_LIMIT = 8 << 20  # clusters; above this a dict keeps memory bounded for sparse hostile files


class RefMap:
    def __init__(self, nb_clusters: int) -> None:
        self.nb_clusters = nb_clusters
        if nb_clusters <= DENSE_LIMIT:
            self._dense = array("I", bytes(4 * nb_clusters))
            self._sparse = None
        else:
            self._dense = None
            self._sparse = {}

    def get(self, cluster: int) -> int:
        if self._dense is not None:
            return self._dense[cluster] if cluster < len(self._dense) else 0
        return self._sparse.get(cluster, 0)

    def inc(self, cluster: int, n: int = 1) -> int:
        if self._dense is not None:
            if cluster >= len(self._dense):
                self._dense.extend([0] * (cluster + 1 - len(self._dense)))
            self._dense[cluster] += n
            return self._dense[cluster]
        value = self._sparse.get(cluster, 0) + n
        self._sparse[cluster] = value
        return value

    def set(self, cluster: int, value: int) -> None:
        if self._dense is not None:
            if cluster >= len(self._dense):
                self._dense.extend([0] * (cluster + 1 - len(self._dense)))
            self._dense[cluster] = value
        elif value:
            self._sparse[cluster] = value
        else:
            self._sparse.pop(cluster, None)

    @property
    def size(self) -> int:
        """One past the highest cluster that may be non-zero."""
        if self._dense is not None:
            return len(self._dense)
        return max(self._sparse) + 1 if self._sparse else 0

    def highest_nonzero(self) -> int:
        if self._dense is not None:
            raw = self._dense.tobytes().rstrip(b"\0")
            return (len(raw) - 1) // 4 if raw else -1
        return max((k for k, v in self._sparse.items() if v), default=-1)

    def slice(self, start: int, end: int) -> array.array:
        """Counts for clusters [start, end) as an array('I')."""
        if self._dense is not None:
            part = self._dense[start:end]
            if len(part) < end - start:
                part.extend([0] * (end - start - len(part)))
            return part
        out = array("I", bytes(4 * (end - start)))
        for k, v in self._sparse_items(start, end):
            out[k - start] = v
        return out

    def any_in(self, start: int, end: int) -> bool:
        if self._dense is not None:
            return bool(self._dense[start:end].tobytes().strip(b"\0"))
        return any(v for _k, v in self._sparse_items(start, end))

    def _sparse_items(self, start: int, end: int) -> list[tuple[int, int]]:
        """(cluster, count) pairs in [start, end), walking whichever is smaller: the range or the dict."""
        if end - start < len(self._sparse):
            get = self._sparse.get
            return [(k, get(k)) for k in range(start, end) if get(k)]
        return [(k, v) for k, v in self._sparse.items() if start <= k < end and v]

    def used_groups(self, bits: int) -> list[int]:
        """Sorted g such that some cluster in [g << bits, (g + 1) << bits) has a non-zero count."""
        if self._dense is not None:
            step = 1 << bits
            return [g for g in range(-(-len(self._dense) // step)) if self.any_in(g * step, (g + 1) * step)]
        return sorted({k >> bits for k, v in self._sparse.items() if v})


_GROUP = 64  # entries compared at once against zeros


def used_l2_indexes(table: array.array, words: int, entries: int) -> typing.Iterator[int]:
    """Indexes of L2 entries that may be non-zero: groups of entries that are all zero are skipped at C speed."""
    raw = table.tobytes()
    step = _GROUP * words * 8
    zeros = bytes(step)
    for base in range(0, entries, _GROUP):
        if raw[base * words * 8:base * words * 8 + step] != zeros:
            yield from range(base, min(entries, base + _GROUP))


class CheckReport:
    """Counters and messages in qemu-img check's terms."""

    def __init__(self) -> None:
        self.corruptions = 0
        self.leaks = 0
        self.check_errors = 0
        self.corruptions_fixed = 0
        self.leaks_fixed = 0
        self.allocated_clusters = 0
        self.fragmented_clusters = 0
        self.compressed_clusters = 0
        self.image_end_offset = 0
        self.messages = []
        self.max_messages = 1000

    def say(self, message: str) -> None:
        if len(self.messages) < self.max_messages:
            self.messages.append(message)

    def corruption(self, message: str) -> None:
        self.corruptions += 1
        self.say(message)


class MetadataState:
    """Where the structures that hold references are, for the current image or a planned one."""

    def __init__(self, l1_table_offset: int, l1_size: int, snapshots: list[Snapshot], snapshots_offset: int,
                 snapshots_size: int, reftable_offset: int = 0, reftable_clusters: int = 0, refblocks: bool = True,
                 bitmaps: bool = True) -> None:
        self.l1_table_offset = l1_table_offset
        self.l1_size = l1_size
        self.snapshots = snapshots
        self.snapshots_offset = snapshots_offset
        self.snapshots_size = snapshots_size
        self.reftable_offset = reftable_offset
        self.reftable_clusters = reftable_clusters
        self.refblocks = refblocks  # count the refblocks the reftable points at
        self.bitmaps = bitmaps

    @classmethod
    def of(cls, img: Qcow2Image) -> MetadataState:
        hdr = img.header
        snaps = img.snapshot_list()
        return cls(hdr.l1_table_offset, hdr.l1_size, snaps, hdr.snapshots_offset,
                   getattr(img, "snapshot_table_bytes", 0) if snaps else 0,
                   hdr.refcount_table_offset, hdr.refcount_table_clusters)


class ReferenceCounter:
    def __init__(self, img: Qcow2Image, report: CheckReport, nb_clusters: int | None = None) -> None:
        self.img = img
        self.geo = img.geo
        self.file = img.file
        self.report = report
        self.file_len = img.file.size()
        cs = self.geo.cluster_size
        self.nb_clusters = nb_clusters if nb_clusters is not None else -(-self.file_len // cs)
        self.refs = RefMap(self.nb_clusters)
        self.has_data_file = img.header.incompatible_features & C.INCOMPAT_DATA_FILE != 0
        self.refcount_max = self.geo.refcount_max

    def inc(self, offset: int, size: int) -> None:
        """inc_refcounts(): one reference for every cluster [offset, offset+size) touches."""
        if size <= 0:
            return
        if offset + size - self.file_len >= self.geo.cluster_size:
            self.report.corruption("ERROR: counting reference for region exceeding the end of the file by one cluster "
                                   "or more: offset 0x%x size 0x%x" % (offset, size))
            return
        cb = self.geo.cluster_bits
        for cluster in range(offset >> cb, ((offset + size - 1) >> cb) + 1):
            if self.refs.get(cluster) >= self.refcount_max:
                self.report.corruption("ERROR: overflow cluster offset=0x%x" % (cluster << cb))
                continue
            self.refs.inc(cluster)

    def count_state(self, state: MetadataState, active_l2_override: dict[int, bytes] | None = None) -> RefMap:
        """Every reference of a metadata state; active_l2_override maps L1 index -> L2 table raw data."""
        cs = self.geo.cluster_size
        self.inc(0, cs)
        self.count_l1(state.l1_table_offset, state.l1_size, active=True)
        if self.has_data_file and state.snapshots:  # internal snapshots cannot share clusters of a data file
            self.report.corruption("ERROR %d snapshots in image with data file" % len(state.snapshots))
        for sn in state.snapshots:
            if sn.l1_table_offset % cs:
                self.report.corruption("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot "
                                       "table entry corrupted" % (sn.id_str, sn.name, sn.l1_table_offset))
                continue
            if sn.l1_size > C.MAX_L1_BYTES // 8:
                self.report.corruption("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry "
                                       "corrupted" % (sn.id_str, sn.name, sn.l1_size))
                continue
            self.count_l1(sn.l1_table_offset, sn.l1_size, active=False)
        if state.snapshots:
            self.inc(state.snapshots_offset, state.snapshots_size)
        if state.reftable_clusters:
            self.inc(state.reftable_offset, state.reftable_clusters * cs)
        if state.bitmaps:
            self.count_bitmaps()
        if state.refblocks:
            self.count_refblocks(state.reftable_offset, state.reftable_clusters)
        return self.refs

    def read_l1(self, offset: int, size: int) -> array.array:
        raw = self.file.pread(size * 8, offset)
        return be_array(raw + bytes(size * 8 - len(raw)))

    def count_l1(self, offset: int, size: int, active: bool) -> None:
        if not size:
            return
        self.inc(offset, size * 8)
        l1 = self.read_l1(offset, size)
        cs = self.geo.cluster_size
        for index, entry in nonzero_entries(l1):
            # qemu skips only entries that are all zero: one holding flags but no offset names cluster 0 (the
            # header) as its L2 table, and check counts and reads it as one (a read treats it as unallocated)
            l2 = entry & C.L1E_OFFSET_MASK
            if entry & C.L1E_RESERVED_MASK:
                self.report.corruption("ERROR found L1 entry with reserved bits set: %x" % entry)
            self.inc(l2, cs)
            if l2 & (cs - 1):  # qemu reports it and still reads the table where the entry says
                self.report.corruption("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted" % l2)
            self.count_l2(l2, active)

    def read_l2(self, offset: int) -> array.array:
        cs = self.geo.cluster_size
        raw = self.file.pread(cs, offset)
        return be_array(raw + bytes(cs - len(raw)))

    def count_l2(self, l2_offset: int, active: bool) -> None:
        geo = self.geo
        cs, ext, words = geo.cluster_size, geo.extended_l2, geo.l2_entry_words
        raw = self.file.pread(cs, l2_offset)
        if raw == bytes(len(raw)):
            return  # empty (or past the end of the file): nothing to count, skip the per-entry loop
        table = be_array(raw + bytes(cs - len(raw)))
        report = self.report
        next_contiguous = 0
        for i in used_l2_indexes(table, words, geo.l2_entries):
            entry = table[i * words]
            bitmap = table[i * 2 + 1] if ext else 0
            if not entry and not bitmap:
                continue
            kind = classify(entry, ext, self.has_data_file)
            if kind != COMPRESSED and entry & C.L2E_STD_RESERVED_MASK:
                report.corruption("ERROR found l2 entry with reserved bits set: %x" % entry)
            if ext and kind == UNALLOCATED:
                if bitmap & C.EXTL2_ALLOC_MASK:
                    report.corruption("ERROR: Unallocated cluster has non-zero subcluster allocation map")
            elif ext and kind != COMPRESSED and bitmap & C.EXTL2_ALLOC_MASK & (bitmap >> 32):
                report.corruption("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap"
                                  % (entry & C.L2E_OFFSET_MASK))
            if kind == COMPRESSED:  # qemu's order; an entry it cannot trust is not counted
                if entry & C.OFLAG_COPIED:
                    report.corruption("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters"
                                      % (entry & geo.compressed_offset_mask))
                if self.has_data_file:
                    report.corruption("ERROR compressed cluster %d with data file, entry=0x%x" % (i, entry))
                    continue
                if ext and bitmap:
                    report.corruption("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=0x%x"
                                      % (i, entry))
                    continue
                coffset, csize = geo.compressed_location(entry)
                if active:
                    report.allocated_clusters += 1
                    report.compressed_clusters += 1
                    report.fragmented_clusters += 1
                self.inc(coffset, csize)
            elif kind in (NORMAL, ZERO_ALLOC):
                offset = entry & C.L2E_OFFSET_MASK
                if offset & (cs - 1):  # qemu 7.2 reports it and still counts the range the entry names
                    has_data = bitmap & C.EXTL2_ALLOC_MASK if ext else kind == NORMAL
                    report.corruption("ERROR offset=%x: %s cluster is not properly aligned; L2 entry corrupted."
                                      % (offset, "Data" if has_data else "Preallocated"))
                if active:
                    report.allocated_clusters += 1
                    if next_contiguous and offset != next_contiguous:
                        report.fragmented_clusters += 1
                    next_contiguous = offset + cs
                if not self.has_data_file:
                    self.inc(offset, cs)

    def count_bitmaps(self) -> None:
        """qcow2_check_bitmaps_refcounts(): the directory, every loaded bitmap's table and its data clusters. A table
        holding an invalid entry cannot be loaded: one corruption, and qemu's check stops there (not completed)."""
        img = self.img
        ext = img.header.bitmaps_ext
        if not ext or not img.header.autoclear_features & C.AUTOCLEAR_BITMAPS:
            return
        self.inc(ext["bitmap_directory_offset"], ext["bitmap_directory_size"])
        cs = self.geo.cluster_size
        for bitmap in img.bitmap_trust.loaded():
            self.inc(bitmap.table_offset, bitmap.table_size * 8)
            try:
                table = read_table(img, bitmap)
            except Qcow2Error as exc:
                bad = "it cannot be read: %s" % exc
            else:
                found = invalid_table_entry(table, cs)
                bad = found and "entry %d (%#018x, at offset %#x) is invalid" % (
                    found[0], found[1], bitmap.table_offset + 8 * found[0])
            if bad:
                self.report.corruption("ERROR bitmap '%s': bitmap table at offset %#x: %s"
                                       % (bitmap.name, bitmap.table_offset, bad))
                self.report.check_errors += 1
                return
            for entry in table:
                offset = entry & C.BME_TABLE_ENTRY_OFFSET_MASK
                if offset:
                    self.inc(offset, cs)

    def count_refblocks(self, reftable_offset: int, reftable_clusters: int) -> None:
        cs = self.geo.cluster_size
        raw = self.file.pread(reftable_clusters * cs, reftable_offset)
        table = be_array(raw + bytes(reftable_clusters * cs - len(raw)))
        for i, entry in enumerate(table):
            offset = entry & C.REFT_OFFSET_MASK
            if entry & C.REFT_RESERVED_MASK:
                self.report.corruption("ERROR refcount table entry %d has reserved bits set" % i)
                continue
            if not offset:
                continue
            if offset & (cs - 1):
                self.report.corruption("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted" % i)
                continue
            if (offset >> self.geo.cluster_bits) >= self.nb_clusters:
                self.report.corruption("ERROR refcount block %d is outside image" % i)
                continue
            self.inc(offset, cs)
            count = self.refs.get(offset >> self.geo.cluster_bits)
            if count != 1:  # it overlaps other metadata or data (qemu's check_refblocks)
                self.report.corruption("ERROR refcount block %d refcount=%d" % (i, count))
