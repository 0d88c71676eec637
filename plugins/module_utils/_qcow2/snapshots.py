# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Internal snapshots: list, create, revert (apply) and delete, as qemu-img snapshot -l/-c/-a/-d.

Each change is one atomic metadata switch (metadata_commit.apply_state), so refcounts and
OFLAG_COPIED agree at every instant, even across a crash.
"""

from __future__ import annotations

import time
import typing

from . import constants as C
from .errors import FormatError, InvalidArgumentError, UnsupportedError
from .metadata_commit import PlannedState, apply_state, current_l2_offsets
from .snapshot_table import Snapshot

if typing.TYPE_CHECKING:  # names used in annotations only (some of these imports would be circular at run time)
    from .image import Qcow2Image


def find_snapshot(img: Qcow2Image, name_or_id: str) -> Snapshot | None:
    """qemu's lookup: by id first, then by name; None if absent."""
    snaps = img.snapshot_list()
    for sn in snaps:
        if sn.id_str == name_or_id:
            return sn
    for sn in snaps:
        if sn.name == name_or_id:
            return sn
    return None


def snapshot_info(sn: Snapshot) -> dict:
    """A snapshot as qemu-img info --output=json shows it."""
    return {
        "id": sn.id_str,
        "name": sn.name,
        "vm-state-size": sn.vm_state_size,
        "date-sec": sn.date_sec,
        "date-nsec": sn.date_nsec,
        "vm-clock-sec": sn.vm_clock_nsec // 1000000000,
        "vm-clock-nsec": sn.vm_clock_nsec % 1000000000,
        "icount": sn.icount,
    }


def _new_id(snaps: list[Snapshot]) -> str:
    highest = 0
    for sn in snaps:
        try:
            highest = max(highest, int(sn.id_str))
        except ValueError:
            continue
    return str(highest + 1)


def create_snapshot(img: Qcow2Image, name: str) -> Snapshot:
    """Take an internal snapshot of the active state; returns the new Snapshot."""
    if not name:
        raise InvalidArgumentError("A snapshot needs a name")
    if len(name.encode("utf-8")) > 65535:
        raise InvalidArgumentError("Snapshot name too long")
    if img.geo.refcount_bits < 2:
        raise InvalidArgumentError("Image %s has 1-bit refcounts; internal snapshots need refcount_bits of 2 or more"
                                   % img.path, img.path)
    snaps = [sn.copy() for sn in img.snapshot_list()]
    now = time.time()
    active = current_l2_offsets(img)
    sn = Snapshot(_new_id(snaps), name, date_sec=int(now), date_nsec=int((now % 1) * 1e9), disk_size=img.size, icount=0)
    sn.new_l1 = active  # read only from here on; a copy of a 4M-entry L1 list costs 32 MiB
    apply_state(img, PlannedState(img.size, active, snaps + [sn]))
    return find_snapshot(img, sn.id_str)


def revert_snapshot(img: Qcow2Image, name_or_id: str, dry_run: bool = False) -> None:
    """Make the active state what the snapshot holds (qemu-img snapshot -a); dry_run: only refuse what it would."""
    sn = find_snapshot(img, name_or_id)
    if sn is None:
        raise InvalidArgumentError("Could not find snapshot '%s' in %s" % (name_or_id, img.path), img.path)
    bitmaps = img.bitmap_trust.loaded()
    if bitmaps:
        # qemu refuses too (bdrv_snapshot_goto): the bitmaps could not say what the revert changed
        raise UnsupportedError("Could not apply snapshot '%s' to %s: Device has active dirty bitmaps (%s); remove them "
                               "first (qemu-img bitmap --remove), which ends the incremental backups based on them"
                               % (name_or_id, img.path, ", ".join(b.name for b in bitmaps)), img.path)
    needed = img.geo.size_to_l1(sn.disk_size)
    if sn.disk_size % 512 or needed > C.MAX_L1_BYTES // 8:  # qemu: the truncate to that size fails
        raise FormatError("Snapshot %s of %s has an invalid disk size %d" % (sn.id_str, img.path, sn.disk_size),
                          img.path, "snapshot disk_size")
    active = current_l2_offsets(img, sn.l1_table_offset, sn.l1_size)
    if dry_run:
        return
    if len(active) < needed:
        active.frombytes(bytes(8 * (needed - len(active))))
    apply_state(img, PlannedState(sn.disk_size, active, [s.copy() for s in img.snapshot_list()]))


def delete_snapshot(img: Qcow2Image, name_or_id: str) -> None:
    """Remove a snapshot and free what only it used (qemu-img snapshot -d)."""
    sn = find_snapshot(img, name_or_id)
    if sn is None:
        raise InvalidArgumentError("Could not find snapshot '%s' in %s" % (name_or_id, img.path), img.path)
    remaining = [s.copy() for s in img.snapshot_list() if s is not sn]
    apply_state(img, PlannedState(img.size, current_l2_offsets(img), remaining))


def matches_snapshot(img: Qcow2Image, snapshot_id: str) -> tuple[bool, int]:
    """(matches, disk_size): matches when the active state maps every guest cluster as snapshot ``snapshot_id``
    does and has its size, so reverting would change nothing; disk_size is the snapshot's virtual size."""
    sn = next(s for s in img.snapshot_list() if s.id_str == snapshot_id)
    if sn.disk_size != img.size:
        return False, sn.disk_size
    active = current_l2_offsets(img)
    saved = current_l2_offsets(img, sn.l1_table_offset, sn.l1_size)
    length = max(len(active), len(saved))
    active.frombytes(bytes(8 * (length - len(active))))
    saved.frombytes(bytes(8 * (length - len(saved))))
    return all(_same_table(img, a, s) for a, s in zip(active, saved)), sn.disk_size


def _l2_entries(img: Qcow2Image, l2_offset: int) -> list[int] | None:
    """An L2 table's entries with OFLAG_COPIED cleared (it only says whether the cluster is shared with a
    snapshot, not what the guest reads); a missing table reads as unallocated entries."""
    geo = img.geo
    if not l2_offset:
        return None
    words = []
    for s in range(geo.slices_per_table):
        words.extend(img.l2_slice(l2_offset, s))
    for i in range(0, len(words), geo.l2_entry_words):
        words[i] &= ~C.OFLAG_COPIED
    return words


def _same_table(img: Qcow2Image, first: int, second: int) -> bool:
    if first == second:
        return True
    a, b = _l2_entries(img, first), _l2_entries(img, second)
    if a is None or b is None:
        return not any(a or b)
    return a == b
