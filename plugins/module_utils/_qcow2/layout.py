# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Geometry of an image (cluster, L2, refcount sizes) and decoding of L1/L2 entries."""

from __future__ import annotations

import sys
import typing
from array import array

from . import constants as C

if typing.TYPE_CHECKING:  # names used in annotations only
    from .header import Header

LITTLE_ENDIAN_HOST = sys.byteorder == "little"

# Cluster kinds, as qcow2_get_cluster_type() names them
UNALLOCATED = 0
ZERO_PLAIN = 1
ZERO_ALLOC = 2
NORMAL = 3
COMPRESSED = 4

L2_SLICE_BYTES = 4096  # qemu caches L2 tables in 4 KiB slices since 4.0


class Geometry:
    """Sizes derived from the header; shared by every part that maps offsets."""

    def __init__(self, header: Header) -> None:
        cb = header.cluster_bits
        self.cluster_bits = cb
        self.cluster_size = 1 << cb
        self.extended_l2 = header.extended_l2
        self.l2_entry_words = 2 if self.extended_l2 else 1
        self.l2_bits = cb - (4 if self.extended_l2 else 3)
        self.l2_entries = 1 << self.l2_bits
        self.l1_shift = cb + self.l2_bits  # guest bytes covered by one L1 entry = 1 << l1_shift
        self.subcluster_bits = cb - 5 if self.extended_l2 else cb
        self.subcluster_size = 1 << self.subcluster_bits
        self.slice_bytes = min(L2_SLICE_BYTES, self.cluster_size)
        self.slice_entries = self.slice_bytes // (8 * self.l2_entry_words)
        self.slices_per_table = self.l2_entries // self.slice_entries
        self.csize_shift = 62 - (cb - 8)
        self.csize_mask = (1 << (cb - 8)) - 1
        self.compressed_offset_mask = (1 << self.csize_shift) - 1
        self.refcount_order = header.refcount_order
        self.refcount_bits = 1 << header.refcount_order
        self.refcount_max = (1 << self.refcount_bits) - 1
        self.refblock_bits = cb + 3 - header.refcount_order
        self.refblock_entries = 1 << self.refblock_bits

    def size_to_l1(self, size: int) -> int:
        return -(-size // (1 << self.l1_shift))

    def size_to_clusters(self, size: int) -> int:
        return -(-size // self.cluster_size)

    def compressed_location(self, entry: int) -> tuple[int, int]:
        """(host byte offset, byte count to read) of a compressed cluster descriptor."""
        offset = entry & self.compressed_offset_mask
        sectors = ((entry >> self.csize_shift) & self.csize_mask) + 1
        return offset, sectors * C.COMPRESSED_SECTOR_SIZE - (offset & (C.COMPRESSED_SECTOR_SIZE - 1))

    def compressed_host_clusters(self, entry: int) -> range:
        """Host cluster indexes a compressed cluster's data touches (each holds one reference for it)."""
        offset, length = self.compressed_location(entry)
        first = offset >> self.cluster_bits
        last = (offset + length - 1) >> self.cluster_bits
        return range(first, last + 1)

    def compressed_entry(self, host_offset: int, length: int) -> int:
        sectors = ((host_offset + length - 1) >> 9) - (host_offset >> 9)
        return C.OFLAG_COMPRESSED | (sectors << self.csize_shift) | host_offset


def classify(entry: int, extended_l2: bool = False, has_data_file: bool = False) -> int:
    """qcow2_get_cluster_type() on one standard L2 entry (the first word with extended L2)."""
    if entry & C.OFLAG_COMPRESSED:
        return COMPRESSED
    if entry & C.OFLAG_ZERO and not extended_l2:
        return ZERO_ALLOC if entry & C.L2E_OFFSET_MASK else ZERO_PLAIN
    if not entry & C.L2E_OFFSET_MASK:
        if has_data_file and entry & C.OFLAG_COPIED:
            return NORMAL
        return UNALLOCATED
    return NORMAL


def be_array(raw: bytes | bytearray | memoryview, typecode: str = "Q") -> array:
    """Big-endian table bytes -> native array."""
    table = array(typecode)
    table.frombytes(raw)
    if LITTLE_ENDIAN_HOST and table.itemsize > 1:
        table.byteswap()
    return table


def array_to_be(table: array) -> bytes:
    """Native array -> big-endian bytes."""
    if LITTLE_ENDIAN_HOST and table.itemsize > 1:
        swapped = array(table.typecode, table)
        swapped.byteswap()
        return swapped.tobytes()
    return table.tobytes()


def nonzero_entries(table: array, chunk: int = 512) -> typing.Iterator[tuple[int, int]]:
    """(index, entry) of a table's non-zero entries; zero runs are skipped a chunk at a time (a 4M-entry L1
    is mostly zero, and a per-entry Python loop over it takes seconds)."""
    zero = array(table.typecode, bytes(chunk * table.itemsize))
    for start in range(0, len(table), chunk):
        part = table[start:start + chunk]
        if part == zero[:len(part)]:
            continue
        for i, entry in enumerate(part):
            if entry:
                yield start + i, entry
