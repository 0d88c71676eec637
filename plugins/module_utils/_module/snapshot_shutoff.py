# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""External snapshot of a shut-off domain's disk: the engine writes the overlay, then the domain's
definition points the disk at it (so the domain starts on the overlay).

An overlay left by an interrupted run (made, definition not yet updated) is taken as it is and only
the definition changes.
"""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.paths import same_file
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_definition import DefinitionSync
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_target import require_active_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_external import OfflineExternalSnapshot


class ShutOffExternalSnapshot(OfflineExternalSnapshot):

    def __init__(self, module, path, overlay, policy, domain):
        super().__init__(module, path, os.path.abspath(overlay), policy)
        self.domain = domain
        self.disk = None
        self.definition = None
        self.writes_overlay = False

    def _done(self, disk):
        return same_file(disk.active, self.overlay) and disk.position(self.path) == 1

    def plan(self):
        disk = self.domain.locate(self.path, self.module.params["disk"], done=self._done)
        if disk is None:
            raise self.domain.not_active_error(self.path, "an overlay can only go on top of the active image")
        if not self._done(disk):
            require_active_image(self.domain, disk, self.path, "an overlay can only go on top of the active image")
        self.disk = disk
        super().plan()
        self.writes_overlay = self.changed
        if self._done(disk):
            chain_after, formats_after = disk.chain, disk.formats
        else:  # the disk starts on path, the overlay goes on top (or was made by an interrupted run)
            chain_after, formats_after = [self.overlay] + disk.chain, ["qcow2"] + disk.formats
        self.definition = DefinitionSync(self.domain, disk)
        self.definition.plan(self.overlay, "qcow2", self.writes_overlay, chain_after, formats_after)
        self.changed = self.writes_overlay or self.definition.changed
        self.diff_before = self._describe_domain(disk.chain, self.definition.before)
        self.diff_after = self._describe_domain(chain_after, self.definition.after)

    def _describe_domain(self, chain, definition):
        return {"path": self.path, "overlay": self.overlay, "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain, "definition": definition}

    def apply(self):
        if self.writes_overlay:
            super().apply()
            if self.module.params["metadata"]:
                self.module.warn("domain '%s' is shut off: the overlay was made offline and libvirt keeps no snapshot "
                                 "metadata for it" % self.domain.name)
        self.definition.apply()
        self.diff_after = self._describe_domain(self.domain.chain_now(self.disk.target), self.definition.after)

    def results(self):
        result = super().results()
        result["domain"] = self.domain.result(self.disk.target, definition_changed=self.definition.changed)
        return result
