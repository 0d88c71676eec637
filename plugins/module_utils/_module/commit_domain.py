# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_commit with ``domain``: what both domain states share (which disk, top and base; the results).

Unlike the offline commit, committing the disk's active image moves the disk onto base: a running
domain pivots there, a shut-off one is redefined to start there. Everything from top down to just
above base then leaves the disk's chain, the former active image included, so the task is done once
top is no longer in the disk's chain.
"""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


class DomainCommit(Operation):
    """Subclasses add plan_change() (checks once a change is certain), apply() and bytes_copied()."""

    def __init__(self, module, domain):
        super().__init__(module)
        self.domain = domain
        self.disk = None
        self.top = self.params["top"] or self.path
        self.base = None
        self.chain_after = None
        self.committed = []
        self.removed = []
        self.msg = None
        self.applied = False

    def plan(self):
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

    def _base_depth(self, disk, ti):
        where = "disk %s of domain '%s' (chain, top first: %s)" % (disk.target, self.domain.name, disk.chain)
        if ti + 1 >= len(disk.chain):
            raise InvalidArgumentError("Image %s has no backing file to commit into in %s" % (disk.chain[ti], where))
        if self.params["base"] is None:
            return ti + 1
        bi = disk.position(self.params["base"])
        if bi is None:
            raise InvalidArgumentError("Did not find '%s' in the chain of %s" % (self.params["base"], where))
        if bi <= ti:
            raise InvalidArgumentError("Base %s is not below top %s in the chain of %s" % (self.params["base"], self.top, where))
        return bi

    def plan_change(self, top_depth, base_depth):
        """Checks that need the change to be certain; may raise."""

    def describe(self, chain, after):
        return {"path": self.path, "domain": self.domain.name, "disk": self.disk.target, "chain": chain}

    def remove_committed(self):
        """Delete what left the chain, once nothing uses it (after the pivot or the redefinition)."""
        if self.params["remove_committed"]:
            for path in self.committed:
                os.unlink(path)
                self.removed.append(path)
        self.applied = True

    def bytes_copied(self):
        return 0

    def domain_result(self):
        if self.disk is None:
            return {"name": self.domain.name, "state": self.domain.state}
        return self.domain.result(self.disk.target)

    def results(self):
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
