# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_commit: the engine's commit, planned by its dry run; check mode also checks locks and space."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import common_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import (
    describe_chain,
    read_chain,
    underscore_keys,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_args import block_job_argument_spec, domain_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import refuse_if_locked, same_file
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.backing_name import name_for
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.space import require_space

RESULT_KEYS = ("top", "base", "committed", "removed", "bytes_copied")


def commit_argument_spec():
    return common_argument_spec().update(dict(
        top=dict(type="path"),
        base=dict(type="path"),
        remove_committed=dict(type="bool", default=False),
    )).merge(domain_argument_spec()).merge(block_job_argument_spec())


def check_commit_can_write(infos, planned):
    """Fail now where the engine's commit would: on qemu's lock (the engine writes base and the image that
    gets re-pointed, or top when top is the chain's first image, and reads the rest), or on free space in
    base. infos: the chain, top first. Returns the chain indexes of top and base."""
    ti, bi = _index(infos, planned["top"]), _index(infos, planned["base"])
    written = {bi, ti - 1 if ti > 0 else ti}
    for i in range(len(infos)):
        refuse_if_locked(infos[i]["filename"], write=i in written)
    require_space(planned["base"], planned["bytes_copied"], "commit into %s" % planned["base"])
    return ti, bi


def _index(infos, path):
    return next((i for i, info in enumerate(infos) if same_file(info["filename"], path)), None)


class CommitOperation(Operation):

    def __init__(self, module):
        super().__init__(module)
        self.planned = None
        self.done = None

    def _engine_commit(self, dry_run):
        return api.commit(self.path, top=self.params["top"], base=self.params["base"],
                          remove_committed=self.params["remove_committed"], policy=self.policy, dry_run=dry_run)

    def plan(self):
        infos = read_chain(self.path, self.policy)
        chain = describe_chain(infos)
        self.diff_before = {"path": self.path, "chain": chain}
        self.planned = self._engine_commit(dry_run=True)
        self.changed = self.planned["changed"]
        if not self.changed:
            self.diff_after = dict(self.diff_before)
            return
        ti, bi = check_commit_can_write(infos, self.planned)
        self.diff_after = {"path": self.path, "chain": self._chain_after(chain, ti, bi)}

    def _chain_after(self, chain, ti, bi):
        """Path's chain once top..base-1 are committed: those layers leave (top stays when it is path)."""
        base = dict(chain[bi], virtual_size=self.planned.get("base_size", chain[bi]["virtual_size"]))
        if ti == 0:
            top = dict(chain[0])
            if bi > 1:
                top.update(backing_filename=name_for(top["filename"], base["filename"], top["backing_filename"]),
                           backing_format=base["format"])
            return [top, base] + chain[bi + 1:]
        above = dict(chain[ti - 1], backing_filename=name_for(chain[ti - 1]["filename"], base["filename"],
                                                              chain[ti - 1]["backing_filename"]),
                     backing_format=base["format"])
        return chain[:ti - 1] + [above, base] + chain[bi + 1:]

    def apply(self):
        self.done = self._engine_commit(dry_run=False)
        self.diff_after = {"path": self.path, "chain": describe_chain(read_chain(self.path, self.policy))}

    def results(self):
        outcome = self.done or self.planned
        result = dict((key, outcome.get(key)) for key in RESULT_KEYS)
        if not outcome["changed"] and outcome.get("msg"):
            result["msg"] = outcome["msg"]
        result["chain"] = underscore_keys(read_chain(self.path, self.policy))
        return result
