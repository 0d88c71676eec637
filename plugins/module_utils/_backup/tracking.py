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

A live flow (libvirt checkpoints, _live/backup_tracking.py) gives backup.run_backup an object with the same
``consistency`` and methods: remove_own_except (its checkpoints), frozen (the point's image held still while the
layer is copied: for a running domain, a checkpoint and an overlay), changed_ranges (the ranges a bitmap marks in
the frozen image), and for plan_backup, planned_facts, planned_bytes and refuse_if_busy.
"""

from __future__ import annotations

import contextlib
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

from .manifest import bitmap_name, own_bitmap


class OfflineTracking:
    consistency = "offline"  # what the manifest records for the points it feeds (a live flow: frozen or crash)
    reads_shared = False  # a plan reads the source with shared locks (a live flow: qemu holds it)

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

    def forget(self, name: str) -> None:
        """The point failed: the bitmap it added tracks nothing (the next run would remove it anyway)."""
        try:
            api.change_bitmap(self.source, "remove", name, policy=self.policy)
        except (api.Qcow2Error, OSError):
            pass

    @contextlib.contextmanager
    def frozen(self, seq: int, can_track: bool) -> typing.Iterator[typing.Optional[str]]:
        """The source as point seq copies it (nobody writes it: as it is); the bitmap added for the next point."""
        bitmap = self.start(seq) if can_track else None
        try:
            yield bitmap
        except BaseException:
            if bitmap is not None:
                self.forget(bitmap)
            raise

    def changed_ranges(self, name: str) -> api.DirtyRanges:
        return api.dirty_ranges(self.source, name, policy=self.policy)

    # ---- for plan_backup (read only) ----
    def refuse_if_busy(self) -> None:
        api.refuse_if_locked(self.source)  # the run adds a bitmap: it needs the write lock a running VM holds

    def planned_facts(self, facts: typing.Any) -> typing.Any:
        return facts

    def planned_bytes(self, name: str, copy_dry_run: typing.Callable[[list], int]) -> int:
        return copy_dry_run(api.dirty_ranges(self.source, name, force_share=True, policy=self.policy).ranges)
