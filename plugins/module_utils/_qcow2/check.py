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

from array import array

from . import constants as C
from .errors import InvalidArgumentError, Qcow2Error
from .header import OFFSET_INCOMPAT
from .layout import NORMAL, ZERO_ALLOC, classify
from .refcount.block import RefBlockCodec
from .layout import nonzero_entries
from .refcount.references import CheckReport, MetadataState, ReferenceCounter, used_l2_indexes

REPAIR_MODES = (None, "leaks", "all")


def check_image(img, repair=None):
    """Check an open Qcow2Image; with repair it must be open writable in check mode."""
    if repair not in REPAIR_MODES:
        raise InvalidArgumentError("repair must be one of leaks, all (got %r)" % (repair,))
    report = _check(img)
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
    after.corruptions_fixed = max(0, report.corruptions - after.corruptions)
    after.messages = report.messages + ["The following inconsistencies were found and repaired:",
                                        "    %d leaked clusters" % after.leaks_fixed,
                                        "    %d corruptions" % after.corruptions_fixed] + after.messages
    return after


def _mark_clean_and_consistent(img):
    """qemu clears the dirty and corrupt bits after a check -r that found nothing left to fix."""
    hdr = img.header
    bits = hdr.incompatible_features & (C.INCOMPAT_DIRTY | C.INCOMPAT_CORRUPT)
    if bits and hdr.version >= 3:
        img._require_writable()
        hdr.incompatible_features &= ~bits
        img.write_header_bytes(OFFSET_INCOMPAT, hdr.incompatible_features.to_bytes(8, "big"))


def _check(img):
    report = CheckReport()
    try:
        state = MetadataState.of(img)
    except Qcow2Error as exc:
        report.check_errors += 1
        report.say("ERROR: could not read the snapshot table: %s" % exc)
        state = MetadataState(img.header.l1_table_offset, img.header.l1_size, [], 0, 0,
                              img.header.refcount_table_offset, img.header.refcount_table_clusters)
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


def _last_nonzero(arr):
    for i in range(len(arr) - 1, -1, -1):
        if arr[i]:
            return i
    return -1


class _DiskRefcounts:
    """The refcounts as stored, read block by block; unreadable blocks count as check errors."""

    def __init__(self, img, report):
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

    def block(self, t):
        if t >= len(self.table):
            return None
        offset = self.table[t] & C.REFT_OFFSET_MASK
        if not offset or offset & (self.img.geo.cluster_size - 1) or offset > C.MAX_CLUSTER_OFFSET:
            return None  # reported by count_refblocks; past qemu's 2^56 limit it cannot even be read
        if t not in self._cache:
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[t] = self.codec.decode(self.img.file.pread(self.img.geo.cluster_size, offset))
        return self._cache[t]

    def counts(self, start, end):
        rbb = self.img.geo.refblock_bits
        block = self.block(start >> rbb)
        if block is None:
            return array("I", bytes(4 * (end - start)))
        first = start & ((1 << rbb) - 1)
        if self.codec.packed:
            return array("I", [self.codec.get(block, first + i) for i in range(end - start)])
        # 64-bit refcounts may hold values a 32-bit array cannot (compared elementwise with the references)
        return array("Q" if self.codec.bits > 32 else "I", block[first:first + end - start])

    def get(self, cluster):
        rbb = self.img.geo.refblock_bits
        block = self.block(cluster >> rbb)
        if block is None:
            return 0
        return self.codec.get(block, cluster & ((1 << rbb) - 1))


def _check_copied(img, disk, report):
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
        if (rc == 1) != bool(entry & C.OFLAG_COPIED):
            report.corruption("ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d" % (index, entry, rc))
        if l2 not in findings:
            findings[l2] = _copied_flag_errors(geo, disk, counter.read_l2(l2))
        for message in findings[l2]:
            report.corruption(message)


def _copied_flag_errors(geo, disk, table):
    """The OFLAG_COPIED corruption messages of one L2 table's data cluster entries."""
    words, ext = geo.l2_entry_words, geo.extended_l2
    errors = []
    for i in used_l2_indexes(table, words, geo.l2_entries):
        e = table[i * words]
        if not e:
            continue
        kind = classify(e, ext)
        if kind not in (NORMAL, ZERO_ALLOC):
            continue
        offset = e & C.L2E_OFFSET_MASK
        if not offset:
            continue
        rc = disk.get(offset >> geo.cluster_bits)
        if (rc == 1) != bool(e & C.OFLAG_COPIED):
            errors.append("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d" % (e, rc))
    return errors


def report_as_qemu_json(report, filename):
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


def exit_code(report):
    """qemu-img check's exit status: 0 clean/repaired, 1 check errors, 2 corruptions, 3 leaks only."""
    if report.check_errors:
        return 1
    if report.corruptions:
        return 2
    if report.leaks:
        return 3
    return 0
