# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Atomic changes of a whole metadata state: internal snapshot create/revert/delete, emptying an image.

These change the refcounts and OFLAG_COPIED of many clusters at once; done in place, a crash would
leave refcounts and flags disagreeing, which qemu-img check counts as corruption. Instead the new
state is written beside the old one: L2 tables whose flags must change are copied with the right
flags, and a new active L1, snapshot table and complete refcount structure go into fresh clusters.
Then ONE write of header bytes 24..79 (size, L1, refcount table, snapshot table, incompatible
features) switches from the old state to the new. Before that write the old state is untouched; after
it the new state is complete; the old structures are simply free clusters of the new one.
"""

from __future__ import annotations

import struct
import typing
from array import array

from . import constants as C
from .errors import CorruptionError, FormatError
from .header import OFFSET_SIZE
from .layout import COMPRESSED, NORMAL, ZERO_ALLOC, array_to_be, classify, nonzero_entries
from .refcount.references import CheckReport, MetadataState, ReferenceCounter, used_l2_indexes
from .refcount.structure import write_refcount_structure
from .snapshot_table import build_snapshot_table

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .image import Qcow2Image
    from .layout import Geometry
    from .refcount.references import RefMap
    from .snapshot_table import Snapshot


class PlannedState:
    """The metadata an operation wants. Snapshots needing a new L1 carry ``new_l1`` (list of L2 offsets)."""

    def __init__(self, size: int, active_l1: typing.Iterable[int], snapshots: list[Snapshot], clear_incompatible: int = 0) -> None:
        self.size = size
        self.active_l1 = array("Q", active_l1)  # L2 table offsets, 0 = none
        self.snapshots = snapshots
        self.clear_incompatible = clear_incompatible  # e.g. the dirty and corrupt bits after a repair


class _Bump:
    """Hands out fresh clusters past the end of everything in use."""

    def __init__(self, first: int) -> None:
        self.next = first

    def take(self, n: int) -> int:
        start = self.next
        self.next += n
        return start


def current_l2_offsets(img: Qcow2Image, l1_offset: int | None = None, l1_size: int | None = None) -> array.array:
    """The L2 table offsets of the active L1 (or of an L1 at l1_offset), flags masked off, as an array."""
    if l1_offset is not None:  # a snapshot's L1: qcow2_validate_table's checks before reading it
        if l1_offset % img.geo.cluster_size or l1_offset > C.MAX_CLUSTER_OFFSET:
            raise FormatError("Snapshot L1 table offset invalid", img.path, "snapshot l1_table_offset")
        if l1_size > C.MAX_L1_BYTES // 8:
            raise FormatError("Snapshot L1 table too large", img.path, "snapshot l1_size")
    l1 = img.l1 if l1_offset is None else ReferenceCounter(img, CheckReport()).read_l1(l1_offset, l1_size)
    offsets = array("Q", bytes(8 * len(l1)))
    for index, entry in nonzero_entries(l1):
        offsets[index] = entry & C.L1E_OFFSET_MASK
    return offsets


def apply_state(img: Qcow2Image, plan: PlannedState) -> None:
    """Write plan beside the current state and switch to it with one header write."""
    img._require_writable()
    if img.bitmaps is not None:
        img.bitmaps.finish()
    img.flush()
    geo = img.geo
    cs, cb = geo.cluster_size, geo.cluster_bits
    bump = _Bump(max(-(-img.file.size() // cs), img.refcounts.max_allocated))
    first_new = bump.next

    # 1. who references each L2 table and data cluster in the planned state (only tables' contents matter here)
    logical = ReferenceCounter(img, CheckReport(), nb_clusters=bump.next)
    tables_in_plan = [table for _index, table in nonzero_entries(plan.active_l1)]
    for sn in plan.snapshots:
        l2s = sn.new_l1 if getattr(sn, "new_l1", None) is not None else current_l2_offsets(img, sn.l1_table_offset, sn.l1_size)
        tables_in_plan.extend(table for _index, table in nonzero_entries(array("Q", l2s)))
    l2_refs = {}
    for table in tables_in_plan:
        l2_refs[table] = l2_refs.get(table, 0) + 1
    for table, n in l2_refs.items():
        for _unused in range(n):
            logical.count_l2(table, active=False)
    if logical.report.corruptions:
        raise CorruptionError("Refusing to change the metadata of %s: %s" % (img.path, logical.report.messages[0]), img.path)
    data_refs = logical.refs

    # 2. active L2 tables whose OFLAG_COPIED flags disagree with the planned refcounts get corrected copies
    active_tables = array("Q", plan.active_l1)
    for index, t in nonzero_entries(plan.active_l1):
        table = logical.read_l2(t)
        if _fix_copied_flags(table, geo, data_refs):
            copy = bump.take(1) << cb
            img.file.pwrite(array_to_be(table), copy)
            l2_refs[t] -= 1
            l2_refs[copy] = 1
            active_tables[index] = copy
    l1_entries = active_tables
    for index, t in nonzero_entries(active_tables):
        if l2_refs.get(t) == 1:
            l1_entries[index] = t | C.OFLAG_COPIED

    # 3. new active L1, new snapshot L1s, new snapshot table
    l1_size = len(l1_entries)
    l1_offset = _write_table(img, bump, l1_entries) if l1_size else 0
    snapshots = []
    for sn in plan.snapshots:
        sn = sn.copy()
        new_l1 = getattr(sn, "new_l1", None)
        if new_l1 is not None:
            sn.l1_table_offset = _write_table(img, bump, new_l1) if new_l1 else 0
            sn.l1_size = len(new_l1)
            del sn.new_l1
        snapshots.append(sn)
    snap_offset, snap_bytes = 0, 0
    if snapshots:
        raw = build_snapshot_table(snapshots)
        snap_bytes = len(raw)
        snap_offset = bump.take(-(-snap_bytes // cs)) << cb
        img.file.pwrite(raw, snap_offset)

    # 4. the complete refcounts of the new state, and a refcount structure holding them
    img.file.truncate(max(img.file.size(), bump.next << cb))
    state = MetadataState(l1_offset, l1_size, snapshots, snap_offset, snap_bytes, refblocks=False)
    counter = ReferenceCounter(img, CheckReport(), nb_clusters=bump.next)
    refs = counter.count_state(state)
    if counter.report.corruptions:
        img.file.truncate(first_new << cb)
        raise CorruptionError("Refusing to change the metadata of %s: %s" % (img.path, counter.report.messages[0]), img.path)
    table_offset, table_clusters, end = write_refcount_structure(img, refs, bump.next)
    img.file.truncate(max(img.file.size(), end << cb))
    img.file.flush()

    # 5. the switch
    hdr = img.header
    fields = struct.pack(">QIIQQIIQ", plan.size, hdr.crypt_method, l1_size, l1_offset, table_offset, table_clusters,
                         len(snapshots), snap_offset)
    if hdr.version >= 3:
        incompat = hdr.incompatible_features & ~plan.clear_incompatible
        fields += struct.pack(">Q", incompat)
    img.write_header_bytes(OFFSET_SIZE, fields)
    img.reload()


def _write_table(img: Qcow2Image, bump: _Bump, entries: array.array) -> int:
    cs = img.geo.cluster_size
    raw = array_to_be(array("Q", entries))  # one 8-byte word per entry; no per-entry bytes objects
    offset = bump.take(-(-len(raw) // cs)) << img.geo.cluster_bits
    img.file.pwrite(raw, offset)
    return offset


def _fix_copied_flags(table: array.array, geo: Geometry, data_refs: RefMap) -> bool:
    """Set OFLAG_COPIED exactly where the data cluster will have refcount 1; True if anything changed."""
    words = geo.l2_entry_words
    changed = False
    cb = geo.cluster_bits
    for i in used_l2_indexes(table, words, geo.l2_entries):
        entry = table[i * words]
        if not entry:
            continue
        kind = classify(entry, geo.extended_l2)
        if kind == COMPRESSED or kind not in (NORMAL, ZERO_ALLOC):
            continue
        offset = entry & C.L2E_OFFSET_MASK
        if not offset:
            continue
        want = data_refs.get(offset >> cb) == 1
        if bool(entry & C.OFLAG_COPIED) != want:
            table[i * words] = entry | C.OFLAG_COPIED if want else entry & ~C.OFLAG_COPIED
            changed = True
    return changed
