# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_snapshot: internal snapshots (present, absent, reverted) and external snapshots (present).

An external snapshot is a new qcow2 overlay that becomes the writable top, the image below it its backing
file. Where it is taken is chosen by select_external_backend(): OfflineExternalSnapshot writes the overlay
itself and needs the image to be idle; with ``domain`` set (snapshot_domain.py), LiveExternalSnapshot has libvirt take it on a
running domain (libvirt's atomic disk-only snapshot makes the overlay, mode 0600 and owned by qemu's user,
and records path, absolute, with its format; the change is already made when the disk runs on the overlay
with path directly below), and ShutOffExternalSnapshot writes it offline, then points the domain's
definition at it (so the domain starts on the overlay). An overlay left by an interrupted run (made,
definition not yet updated) is taken as it is and only the definition changes.
"""

from __future__ import annotations

import os
import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import describe_chain, read_chain, underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import (
    backing_is,
    require_parent_directory,
    temp_path_beside,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation, operation_for
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


def snapshots_named(snapshots: list[dict], name: str) -> list[dict]:
    """The snapshots (qemu-img info dicts) whose name is exactly ``name``; qemu's own lookup tries ids first."""
    return [sn for sn in snapshots if sn["name"] == name]


def only_snapshot_named(snapshots: list[dict], name: str, path: str) -> dict:
    found = snapshots_named(snapshots, name)
    if not found:
        raise api.InvalidArgumentError("Image %s has no internal snapshot named '%s'" % (path, name), path)
    if len(found) > 1:
        raise api.InvalidArgumentError("Image %s has %d internal snapshots named '%s' (ids %s); reverting to one of them "
                                       "is ambiguous" % (path, len(found), name, ", ".join(sn["id"] for sn in found)), path)
    return found[0]


class SnapshotOperation(Operation):
    """Dispatches on type: internal snapshots here, external ones to a backend."""

    def __init__(self, module: AnsibleModule) -> None:
        super().__init__(module)
        self.name: str | None = self.params["name"]
        self.state: str = self.params["state"]
        self.external: ExternalSnapshotBackend | None = None
        self.to_delete: list[str] = []
        self.revert_to: str | None = None

    def plan(self) -> None:
        if self.params["type"] == "external":
            if self.state != "present":
                raise api.InvalidArgumentError("External snapshots support only state=present; remove an external "
                                               "snapshot with backingchain.qcow2.qcow2_commit")
            self.external = select_external_backend(self.module, self.path, self.params["overlay"], self.policy)
            self.external.plan()
            self.changed = self.external.changed
            self.diff_before, self.diff_after = self.external.diff_before, self.external.diff_after
            return
        if self.params["overlay"] is not None:
            raise api.InvalidArgumentError("overlay is only used with type=external")
        if self.params["domain"]:
            raise api.InvalidArgumentError("domain is only used with type=external: internal snapshots of a running "
                                           "domain's image are not supported")
        self._plan_internal()

    def _plan_internal(self) -> None:
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
                    raise api.InvalidArgumentError("Image %s has 1-bit refcounts; internal snapshots need refcount_bits "
                                                   "of 2 or more" % self.path, self.path)
                self.changed = True
                after_snapshots.append({"id": None, "name": self.name})
        elif self.state == "absent":
            self.to_delete = [sn["id"] for sn in snapshots_named(snapshots, self.name)]
            self.changed = bool(self.to_delete)
            after_snapshots = [sn for sn in snapshots if sn["id"] not in self.to_delete]
        else:
            sn = only_snapshot_named(snapshots, self.name, self.path)
            matched = self.name
            matches, disk_size = api.snapshot_matches(self.path, sn["id"])
            if not matches:
                api.revert_snapshot(self.path, sn["id"], dry_run=True)  # what the revert refuses, check mode refuses
                self.revert_to = sn["id"]
                self.changed = True
                self.diff_before["matches_snapshot"] = None
                after_chain = [dict(chain[0], virtual_size=disk_size)] + chain[1:]
            else:
                self.diff_before["matches_snapshot"] = matched
        if self.changed:
            api.refuse_if_locked(self.path)
        self.diff_after = self._describe(after_snapshots, after_chain, matched)

    def _describe(self, snapshots: list[dict], chain: list[dict], matched: str | None) -> dict:
        description = {"path": self.path, "snapshots": [sn["name"] for sn in snapshots], "chain": chain}
        if self.state == "reverted":
            description["matches_snapshot"] = matched
        return description

    def apply(self) -> None:
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

    def results(self) -> dict:
        if self.external is not None:
            return self.external.results()
        snapshots = underscore_keys(api.list_snapshots(self.path, force_share=True))
        result = {"snapshots": snapshots}
        if self.state != "absent":
            named = snapshots_named(snapshots, self.name)
            if named:
                result["snapshot"] = named[-1]
        return result


