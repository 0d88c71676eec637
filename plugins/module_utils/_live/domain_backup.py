# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A backup point of one disk of a libvirt domain into the store (_backup/backup.py).

Running (or paused): the changes come from libvirt checkpoints, read from the frozen image below a temporary
overlay (backup_tracking.py). Shut off: the engine reads and rotates the bitmaps in the disk's image itself, as
for any image, and libvirt's checkpoint metadata is brought in step afterwards (the new point's bitmap redefined
as a checkpoint, the store's older ones dropped from the metadata), so that after the next start a live point
continues the same chain. Either way the checkpoint and bitmap names are the store's own; no other is touched.
"""

from __future__ import annotations

import datetime
import typing

from ansible_collections.backingchain.qcow2.plugins.module_utils._backup import backup
from ansible_collections.backingchain.qcow2.plugins.module_utils._backup.manifest import load, own_bitmap
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.backup_tracking import LiveTracking, image_below_own_overlay, is_backup_overlay
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.checkpoints import checkpoint_names, delete_checkpoint, redefine_checkpoint
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


def backup_disk(dom: DomainHandle, target: str | None = None, path: str | None = None) -> tuple[str, str]:
    """(target, image) of the disk to back up: the one named target, else the one whose image is path, else the
    domain's only disk. The image is the one below the store's temporary overlay when a killed backup left one."""
    disks = [disk for disk in domain_disks(dom, inactive=not dom.isActive()) if disk.device == "disk" and disk.source]
    chosen = [disk for disk in disks if (target is None or disk.target == target)
              and (path is None or target is not None or api.same_file(_image(disk), path))]
    if len(chosen) != 1:
        listing = ", ".join("%s=%s" % (disk.target, _image(disk)) for disk in disks) or "none"
        wanted = "disk %s" % target if target else ("the disk whose image is %s" % path if path else "one disk")
        raise LiveError("domain '%s' has %s %s (disks: %s); name the disk to back up with disk"
                        % (dom.name(), "no" if not chosen else "more than", wanted, listing), domain=dom.name())
    image = _image(chosen[0])
    if image != chosen[0].source and not dom.isActive():
        raise LiveError("disk %s of domain '%s' is defined on %s, the temporary overlay of a backup that was stopped "
                        "before it committed it back, and the domain is shut off. Start the domain: the next backup "
                        "commits the overlay back first" % (chosen[0].target, dom.name(), chosen[0].source),
                        domain=dom.name(), disk=chosen[0].target)
    return chosen[0].target, image


def _image(disk: Disk) -> str:
    """The disk's image, below the store's temporary overlay when a killed backup left the disk on one (the
    shut-off definition lists no backing image: the overlay's header names it)."""
    source = typing.cast(str, disk.source)
    if not is_backup_overlay(source):
        return source
    backing = disk.backing[0].path if disk.backing else _backing_in_header(source)
    return image_below_own_overlay(source, backing) or source


def _backing_in_header(path: str) -> str | None:
    try:
        chain = api.image_info(path, backing_chain=True, force_share=True)
    except (api.Qcow2Error, OSError):
        return None
    return chain[1]["filename"] if len(chain) > 1 else None


def _tracking_for(dom: DomainHandle, target: str) -> typing.Callable[..., typing.Any]:
    def make(source: str, manifest: dict, policy: api.ChainPolicy | None) -> LiveTracking:
        return LiveTracking(source, manifest, policy, dom, target)
    return make


def plan_domain_backup(dom: DomainHandle, target: str, request: backup.Request,
                       policy: api.ChainPolicy | None = None) -> backup.BackupPlan:
    if dom.isActive():
        return backup.plan_backup(request, policy, tracking_for=_tracking_for(dom, target))
    return backup.plan_backup(request, policy)


def run_domain_backup(dom: DomainHandle, target: str, request: backup.Request, policy: api.ChainPolicy | None = None,
                      now: datetime.datetime | None = None) -> dict:
    if dom.isActive():
        return backup.run_backup(request, policy, now, tracking_for=_tracking_for(dom, target))
    done = backup.run_backup(request, policy, now)
    done["checkpoints"] = sync_checkpoints(dom, target, load(request.store), done["point"]["bitmap"])
    return done


def sync_checkpoints(dom: DomainHandle, target: str, manifest: dict, bitmap: str | None) -> dict:
    """libvirt's checkpoints of a shut-off domain after the engine rotated the store's bitmaps in its disk: the
    new point's bitmap redefined, the store's other checkpoints dropped from the metadata (their bitmaps are gone)."""
    known = [name for name in checkpoint_names(dom) if own_bitmap(manifest, name)]
    dropped = [name for name in known if name != bitmap]
    for name in dropped:
        delete_checkpoint(dom, name)
    redefined = []
    if bitmap is not None and bitmap not in known:
        redefine_checkpoint(dom, bitmap, target)
        redefined.append(bitmap)
    return {"redefined": redefined, "dropped": dropped}
