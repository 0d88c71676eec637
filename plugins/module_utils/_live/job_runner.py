# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Waiting for a block job that ends on its own (commit below the active layer, pull)."""

from __future__ import annotations

import typing as t

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import (
    WAIT_TIMEOUT,
    abort_job,
    wait_for_disk,
    wait_for_job,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.job_result import (
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    OUTCOME_TIMEOUT,
    job_result,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle


def run_to_completion(dom: DomainHandle, target: str, job: str, started: float, chain_before: list,
                      is_done: t.Callable[[Disk], bool],
                      timeout: float | None, poll_interval: float, done_message: str, **extra: object) -> dict:
    """Wait for the job on ``target`` to disappear, then check ``is_done(disk)`` on the live chain.

    On timeout the job is aborted (synchronously) and the result says the domain kept its
    original chain. A job that disappears without ``is_done`` becoming true failed in qemu or
    was cancelled by another client: libvirt's polling API cannot tell which.
    """
    deadline = started + timeout if timeout is not None else None
    waited = wait_for_job(dom, target, deadline, wait_ready=False, poll_interval=poll_interval)
    aborted = waited["state"] == WAIT_TIMEOUT
    if aborted:
        abort_job(dom, target)

    def settled(disk: Disk) -> bool:
        return is_done(disk) or (aborted and disk.chain_paths() == chain_before)

    disk = wait_for_disk(dom, target, settled)
    chain_after = disk.chain_paths()
    progress = "%d/%d bytes" % (waited["cur"], waited["end"])
    name = dom.name()
    if is_done(disk):  # also when the job finished just before our abort reached it
        return job_result(job, OUTCOME_COMPLETED, started, done_message, waited["end"], waited["end"],
                          chain_before=chain_before, chain_after=chain_after, **extra)
    if aborted:
        kept = chain_after == chain_before
        message = ("%s on disk %s of domain '%s' did not finish within %ss (%s); the job was aborted and the domain %s"
                   % (job, target, name, timeout, progress,
                      "keeps running on its original chain" if kept else "now has chain %s" % chain_after))
        return job_result(job, OUTCOME_TIMEOUT, started, message, waited["cur"], waited["end"], aborted=True,
                          chain_before=chain_before, chain_after=chain_after, **extra)
    message = ("%s on disk %s of domain '%s' ended without changing the chain as expected (last progress %s): it failed "
               "in qemu or another client cancelled it; see /var/log/libvirt/qemu/%s.log. Chain now: %s"
               % (job, target, name, progress, name, chain_after))
    return job_result(job, OUTCOME_FAILED, started, message, waited["cur"], waited["end"],
                      chain_before=chain_before, chain_after=chain_after, **extra)
