# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""External snapshots: a new qcow2 overlay becomes the writable top, the image below it its backing file.

Backends decide where the snapshot is taken, chosen by snapshot_backends.select_external_backend(): OfflineExternalSnapshot
writes the overlay itself and needs the image to be idle; with ``domain`` set, LiveExternalSnapshot has
libvirt take it on a running domain and ShutOffExternalSnapshot writes it offline, then points the
domain's definition at it.
"""

from __future__ import annotations

import os

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import (
    describe_chain,
    read_chain,
    require_qcow2,
    underscore_keys,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import (
    backing_is,
    locked,
    refuse_if_locked,
    require_parent_directory,
    temp_path_beside,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import detect_format
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import BackingChainError, InvalidArgumentError


class ExternalSnapshotBackend:
    """plan() decides changed and the diff without writing; apply() writes; results() after either."""

    def __init__(self, module, path, overlay, policy):
        self.module = module
        self.path = path
        self.overlay = overlay
        self.policy = policy
        self.changed = False
        self.diff_before = {}
        self.diff_after = {}

    def plan(self):
        raise NotImplementedError

    def apply(self):
        raise NotImplementedError

    def results(self):
        return {}


class OfflineExternalSnapshot(ExternalSnapshotBackend):
    """The image is not in use: create the overlay file, recording path (absolute) and its format."""

    def __init__(self, module, path, overlay, policy):
        super().__init__(module, path, overlay, policy)
        self.backing_name = os.path.abspath(path)
        self.backing_format = None

    def plan(self):
        if self.overlay and os.path.abspath(self.overlay) == self.backing_name:
            raise InvalidArgumentError("overlay must be a new file, not the image itself (%s)" % self.path, self.path)
        self.backing_format = detect_format(self.path)
        if os.path.lexists(self.overlay):
            self._plan_existing()
        else:
            self._plan_new()

    def _plan_existing(self):
        require_qcow2(self.overlay)
        infos = read_chain(self.overlay, self.policy)
        top = infos[0]
        stored = top.get("backing-filename")
        if not backing_is(self.overlay, stored, self.backing_name):
            raise InvalidArgumentError(
                "Overlay %s already exists and is not an overlay of %s (its backing file is %s); choose another overlay "
                "path or remove it first" % (self.overlay, self.path, stored or "none"), self.overlay)
        if top.get("backing-filename-format") != self.backing_format:
            raise BackingChainError(
                "Overlay %s records backing format %s for %s, which is a %s image; fix it with "
                "backingchain.qcow2.qcow2_rebase (mode=unsafe, backing_format=%s)"
                % (self.overlay, top.get("backing-filename-format") or "none", self.path, self.backing_format,
                   self.backing_format), self.overlay)
        self.diff_before = self.diff_after = self._describe(describe_chain(infos))

    def _plan_new(self):
        require_parent_directory(self.overlay)
        if self.backing_format == "qcow2":
            infos = read_chain(self.path, self.policy)
        else:
            infos = api.image_info(self.path, backing_chain=False, force_share=True, policy=self.policy)
        # Snapshotting an image a VM is writing would lose the VM's later writes: the VM keeps writing to path.
        refuse_if_locked(self.path, write=True)
        below = describe_chain(infos)
        self.diff_before = self._describe(below)
        top = {"filename": self.overlay, "format": "qcow2", "virtual_size": infos[0]["virtual-size"],
               "backing_filename": self.backing_name, "backing_format": self.backing_format}
        self.diff_after = self._describe([top] + below)
        self.changed = True

    def _describe(self, chain):
        return {"path": self.path, "overlay": self.overlay, "chain": chain}

    def apply(self):
        tmp = temp_path_beside(self.overlay)
        self.module.add_cleanup_file(tmp)
        opts = api.CreateOptions(backing_file=self.backing_name, backing_format=self.backing_format)
        # A reader lock on path while the overlay is made: readers may come, a VM starting on it may not.
        with locked(self.path, write=False):
            api.create_image(tmp, opts, policy=self.policy)
            self.module.atomic_move(tmp, self.overlay)

    def results(self):
        return overlay_results(self.overlay, self.policy)


def overlay_results(overlay, policy):
    """The overlay and its chain as the module returns them; nothing before the overlay exists."""
    if not os.path.exists(overlay):
        return {}
    infos = read_chain(overlay, policy)
    return {"overlay": underscore_keys(infos[0]), "chain": underscore_keys(infos)}
