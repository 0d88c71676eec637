# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_commit on a shut-off domain: the engine commits offline, then the definition follows.

Order: the engine's commit (keeps the chain readable at every step), the definition pointing at the
new top (base when top was the active image), and only then the deletion of what left the chain.
A run interrupted after the engine's commit finds an empty top and only moves the definition.
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_domain import DomainCommit
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.commit_state import check_commit_can_write
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import read_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_definition import DefinitionSync
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class ShutOffCommit(DomainCommit):

    def __init__(self, module, domain):
        super().__init__(module, domain)
        self.planned = None
        self.done = None
        self.definition = None

    def _engine_commit(self, dry_run):
        return api.commit(self.disk.active, top=self.top, base=self.base, policy=self.policy, dry_run=dry_run)

    def plan_change(self, top_depth, base_depth):
        self.planned = self._engine_commit(dry_run=True)
        if self.planned["changed"]:
            check_commit_can_write(read_chain(self.disk.active, self.policy), self.planned)
        formats_after = self.disk.formats[:top_depth] + self.disk.formats[base_depth:]
        self.definition = DefinitionSync(self.domain, self.disk)
        self.definition.plan(self.chain_after[0], formats_after[0], self.planned["changed"], self.chain_after, formats_after)

    def describe(self, chain, after):
        description = super().describe(chain, after)
        if self.definition is not None:
            description["definition"] = self.definition.after if after else self.definition.before
        return description

    def apply(self):
        if self.planned["changed"]:
            self.done = self._engine_commit(dry_run=False)
        self.definition.apply()
        self.remove_committed()
        self.diff_after = self.describe(self.domain.chain_now(self.disk.target), after=True)

    def bytes_copied(self):
        outcome = self.done or self.planned
        return outcome["bytes_copied"] if outcome else 0

    def domain_result(self):
        result = super().domain_result()
        if self.definition is not None:
            result["definition_changed"] = self.definition.changed
        return result
