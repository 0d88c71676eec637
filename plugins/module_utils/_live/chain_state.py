# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Questions about a running disk's chain that let modules report "no change" and predict
in check mode, all read from the live XML (what qemu has open)."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle


def _live_disk(dom: DomainHandle, target: str) -> Disk:
    return select_disk(domain_disks(dom), target=target, domain=dom.name())


def disk_runs_on(dom: DomainHandle, target: str, image: str, backing: str | None = None) -> bool:
    """True if ``image`` is the active image of disk ``target`` and, when ``backing`` is given,
    ``backing`` is its direct backing file. E.g. "is the snapshot overlay already in place?",
    "did the active commit into base already pivot?" (then image=base)."""
    disk = _live_disk(dom, target)
    if disk.position_of(image) != 0:
        return False
    return backing is None or disk.position_of(backing) == 1


def image_in_chain(dom: DomainHandle, target: str, image: str) -> bool:
    """True if ``image`` is anywhere in the live chain of disk ``target`` (e.g. a commit's top
    is gone from the chain once the commit is done)."""
    return _live_disk(dom, target).position_of(image) is not None


def backing_of(dom: DomainHandle, target: str, image: str) -> str | None:
    """Path of the image directly below ``image`` in the live chain of ``target``, or None
    if ``image`` has no backing file or is not in the chain (e.g. "is the pull done?")."""
    disk = _live_disk(dom, target)
    depth = disk.position_of(image)
    if depth is None or depth + 1 >= len(disk.images):
        return None
    return disk.images[depth + 1].path


def live_chain(dom: DomainHandle, target: str) -> list:
    """The live chain of ``target`` as paths, active image first."""
    return _live_disk(dom, target).chain_paths()
