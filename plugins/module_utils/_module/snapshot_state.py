# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_snapshot: internal snapshots (present, absent, reverted) and external snapshots (present)."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import common_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import describe_chain, read_chain, underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_args import domain_argument_spec
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import refuse_if_locked
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_backends import select_external_backend
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_internal import (
    compare_with_snapshot,
    only_snapshot_named,
    snapshots_named,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


def snapshot_argument_spec():
    return common_argument_spec().update(
        dict(
            name=dict(type="str"),
            type=dict(type="str", default="internal", choices=["internal", "external"]),
            state=dict(type="str", default="present", choices=["present", "absent", "reverted"]),
            overlay=dict(type="path"),
            quiesce=dict(type="bool", default=False),
            metadata=dict(type="bool", default=False),
        ),
        required_if=[("type", "internal", ("name",)), ("type", "external", ("overlay",)),
                     ("quiesce", True, ("domain",)), ("metadata", True, ("domain",))],
    ).merge(domain_argument_spec())


class SnapshotOperation(Operation):
    """Dispatches on type: internal snapshots here, external ones to a backend."""

    def __init__(self, module):
        super().__init__(module)
        self.name = self.params["name"]
        self.state = self.params["state"]
        self.external = None
        self.to_delete = []
        self.revert_to = None

    def plan(self):
        if self.params["type"] == "external":
            if self.state != "present":
                raise InvalidArgumentError("External snapshots support only state=present; remove an external snapshot "
                                           "with backingchain.qcow2.qcow2_commit")
            self.external = select_external_backend(self.module, self.path, self.params["overlay"], self.policy)
            self.external.plan()
            self.changed = self.external.changed
            self.diff_before, self.diff_after = self.external.diff_before, self.external.diff_after
            return
        if self.params["overlay"] is not None:
            raise InvalidArgumentError("overlay is only used with type=external")
        if self.params["domain"]:
            raise InvalidArgumentError("domain is only used with type=external: internal snapshots of a running domain's "
                                       "image are not supported")
        self._plan_internal()

    def _plan_internal(self):
        infos = read_chain(self.path, self.policy)
        top = infos[0]
        snapshots = top.get("snapshots", [])
        chain = describe_chain(infos)
        self.diff_before = self._describe(snapshots, chain, None)
        after_snapshots, after_chain, matched = list(snapshots), chain, None
        if self.state == "present":
            if not snapshots_named(snapshots, self.name):
                refcount_bits = top["format-specific"]["data"]["refcount-bits"]
                if refcount_bits < 2:
                    raise InvalidArgumentError("Image %s has 1-bit refcounts; internal snapshots need refcount_bits of 2 "
                                               "or more" % self.path, self.path)
                self.changed = True
                after_snapshots.append({"id": None, "name": self.name})
        elif self.state == "absent":
            self.to_delete = [sn["id"] for sn in snapshots_named(snapshots, self.name)]
            self.changed = bool(self.to_delete)
            after_snapshots = [sn for sn in snapshots if sn["id"] not in self.to_delete]
        else:
            sn = only_snapshot_named(snapshots, self.name, self.path)
            matched = self.name
            matches, disk_size = compare_with_snapshot(self.path, sn["id"])
            if not matches:
                api.revert_snapshot(self.path, sn["id"], dry_run=True)  # what the revert refuses, check mode refuses
                self.revert_to = sn["id"]
                self.changed = True
                self.diff_before["matches_snapshot"] = None
                after_chain = [dict(chain[0], virtual_size=disk_size)] + chain[1:]
            else:
                self.diff_before["matches_snapshot"] = matched
        if self.changed:
            refuse_if_locked(self.path)
        self.diff_after = self._describe(after_snapshots, after_chain, matched)

    def _describe(self, snapshots, chain, matched):
        description = {"path": self.path, "snapshots": [sn["name"] for sn in snapshots], "chain": chain}
        if self.state == "reverted":
            description["matches_snapshot"] = matched
        return description

    def apply(self):
        if self.external is not None:
            self.external.apply()
            self.diff_after = self.external.diff_after
        elif self.state == "present":
            api.create_snapshot(self.path, self.name)
        elif self.state == "absent":
            for snapshot_id in self.to_delete:
                api.delete_snapshot(self.path, snapshot_id)  # by id: the engine looks ids up before names
        else:
            api.revert_snapshot(self.path, self.revert_to)

    def results(self):
        if self.external is not None:
            return self.external.results()
        snapshots = underscore_keys(api.list_snapshots(self.path, force_share=True))
        result = {"snapshots": snapshots}
        if self.state != "absent":
            named = snapshots_named(snapshots, self.name)
            if named:
                result["snapshot"] = named[-1]
        return result
