# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Block pull (blockRebase without a copy destination): copy backing data into the active image.

With a base, the images between the active image and base are pulled in and the active
image's backing link is rewritten to base; without one the active image becomes standalone.
The images pulled from stay valid (unlike commit) and are left in place.
"""

from __future__ import annotations

import time

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import ensure_no_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import require_active
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks, require_position, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.job_result import OUTCOME_UNCHANGED, job_result
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.job_runner import run_to_completion
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.relative_backing import start_keeping_relative

JOB = "pull"


def block_pull(dom: DomainHandle, target: str, base: str | None = None, timeout: float | None = None, bandwidth: int | None = None,
               relative: bool | None = None, poll_interval: float = 0.1) -> dict:
    """Pull everything above ``base`` into the active image of ``target`` (base None: all of it).

    Returns a job_result dict (job "pull") plus 'base' and 'relative_backing'; outcome
    "unchanged" when base already is the active image's backing file (or, for base None, when
    it has none). relative only applies with a base (see relative_backing). On timeout the
    job is aborted and the domain keeps its original chain.
    """
    libvirt = require_libvirt()
    require_active(dom, "pull into the active image")
    ensure_no_job(dom, target)
    disk = select_disk(domain_disks(dom), target=target, domain=dom.name())
    chain_before = disk.chain_paths()
    started = time.monotonic()
    base_depth = len(chain_before) if base is None else require_position(disk, base, "base", dom.name())
    if base_depth == 0:
        raise LiveError("base %s is the active image of disk %s; it cannot be pulled into itself" % (base, target), disk=target)
    base_path = chain_before[base_depth] if base is not None else None
    if base_depth == 1 or len(chain_before) == 1:
        return job_result(JOB, OUTCOME_UNCHANGED, started, "nothing to pull on disk %s: its active image %s already has %s"
                          % (target, chain_before[0], "backing file %s" % base_path if base_path else "no backing file"),
                          chain_before=chain_before, chain_after=chain_before, base=base_path, relative_backing=False)

    base_spec = disk.job_spec(base_depth) if base is not None else None
    flags = libvirt.VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES if bandwidth else 0

    def start(extra_flags: int) -> None:
        dom.blockRebase(target, base_spec, bandwidth or 0, flags | extra_flags)

    what = "pull into %s on disk %s" % (chain_before[0], target)
    # The relative flag needs a base to name; a full pull leaves no backing link at all.
    used_relative = start_keeping_relative(start, libvirt.VIR_DOMAIN_BLOCK_REBASE_RELATIVE, relative if base else False, what)
    pulled = chain_before[1:base_depth]

    def is_done(live_disk: Disk) -> bool:
        below = live_disk.images[1].path if len(live_disk.images) > 1 else None
        return live_disk.position_of(chain_before[0]) == 0 and (
            below is None if base_path is None else live_disk.position_of(base_path) == 1)

    message = ("pulled %s into %s on disk %s of domain '%s'; %s"
               % (", ".join(pulled), chain_before[0], target, dom.name(),
                  "its backing file is now %s" % base_path if base_path else "it is now standalone"))
    return run_to_completion(dom, target, JOB, started, chain_before, is_done, timeout, poll_interval, message,
                             base=base_path, relative_backing=used_relative)
