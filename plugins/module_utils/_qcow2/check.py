# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qemu-img check for qcow2: rebuild the references from the metadata, compare them with the refcounts
on disk (refcount < references: corruption; refcount > references: leak), check OFLAG_COPIED, and
repair by switching atomically to a rebuilt refcount structure with corrected flags.
"""

from __future__ import annotations

import typing
from array import array

from . import constants as C
from .errors import InvalidArgumentError, Qcow2Error
from .header import OFFSET_INCOMPAT
from .layout import NORMAL, ZERO_ALLOC, classify
from .refcount.block import RefBlockCodec
from .layout import nonzero_entries
from .refcount.references import CheckReport, MetadataState, ReferenceCounter, used_l2_indexes

if typing.TYPE_CHECKING:  # names used in annotations only (the image imports this module)
    from .image import Qcow2Image
    from .layout import Geometry
    from .snapshot_table import Snapshot

REPAIR_MODES = (None, "leaks", "all")
ZEROS = "no refcount block"  # a reftable entry of 0: every refcount it would hold is 0
MAX_READABLE_OFFSET = (1 << 63) - (1 << 21)  # qemu's largest request offset (BDRV_MAX_LENGTH), rounded to clusters


def check_image(img: Qcow2Image, repair: str | None = None) -> CheckReport:
    """Check an open Qcow2Image; with repair it must be open writable in check mode."""
    if repair not in REPAIR_MODES:
        raise InvalidArgumentError("repair must be one of leaks, all (got %r)" % (repair,))
    rewritten = _repair_unaligned_preallocations(img) if repair == "all" else []
    report = _check(img)
    report.corruptions_fixed += len(rewritten)
    report.messages[:0] = rewritten
    if not repair or (not report.leaks and not report.corruptions):
        if repair and not report.check_errors:
            _mark_clean_and_consistent(img)
        return report
    if repair == "leaks" and report.corruptions:
        report.say("Leaks were not repaired: the image also has errors; repair them all at once with repair=all")
        return report
    img._require_writable()
    from .metadata_commit import PlannedState, apply_state, current_l2_offsets
    try:
        plan = PlannedState(img.size, current_l2_offsets(img), img.snapshot_list(),
                            clear_incompatible=C.INCOMPAT_DIRTY | C.INCOMPAT_CORRUPT)
        apply_state(img, plan)
    except Qcow2Error as exc:  # nothing was changed; the corruptions found stand (qemu: exit 2, not 1)
        report.say("Repair failed: %s" % exc)
        return report
    after = _check(img)
    after.leaks_fixed = max(0, report.leaks - after.leaks)
    after.corruptions_fixed = max(0, report.corruptions - after.corruptions) + len(rewritten)
    after.messages = report.messages + ["The following inconsistencies were found and repaired:",
                                        "    %d leaked clusters" % after.leaks_fixed,
                                        "    %d corruptions" % after.corruptions_fixed] + after.messages
    return after


def _repair_unaligned_preallocations(img: Qcow2Image) -> list[str]:
    """qemu's check -r all rewrites an L2 entry that preallocates a zero cluster at an unaligned host offset as a plain
    zero cluster (reads of it fail before; zeros after), and does not count the reference it held; the clusters it
    touched are then leaked or correct. An entry that holds data at an unaligned offset stays an error. Returns the
    messages of the entries rewritten (in place, one entry per write, as qemu does)."""
    geo = img.geo
    cs, ext, words = geo.cluster_size, geo.extended_l2, geo.l2_entry_words
    counter = ReferenceCounter(img, CheckReport())
    l1s = [counter.read_l1(img.header.l1_table_offset, img.header.l1_size)] if img.header.l1_size else []
    try:
        snapshots = img.snapshot_list()
    except Qcow2Error:
        snapshots = []  # check reports the table; its L1s cannot be found
    for sn in snapshots:
        if sn.l1_size and not sn.l1_table_offset % cs and sn.l1_size <= C.MAX_L1_BYTES // 8:
            l1s.append(counter.read_l1(sn.l1_table_offset, sn.l1_size))
    tables = sorted({e & C.L1E_OFFSET_MASK for l1 in l1s for _i, e in nonzero_entries(l1)} - {0})
    messages = []
    for table_offset in tables:
        if table_offset % cs:
            continue
        table = counter.read_l2(table_offset)
        for i in used_l2_indexes(table, words, geo.l2_entries):
            entry = table[i * words]
            host = entry & C.L2E_OFFSET_MASK
            if not host % cs or classify(entry, ext) not in (NORMAL, ZERO_ALLOC):
                continue
            has_data = table[i * 2 + 1] & C.EXTL2_ALLOC_MASK if ext else not entry & C.OFLAG_ZERO
            if has_data:
                continue
            img.file.pwrite((0 if ext else C.OFLAG_ZERO).to_bytes(8, "big"), table_offset + 8 * words * i)
            messages.append("Repairing offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted "
                            "(L2 table at %#x, index %d)" % (host, table_offset, i))
    if messages:
        img.file.flush()
        img.l2cache.clear()
    return messages


def _mark_clean_and_consistent(img: Qcow2Image) -> None:
    """qemu clears the dirty and corrupt bits after a check -r that found nothing left to fix."""
    hdr = img.header
    bits = hdr.incompatible_features & (C.INCOMPAT_DIRTY | C.INCOMPAT_CORRUPT)
    if bits and hdr.version >= 3:
        img._require_writable()
        hdr.incompatible_features &= ~bits
        img.write_header_bytes(OFFSET_INCOMPAT, hdr.incompatible_features.to_bytes(8, "big"))


def _check(img: Qcow2Image) -> CheckReport:
    report = CheckReport()
    try:
        state = MetadataState.of(img)
    except Qcow2Error as exc:
        report.check_errors += 1
        report.say("ERROR: could not read the snapshot table: %s" % exc)
        state = MetadataState(img.header.l1_table_offset, img.header.l1_size, [], 0, 0,
                              img.header.refcount_table_offset, img.header.refcount_table_clusters)
    _check_snapshot_entries(img, state.snapshots, report)
    counter = ReferenceCounter(img, report)
    refs = counter.count_state(state)
    disk = _DiskRefcounts(img, report)
    nb = max(counter.nb_clusters, refs.size)
    highest = -1
    rbe = img.geo.refblock_entries
    # only ranges with a refcount block or a reference can disagree (a huge sparse file has few of them)
    groups = set(refs.used_groups(img.geo.refblock_bits))
    groups.update(t for t, entry in enumerate(disk.table) if entry & C.REFT_OFFSET_MASK)
    for group in sorted(groups):
        start = group * rbe
        if start >= nb:
            break
        end = min(nb, start + rbe)
        have = disk.counts(start, end)
        if have is None:  # qemu cannot read this refcount block: every cluster it covers is a check error
            report.check_errors += end - start
            report.say("Can't get refcount for clusters %d to %d: refcount block %d is unaligned (%#x)"
                       % (start, end - 1, group, disk.table[group] & C.REFT_OFFSET_MASK))
            continue
        want = refs.slice(start, end)
        if have == want:
            if have.tobytes().strip(b"\0"):
                highest = start + _last_nonzero(have)
            continue
        for i in range(end - start):
            a, b = have[i], want[i]
            if a or b:
                highest = start + i
            if a == b:
                continue
            if a < b:
                report.corruption("ERROR cluster %d refcount=%d reference=%d" % (start + i, a, b))
            else:
                report.leaks += 1
                report.say("Leaked cluster %d refcount=%d reference=%d" % (start + i, a, b))
    _check_copied(img, disk, report)
    report.image_end_offset = (highest + 1) * img.geo.cluster_size
    report.total_clusters = img.geo.size_to_clusters(img.size)
    return report


def _check_snapshot_entries(img: Qcow2Image, snapshots: list[Snapshot], report: CheckReport) -> None:
    """A v3 image's snapshot table entries must carry at least 16 bytes of extra data (the 64-bit VM state size and
    the disk size): entries written by v2 tools into an image later upgraded to v3 lack them. Repair rewrites the
    table with complete entries, as qemu-img check -r all does."""
    if img.header.version < 3:
        return
    for index, sn in enumerate(snapshots):
        if sn.extra_data_size < 16:
            report.corruption("ERROR snapshot table entry %d is incomplete (%d bytes of extra data, at least 16 needed "
                              "in a version 3 image; entry at offset %#x)" % (index, sn.extra_data_size, sn.entry_offset))


def _last_nonzero(arr: array) -> int:
    for i in range(len(arr) - 1, -1, -1):
        if arr[i]:
            return i
    return -1


class _DiskRefcounts:
    """The refcounts as stored, read block by block; unreadable blocks count as check errors."""

    def __init__(self, img: Qcow2Image, report: CheckReport) -> None:
        self.img = img
        self.report = report
        geo = img.geo
        self.codec = RefBlockCodec(geo.refcount_bits, geo.refblock_entries)
        hdr = img.header
        cs = geo.cluster_size
        raw = img.file.pread(hdr.refcount_table_clusters * cs, hdr.refcount_table_offset)
        raw += bytes(hdr.refcount_table_clusters * cs - len(raw))
        from .layout import be_array
        self.table = be_array(raw)
        self._cache = {}

    def block(self, t: int) -> array | bytearray | str | None:
        """The decoded refcount block of reftable entry t; ZEROS where there is none; None where qemu cannot read
        one (an unaligned offset: qemu signals corruption and fails the read; beyond 2^63 no read is possible)."""
        if t >= len(self.table):
            return ZEROS
        offset = self.table[t] & C.REFT_OFFSET_MASK
        if not offset:
            return ZEROS
        if offset & (self.img.geo.cluster_size - 1) or offset >= MAX_READABLE_OFFSET:
            return None
        if t not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[t] = self.codec.decode(self.img.file.pread(self.img.geo.cluster_size, offset))
        return self._cache[t]

    def counts(self, start: int, end: int) -> array | None:
        """The refcounts of clusters [start, end) (within one refcount block), or None if it cannot be read."""
        rbb = self.img.geo.refblock_bits
        block = self.block(start >> rbb)
        if block is None:
            return None
        if block is ZEROS:
            return array("I", bytes(4 * (end - start)))
        first = start & ((1 << rbb) - 1)
        if self.codec.packed:
            return array("I", [self.codec.get(block, first + i) for i in range(end - start)])
        # 64-bit refcounts may hold values a 32-bit array cannot (compared elementwise with the references)
        return array("Q" if self.codec.bits > 32 else "I", block[first:first + end - start])

    def get(self, cluster: int) -> int | None:
        """One cluster's refcount, or None if its refcount block cannot be read."""
        rbb = self.img.geo.refblock_bits
        block = self.block(cluster >> rbb)
        if block is None or block is ZEROS:
            return None if block is None else 0
        return self.codec.get(block, cluster & ((1 << rbb) - 1))


