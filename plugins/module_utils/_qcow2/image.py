# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""An open qcow2 image: header, L1/L2 mapping, guest reads, and the ordered flush of metadata.

Guest writes live in writer.py, refcounts in refcount/table.py. The flush order is the one that makes a
crash at any point leave at worst leaked clusters: data, refcount blocks, L2 tables, L1 table, header,
then the refcount decrements of clusters whose last reference was dropped.
"""

from __future__ import annotations

import re
import typing

from . import constants as C
from . import directio, locking
from .compression import decompress_cluster
from .errors import CorruptionError, FormatError, InvalidArgumentError, Qcow2Error, ReadOnlyError, UnsupportedError
from .fileio import BlockFile
from .header import OFFSET_AUTOCLEAR, OFFSET_INCOMPAT, Header, NeedMoreData
from .layout import (COMPRESSED, NORMAL, UNALLOCATED, ZERO_ALLOC, ZERO_PLAIN, Geometry, array_to_be, be_array, classify,
                     nonzero_entries)
from .lru import MetadataCache
from .zeros import fill_zero

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from array import array

    from .snapshot_table import Snapshot

# Extent kinds returned by extents(): what a guest read of that range returns
DATA = "data"  # host bytes at ``host``
ZERO = "zero"  # zeros, no matter what lies below
UNALLOC = "unallocated"  # whatever the backing file (or zeros past it) says
COMP = "compressed"  # ``host`` is the compressed cluster descriptor

L2_CACHE_BYTES = 8 << 20
RESERVE_STEP = 8 << 20
RESERVE_MAX_STEP = 256 << 20


_NONZERO = re.compile(b"[^\x00]")


class Extent:
    __slots__ = ("offset", "length", "kind", "host")

    def __init__(self, offset: int, length: int, kind: str, host: int) -> None:
        self.offset = offset
        self.length = length
        self.kind = kind
        self.host = host

    @property
    def end(self) -> int:
        return self.offset + self.length

    def __repr__(self) -> str:
        return "Extent(%d, %d, %s, %s)" % (self.offset, self.length, self.kind, self.host)


def _append(out: list[Extent], offset: int, length: int, kind: str, host: int) -> None:
    if out:
        last = out[-1]
        if last.kind == kind and last.end == offset and kind != COMP and (kind != DATA or last.host + last.length == host):
            last.length += length
            return
    out.append(Extent(offset, length, kind, host))


class Qcow2Image:
    """One qcow2 file. ``backing`` is set by the chain opener (chain.py)."""

    format_name = "qcow2"

    def __init__(self, path: str, writable: bool = False, force_share: bool = False, check_mode: bool = False,
                 l2_cache_bytes: int = L2_CACHE_BYTES) -> None:
        if writable and force_share:
            raise InvalidArgumentError("force_share is only allowed for read-only access")
        self.path = path
        self.writable = writable
        self.backing = None
        self.data_file = None
        self.refcounts = None
        self.writer = None
        self.snapshots_cache = None
        self.bitmaps = None  # the BitmapTracker of a writable image with trusted enabled bitmaps
        self.bitmap_trust = None  # bitmaps.BitmapAssessment: which bitmaps qemu would trust, and why not
        self.marked_corrupt = False
        self._flushing = False
        self._closed = False
        self._meta_singles = None
        self._meta_refblocks = None
        self._meta_ranges = None
        self._l1_dirty_sectors = set()
        self._decompressed = (None, None)
        self._reserved_end = 0
        self._size_at_open = None
        self.ordered_flushes = True
        self.file = BlockFile(path, writable)
        try:
            self.locked = False if force_share else locking.acquire(self.file.fd, path, writable)
            self._load_header(check_mode)
            self.l2cache = MetadataCache(max(2 * self.geo.slices_per_table, l2_cache_bytes // self.geo.slice_bytes),
                                         self._load_slice, self._store_slice, self.flush)
            self._refuse_what_qemu_refuses(check_mode)
            if writable:
                self._open_for_write(check_mode)
        except BaseException:
            self.file.close()
            raise

    # ---- opening ----
    def _load_header(self, check_mode: bool) -> None:
        head = self.file.pread(4096, 0)
        if len(head) < 24 or head[:4] != C.QCOW_MAGIC:
            raise FormatError("Image is not in qcow2 format", self.path, "magic")
        head += bytes(4096 - len(head))  # a header cut by the end of the file: qemu reads zeros there
        try:
            self.header = Header.parse(head, self.path)
        except NeedMoreData:
            cluster_bits = int.from_bytes(head[20:24], "big")  # validated (9..21) before NeedMoreData
            cluster0 = self.file.pread(1 << cluster_bits, 0)
            # a file shorter than its first cluster: qemu reads the missing bytes as zeros (an end marker)
            self.header = Header.parse(cluster0 + bytes((1 << cluster_bits) - len(cluster0)), self.path)
        hdr = self.header
        if hdr.refcount_table_clusters == 0 and not check_mode:
            raise FormatError("Image does not contain a reference count table", self.path, "refcount_table_clusters")
        if hdr.incompatible_features & C.INCOMPAT_DATA_FILE and not hdr.data_file:
            raise FormatError("Image uses an external data file but names none", self.path, "data file")
        if hdr.autoclear_features & C.AUTOCLEAR_DATA_FILE_RAW and not hdr.incompatible_features & C.INCOMPAT_DATA_FILE:
            raise FormatError("data-file-raw requires a data file", self.path, "autoclear_features")
        self.geo = Geometry(hdr)
        self.size = hdr.size - hdr.size % 512  # qemu counts whole 512-byte sectors only
        self._l1 = None  # read on first use: info and chain walks never need it

    def _refuse_what_qemu_refuses(self, check_mode: bool) -> None:
        """qemu reads the snapshot table (except in check mode, where check reports on it) and loads the persistent
        bitmaps when it opens an image, and refuses the image if either is broken: so does the engine."""
        if not check_mode:
            from .snapshot_table import check_snapshot_table
            check_snapshot_table(self)
        self._assess_bitmaps()
        if self.bitmap_trust.refusal is not None:
            raise self.bitmap_trust.refusal

    def _assess_bitmaps(self) -> None:
        from .bitmaps import BitmapAssessment, assess
        self.bitmap_trust = assess(self) if self.header.bitmaps_ext else BitmapAssessment()

    @property
    def l1(self) -> array:
        if self._l1 is None:
            hdr = self.header
            raw = self.file.pread(hdr.l1_size * 8, hdr.l1_table_offset) if hdr.l1_size else b""
            if len(raw) < hdr.l1_size * 8:
                raw += bytes(hdr.l1_size * 8 - len(raw))
            self._l1 = be_array(raw)
        return self._l1

    @l1.setter
    def l1(self, table: array) -> None:
        self._l1 = table

    def _open_for_write(self, check_mode: bool) -> None:
        hdr = self.header
        if hdr.incompatible_features & C.INCOMPAT_CORRUPT and not check_mode:
            raise ReadOnlyError("qcow2: Image is corrupt; cannot be opened read/write", self.path)
        if hdr.incompatible_features & C.INCOMPAT_DATA_FILE:
            raise UnsupportedError("Writing images with an external data file is not supported", self.path)
        self._attach_write_machinery()
        if check_mode:
            return
        self._clear_autoclear_on_write()
        if hdr.incompatible_features & C.INCOMPAT_DIRTY:
            # qemu repairs a dirty image before writing to it; so do we (refcounts rebuilt, dirty bit cleared)
            from .check import check_image
            report = check_image(self, repair="all")
            if report.corruptions:
                raise ReadOnlyError("Image %s was not cleanly closed and its refcounts could not be repaired: %s"
                                    % (self.path, report.messages[:1]), self.path)

    def _attach_write_machinery(self) -> None:
        from .refcount.table import Refcounts
        from .writer import ClusterWriter
        self.refcounts = Refcounts(self)
        self.writer = ClusterWriter(self)
        self._attach_tracker()

    def _attach_tracker(self) -> None:
        from .bitmaps import BitmapTracker
        trusted = self.bitmap_trust.trusted()
        self.bitmaps = BitmapTracker(self, self.bitmap_trust) if any(b.enabled for b in trusted) else None

    def reload_bitmaps(self) -> None:
        """Judge the bitmaps again after their directory changed (bitmap_store, resize), and track the enabled ones."""
        self._assess_bitmaps()
        if self.writable:
            self._attach_tracker()

    def _clear_autoclear_on_write(self) -> None:
        """A writer must clear autoclear bits it does not know, and a bitmaps extension without its bit is stale."""
        hdr = self.header
        stale_bitmaps = hdr.bitmaps_ext is not None and not hdr.autoclear_features & C.AUTOCLEAR_BITMAPS
        unknown = hdr.autoclear_features & ~C.AUTOCLEAR_MASK
        if stale_bitmaps:
            hdr.bitmaps_ext = None
        if unknown:
            hdr.autoclear_features &= C.AUTOCLEAR_MASK
        if stale_bitmaps:
            self.rewrite_header()
        elif unknown:
            self.write_header_bytes(OFFSET_AUTOCLEAR, hdr.autoclear_features.to_bytes(8, "big"))

    def reload(self) -> None:
        """Re-read everything from disk after a metadata switch (metadata_commit.apply_state)."""
        self._l1_dirty_sectors.clear()
        self._decompressed = (None, None)
        self.snapshots_cache = None
        self.invalidate_metadata_map()
        self._load_header(check_mode=True)
        self.l2cache.clear()
        self._assess_bitmaps()
        if self.writable:
            self._attach_write_machinery()

    # ---- geometry ----
    @property
    def cluster_size(self) -> int:
        return self.geo.cluster_size

    @property
    def backing_filename(self) -> str | None:
        return self.header.backing_file

    @property
    def backing_format(self) -> str | None:
        return self.header.backing_format

    @property
    def has_data_file(self) -> bool:
        return self.data_file is not None

    # ---- L2 access ----
    def l2_table_offset(self, l1_index: int) -> int:
        """Host offset of the L2 table for an L1 index, 0 if unallocated."""
        if l1_index >= len(self.l1):
            return 0
        offset = self.l1[l1_index] & C.L1E_OFFSET_MASK
        if offset & (self.geo.cluster_size - 1):
            raise self.corrupt("L2 table offset %#x unaligned (L1 index: %#x, active L1 entry at file offset %#x)"
                               % (offset, l1_index, self.header.l1_table_offset + 8 * l1_index))
        return offset

    def _load_slice(self, key: int) -> array:
        raw = self.file.pread(self.geo.slice_bytes, key)
        if len(raw) < self.geo.slice_bytes:
            raw += bytes(self.geo.slice_bytes - len(raw))
        return be_array(raw)

    def _store_slice(self, key: int, table: array) -> None:
        self.file.pwrite(array_to_be(table), key)

    def l2_slice(self, table_offset: int, slice_index: int) -> array:
        return self.l2cache.get(table_offset + slice_index * self.geo.slice_bytes)

    # ---- mapping ----
    def extents(self, offset: int, length: int) -> list[Extent]:
        """Guest ranges in [offset, offset+length) by what a read returns (clamped to the virtual size)."""
        geo = self.geo
        cb = geo.cluster_bits
        ext = geo.extended_l2
        words = geo.l2_entry_words
        has_df = self.data_file is not None
        end = min(offset + length, self.size)
        out = []
        pos = offset
        while pos < end:
            l1_index = pos >> geo.l1_shift
            table_offset = self.l2_table_offset(l1_index)
            if not table_offset:
                nxt = min(end, (l1_index + 1) << geo.l1_shift)
                _append(out, pos, nxt - pos, UNALLOC, 0)
                pos = nxt
                continue
            cluster = pos >> cb
            in_table = cluster & (geo.l2_entries - 1)
            table = self.l2_slice(table_offset, in_table // geo.slice_entries)
            idx = in_table % geo.slice_entries
            slice_end = min(end, (cluster - idx + geo.slice_entries) << cb)
            raw = None
            while pos < slice_end:
                cluster_start = (pos >> cb) << cb
                entry = table[idx * words]
                if not entry and not (ext and table[idx * 2 + 1]):
                    # a run of empty entries: find its end with one C-level scan instead of entry by entry (and
                    # without copying the rest of the slice, as many runs in one slice would)
                    if raw is None:
                        raw = table.tobytes()
                    found = _NONZERO.search(raw, idx * 8 * words)
                    nxt = found.start() // (8 * words) if found else len(raw) // (8 * words)
                    run_end = min(slice_end, cluster_start + ((nxt - idx) << cb))
                    _append(out, pos, run_end - pos, UNALLOC, 0)
                    pos = run_end
                    idx = nxt
                    continue
                cend = min(slice_end, cluster_start + geo.cluster_size)
                kind = classify(entry, ext, has_df)
                if kind in (ZERO_PLAIN, ZERO_ALLOC) and self.header.version < 3:
                    raise self.corrupt("Zero cluster entry found in pre-v3 image (%s)"
                                       % self._l2_entry_at(table_offset, cluster_start))
                if kind in (NORMAL, ZERO_ALLOC):
                    self._check_host_offset(entry, kind, cluster_start, table_offset)
                if ext and kind != COMPRESSED:
                    self._subcluster_extents(out, pos, cend, cluster_start, entry, table[idx * 2 + 1], kind,
                                             table_offset)
                elif kind == NORMAL:
                    _append(out, pos, cend - pos, DATA, (entry & C.L2E_OFFSET_MASK) + (pos - cluster_start))
                elif kind == UNALLOCATED:
                    _append(out, pos, cend - pos, UNALLOC, 0)
                elif kind == COMPRESSED:
                    if has_df:
                        raise self.corrupt("Compressed cluster entry found in image with external data file (%s)"
                                           % self._l2_entry_at(table_offset, cluster_start))
                    _append(out, pos, cend - pos, COMP, entry)
                else:
                    _append(out, pos, cend - pos, ZERO, 0)
                pos = cend
                idx += 1
        return out

    def _l2_entry_at(self, table_offset: int, guest_offset: int) -> str:
        """Where an L2 entry lives, for error messages: its table, index and file offset."""
        index = (guest_offset >> self.geo.cluster_bits) & (self.geo.l2_entries - 1)
        return "L2 offset: %#x, L2 index: %#x, entry at file offset %#x, guest offset %#x" % (
            table_offset, index, table_offset + 8 * self.geo.l2_entry_words * index, guest_offset)

    def _check_host_offset(self, entry: int, kind: int, cluster_start: int, table_offset: int) -> None:
        """qcow2_get_host_offset(): a cluster with a host offset must name a whole cluster (preallocated zero
        clusters too, though they read as zeros), and with an external data file, the cluster at the guest offset."""
        host = entry & C.L2E_OFFSET_MASK
        if host & (self.geo.cluster_size - 1):
            what = "Preallocated zero cluster" if kind == ZERO_ALLOC else "Cluster"
            raise self.corrupt("%s allocation offset %#x unaligned (%s)"
                               % (what, host, self._l2_entry_at(table_offset, cluster_start)))
        if self.data_file is not None and host != cluster_start:
            raise self.corrupt("External data file host cluster offset %#x does not match guest cluster offset %#x (%s)"
                               % (host, cluster_start, self._l2_entry_at(table_offset, cluster_start)))

    def _subcluster_extents(self, out: list[Extent], pos: int, cend: int, cluster_start: int, entry: int, bitmap: int, kind: int,
                            table_offset: int) -> None:
        alloc = bitmap & C.EXTL2_ALLOC_MASK
        zero = bitmap >> 32
        if alloc & zero or (kind == UNALLOCATED and alloc):
            raise self.corrupt("Invalid cluster entry found: subcluster bitmap %#x (%s)"
                               % (bitmap, self._l2_entry_at(table_offset, cluster_start)))
        host = entry & C.L2E_OFFSET_MASK
        sb = self.geo.subcluster_bits
        while pos < cend:
            sc = (pos - cluster_start) >> sb
            send = min(cend, cluster_start + ((sc + 1) << sb))
            if alloc >> sc & 1:
                _append(out, pos, send - pos, DATA, host + (pos - cluster_start))
            elif zero >> sc & 1:
                _append(out, pos, send - pos, ZERO, 0)
            else:
                _append(out, pos, send - pos, UNALLOC, 0)
            pos = send

    def cluster_entry(self, guest_offset: int) -> tuple[int, int]:
        """(standard entry, bitmap) of the cluster holding guest_offset; (0, 0) when no L2 table."""
        geo = self.geo
        table_offset = self.l2_table_offset(guest_offset >> geo.l1_shift)
        if not table_offset:
            return 0, 0
        in_table = (guest_offset >> geo.cluster_bits) & (geo.l2_entries - 1)
        table = self.l2_slice(table_offset, in_table // geo.slice_entries)
        idx = in_table % geo.slice_entries
        if geo.extended_l2:
            return table[idx * 2], table[idx * 2 + 1]
        return table[idx], 0

    # ---- reads ----
    def read(self, offset: int, length: int) -> bytearray:
        buf = directio.aligned_bytearray(length)
        self.read_into(memoryview(buf), offset)
        return buf

    def read_into(self, view: memoryview, offset: int) -> None:
        """Fill view with guest data from offset; past the virtual size reads zeros."""
        self.read_many([(view, offset)])

    def read_many(self, pieces: typing.Sequence[tuple[memoryview, int]]) -> None:
        """read_into() of several (view, guest offset) pieces, the data that lies one after the other in the file read
        with one request (a copy of scattered clusters written in guest order: one per buffer, not per cluster)."""
        group: list[memoryview] = []  # views of consecutive host bytes from group_host on, not read yet
        group_host = group_end = -1
        data_file = self.data_file or self.file
        for view, offset in pieces:
            length = len(view)
            covered = 0
            for ext in self.extents(offset, length):
                dst = view[ext.offset - offset:ext.end - offset]
                if ext.kind == DATA:
                    if ext.host != group_end:
                        if group:
                            data_file.read_views_into(group, group_host)
                        group, group_host = [], ext.host
                    group.append(dst)
                    group_end = ext.host + ext.length
                elif ext.kind == ZERO:
                    fill_zero(dst)
                elif ext.kind == UNALLOC:
                    self.read_backing_into(dst, ext.offset)
                else:
                    data = self._decompress(ext.host)
                    start = ext.offset & (self.geo.cluster_size - 1)
                    dst[:] = data[start:start + ext.length]
                covered = ext.end - offset
            if covered < length:
                fill_zero(view[covered:])
        if group:
            data_file.read_views_into(group, group_host)

    def read_backing_into(self, view: memoryview, offset: int) -> None:
        """What an unallocated range reads: the backing file, zeros past its end or without one."""
        backing = self.backing
        if backing is None or offset >= backing.size:
            fill_zero(view)
            return
        inside = min(len(view), backing.size - offset)
        backing.read_into(view[:inside], offset)
        if inside < len(view):
            fill_zero(view[inside:])

    def _decompress(self, entry: int) -> bytes:
        if self._decompressed[0] == entry:
            return self._decompressed[1]
        host, length = self.geo.compressed_location(entry)
        raw = self.file.pread(length, host)
        data = decompress_cluster(raw, self.geo.cluster_size, self.header.compression_type, self.path)
        self._decompressed = (entry, data)
        return data

    def corrupt(self, message: str) -> CorruptionError:
        """qcow2_signal_corruption(): a read or write met corrupt metadata. qemu refuses the access and, on an image
        open for writing, sets the corrupt bit so that nothing writes to the image until check -r repairs it, and
        stops using it; so does the engine (a v2 image has no such bit). Returns the CorruptionError to raise."""
        if self.writable and not self.marked_corrupt:
            self.marked_corrupt = True
            if self.header.version >= 3:
                self.header.incompatible_features |= C.INCOMPAT_CORRUPT
                self.file.pwrite(self.header.incompatible_features.to_bytes(8, "big"), OFFSET_INCOMPAT)
                self.file.flush()
                message += "; the image is now marked corrupt (repair it with check -r all)"
        return CorruptionError(message, self.path)

    # ---- writes (delegated) ----
    def _require_writable(self) -> None:
        if not self.writable or self.writer is None:
            raise ReadOnlyError("Image %s is open read-only" % self.path, self.path)
        if self.marked_corrupt:
            raise ReadOnlyError("Image %s is corrupt; it cannot be written until it is repaired" % self.path, self.path)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._require_writable()
        self.writer.write(offset, data)

    def write_many(self, pieces: typing.Sequence[tuple[int, bytes | bytearray | memoryview]]) -> None:
        """write() of several ranges; the clusters they newly allocate come from one allocation (writer.py)."""
        self._require_writable()
        self.writer.write_many(pieces)

    def write_zeroes(self, offset: int, length: int, unmap: bool = True) -> None:
        self._require_writable()
        self.writer.write_zeroes(offset, length, unmap)

    # ---- metadata bookkeeping used by the writer ----
    def set_l1_entry(self, index: int, value: int) -> None:
        self.l1[index] = value
        self._l1_dirty_sectors.add((index * 8) // 512)
        if self._meta_singles is not None and value & C.L1E_OFFSET_MASK:
            self._meta_singles.add((value & C.L1E_OFFSET_MASK) >> self.geo.cluster_bits)

    def overlaps_metadata(self, cluster: int, active_l2: bool = True) -> bool:
        """True if a cluster holds known metadata (qemu's 'cached' overlap check before allocation or an
        in-place write). active_l2=False leaves the active L2 tables out (for rewriting one in place)."""
        if self._meta_singles is None:
            self._build_metadata_map()
        if cluster in (self._meta_singles if active_l2 else self._meta_refblocks):
            return True
        for start, end in self._meta_ranges:
            if start <= cluster < end:
                return True
        return False

    def _build_metadata_map(self) -> None:
        hdr, cb, cs = self.header, self.geo.cluster_bits, self.geo.cluster_size
        ranges = [(0, 1)]

        def add_range(offset: int, nbytes: int) -> None:
            if offset and nbytes:
                ranges.append((offset >> cb, (offset + nbytes + cs - 1) >> cb))

        add_range(hdr.l1_table_offset, hdr.l1_size * 8)
        add_range(hdr.refcount_table_offset, hdr.refcount_table_clusters * cs)
        if hdr.nb_snapshots:
            add_range(hdr.snapshots_offset, self._snapshot_table_bytes())
            for sn in self.snapshot_list():
                add_range(sn.l1_table_offset, sn.l1_size * 8)
        if hdr.bitmaps_ext:
            add_range(hdr.bitmaps_ext["bitmap_directory_offset"], hdr.bitmaps_ext["bitmap_directory_size"])
        singles = set()
        for _index, entry in nonzero_entries(self.l1):
            if entry & C.L1E_OFFSET_MASK:
                singles.add((entry & C.L1E_OFFSET_MASK) >> cb)
        refblocks = set()
        if self.refcounts is not None:
            for entry in self.refcounts.table:
                if entry & C.REFT_OFFSET_MASK:
                    refblocks.add((entry & C.REFT_OFFSET_MASK) >> cb)
        self._meta_singles = singles | refblocks
        self._meta_refblocks = refblocks
        self._meta_ranges = ranges

    def note_refblock(self, cluster: int) -> None:
        """A new refcount block now lives in cluster (keeps the overlap check current without a rebuild)."""
        if self._meta_singles is not None:
            self._meta_singles.add(cluster)
            self._meta_refblocks.add(cluster)

    def invalidate_metadata_map(self) -> None:
        self._meta_singles = None
        self._meta_ranges = None

    def _snapshot_table_bytes(self) -> int:
        from .snapshot_table import snapshot_table_size
        return snapshot_table_size(self)

    def snapshot_list(self) -> list[Snapshot]:
        if self.snapshots_cache is None:
            from .snapshot_table import read_snapshot_table
            self.snapshots_cache = read_snapshot_table(self)
        return self.snapshots_cache

    # ---- flushing and closing ----
    def write_header_bytes(self, offset: int, data: bytes) -> None:
        """Rewrite a few header bytes in place (one write inside the first sector), durably."""
        self._require_writable()
        self.file.pwrite(data, offset)
        self.file.flush()

    def rewrite_header(self) -> None:
        """Write cluster 0 from self.header (extensions and backing name included), durably."""
        self._require_writable()
        data = self.header.build()
        old_end = self._header_used_bytes()
        if old_end > len(data):
            data += bytes(old_end - len(data))
        self.file.pwrite(data, 0)
        self.file.flush()

    def _header_used_bytes(self) -> int:
        hdr = self.header
        if hdr.backing_file_offset:
            return hdr.backing_file_offset + hdr.backing_file_size
        return min(self.geo.cluster_size, 4096)

    def flush(self) -> None:
        """Write back metadata in crash-safe order; frees take effect only at the end.

        With ordered_flushes off (a new image nobody can see yet, renamed into place after one final flush),
        the barriers between the steps are skipped: only the end state has to be durable."""
        if not self.writable or self._flushing or self.refcounts is None or self._closed or self.marked_corrupt:
            return  # a corrupt image is not written to any more (qemu drops its driver)
        self._flushing = True
        try:
            f = self.file
            refcounts = self.refcounts
            needed = refcounts.max_allocated * self.geo.cluster_size
            if needed > f.size():
                f.truncate(needed)  # every refcounted cluster must lie inside the file
            barrier = f.flush if self.ordered_flushes else f.drain
            # new data and the refcounts that count it (only increments here: decrements wait for the last step) may
            # reach the disk in either order, a crash between leaving at worst a leak; both must before an L2 entry
            # points there: one barrier for the two
            if refcounts.dirty:
                refcounts.write_dirty()
                barrier()
            elif f.data_written:
                barrier()
            if self.l2cache.dirty:
                self.l2cache.write_dirty()
                barrier()
            if self._l1_dirty_sectors:
                raw = array_to_be(self.l1)
                for sector in sorted(self._l1_dirty_sectors):
                    f.pwrite(raw[sector * 512:(sector + 1) * 512], self.header.l1_table_offset + sector * 512)
                self._l1_dirty_sectors.clear()
                barrier()
            if refcounts.pending_decrefs:
                for cluster in refcounts.apply_pending():
                    self.forget_cluster(cluster)
                refcounts.write_dirty()
                barrier()
        finally:
            self._flushing = False

    def reserve_file(self, end: int) -> None:
        """Extend the file ahead of new clusters in large steps: writes inside the file's size are several times
        faster than writes that extend it a little at a time. close() trims what was not used."""
        if end <= self._reserved_end:
            return
        current = max(self._reserved_end, self.file.size())
        if end <= current:
            self._reserved_end = current
            return
        step = min(RESERVE_MAX_STEP, max(RESERVE_STEP, current // 8))
        target = -(-max(end, current + step) // self.geo.cluster_size) * self.geo.cluster_size
        if self._size_at_open is None:
            self._size_at_open = self.file.size()
        self.file.reserve(current, target - current)
        self._reserved_end = target

    def _trim_reserve(self) -> None:
        if self._size_at_open is None or self.refcounts is None:
            return
        # never cut what was written, even where hostile metadata pointed past every allocated cluster
        keep = max(self._size_at_open, self.refcounts.max_allocated * self.geo.cluster_size, self.file.written_end)
        if self.file.size() > keep:
            self.file.truncate(keep)

    def forget_cluster(self, cluster: int) -> None:
        """A cluster was freed: drop cached metadata that lived in it."""
        key = cluster << self.geo.cluster_bits
        for i in range(self.geo.slices_per_table):
            self.l2cache.drop(key + i * self.geo.slice_bytes)
        if self._meta_singles is not None:
            self._meta_singles.discard(cluster)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self.writable and not self.marked_corrupt:
                if self.bitmaps is not None:
                    self.bitmaps.finish()
                self.flush()
                self._trim_reserve()
        finally:
            self._closed = True
            if self.locked:
                locking.release(self.file.fd)
            self.file.close()
            if self.data_file is not None:
                self.data_file.close()

    def __enter__(self) -> Qcow2Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Qcow2Image(%r)" % self.path


def probe_is_qcow2(path: str) -> bool:
    """True if the file starts with qcow2's magic (used only to refuse silent probing)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == C.QCOW_MAGIC
    except OSError as exc:
        raise Qcow2Error("Could not open '%s': %s" % (path, exc.strerror), path) from None
