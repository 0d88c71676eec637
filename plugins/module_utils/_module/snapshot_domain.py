# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_snapshot with ``domain``: the external snapshot of a disk of a running domain (libvirt takes it) or of
a shut-off one (the engine, then the definition); see snapshot.py.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import (
    agent_not_answering,
    create_disk_only_snapshot,
    guest_agent_state,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain import (
    DefinitionSync,
    Domain,
    DomainDisk,
    require_active_image,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import require_parent_directory
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot import (
    ExternalSnapshotBackend,
    OfflineExternalSnapshot,
    overlay_results,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class LiveExternalSnapshot(ExternalSnapshotBackend):
    """A running domain: libvirt creates the overlay and qemu switches to it; nothing here writes an image."""

    def __init__(self, module: AnsibleModule, path: str, overlay: str, policy: api.ChainPolicy, domain: Domain) -> None:
        super().__init__(module, path, os.path.abspath(overlay), policy)
        self.domain = domain
        self.disk: DomainDisk | None = None
        self.taken: dict | None = None

    def _done(self, disk: DomainDisk) -> bool:
        return disk.position(self.overlay) == 0 and disk.position(self.path) == 1

    def plan(self) -> None:
        disk = self.domain.locate(self.path, self.module.params["disk"], done=self._done)
        if disk is None:
            raise self.domain.not_active_error(self.path, "an overlay can only go on top of the active image")
        self.disk = disk
        self.diff_before = self.diff_after = self._describe(disk.chain)
        if self._done(disk):
            return
        require_active_image(self.domain, disk, self.path, "an overlay can only go on top of the active image")
        if os.path.lexists(self.overlay):
            raise api.InvalidArgumentError("Overlay %s already exists and is not the active image of disk %s above %s; "
                                           "choose another overlay path or remove it first"
                                           % (self.overlay, disk.target, self.path), self.overlay)
        require_parent_directory(self.overlay)
        if self.module.params["quiesce"]:
            self._require_agent()
        # Reading the chain applies allowed_backing_dirs, as offline.
        api.image_info(self.path, backing_chain=True, force_share=True, policy=self.policy)
        self.diff_after = self._describe([self.overlay] + disk.chain)
        self.changed = True

    def _require_agent(self) -> None:
        """Refuse in the plan (so check mode predicts it) what libvirt would refuse: quiesce without an agent."""
        state = guest_agent_state(self.domain.dom)
        if state is None:
            raise agent_not_answering(self.domain.name, "the domain has no guest agent channel")
        if state == "disconnected":
            raise agent_not_answering(self.domain.name, "no agent has connected to its guest agent channel")

    def _describe(self, chain: list[str]) -> dict:
        return {"path": self.path, "overlay": self.overlay, "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain}

    def apply(self) -> None:
        params = self.module.params
        self.taken = create_disk_only_snapshot(
            self.domain.dom, {self.disk.target: self.overlay}, name=params["name"] if params["metadata"] else None,
            metadata=params["metadata"], quiesce=params["quiesce"])
        self.diff_after = self._describe(self.domain.chain_now(self.disk.target))

    def results(self) -> dict:
        taken = self.taken or {}
        snapshot = taken.get("name") if taken.get("metadata") else None  # libvirt names even the snapshots it does not keep
        domain = self.domain.result(self.disk.target, snapshot=snapshot, quiesced=taken.get("quiesced", False))
        result = overlay_results(self.overlay, self.policy)
        result["domain"] = domain
        return result


class ShutOffExternalSnapshot(OfflineExternalSnapshot):
    """A shut-off domain: the engine writes the overlay, then the definition points the disk at it."""

    def __init__(self, module: AnsibleModule, path: str, overlay: str, policy: api.ChainPolicy, domain: Domain) -> None:
        super().__init__(module, path, os.path.abspath(overlay), policy)
        self.domain = domain
        self.disk: DomainDisk | None = None
        self.definition: DefinitionSync | None = None
        self.writes_overlay = False

    def _done(self, disk: DomainDisk) -> bool:
        return api.same_file(disk.active, self.overlay) and disk.position(self.path) == 1

    def plan(self) -> None:
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

    def _describe_domain(self, chain: list[str], definition: dict) -> dict:
        return {"path": self.path, "overlay": self.overlay, "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain, "definition": definition}

    def apply(self) -> None:
        if self.writes_overlay:
            super().apply()
            if self.module.params["metadata"]:
                self.module.warn("domain '%s' is shut off: the overlay was made offline and libvirt keeps no snapshot "
                                 "metadata for it" % self.domain.name)
        self.definition.apply()
        self.diff_after = self._describe_domain(self.domain.chain_now(self.disk.target), self.definition.after)

    def results(self) -> dict:
        result = super().results()
        result["domain"] = self.domain.result(self.disk.target, definition_changed=self.definition.changed)
        return result
