# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Commit below the active layer of a running domain (top and base both backing images).

qemu copies top (and anything between top and base) into base, rewrites the backing link
of the image above top to base, and the job ends on its own. Afterwards top and the images
between no longer represent any point in time; libvirt leaves the files in place.
"""

from __future__ import annotations

import time

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import ensure_no_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import require_active
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks, require_position, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.job_runner import run_to_completion
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.relative_backing import start_keeping_relative


def intermediate_commit(dom: DomainHandle, target: str, top: str, base: str | None = None, timeout: float | None = None,
                        bandwidth: int | None = None, relative: bool | None = None, poll_interval: float = 0.1) -> dict:
    """Commit backing image ``top`` (not the active image) into ``base`` and wait for the end.

    base: a deeper image of the same chain; None means top's own backing file (as
    ``qemu-img commit`` does). bandwidth: bytes per second, None for no limit.
    relative: see relative_backing.start_keeping_relative. timeout: seconds, None waits
    as long as it takes; on timeout the job is aborted and the domain keeps its chain.
    Returns a job_result dict (job "commit") plus 'top', 'base', 'relative_backing'.
    """
    libvirt = require_libvirt()
    require_active(dom, "commit a backing image")
    ensure_no_job(dom, target)
    disk = select_disk(domain_disks(dom), target=target, domain=dom.name())
    top_depth = require_position(disk, top, "top", dom.name())
    if top_depth == 0:
        raise LiveError("top %s is the active image of disk %s; use an active commit" % (top, target), disk=target)
    base_depth = top_depth + 1 if base is None else require_position(disk, base, "base", dom.name())
    if base_depth >= len(disk.images):
        raise LiveError("top %s has no backing file to commit into" % top, disk=target)
    if base_depth <= top_depth:
        raise LiveError("base %s is above top %s in the chain of disk %s" % (base, top, target), disk=target)

    chain_before = disk.chain_paths()
    top_path, base_path = chain_before[top_depth], chain_before[base_depth]
    base_spec, top_spec = disk.job_spec(base_depth), disk.job_spec(top_depth)
    flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES if bandwidth else 0

    def start(extra_flags: int) -> None:
        dom.blockCommit(target, base_spec, top_spec, bandwidth or 0, flags | extra_flags)

    started = time.monotonic()
    used_relative = start_keeping_relative(start, libvirt.VIR_DOMAIN_BLOCK_COMMIT_RELATIVE, relative,
                                           "commit of %s into %s on disk %s" % (top_path, base_path, target))
    # Done when top and everything between it and base left the chain and base sits where top was.
    removed = chain_before[top_depth:base_depth]

    def is_done(live_disk: Disk) -> bool:
        return live_disk.position_of(base_path) == top_depth and all(live_disk.position_of(p) is None for p in removed)

    message = ("committed %s into %s on disk %s of domain '%s'; %s no longer represent%s a point in time"
               % (top_path, base_path, target, dom.name(), ", ".join(removed), "s" if len(removed) == 1 else ""))
    return run_to_completion(dom, target, "commit", started, chain_before, is_done, timeout, poll_interval, message,
                             top=top_path, base=base_path, relative_backing=used_relative)
