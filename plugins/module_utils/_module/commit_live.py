# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_commit on a running domain: a libvirt block commit, since qemu holds the chain.

Top is the active image: active commit, wait until it is ready, pivot onto base. Top below it: a
commit job that ends on its own. A job that fails or times out is aborted and the domain keeps its
chain; the files that left the chain are deleted (remove_committed) only after success.

An active commit of the same top into the same base that already runs on the disk (an earlier run was
killed before its pivot; libvirt keeps such a job going, in sync, forever) is adopted: the task waits
for it to be ready and pivots, instead of refusing. Any other job on the disk is refused, naming it.
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import (
    active_commit,
    adopt_active_commit,
    finish_active_commit,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import ensure_no_job, set_job_bandwidth
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.commit import intermediate_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_domain import DomainCommit
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_args import job_limits
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class LiveCommit(DomainCommit):

    def __init__(self, module, domain):
        super().__init__(module, domain)
        self.timeout, self.bandwidth = job_limits(self.params)
        self.active = False
        self.adopts = False
        self.job = None

    def plan_change(self, top_depth, base_depth):
        self.active = top_depth == 0
        if self.active:
            self.adopts = adopt_active_commit(self.domain.dom, self.disk.target, self.base) is not None
            if self.adopts:
                self.msg = ("an active commit of %s into %s already runs on disk %s of domain '%s' (an earlier run did "
                            "not finish it): the task %s for it to be ready and pivot%s"
                            % (self.top, self.base, self.disk.target, self.domain.name,
                               "would wait" if self.check_mode else "waited", "" if self.check_mode else "ed"))
        else:
            ensure_no_job(self.domain.dom, self.disk.target)
        # Reading the chain applies allowed_backing_dirs, as offline.
        api.image_info(self.disk.active, backing_chain=True, force_share=True, policy=self.policy)

    def apply(self):
        dom, target, timeout = self.domain.dom, self.disk.target, self.timeout
        if self.adopts:
            handle = adopt_active_commit(dom, target, self.base)
            if handle is None:
                raise LiveError("the active commit of %s into %s on disk %s of domain '%s' ended before the task could "
                                "finish it; run the task again" % (self.top, self.base, target, self.domain.name),
                                domain=self.domain.name, disk=target)
            set_job_bandwidth(dom, target, self.bandwidth or 0)  # the task's limit, not the earlier run's
            self.job = finish_active_commit(dom, handle, timeout=timeout, pivot=True)
        elif self.active:
            self.job = active_commit(dom, target, base=self.base, timeout=timeout, pivot=True, bandwidth=self.bandwidth)
        else:
            self.job = intermediate_commit(dom, target, self.top, base=self.base, timeout=timeout, bandwidth=self.bandwidth)
        if self.job["failed"]:
            raise LiveError(self.job["message"], job=self.job)
        self.remove_committed()
        self.diff_after = self.describe(self.domain.chain_now(self.disk.target), after=True)

    def bytes_copied(self):
        return None

    def results(self):
        result = super().results()
        if self.job is not None:
            result["job"] = self.job
        return result