def _check_copied(img: Qcow2Image, disk: _DiskRefcounts, report: CheckReport) -> None:
    """OFLAG_COPIED must be set exactly where the refcount is 1, in the active L1 and its L2 tables."""
    geo = img.geo
    counter = ReferenceCounter(img, CheckReport())
    l1 = counter.read_l1(img.header.l1_table_offset, img.header.l1_size) if img.header.l1_size else []
    # A hostile L1 can name the same L2 cluster thousands of times: each table is examined once and its
    # findings counted again for every reference, as qemu counts them.
    findings = {}
    for index, entry in nonzero_entries(l1) if l1 else ():
        l2 = entry & C.L1E_OFFSET_MASK
        if not l2:
            continue
        rc = disk.get(l2 >> geo.cluster_bits)
        if rc is not None and (rc == 1) != bool(entry & C.OFLAG_COPIED):
            report.corruption("ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d" % (index, entry, rc))
        if l2 not in findings:
            findings[l2] = _copied_flag_errors(geo, disk, counter.read_l2(l2), counter.has_data_file)
        for message in findings[l2]:
            report.corruption(message)


def _copied_flag_errors(geo: Geometry, disk: _DiskRefcounts, table: array, has_data_file: bool) -> list[str]:
    """The OFLAG_COPIED corruption messages of one L2 table's data cluster entries (data in an external data file
    is not refcounted: qemu takes its refcount as 1)."""
    words, ext = geo.l2_entry_words, geo.extended_l2
    errors = []
    for i in used_l2_indexes(table, words, geo.l2_entries):
        e = table[i * words]
        if not e:
            continue
        kind = classify(e, ext, has_data_file)
        if kind not in (NORMAL, ZERO_ALLOC):
            continue
        offset = e & C.L2E_OFFSET_MASK
        if not offset and not has_data_file:
            continue
        rc = 1 if has_data_file else disk.get(offset >> geo.cluster_bits)
        if rc is not None and (rc == 1) != bool(e & C.OFLAG_COPIED):
            errors.append("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d" % (e, rc))
    return errors


def report_as_qemu_json(report: CheckReport, filename: str) -> dict[str, typing.Any]:
    """The keys qemu-img check --output=json prints (optional ones only when non-zero)."""
    out = {
        "image-end-offset": report.image_end_offset,
        "total-clusters": report.total_clusters,
        "check-errors": report.check_errors,
        "allocated-clusters": report.allocated_clusters,
        "filename": filename,
        "format": "qcow2",
    }
    for key, value in (("corruptions", report.corruptions), ("leaks", report.leaks),
                       ("corruptions-fixed", report.corruptions_fixed), ("leaks-fixed", report.leaks_fixed),
                       ("fragmented-clusters", report.fragmented_clusters),
                       ("compressed-clusters", report.compressed_clusters)):
        if value:
            out[key] = value
    return out


def exit_code(report: CheckReport) -> int:
    """qemu-img check's exit status: 0 clean/repaired, 1 check errors, 2 corruptions, 3 leaks only."""
    if report.check_errors:
        return 1
    if report.corruptions:
        return 2
    if report.leaks:
        return 3
    return 0
