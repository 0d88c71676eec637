# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_rebase on a shut-off domain: the engine's rebase of the disk's active image, then the
definition drops a <backingStore> that no longer matches (the disk keeps its active image)."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_definition import DefinitionSync
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_target import require_active_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.rebase_state import RebaseOperation


class ShutOffRebase(RebaseOperation):

    def __init__(self, module, domain):
        super().__init__(module)
        self.domain = domain
        self.disk = None
        self.definition = None
        self.rebases = False

    def plan(self):
        disk = self.domain.locate(self.path, self.params["disk"])
        if disk is None:
            raise self.domain.not_active_error(self.path, "rebase the active image with domain, or the image without it")
        require_active_image(self.domain, disk, self.path, "rebase the active image with domain, or the image without it")
        self.disk = disk
        super().plan()
        self.rebases = self.changed
        below = self.diff_after["chain"][1:]  # the engine's prediction of the new backing chain
        chain_after = [disk.active] + [entry["filename"] for entry in below]
        formats_after = [disk.formats[0]] + [entry["format"] for entry in below]
        self.definition = DefinitionSync(self.domain, disk)
        self.definition.plan(disk.active, disk.formats[0], self.rebases, chain_after, formats_after)
        self.changed = self.rebases or self.definition.changed
        self.diff_before = self._describe(disk.chain, self.definition.before)
        self.diff_after = self._describe(chain_after, self.definition.after)

    def _describe(self, chain, definition):
        return {"path": self.path, "mode": self.params["mode"], "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain, "definition": definition}

    def apply(self):
        if self.rebases:
            self.done = self._engine_rebase(dry_run=False)
        self.definition.apply()
        self.diff_after = self._describe(self.domain.chain_now(self.disk.target), self.definition.after)

    def results(self):
        result = super().results()
        result["domain"] = self.domain.result(self.disk.target, definition_changed=self.definition.changed)
        return result
