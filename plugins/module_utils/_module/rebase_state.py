# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_rebase: the engine's rebase, planned by its dry run; check mode also opens both chains and checks locks.

The dry run's bytes_copied is what the real run will write when the new backing file is in the image's chain (the
dropped layers' ranges, zero ranges included, come from metadata alone) or only the header changes. Flattening and
a backing file from outside the chain find all-zero clusters, and clusters both chains read alike, only by reading
the data: there it is an upper bound, and check mode says so in bytes_estimated.
"""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import common_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.backing import check_backing_format
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import (
    describe_chain,
    read_chain,
    underscore_keys,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_args import block_job_argument_spec, domain_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import refuse_if_locked, same_file
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import check_backing_reference
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import BackingChainError, Qcow2Error

RESULT_KEYS = ("old_backing", "old_format", "new_backing", "new_format", "header_only", "bytes_copied")


def estimate_is_exact(planned, path, backing_file, old_chain, policy):
    """Whether a dry run's bytes_copied is what the real run writes (see the module docstring). old_chain: the image's
    chain as it is (qemu-img info dicts)."""
    if not planned["changed"] or planned["header_only"]:
        return True
    if not backing_file:
        return False
    resolved = check_backing_reference(backing_file, path, policy)
    return any(same_file(info["filename"], resolved) for info in old_chain[1:])


def rebase_argument_spec():
    return common_argument_spec().update(dict(
        backing_file=dict(type="str", required=True),
        backing_format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
        mode=dict(type="str", default="safe", choices=["safe", "unsafe"]),
    )).merge(domain_argument_spec()).merge(block_job_argument_spec())


class RebaseOperation(Operation):

    def __init__(self, module):
        super().__init__(module)
        self.backing_file = self.params["backing_file"]
        self.backing_format = self.params["backing_format"] if self.backing_file else None
        self.unsafe = self.params["mode"] == "unsafe"
        self.planned = None
        self.done = None
        self.exact = True

    def _engine_rebase(self, dry_run):
        return api.rebase(self.path, self.backing_file, backing_format=self.backing_format, unsafe=self.unsafe,
                          policy=self.policy, dry_run=dry_run)

    def plan(self):
        top = read_chain(self.path, self.policy, backing_chain=False)
        self.planned = self._engine_rebase(dry_run=True)
        self.changed = self.planned["changed"]
        copying = self.changed and not self.planned["header_only"]
        old_chain = self._old_chain(top, required=copying)
        self.exact = estimate_is_exact(self.planned, self.path, self.backing_file, old_chain, self.policy)
        self.diff_before = {"path": self.path, "mode": self.params["mode"], "chain": describe_chain(old_chain)}
        if not self.changed:
            self.diff_after = dict(self.diff_before)
            return
        below = self._new_chain(required=copying)
        refuse_if_locked(self.path)
        entry = dict(describe_chain(top)[0], backing_filename=self.backing_file or None, backing_format=self.backing_format)
        self.diff_after = {"path": self.path, "mode": self.params["mode"], "chain": [entry] + describe_chain(below)}

    def _old_chain(self, top, required):
        """The chain as it is. A safe rebase reads it, so it must open; otherwise it only describes the diff."""
        try:
            return read_chain(self.path, self.policy)
        except BackingChainError as err:
            if required:
                raise BackingChainError("%s. A safe rebase reads the old backing chain; mode=unsafe changes only the "
                                        "header" % err, self.path) from None
            return top

    def _new_chain(self, required):
        """The new backing file's chain: its format must match, and it must not lead back to path (a loop).

        A safe rebase copies from it, so it must open; an unsafe one may name a file that does not exist yet.
        """
        if not self.backing_file:
            return []
        resolved = check_backing_reference(self.backing_file, self.path, self.policy)
        if not os.path.exists(resolved):
            if required:
                raise BackingChainError("Could not open backing file '%s' of '%s': No such file or directory"
                                        % (resolved, self.path), self.path)
            return []
        check_backing_format(self.path, resolved, self.backing_format)
        try:
            infos = api.image_info(resolved, backing_chain=True, force_share=True, policy=self.policy)
        except Qcow2Error:
            if required:
                raise
            infos = api.image_info(resolved, backing_chain=False, force_share=True, policy=self.policy)
        for info in infos:
            if same_file(info["filename"], self.path):
                raise BackingChainError("Backing file '%s' creates an infinite loop: its chain leads back to %s"
                                        % (resolved, self.path), self.path)
        return infos

    def apply(self):
        self.done = self._engine_rebase(dry_run=False)
        try:
            infos = read_chain(self.path, self.policy)
        except BackingChainError:  # unsafe mode may record a backing file that does not exist yet
            infos = read_chain(self.path, self.policy, backing_chain=False)
        self.diff_after = dict(self.diff_after, chain=describe_chain(infos))

    def results(self):
        outcome = self.done or self.planned
        result = dict((key, outcome.get(key)) for key in RESULT_KEYS)
        result["bytes_estimated"] = self.done is None and not self.exact
        result["image"] = underscore_keys(read_chain(self.path, self.policy, backing_chain=False)[0])
        return result
