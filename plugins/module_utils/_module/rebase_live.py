# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_rebase on a running domain: a libvirt block pull into the active image.

qemu can only pull from the chain it runs: backing_file must be an image of the disk's chain ("" pulls
everything, leaving the image standalone). Another backing file is refused rather than approximated.
Like a safe rebase the guest's view never changes; unsafe mode would rewrite a header qemu owns.
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import ensure_no_job
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.pull import block_pull
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import read_chain, underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_args import job_limits
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain_target import require_active_image
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.chain import check_backing_reference
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import BackingChainError, InvalidArgumentError


class LiveRebase(Operation):

    def __init__(self, module, domain):
        super().__init__(module)
        self.domain = domain
        self.backing_file = self.params["backing_file"]
        self.backing_format = self.params["backing_format"] if self.backing_file else None
        self.timeout, self.bandwidth = job_limits(self.params)
        self.disk = None
        self.base = None  # the image that becomes the backing file; None: pull everything
        self.old = None
        self.job = None

    def plan(self):
        if self.params["mode"] == "unsafe":
            raise InvalidArgumentError("mode=unsafe rewrites the header of %s, which qemu holds open while domain '%s' runs; "
                                       "use mode=safe (a block pull) or shut the domain off" % (self.path, self.domain.name),
                                       self.path)
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

    def _base_depth(self, disk):
        resolved = check_backing_reference(self.backing_file, disk.active, self.policy)
        depth = disk.position(resolved)
        where = "disk %s of running domain '%s' (chain, top first: %s)" % (disk.target, self.domain.name, disk.chain)
        if depth is None:
            raise InvalidArgumentError("%s is not in the chain of %s. A block pull can only make an image of that chain the "
                                       "backing file; shut the domain off to rebase onto another image"
                                       % (resolved, where), self.path)
        if depth == 0:
            raise BackingChainError("Backing file '%s' creates an infinite loop: it is the active image of %s" % (resolved, where),
                                    self.path)
        if disk.formats[depth] != self.backing_format:
            raise BackingChainError("Backing file %s of %s is a %s image, but backing_format is %s"
                                    % (resolved, where, disk.formats[depth], self.backing_format), self.path)
        return depth

    def _describe(self, chain):
        return {"path": self.path, "mode": self.params["mode"], "domain": self.domain.name, "disk": self.disk.target,
                "chain": chain}

    def apply(self):
        self.job = block_pull(self.domain.dom, self.disk.target, base=self.base, timeout=self.timeout,
                              bandwidth=self.bandwidth)
        if self.job["failed"]:
            raise LiveError(self.job["message"], job=self.job)
        self.diff_after = self._describe(self.domain.chain_now(self.disk.target))

    def results(self):
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
