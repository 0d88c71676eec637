# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""Changed-block tracking of an image nobody runs: the store's persistent bitmaps in the source, rotated by the engine.

Point N adds bitmap bcq-backup-<store id>-N before its layer is copied, so every write from then on is recorded
for point N+1 (a write during the copy lands in both, and is copied again next time: never lost). The bitmap
of point N-1, whose changes the layer copied, is removed only once point N is sealed: a run killed before that
leaves it, and the next run copies from it again. A bitmap of the store that no sealed point tracks with (what a
killed run added) is removed at the start of the next run. Bitmaps of any other name are never touched.

A live flow (libvirt checkpoints) gives backup.run_backup an object with the same ``consistency`` and the same four
methods: own_bitmaps and
remove_own_except (its checkpoints), start (the checkpoint created at the freeze, whose bitmap records from
then on) and changed_ranges (the ranges a checkpoint's bitmap marks in the frozen image, read with force_share).
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .manifest import bitmap_name, own_bitmap


class OfflineTracking:
    consistency = "offline"  # what the manifest records for the points it feeds (a live flow: frozen or crash)

    def __init__(self, source: str, manifest: dict, policy: api.ChainPolicy | None = None) -> None:
        self.source = source
        self.manifest = manifest
        self.policy = policy

    def own_bitmaps(self) -> list[str]:
        listed = api.list_bitmaps(self.source, policy=self.policy)[0]["bitmaps"]
        return [b["name"] for b in listed if own_bitmap(self.manifest, b["name"])]

    def remove_own_except(self, keep: str | None) -> list[str]:
        """Remove the store's bitmaps but keep; the names removed."""
        removed = []
        for name in self.own_bitmaps():
            if name != keep:
                api.change_bitmap(self.source, "remove", name, policy=self.policy)
                removed.append(name)
        return removed

    def start(self, seq: int) -> str:
        """Add the bitmap that records the writes after point seq; its name."""
        name = bitmap_name(self.manifest, seq)
        api.change_bitmap(self.source, "add", name, policy=self.policy)
        return name

    def changed_ranges(self, name: str) -> api.DirtyRanges:
        return api.dirty_ranges(self.source, name, policy=self.policy)
