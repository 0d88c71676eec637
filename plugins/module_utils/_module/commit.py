# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_commit: the engine's commit offline; with ``domain``, commit_domain.py does the task (a libvirt block
commit on a running domain, the engine plus the definition of a shut-off domain). commit_operation() chooses.

Offline, the engine's plan (api.plan_commit) is the whole prediction: it says what changes, shows the chain
after the commit and refuses what the real run would (a lock a running qemu holds, too little space in base).
A real run's plan leaves the bytes to copy and the free space to the commit, which finds them under its locks.
"""

from __future__ import annotations

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import describe_chain, read_chain, underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation, operation_for
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


def commit_operation(module: AnsibleModule) -> Operation:
    return operation_for(module, CommitOperation, _domain_variants)


def _domain_variants() -> tuple[t.Any, t.Any]:
    from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_domain import LiveCommit, ShutOffCommit
    return LiveCommit, ShutOffCommit


def commit_results(outcome: api.CommitPlan | api.CommitResult) -> dict:
    """The return values the engine's plan or result gives."""
    result = {"top": outcome.top, "base": outcome.base, "committed": outcome.committed, "removed": outcome.removed,
              "bytes_copied": outcome.bytes_copied}
    if not outcome.changed and outcome.msg:
        result["msg"] = outcome.msg
    return result


class CommitOperation(Operation):
    """Offline: the engine plans, commits, and the chain is read once more for the result."""

    def __init__(self, module: AnsibleModule) -> None:
        super().__init__(module)
        self.planned: api.CommitPlan | None = None
        self.done: api.CommitResult | None = None
        self.chain_now: list[dict] | None = None  # the chain read after the commit

    def plan(self) -> None:
        api.require_qcow2(self.path)
        # a real run's commit walks the layers and checks the free space under its locks: the plan need not as well
        self.planned = api.plan_commit(self.path, top=self.params["top"], base=self.params["base"],
                                       remove_committed=self.params["remove_committed"], policy=self.policy,
                                       measure=self.check_mode)
        self.changed = self.planned.changed
        self.diff_before = {"path": self.path, "chain": describe_chain(self.planned.chain)}
        self.diff_after = {"path": self.path, "chain": describe_chain(self.planned.chain_after)}

    def apply(self) -> None:
        self.done = api.commit(self.path, top=self.params["top"], base=self.params["base"],
                               remove_committed=self.params["remove_committed"], policy=self.policy, plan=self.planned)
        self.chain_now = read_chain(self.path, self.policy)
        self.diff_after = {"path": self.path, "chain": describe_chain(self.chain_now)}

    def results(self) -> dict:
        planned = t.cast(api.CommitPlan, self.planned)
        result = commit_results(self.done or planned)
        result["chain"] = underscore_keys(self.chain_now if self.chain_now is not None else planned.chain)
        return result
