# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Watching, pivoting and aborting libvirt block jobs by polling (no event loop needed).

Readiness needs cur == end in blockJobInfo AND ``<mirror ready='yes'>`` in the live XML: the
XML flag mirrors the job state libvirt checks before it allows a pivot; cur == end alone is a hint.
"""

from __future__ import annotations

import time
import typing as t

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle, libvirt_error_text, require_libvirt

JOB_TYPE_NAMES = {0: "unknown", 1: "pull", 2: "copy", 3: "commit", 4: "active commit", 5: "backup"}

WAIT_READY = "ready"  # an active commit or copy can now be pivoted
WAIT_GONE = "gone"  # the job no longer exists (finished, failed or cancelled)
WAIT_TIMEOUT = "timeout"


def current_job(dom: DomainHandle, target: str) -> dict | None:
    """blockJobInfo of the disk (type, cur, end, bandwidth), or None when it has no job."""
    info = dom.blockJobInfo(target, 0)
    return info or None


def describe_job(dom: DomainHandle, target: str, info: dict) -> str:
    """The disk's job for a person: its kind, where a mirror job writes to, whether it is ready, its progress;
    e.g. "active commit of /v/top.qcow2 into /v/base.qcow2, ready to pivot, 8388608/8388608 bytes"."""
    kind = JOB_TYPE_NAMES.get(info.get("type"), "type %s" % info.get("type"))
    disk = select_disk(domain_disks(dom), target=target, domain=dom.name())
    parts = [kind]
    if disk.mirror is not None and disk.mirror.path:
        parts = ["%s of %s into %s" % (kind, disk.source, disk.mirror.path)]
        parts.append("ready to pivot" if disk.mirror_ready else "not ready yet")
    parts.append("%d/%d bytes" % (info.get("cur", 0), info.get("end", 0)))
    return ", ".join(parts)


def job_in_the_way(dom: DomainHandle, target: str, info: dict, why: str = "") -> LiveError:
    """LiveError for a block job that keeps a task from starting its own (libvirt allows one per disk): what the
    job is and how to clear it. A mirror job (active commit, copy) never ends on its own."""
    name = dom.name()
    disk = select_disk(domain_disks(dom), target=target, domain=name)
    if disk.mirror_job is not None:
        clear = ("it never ends on its own: finish it with: virsh blockjob %s %s --pivot (once ready), or abort it "
                 "with: virsh blockjob %s %s --abort" % (name, target, name, target))
    else:
        clear = "wait for it to end, or abort it with: virsh blockjob %s %s --abort" % (name, target)
    return LiveError("disk %s of domain '%s' already has a block job (%s)%s; %s"
                     % (target, name, describe_job(dom, target, info), why, clear), domain=name, disk=target)


def ensure_no_job(dom: DomainHandle, target: str) -> None:
    """Raise LiveError if the disk already has a block job: libvirt allows one per disk."""
    info = current_job(dom, target)
    if info:
        raise job_in_the_way(dom, target, info)


def mirror_ready(dom: DomainHandle, target: str) -> bool:
    """True if libvirt marks the disk's job ready for pivot in the live XML."""
    return select_disk(domain_disks(dom), target=target).mirror_ready


def wait_for_job(dom: DomainHandle, target: str, deadline: float | None, wait_ready: bool, poll_interval: float = 0.1) -> dict:
    """Poll until the job is ready (``wait_ready``) or gone, or until ``deadline`` (time.monotonic()).

    Returns {'state': WAIT_READY|WAIT_GONE|WAIT_TIMEOUT, 'cur': int, 'end': int, 'job_type': str}
    with the last progress seen.
    """
    last = {"cur": 0, "end": 0, "type": 0}
    while True:
        info = current_job(dom, target)
        if info is None:
            return _wait_result(WAIT_GONE, last)
        last = info
        if wait_ready and info.get("end", 0) > 0 and info.get("cur") == info.get("end") and mirror_ready(dom, target):
            return _wait_result(WAIT_READY, last)
        if deadline is not None and time.monotonic() >= deadline:
            return _wait_result(WAIT_TIMEOUT, last)
        time.sleep(poll_interval)


def _wait_result(state: str, info: dict) -> dict:
    return {"state": state, "cur": int(info.get("cur", 0)), "end": int(info.get("end", 0)),
            "job_type": JOB_TYPE_NAMES.get(info.get("type", 0), str(info.get("type")))}


def abort_job(dom: DomainHandle, target: str) -> None:
    """Cancel the disk's job and wait until libvirt has removed it (synchronous abort).

    Cancelling leaves the domain on the chain it had before the job; for commit jobs the
    base may already hold some copied clusters (harmless for the guest, which still reads
    them through the overlay)."""
    libvirt = require_libvirt()
    try:
        dom.blockJobAbort(target, 0)
    except libvirt.libvirtError as exc:
        if current_job(dom, target) is not None:
            raise LiveError("could not abort the block job on disk %s of domain '%s': %s"
                            % (target, dom.name(), libvirt_error_text(exc)), domain=dom.name(), disk=target)


def pivot_job(dom: DomainHandle, target: str) -> None:
    """Switch the guest to the job's destination (active commit: the base). Synchronous."""
    libvirt = require_libvirt()
    dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)


def set_job_bandwidth(dom: DomainHandle, target: str, bytes_per_second: int) -> None:
    """Change the running job's speed limit; 0 removes the limit."""
    libvirt = require_libvirt()
    try:
        dom.blockJobSetSpeed(target, bytes_per_second, libvirt.VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES)
    except libvirt.libvirtError as exc:
        raise LiveError("could not set the speed of the block job on disk %s of domain '%s': %s"
                        % (target, dom.name(), libvirt_error_text(exc)), domain=dom.name(), disk=target)


def wait_for_disk(dom: DomainHandle, target: str, predicate: t.Callable[[Disk], bool], grace_seconds: float = 5.0,
                  poll_interval: float = 0.05) -> Disk:
    """Return the live disk once ``predicate(disk)`` holds, or the last disk seen after the grace period.

    blockJobInfo can report "no job" slightly before libvirt has applied the job's end to the
    domain definition, so the chain is re-read for a moment before any conclusion.
    """
    deadline = time.monotonic() + grace_seconds
    while True:
        disk = select_disk(domain_disks(dom), target=target, domain=dom.name())
        if predicate(disk) or time.monotonic() >= deadline:
            return disk
        time.sleep(poll_interval)
