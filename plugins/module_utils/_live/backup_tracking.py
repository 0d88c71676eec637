# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Changed-block tracking of a running domain's disk for the backup store: libvirt checkpoints, read from the
frozen image below a temporary overlay (the store's side is _backup/backup.py, the offline twin
_backup/tracking.py).

One point, with the guest's file systems frozen when its agent answers (else crash-consistent):
  1. checkpoint bcq-backup-<store id>-<seq> is created: its bitmap records every write from now on;
  2. an external disk-only overlay goes on top: the disk's image (the "frozen image") is read only from now on,
     and qemu has written every bitmap of it to disk, consistent and not in use;
  3. the guest is thawed; the store reads the frozen image (with shared locks): the previous point's checkpoint
     bitmap marks exactly what changed between the two freezes (libvirt keeps every checkpoint's bitmap
     recording, and merges the overlay's bitmaps back into the image on commit);
  4. the overlay is committed back and the guest pivots onto the image again (blockcommit --active --pivot);
     the overlay file is deleted.
A write between 1 and 2 lands in the frozen image and in the new bitmap: copied now and again next time, never
lost. Checkpoints of another name are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.level import SourceFacts
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import bitmap_name, own_bitmap
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import active_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.checkpoints import (
    checkpoint_names,
    checkpoint_size,
    create_checkpoint,
    delete_checkpoint,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.job_result import OUTCOME_PIVOTED
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot, guest_agent_state
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

_OVERLAY = re.compile(r"\A\.(?P<image>.+)\.(?P<checkpoint>bcq-backup-[0-9a-f]+-[0-9]+)\.qcow2\Z")


def overlay_path(source: str, checkpoint: str) -> str:
    """The temporary overlay of a point, beside the disk's image (where qemu may already create files)."""
    return os.path.join(os.path.dirname(source), ".%s.%s.qcow2" % (os.path.basename(source), checkpoint))


def is_backup_overlay(path: str) -> bool:
    return bool(_OVERLAY.match(os.path.basename(path)))


def image_below_own_overlay(active: str, backing: str | None) -> str | None:
    """The disk's image when the domain still runs on the temporary overlay of a backup that was killed before
    it committed it back (the active image is named after its backing image); else None."""
    match = _OVERLAY.match(os.path.basename(active))
    if match and backing and os.path.basename(backing) == match.group("image"):
        return backing
    return None


class LiveTracking:
    consistency = "crash"  # until frozen() knows better: "frozen" when the guest agent froze the file systems
    reads_shared = True

    def __init__(self, source: str, manifest: dict, policy: api.ChainPolicy | None, dom: DomainHandle,
                 target: str) -> None:
        self.source = source
        self.manifest = manifest
        self.policy = policy
        self.dom = dom
        self.target = target

    def own_bitmaps(self) -> list[str]:
        return [name for name in checkpoint_names(self.dom) if own_bitmap(self.manifest, name)]

    def remove_own_except(self, keep: str | None) -> list[str]:
        removed = []
        for name in self.own_bitmaps():
            if name != keep:
                delete_checkpoint(self.dom, name)
                removed.append(name)
        return removed

    @contextlib.contextmanager
    def frozen(self, seq: int, can_track: bool) -> typing.Iterator[str]:
        if not can_track:
            raise LiveError("disk %s of domain '%s' (%s) cannot hold dirty bitmaps: a live backup needs a qcow2 image "
                            "of compat 1.1" % (self.target, self.dom.name(), self.source), domain=self.dom.name())
        name = bitmap_name(self.manifest, seq)
        overlay = overlay_path(self.source, name)
        self._clear_leftovers(overlay)
        frozen = self._freeze()
        try:
            create_checkpoint(self.dom, name, self.target)
            try:
                create_disk_only_snapshot(self.dom, {self.target: overlay})
            except BaseException:
                delete_checkpoint(self.dom, name)
                raise
        finally:
            if frozen:
                self.dom.fsThaw()
        self.consistency = "frozen" if frozen else "crash"
        try:
            yield name
        except BaseException:
            self._commit_back(overlay)
            delete_checkpoint(self.dom, name)
            raise
        self._commit_back(overlay)

    def changed_ranges(self, name: str) -> api.DirtyRanges:
        return api.dirty_ranges(self.source, name, force_share=True, policy=self.policy)

    def _freeze(self) -> bool:
        """Freeze the guest's file systems when its agent is connected; False (crash-consistent) otherwise."""
        libvirt = require_libvirt()
        if guest_agent_state(self.dom) != "connected":
            return False
        try:
            self.dom.fsFreeze()
        except libvirt.libvirtError:
            return False
        return True

    def _commit_back(self, overlay: str) -> None:
        done = active_commit(self.dom, self.target)
        if done["outcome"] != OUTCOME_PIVOTED:
            raise LiveError("the backup's overlay %s of disk %s could not be committed back: %s"
                            % (overlay, self.target, done.get("msg")), domain=self.dom.name(), disk=self.target)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(overlay)

    def _clear_leftovers(self, overlay: str) -> None:
        """What a killed run of this store left: the domain still on its overlay (committed back now), or the
        overlay file of this point after its commit (deleted; libvirt would refuse to create it again)."""
        disk = select_disk(domain_disks(self.dom), target=self.target)
        backing = disk.backing[0].path if disk.backing else None
        if disk.source and image_below_own_overlay(disk.source, backing) == self.source:
            match = _OVERLAY.match(os.path.basename(disk.source))
            if match and own_bitmap(self.manifest, match.group("checkpoint")):
                self._commit_back(disk.source)
                disk = select_disk(domain_disks(self.dom), target=self.target)
        if os.path.lexists(overlay) and disk.position_of(overlay) is None:
            os.unlink(overlay)

    # ---- for plan_backup (read only): while the domain runs, qemu holds the bitmaps; libvirt tells of them ----
    def refuse_if_busy(self) -> None:
        """libvirt itself refuses a second block job on the disk."""

    def planned_facts(self, facts: SourceFacts) -> SourceFacts:
        """The bitmaps as the run will find them in the frozen image: those of the own checkpoints libvirt can
        size (a bitmap left inconsistent by a killed qemu cannot be), the others as in use."""
        listed = []
        for name in self.own_bitmaps():
            usable = checkpoint_size(self.dom, name, self.target) is not None
            listed.append({"name": name, "in_use": not usable, "enabled": True, "trusted": True, "reason": None})
        return facts._replace(bitmaps=listed)

    def planned_bytes(self, name: str, _copy_dry_run: typing.Callable[[list], int]) -> int:
        return checkpoint_size(self.dom, name, self.target) or 0
