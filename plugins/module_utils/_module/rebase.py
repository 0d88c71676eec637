# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_rebase: the engine's rebase offline; with ``domain``, rebase_domain.py does the task (a libvirt block
pull on a running domain, the engine plus the definition of a shut-off domain). rebase_operation() chooses.

Offline, the engine's plan (api.plan_rebase) is the whole prediction. Its bytes_copied is what the real run
will write when the new backing file is in the image's chain (the dropped layers' ranges, zero ranges
included, come from metadata alone) or only the header changes. Flattening and a backing file from outside
the chain find all-zero clusters, and clusters both chains read alike, only by reading the data: there it is
an upper bound, and check mode says so in bytes_estimated.
"""

from __future__ import annotations

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import describe_chain, read_chain, underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation, operation_for
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


def rebase_operation(module: AnsibleModule) -> Operation:
    return operation_for(module, RebaseOperation, _domain_variants)


def _domain_variants() -> tuple[t.Any, t.Any]:
    from ansible_collections.backingchain.qcow2.plugins.module_utils._module.rebase_domain import LiveRebase, ShutOffRebase
    return LiveRebase, ShutOffRebase


class RebaseOperation(Operation):
    """Offline: the engine plans, rebases, and the chain is read once more for the result."""

    def __init__(self, module: AnsibleModule, policy: api.ChainPolicy | None = None) -> None:
        super().__init__(module, policy)
        self.backing_file: str = self.params["backing_file"]
        self.backing_format: str | None = self.params["backing_format"] if self.backing_file else None
        self.unsafe = self.params["mode"] == "unsafe"
        self.planned: api.RebasePlan | None = None
        self.done: api.RebaseResult | None = None
        self.chain_now: list[dict] | None = None  # the chain read after the rebase

    def plan(self) -> None:
        api.require_qcow2(self.path)
        # a real run's rebase walks the layers under its locks: the plan need not count the bytes as well
        self.planned = api.plan_rebase(self.path, self.backing_file, backing_format=self.backing_format,
                                       unsafe=self.unsafe, policy=self.policy, measure=self.check_mode)
        self.changed = self.planned.changed
        self.diff_before = {"path": self.path, "mode": self.params["mode"], "chain": describe_chain(self.planned.chain)}
        self.diff_after = {"path": self.path, "mode": self.params["mode"],
                           "chain": describe_chain(self.planned.chain_after)}

    def apply(self) -> None:
        self.done = api.rebase(self.path, self.backing_file, backing_format=self.backing_format, unsafe=self.unsafe,
                               policy=self.policy, plan=self.planned)
        try:
            self.chain_now = read_chain(self.path, self.policy)
        except api.BackingChainError:  # unsafe mode may record a backing file that does not exist yet
            self.chain_now = read_chain(self.path, self.policy, backing_chain=False)
        self.diff_after = dict(self.diff_after, chain=describe_chain(self.chain_now))

    def results(self) -> dict:
        planned = t.cast(api.RebasePlan, self.planned)
        outcome = self.done or planned
        return {
            "old_backing": outcome.old_backing,
            "old_format": outcome.old_format,
            "new_backing": outcome.new_backing,
            "new_format": outcome.new_format,
            "header_only": outcome.header_only,
            "bytes_copied": outcome.bytes_copied,
            "bytes_estimated": self.done is None and not planned.exact,
            "image": underscore_keys((self.chain_now or planned.chain)[0]),
        }
