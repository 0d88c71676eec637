# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""External snapshot of a running domain's disk: libvirt creates the overlay and qemu switches to it.

qemu holds the chain open, so nothing here writes an image: libvirt's atomic disk-only snapshot makes
the overlay (mode 0600, owned by qemu's user while the domain runs) and records path, absolute, with
its format. The change is already made when the disk runs on the overlay with path directly below.
"""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import (
    agent_not_answering,
    create_disk_only_snapshot,
    guest_agent_state,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_target import require_active_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import require_parent_directory
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_external import (
    ExternalSnapshotBackend,
    overlay_results,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import InvalidArgumentError


class LiveExternalSnapshot(ExternalSnapshotBackend):

    def __init__(self, module, path, overlay, policy, domain):
        super().__init__(module, path, os.path.abspath(overlay), policy)
        self.domain = domain
        self.disk = None
        self.taken = None

    def _done(self, disk):
        return disk.position(self.overlay) == 0 and disk.position(self.path) == 1

    def plan(self):
        disk = self.domain.locate(self.path, self.module.params["disk"], done=self._done)
        if disk is None:
            raise self.domain.not_active_error(self.path, "an overlay can only go on top of the active image")
        self.disk = disk
        self.diff_before = self.diff_after = self._describe(disk.chain)
        if self._done(disk):
            return
        require_active_image(self.domain, disk, self.path, "an overlay can only go on top of the active image")
        if os.path.lexists(self.overlay):
            raise InvalidArgumentError("Overlay %s already exists and is not the active image of disk %s above %s; choose "
                                       "another overlay path or remove it first" % (self.overlay, disk.target, self.path),
                                       self.overlay)
        require_parent_directory(self.overlay)
        if self.module.params["quiesce"]:
            self._require_agent()
        # Reading the chain applies allowed_backing_dirs, as offline.
        api.image_info(self.path, backing_chain=True, force_share=True, policy=self.policy)
        self.diff_after = self._describe([self.overlay] + disk.chain)
        self.changed = True

    def _require_agent(self):
        """Refuse in the plan (so check mode predicts it) what libvirt would refuse: quiesce without an agent."""
        state = guest_agent_state(self.domain.dom)
        if state is None:
            raise agent_not_answering(self.domain.name, "the domain has no guest agent channel")
        if state == "disconnected":
            raise agent_not_answering(self.domain.name, "no agent has connected to its guest agent channel")

    def _describe(self, chain):
        return {"path": self.path, "overlay": self.overlay, "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain}

    def apply(self):
        params = self.module.params
        self.taken = create_disk_only_snapshot(
            self.domain.dom, {self.disk.target: self.overlay}, name=params["name"] if params["metadata"] else None,
            metadata=params["metadata"], quiesce=params["quiesce"])
        self.diff_after = self._describe(self.domain.chain_now(self.disk.target))

    def results(self):
        taken = self.taken or {}
        snapshot = taken.get("name") if taken.get("metadata") else None  # libvirt names even the snapshots it does not keep
        domain = self.domain.result(self.disk.target, snapshot=snapshot, quiesced=taken.get("quiesced", False))
        result = overlay_results(self.overlay, self.policy)
        result["domain"] = domain
        return result
