# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Internal snapshots looked up by name, and whether the active state already is a snapshot's state."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import constants as C
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.metadata_commit import current_l2_offsets


def snapshots_named(snapshots, name):
    """The snapshots (qemu-img info dicts) whose name is exactly ``name``; qemu's own lookup tries ids first."""
    return [sn for sn in snapshots if sn["name"] == name]


def only_snapshot_named(snapshots, name, path):
    found = snapshots_named(snapshots, name)
    if not found:
        raise InvalidArgumentError("Image %s has no internal snapshot named '%s'" % (path, name), path)
    if len(found) > 1:
        raise InvalidArgumentError("Image %s has %d internal snapshots named '%s' (ids %s); reverting to one of them is ambiguous"
                                   % (path, len(found), name, ", ".join(sn["id"] for sn in found)), path)
    return found[0]


def _entries(img, l2_offset):
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


def _same_table(img, first, second):
    if first == second:
        return True
    a, b = _entries(img, first), _entries(img, second)
    if a is None or b is None:
        return not any(a or b)
    return a == b


def compare_with_snapshot(path, snapshot_id):
    """(matches, disk_size): matches when the image's active state maps every guest cluster as the snapshot
    does and has its size, so reverting would change nothing; disk_size is the snapshot's virtual size.
    Read without locks, like qemu-img info -U."""
    with api.open_chain(path, fmt="qcow2", backing=False, force_share=True) as chain:
        img = chain.top
        sn = next(s for s in img.snapshot_list() if s.id_str == snapshot_id)
        if sn.disk_size != img.size:
            return False, sn.disk_size
        active = current_l2_offsets(img)
        saved = current_l2_offsets(img, sn.l1_table_offset, sn.l1_size)
        length = max(len(active), len(saved))
        active.frombytes(bytes(8 * (length - len(active))))
        saved.frombytes(bytes(8 * (length - len(saved))))
        return all(_same_table(img, a, s) for a, s in zip(active, saved)), sn.disk_size
