# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Active commit: merge the active image (and images down to base) into base, then pivot.

Phase 1 copies while the guest keeps writing to the active image (qemu mirrors new writes);
when everything is copied qemu emits READY and keeps base in sync. Phase 2 is the pivot:
the guest switches to base. Split in start/finish so a caller can act while the job runs.
A job whose starter went away (killed before the pivot) goes on in libvirt, ready and in sync
forever; adopt_active_commit gives a handle to finish it instead of starting another one.
No relative flag: nothing's backing link is rewritten (base becomes the active image and its
own backing link is untouched), and libvirt ignores VIR_DOMAIN_BLOCK_COMMIT_RELATIVE here.
"""

from __future__ import annotations

import time

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import (
    WAIT_GONE,
    WAIT_TIMEOUT,
    abort_job,
    current_job,
    ensure_no_job,
    job_in_the_way,
    pivot_job,
    wait_for_disk,
    wait_for_job,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import require_active
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks, require_position, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.job_result import (
    OUTCOME_ABORTED,
    OUTCOME_FAILED,
    OUTCOME_PIVOTED,
    OUTCOME_TIMEOUT,
    job_result,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle, libvirt_error_text, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import same_file

JOB = "active commit"
JOB_TYPE_ACTIVE_COMMIT = 4  # VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT


def start_active_commit(dom: DomainHandle, target: str, base: str | None = None, bandwidth: int | None = None) -> dict:
    """Start committing the active image of ``target`` into ``base`` and return a handle for
    finish_active_commit: {'target', 'top', 'base', 'base_depth', 'chain_before', 'started'}.

    base: an image below the active one; None means the active image's own backing file
    (as ``qemu-img commit`` does). bandwidth: bytes per second, None for no limit.
    """
    libvirt = require_libvirt()
    require_active(dom, "commit the active image")
    ensure_no_job(dom, target)
    disk = select_disk(domain_disks(dom), target=target, domain=dom.name())
    if len(disk.images) < 2:
        raise LiveError("disk %s of domain '%s' has no backing file to commit into" % (target, dom.name()), disk=target)
    base_depth = 1 if base is None else require_position(disk, base, "base", dom.name())
    if base_depth == 0:
        raise LiveError("base %s is the active image of disk %s; nothing to commit" % (base, target), disk=target)
    flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
    if bandwidth:
        flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES
    chain_before = disk.chain_paths()
    started = time.monotonic()
    try:
        # top=None: the active image, which libvirt requires together with the ACTIVE flag.
        dom.blockCommit(target, disk.job_spec(base_depth), None, bandwidth or 0, flags)
    except libvirt.libvirtError as exc:
        raise LiveError("cannot start active commit of %s into %s on disk %s of domain '%s': %s"
                        % (chain_before[0], chain_before[base_depth], target, dom.name(), libvirt_error_text(exc)),
                        domain=dom.name(), disk=target)
    return {"target": target, "top": chain_before[0], "base": chain_before[base_depth], "base_depth": base_depth,
            "chain_before": chain_before, "started": started, "adopted": False}


def adopt_active_commit(dom: DomainHandle, target: str, base: str) -> dict | None:
    """A handle for finish_active_commit on the active commit into ``base`` that already runs on ``target``
    (left by a caller that went away before the pivot: libvirt keeps such a job going, in sync, un-pivoted).

    None when the disk has no block job. LiveError, naming the job and how to clear it, when the job is
    another one: not an active commit, or an active commit into another image. The handle's clock (for
    finish_active_commit's timeout) starts now.
    """
    require_active(dom, "commit the active image")
    info = current_job(dom, target)
    if info is None:
        return None
    disk = select_disk(domain_disks(dom), target=target, domain=dom.name())
    same = (info.get("type") == JOB_TYPE_ACTIVE_COMMIT and disk.mirror_job == "active-commit" and disk.mirror is not None
            and same_file(disk.mirror.path, base))
    if not same:
        raise job_in_the_way(dom, target, info, ", which is not the active commit of %s into %s asked for"
                             % (disk.source, base))
    base_depth = disk.position_of(disk.mirror.path)
    if base_depth is None or base_depth == 0:  # libvirt keeps the base in the chain until the pivot
        raise LiveError("active commit on disk %s of domain '%s' writes into %s, which is not below its active image "
                        "(chain, top first: %s)" % (target, dom.name(), disk.mirror.path, disk.chain_paths()),
                        domain=dom.name(), disk=target)
    chain_before = disk.chain_paths()
    return {"target": target, "top": chain_before[0], "base": chain_before[base_depth], "base_depth": base_depth,
            "chain_before": chain_before, "started": time.monotonic(), "adopted": True}


def finish_active_commit(dom: DomainHandle, handle: dict, timeout: float | None = None, pivot: bool = True,
                         poll_interval: float = 0.1) -> dict:
    """Wait for READY (at most ``timeout`` seconds counted from the start), then pivot onto
    base (or, with pivot=False, cancel: base keeps a copy, the guest stays on the overlay).

    On timeout, a job that vanished or a failed pivot, the job is aborted so the domain keeps
    running on its original chain, and the result says so. Returns a job_result dict (job
    "active commit") plus 'top' and 'base'.
    """
    target, base, chain_before, started = handle["target"], handle["base"], handle["chain_before"], handle["started"]
    deadline = started + timeout if timeout is not None else None
    waited = wait_for_job(dom, target, deadline, wait_ready=True, poll_interval=poll_interval)
    cur, end = waited["cur"], waited["end"]
    extra = {"top": handle["top"], "base": base, "adopted": bool(handle.get("adopted"))}

    def finish(outcome: str, message: str, aborted: bool = False, settled: Disk | None = None) -> dict:
        disk = wait_for_disk(dom, target, settled or (lambda d: d.chain_paths() == chain_before and d.mirror_job is None))
        return job_result(JOB, outcome, started, message, cur, end, aborted=aborted, chain_before=chain_before,
                          chain_after=disk.chain_paths(), **extra)

    where = "disk %s of domain '%s'" % (target, dom.name())
    if waited["state"] == WAIT_TIMEOUT:
        abort_job(dom, target)
        return finish(OUTCOME_TIMEOUT, "active commit on %s was not ready within %ss (%d/%d bytes); the job was aborted and "
                      "the domain keeps running on its original chain (active image %s). Base %s may hold some copied "
                      "clusters, which the guest still reads through the overlay." % (where, timeout, cur, end, chain_before[0], base),
                      aborted=True)
    if waited["state"] == WAIT_GONE:
        return finish(OUTCOME_FAILED, "active commit on %s ended before it was ready (%d/%d bytes): it failed in qemu or "
                      "another client cancelled it; see /var/log/libvirt/qemu/%s.log" % (where, cur, end, dom.name()))
    if not pivot:
        abort_job(dom, target)
        return finish(OUTCOME_ABORTED, "active commit on %s reached READY and was cancelled as asked: base %s holds the data "
                      "of the overlay as of now, the domain stays on %s" % (where, base, chain_before[0]), aborted=True)
    libvirt = require_libvirt()
    try:
        pivot_job(dom, target)
    except libvirt.libvirtError as exc:
        abort_job(dom, target)
        return finish(OUTCOME_FAILED, "pivot to %s on %s failed (%s); the job was aborted and the domain keeps running on "
                      "its original chain" % (base, where, libvirt_error_text(exc)), aborted=True)
    disk = wait_for_disk(dom, target, lambda d: d.position_of(base) == 0 and d.mirror_job is None)
    chain_after = disk.chain_paths()
    if disk.position_of(base) != 0:
        return job_result(JOB, OUTCOME_FAILED, started, "pivot on %s reported success but the active image is %s, not %s"
                          % (where, chain_after[0], base), cur, end, chain_before=chain_before, chain_after=chain_after, **extra)
    merged = chain_before[:handle["base_depth"]]
    return job_result(JOB, OUTCOME_PIVOTED, started, "committed %s into %s and pivoted: %s now runs on %s; %s no longer "
                      "represent%s a point in time" % (", ".join(merged), base, where, base, ", ".join(merged),
                                                       "s" if len(merged) == 1 else ""),
                      cur, end, chain_before=chain_before, chain_after=chain_after, **extra)


def active_commit(dom: DomainHandle, target: str, base: str | None = None, timeout: float | None = None, pivot: bool = True,
                  bandwidth: int | None = None, poll_interval: float = 0.1) -> dict:
    """start_active_commit + finish_active_commit in one call."""
    handle = start_active_commit(dom, target, base=base, bandwidth=bandwidth)
    return finish_active_commit(dom, handle, timeout=timeout, pivot=pivot, poll_interval=poll_interval)