def select_external_backend(module: AnsibleModule, path: str, overlay: str,
                            policy: api.ChainPolicy) -> ExternalSnapshotBackend:
    """Offline without ``domain``; with it, libvirt while qemu runs the domain, else offline plus its definition."""
    return operation_for(module, OfflineExternalSnapshot, _domain_variants, path, overlay, policy)


def _domain_variants() -> tuple[t.Any, t.Any]:
    from ansible_collections.backingchain.qcow2.plugins.module_utils._module.snapshot_domain import (
        LiveExternalSnapshot,
        ShutOffExternalSnapshot,
    )
    return LiveExternalSnapshot, ShutOffExternalSnapshot


class ExternalSnapshotBackend(Operation):
    """The part of a qcow2_snapshot run that takes an external snapshot: an operation on ``overlay`` above path,
    run by SnapshotOperation."""

    def __init__(self, module: AnsibleModule, path: str, overlay: str, policy: api.ChainPolicy) -> None:
        super().__init__(module, policy)
        self.path = path
        self.overlay = overlay


class OfflineExternalSnapshot(ExternalSnapshotBackend):
    """The image is not in use: create the overlay file, recording path (absolute) and its format."""

    def __init__(self, module: AnsibleModule, path: str, overlay: str, policy: api.ChainPolicy) -> None:
        super().__init__(module, path, overlay, policy)
        self.backing_name = os.path.abspath(path)
        self.backing_format: str | None = None

    def plan(self) -> None:
        if self.overlay and os.path.abspath(self.overlay) == self.backing_name:
            raise api.InvalidArgumentError("overlay must be a new file, not the image itself (%s)" % self.path, self.path)
        self.backing_format = api.detect_format(self.path)
        if os.path.lexists(self.overlay):
            self._plan_existing()
        else:
            self._plan_new()

    def _plan_existing(self) -> None:
        infos = read_chain(self.overlay, self.policy)
        top = infos[0]
        stored = top.get("backing-filename")
        if not backing_is(self.overlay, stored, self.backing_name):
            raise api.InvalidArgumentError(
                "Overlay %s already exists and is not an overlay of %s (its backing file is %s); choose another overlay "
                "path or remove it first" % (self.overlay, self.path, stored or "none"), self.overlay)
        if top.get("backing-filename-format") != self.backing_format:
            raise api.BackingChainError(
                "Overlay %s records backing format %s for %s, which is a %s image; fix it with "
                "backingchain.qcow2.qcow2_rebase (mode=unsafe, backing_format=%s)"
                % (self.overlay, top.get("backing-filename-format") or "none", self.path, self.backing_format,
                   self.backing_format), self.overlay)
        self.diff_before = self.diff_after = self._describe(describe_chain(infos))

    def _plan_new(self) -> None:
        require_parent_directory(self.overlay)
        if self.backing_format == "qcow2":
            infos = read_chain(self.path, self.policy)
        else:
            infos = api.image_info(self.path, backing_chain=False, force_share=True, policy=self.policy)
        # Snapshotting an image a VM is writing would lose the VM's later writes: the VM keeps writing to path.
        api.refuse_if_locked(self.path, write=True)
        below = describe_chain(infos)
        self.diff_before = self._describe(below)
        top = {"filename": self.overlay, "format": "qcow2", "virtual_size": infos[0]["virtual-size"],
               "backing_filename": self.backing_name, "backing_format": self.backing_format}
        self.diff_after = self._describe([top] + below)
        self.changed = True

    def _describe(self, chain: list) -> dict:
        return {"path": self.path, "overlay": self.overlay, "chain": chain}

    def apply(self) -> None:
        tmp = temp_path_beside(self.overlay)
        self.module.add_cleanup_file(tmp)
        opts = api.CreateOptions(backing_file=self.backing_name, backing_format=self.backing_format)
        # A reader lock on path while the overlay is made: readers may come, a VM starting on it may not.
        with api.locked(self.path, write=False):
            api.create_image(tmp, opts, policy=self.policy)
            self.module.atomic_move(tmp, self.overlay)

    def results(self) -> dict:
        return overlay_results(self.overlay, self.policy)


def overlay_results(overlay: str, policy: api.ChainPolicy) -> dict:
    """The overlay and its chain as the module returns them; nothing before the overlay exists."""
    if not os.path.exists(overlay):
        return {}
    infos = read_chain(overlay, policy)
    return {"overlay": underscore_keys(infos[0]), "chain": underscore_keys(infos)}
