# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_commit with ``domain``.

With ``domain``, committing the disk's active image moves the disk onto base: a running domain pivots there,
a shut-off one is redefined to start there. Everything from top down to just above base then leaves the
disk's chain, the former active image included, so the task is done once top is no longer in the disk's chain.

On a running domain: top is the active image: active commit, wait until it is ready, pivot onto base. Top
below it: a commit job that ends on its own. A job that fails or times out is aborted and the domain keeps
its chain; the files that left the chain are deleted (remove_committed) only after success. An active commit
of the same top into the same base that already runs on the disk (an earlier run was killed before its
pivot; libvirt keeps such a job going, in sync, forever) is adopted: the task waits for it to be ready and
pivots, instead of refusing. Any other job on the disk is refused, naming it.

On a shut-off domain, the order is: the engine's commit (keeps the chain readable at every step), the
definition pointing at the new top (base when top was the active image), and only then the deletion of
what left the chain. A run interrupted after the engine's commit finds an empty top and only moves the
definition.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import (
    active_commit,
    adopt_active_commit,
    finish_active_commit,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import ensure_no_job, set_job_bandwidth
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.commit import intermediate_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import job_limits
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain import DefinitionSync, Domain, DomainDisk
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class DomainCommit(Operation):
    """What both domain states share (which disk, top and base; the results). Subclasses add plan_change() (checks
    once a change is certain), apply() and bytes_copied()."""

    def __init__(self, module: AnsibleModule, domain: Domain) -> None:
        super().__init__(module, domain.policy)
        self.domain = domain
        self.disk: DomainDisk | None = None
        self.top: str = self.params["top"] or self.path
        self.base: str | None = None
        self.chain_after: list[str] = []
        self.committed: list[str] = []
        self.removed: list[str] = []
        self.msg: str | None = None
        self.applied = False

    def plan(self) -> None:
        disk = self.domain.locate(self.path, self.params["disk"])
        if disk is None:
            holder, _depth = self.domain.holder(self.path)
            if holder is not None:
                raise self.domain.not_active_error(self.path, "pass the active image as path (and this one as top), or "
                                                              "name the disk with disk")
            self.msg = "%s is not in the chain of any disk of domain '%s': nothing to commit" % (self.path, self.domain.name)
            return
        self.disk = disk
        ti = disk.position(self.top)
        if ti is None:
            self.msg = ("%s is not in the chain of disk %s of domain '%s': nothing to commit"
                        % (self.top, disk.target, self.domain.name))
            self.diff_before = self.diff_after = self.describe(disk.chain, after=False)
            return
        bi = self._base_depth(disk, ti)
        self.top, self.base = disk.chain[ti], disk.chain[bi]
        self.committed = disk.chain[ti:bi]
        self.chain_after = disk.chain[:ti] + disk.chain[bi:]
        self.changed = True
        self.plan_change(ti, bi)
        self.diff_before = self.describe(disk.chain, after=False)
        self.diff_after = self.describe(self.chain_after, after=True)

    def _base_depth(self, disk: DomainDisk, ti: int) -> int:
        where = "disk %s of domain '%s' (chain, top first: %s)" % (disk.target, self.domain.name, disk.chain)
        if ti + 1 >= len(disk.chain):
            raise api.InvalidArgumentError("Image %s has no backing file to commit into in %s" % (disk.chain[ti], where))
        if self.params["base"] is None:
            return ti + 1
        bi = disk.position(self.params["base"])
        if bi is None:
            raise api.InvalidArgumentError("Did not find '%s' in the chain of %s" % (self.params["base"], where))
        if bi <= ti:
            raise api.InvalidArgumentError("Base %s is not below top %s in the chain of %s"
                                           % (self.params["base"], self.top, where))
        return bi

    def plan_change(self, top_depth: int, base_depth: int) -> None:
        """Checks that need the change to be certain; may raise."""

    def describe(self, chain: list[str], after: bool) -> dict:
        return {"path": self.path, "domain": self.domain.name, "disk": self.disk.target, "chain": chain}

    def remove_committed(self) -> None:
        """Delete what left the chain, once nothing uses it (after the pivot or the redefinition)."""
        if self.params["remove_committed"]:
            for path in self.committed:
                os.unlink(path)
                self.removed.append(path)
        self.applied = True

    def bytes_copied(self) -> int | None:
        return 0

    def domain_result(self) -> dict:
        if self.disk is None:
            return {"name": self.domain.name, "state": self.domain.state}
        return self.domain.result(self.disk.target)

    def results(self) -> dict:
        result = {"top": self.top, "base": self.base, "committed": self.committed, "bytes_copied": self.bytes_copied(),
                  "removed": self.removed if self.applied else list(self.committed if self.params["remove_committed"] else [])}
        if self.msg:
            result["msg"] = self.msg
        domain = self.domain_result()
        if "chain" in domain:
            # Any format: a commit into a raw base leaves the disk on a raw image.
            result["chain"] = underscore_keys(api.image_info(domain["chain"][0], backing_chain=True, force_share=True,
                                                             policy=self.policy))
        result["domain"] = domain
        return result


class LiveCommit(DomainCommit):
    """A running domain: a libvirt block commit, since qemu holds the chain."""

    def __init__(self, module: AnsibleModule, domain: Domain) -> None:
        super().__init__(module, domain)
        self.timeout, self.bandwidth = job_limits(self.params)
        self.active = False
        self.adopts = False
        self.job: dict | None = None

    def plan_change(self, top_depth: int, base_depth: int) -> None:
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

    def apply(self) -> None:
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

    def bytes_copied(self) -> int | None:
        return None

    def results(self) -> dict:
        result = super().results()
        if self.job is not None:
            result["job"] = self.job
        return result


class ShutOffCommit(DomainCommit):
    """A shut-off domain: the engine commits offline, then the definition follows."""

    def __init__(self, module: AnsibleModule, domain: Domain) -> None:
        super().__init__(module, domain)
        self.planned: api.CommitPlan | None = None
        self.done: api.CommitResult | None = None
        self.definition: DefinitionSync | None = None

    def plan_change(self, top_depth: int, base_depth: int) -> None:
        self.planned = api.plan_commit(self.disk.active, top=self.top, base=self.base, policy=self.policy)
        formats_after = self.disk.formats[:top_depth] + self.disk.formats[base_depth:]
        self.definition = DefinitionSync(self.domain, self.disk)
        self.definition.plan(self.chain_after[0], formats_after[0], self.planned.changed, self.chain_after, formats_after)

    def describe(self, chain: list[str], after: bool) -> dict:
        description = super().describe(chain, after)
        if self.definition is not None:
            description["definition"] = self.definition.after if after else self.definition.before
        return description

    def apply(self) -> None:
        if self.planned.changed:
            self.done = api.commit(self.disk.active, top=self.top, base=self.base, policy=self.policy, plan=self.planned)
        self.definition.apply()
        self.remove_committed()
        self.diff_after = self.describe(self.domain.chain_now(self.disk.target), after=True)

    def bytes_copied(self) -> int | None:
        outcome = self.done or self.planned
        return outcome.bytes_copied if outcome else 0

    def domain_result(self) -> dict:
        result = super().domain_result()
        if self.definition is not None:
            result["definition_changed"] = self.definition.changed
        return result
