# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_rebase with ``domain``.

On a running domain qemu can only pull from the chain it runs: backing_file must be an image of the disk's
chain ("" pulls everything, leaving the image standalone). Another backing file is refused rather than
approximated. Like a safe rebase the guest's view never changes; unsafe mode would rewrite a header qemu owns.

On a shut-off domain the engine rebases the disk's active image, then the definition drops a <backingStore>
that no longer matches (the disk keeps its active image).
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import ensure_no_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.pull import block_pull
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import job_limits
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import read_chain, underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain import (
    DefinitionSync,
    Domain,
    DomainDisk,
    require_active_image,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.rebase import RebaseOperation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class LiveRebase(Operation):
    """A running domain: a libvirt block pull into the active image."""

    def __init__(self, module: AnsibleModule, domain: Domain) -> None:
        super().__init__(module, domain.policy)
        self.domain = domain
        self.backing_file: str = self.params["backing_file"]
        self.backing_format: str | None = self.params["backing_format"] if self.backing_file else None
        self.timeout, self.bandwidth = job_limits(self.params)
        self.disk: DomainDisk | None = None
        self.base: str | None = None  # the image that becomes the backing file; None: pull everything
        self.old: dict = {}
        self.job: dict | None = None

    def plan(self) -> None:
        if self.params["mode"] == "unsafe":
            raise api.InvalidArgumentError("mode=unsafe rewrites the header of %s, which qemu holds open while domain "
                                           "'%s' runs; use mode=safe (a block pull) or shut the domain off"
                                           % (self.path, self.domain.name), self.path)
        disk = self.domain.locate(self.path, self.params["disk"])
        if disk is None:
            raise self.domain.not_active_error(self.path, "a block pull only writes the active image")
        require_active_image(self.domain, disk, self.path, "a block pull only writes the active image")
        self.disk = disk
        self.old = read_chain(self.path, self.policy, backing_chain=False)[0]
        depth = self._base_depth(disk) if self.backing_file else len(disk.chain)
        self.base = disk.chain[depth] if self.backing_file else None
        after = disk.chain[:1] + disk.chain[depth:]
        self.diff_before = self._describe(disk.chain)
        self.diff_after = self._describe(after)
        self.changed = after != disk.chain
        if self.changed:
            ensure_no_job(self.domain.dom, disk.target)
            # Reading the chain applies allowed_backing_dirs, as offline.
            api.image_info(self.path, backing_chain=True, force_share=True, policy=self.policy)

    def _base_depth(self, disk: DomainDisk) -> int:
        resolved = api.check_backing_reference(self.backing_file, disk.active, self.policy)
        depth = disk.position(resolved)
        where = "disk %s of running domain '%s' (chain, top first: %s)" % (disk.target, self.domain.name, disk.chain)
        if depth is None:
            raise api.InvalidArgumentError("%s is not in the chain of %s. A block pull can only make an image of that "
                                           "chain the backing file; shut the domain off to rebase onto another image"
                                           % (resolved, where), self.path)
        if depth == 0:
            raise api.BackingChainError("Backing file '%s' creates an infinite loop: it is the active image of %s"
                                        % (resolved, where), self.path)
        if disk.formats[depth] != self.backing_format:
            raise api.BackingChainError("Backing file %s of %s is a %s image, but backing_format is %s"
                                        % (resolved, where, disk.formats[depth], self.backing_format), self.path)
        return depth

    def _describe(self, chain: list[str]) -> dict:
        return {"path": self.path, "mode": self.params["mode"], "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain}

    def apply(self) -> None:
        self.job = block_pull(self.domain.dom, self.disk.target, base=self.base, timeout=self.timeout,
                              bandwidth=self.bandwidth)
        if self.job["failed"]:
            raise LiveError(self.job["message"], job=self.job)
        self.diff_after = self._describe(self.domain.chain_now(self.disk.target))

    def results(self) -> dict:
        image = read_chain(self.path, self.policy, backing_chain=False)[0]
        planned = self.changed and self.job is None  # check mode: libvirt picks the spelling when it runs
        result = {
            "old_backing": self.old.get("backing-filename", ""),
            "old_format": self.old.get("backing-filename-format"),
            "new_backing": (self.backing_file if planned else image.get("backing-filename", "")),
            "new_format": (self.backing_format if planned else image.get("backing-filename-format")),
            "header_only": False,
            "bytes_copied": None,
            "bytes_estimated": False,
            "image": underscore_keys(image),
            "domain": self.domain.result(self.disk.target),
        }
        if self.job is not None:
            result["job"] = self.job
        return result


class ShutOffRebase(RebaseOperation):
    """A shut-off domain: the engine rebases the disk's active image, then the definition follows."""

    def __init__(self, module: AnsibleModule, domain: Domain) -> None:
        super().__init__(module, domain.policy)
        self.domain = domain
        self.disk: DomainDisk | None = None
        self.definition: DefinitionSync | None = None
        self.rebases = False

    def plan(self) -> None:
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

    def _describe(self, chain: list[str], definition: dict) -> dict:
        return {"path": self.path, "mode": self.params["mode"], "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain, "definition": definition}

    def apply(self) -> None:
        if self.rebases:
            super().apply()
        self.definition.apply()
        self.diff_after = self._describe(self.domain.chain_now(self.disk.target), self.definition.after)

    def results(self) -> dict:
        result = super().results()
        result["domain"] = self.domain.result(self.disk.target, definition_changed=self.definition.changed)
        return result
