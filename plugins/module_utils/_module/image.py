# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""qcow2_image: an image exists with the requested properties, or does not exist.

Only what the task asks for is compared. What can change in place (a larger size, lazy_refcounts) is
changed; anything else fails unless force, which rebuilds the image beside the old one and renames it
over it. New images are always built under a temporary name and renamed into place, so a failure
never leaves a half-written image at path.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.backingchain.qcow2.plugins.module_utils._module.argspec import parse_size
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.describe import describe_chain, read_chain, underscore_keys
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.files import (
    backing_chain_info,
    backing_is,
    require_parent_directory,
    temp_path_beside,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.operation import Operation
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api

# Properties fixed when an image is created: changing them means rewriting every cluster.
FIXED_PROPERTIES = ("cluster_size", "compat", "refcount_bits", "extended_l2")
CREATE_DEFAULTS = dict(cluster_size=65536, compat="1.1", refcount_bits=16, lazy_refcounts=False, extended_l2=False,
                       preallocation="off")


def image_properties(top: dict) -> dict:
    """The comparable properties of an existing image, from its qemu-img info dict."""
    data = top.get("format-specific", {}).get("data", {})
    return {
        "virtual_size": top["virtual-size"],
        "cluster_size": top.get("cluster-size"),
        "compat": data.get("compat"),
        "refcount_bits": data.get("refcount-bits"),
        "lazy_refcounts": data.get("lazy-refcounts", False),
        "extended_l2": data.get("extended-l2", False),
        "backing_file": top.get("backing-filename"),
        "backing_format": top.get("backing-filename-format"),
    }


def options_properties(opts: api.CreateOptions) -> dict:
    """The same properties for an image about to be created from CreateOptions."""
    return {
        "virtual_size": opts.size,
        "cluster_size": opts.cluster_size,
        "compat": opts.compat,
        "refcount_bits": opts.refcount_bits,
        "lazy_refcounts": opts.lazy_refcounts,
        "extended_l2": opts.extended_l2,
        "backing_file": opts.backing_file,
        "backing_format": opts.backing_format if opts.backing_file else None,
    }


def _require_space_for_create(path: str, opts: api.CreateOptions) -> None:
    """falloc and full preallocation reserve every guest byte; off and metadata need the metadata only."""
    measured = api.measure(size=opts.size, options=opts)
    needed = measured["fully-allocated"] if opts.preallocation in ("falloc", "full") else measured["required"]
    api.require_space(path, needed, "creating %s with preallocation=%s" % (path, opts.preallocation))


class ImageRequest:
    """The task's options, parsed; None wherever the task asks nothing."""

    def __init__(self, params: dict) -> None:
        self.size = parse_size(params["size"])
        self.cluster_size = parse_size(params["cluster_size"], "cluster_size")
        self.compat = params["compat"]
        self.refcount_bits = params["refcount_bits"]
        self.lazy_refcounts = params["lazy_refcounts"]
        self.extended_l2 = params["extended_l2"]
        self.preallocation = params["preallocation"]
        self.backing_file = params["backing_file"]
        self.backing_format = params["backing_format"]
        self.source = params["source"]
        self.compress = params["compress"]
        self.force = params["force"]

    def create_options(self, fallback: dict | None = None) -> api.CreateOptions:
        """CreateOptions for a new image: the task's values, else ``fallback`` (the old image's), else defaults."""
        fallback = fallback or {}
        values = {}
        for name, default in CREATE_DEFAULTS.items():
            value = getattr(self, name)
            if value is None:
                value = fallback.get(name, default)
            values[name] = value
        opts = api.CreateOptions(size=self.size if self.size is not None else fallback.get("virtual_size"), **values)
        if self.backing_file:
            opts.backing_file, opts.backing_format = self.backing_file, self.backing_format
        elif self.backing_file is None and self.source is None and fallback.get("backing_file"):
            opts.backing_file, opts.backing_format = fallback["backing_file"], fallback["backing_format"]
        return opts


class ImageOperation(Operation):
    """Plan and make the change qcow2_image asks for."""

    def __init__(self, module: AnsibleModule) -> None:
        super().__init__(module)
        self.state: str = self.params["state"]
        self.action: str | None = None  # create | copy | recreate | amend | remove
        self.request: ImageRequest | None = None
        self.options: api.CreateOptions | None = None
        self.grow_to: int | None = None
        self.lazy_refcounts: bool | None = None
        self.chain_read: list[dict] | None = None  # the chain as the plan read it

    # ---- planning ----
    def plan(self) -> None:
        exists = os.path.lexists(self.path)
        self.diff_before = {"path": self.path, "state": "absent"}
        if self.state == "absent":
            if exists:
                self._plan_remove()
            self.diff_after = {"path": self.path, "state": "absent"}
            return
        self.request = ImageRequest(self.params)
        if exists:
            self._plan_existing()
        else:
            self._plan_new()

    def _plan_remove(self) -> None:
        api.require_qcow2(self.path)  # never delete a file that is not an image (a mistyped path)
        self.diff_before = self._describe_existing(tolerant=True)
        api.refuse_if_locked(self.path)
        self.action = "remove"
        self.changed = True

    def _plan_new(self) -> None:
        require_parent_directory(self.path)
        opts = self.request.create_options()
        self._plan_build(opts)
        self.action = "copy" if self.request.source else "create"
        self.changed = True

    def _plan_build(self, opts: api.CreateOptions) -> None:
        """Validate everything the build will need, so check mode fails where the real run would."""
        if self.request.source:
            self._plan_copy(opts)
            return
        backing = []
        if opts.backing_file:
            backing = backing_chain_info(self.path, opts.backing_file, opts.backing_format, self.policy)
            if opts.size is None:
                opts.size = backing[0]["virtual-size"]
        if opts.size is None:
            raise api.InvalidArgumentError("size is required to create %s without backing_file or source" % self.path, self.path)
        opts.validate()
        if opts.size % 512:
            raise api.InvalidArgumentError("Image size must be a multiple of 512 bytes (got %d)" % opts.size, self.path)
        _require_space_for_create(self.path, opts)
        self.options = opts
        entry = {"filename": self.path, "format": "qcow2", "virtual_size": opts.size,
                 "backing_filename": opts.backing_file, "backing_format": opts.backing_format if opts.backing_file else None}
        self.diff_after = self._describe(options_properties(opts), [entry] + describe_chain(backing))

    def _plan_copy(self, opts: api.CreateOptions) -> None:
        source = self.request.source
        if os.path.lexists(self.path) and os.path.exists(source) and os.path.samefile(source, self.path):
            raise api.InvalidArgumentError("source and path are the same file (%s)" % self.path, self.path)
        source_chain = api.image_info(source, backing_chain=True, policy=self.policy)
        source_size = source_chain[0]["virtual-size"]
        wanted = self.request.size  # a copy has the source's size unless the task asks for more
        if wanted is not None and wanted < source_size:
            raise api.InvalidArgumentError("size %d is smaller than source %s (%d bytes); a copy cannot shrink it"
                                           % (wanted, source, source_size), self.path)
        if wanted is None:
            wanted = source_size
        opts.size = None
        opts.validate()
        if wanted % 512:
            raise api.InvalidArgumentError("Image size must be a multiple of 512 bytes (got %d)" % wanted, self.path)
        # the engine's plan refuses what the real convert would, too little free space for the copy included
        api.plan_convert(source, self.path, compress=self.request.compress, options=opts, policy=self.policy)
        self.options = opts
        self.grow_to = wanted if wanted > source_size else None
        entry = {"filename": self.path, "format": "qcow2", "virtual_size": wanted, "backing_filename": None,
                 "backing_format": None}
        props = options_properties(opts)
        props["virtual_size"] = wanted
        self.diff_after = self._describe(props, [entry])

    def _plan_existing(self) -> None:
        infos = self.chain_read = read_chain(self.path, self.policy)
        have = image_properties(infos[0])
        self.diff_before = self._describe(have, describe_chain(infos))
        req = self.request
        fixed, hints = self._fixed_differences(have)
        if req.size is not None:
            if req.size < have["virtual_size"]:
                raise api.InvalidArgumentError(
                    "Image %s is %d bytes; size %d would shrink it, which discards data and is refused. Delete the "
                    "image (state=absent) first if a smaller, empty image is what you want"
                    % (self.path, have["virtual_size"], req.size), self.path)
            if req.size % 512:
                raise api.InvalidArgumentError("Image size must be a multiple of 512 bytes (got %d)" % req.size, self.path)
        if fixed:
            if not req.force:
                raise api.InvalidArgumentError(
                    "Image %s differs from the task in what cannot be changed in place: %s. %s"
                    % (self.path, "; ".join(fixed), " ".join(hints + ["Set force=true to recreate it (its data is lost)."])),
                    self.path)
            fallback = dict(have)
            if have["backing_file"] and not have["backing_format"]:
                fallback["backing_format"] = infos[1]["format"]
            api.refuse_if_locked(self.path)
            self._plan_build(req.create_options(fallback))
            self.action = "recreate"
            self.changed = True
            return
        after = dict(have)
        if req.size is not None and req.size > have["virtual_size"]:
            self.grow_to = after["virtual_size"] = req.size
        if req.lazy_refcounts is not None and req.lazy_refcounts != have["lazy_refcounts"]:
            self.lazy_refcounts = after["lazy_refcounts"] = req.lazy_refcounts
        if self.grow_to is None and self.lazy_refcounts is None:
            self.diff_after = dict(self.diff_before)
            return
        api.refuse_if_locked(self.path)
        chain = describe_chain(infos)
        chain[0]["virtual_size"] = after["virtual_size"]
        self.diff_after = self._describe(after, chain)
        self.action = "amend"
        self.changed = True

    def _fixed_differences(self, have: dict) -> tuple[list[str], list[str]]:
        """What differs and cannot change in place, and hints on the module that can change it."""
        req = self.request
        fixed, hints = [], []
        for name in FIXED_PROPERTIES:
            want = getattr(req, name)
            if want is not None and want != have[name]:
                fixed.append("%s is %s, not %s" % (name, have[name], want))
        compat = req.compat or have["compat"]
        if req.lazy_refcounts and compat == "0.10" and req.compat is None:
            fixed.append("lazy_refcounts needs compat 1.1, the image has compat 0.10")
        if req.source and have["backing_file"]:
            fixed.append("it has backing file %s, but source asks for a standalone copy" % have["backing_file"])
            hints.append("Use backingchain.qcow2.qcow2_rebase with backing_file='' to make it standalone.")
        elif req.backing_file == "" and have["backing_file"]:
            fixed.append("it has backing file %s, the task asks for none" % have["backing_file"])
            hints.append("Use backingchain.qcow2.qcow2_rebase with backing_file='' to make it standalone.")
        elif req.backing_file:
            if not have["backing_file"]:
                fixed.append("it has no backing file, the task asks for %s" % req.backing_file)
                hints.append("Use backingchain.qcow2.qcow2_rebase to give it a backing file.")
            elif not backing_is(self.path, have["backing_file"], req.backing_file):
                fixed.append("its backing file is %s, not %s" % (have["backing_file"], req.backing_file))
                hints.append("Use backingchain.qcow2.qcow2_rebase to change the backing file.")
            elif have["backing_format"] != req.backing_format:
                fixed.append("its recorded backing format is %s, not %s" % (have["backing_format"] or "none", req.backing_format))
                hints.append("Use backingchain.qcow2.qcow2_rebase with mode=unsafe to record the backing format.")
        return fixed, hints

    def _describe(self, props: dict, chain: list) -> dict:
        description = {"path": self.path, "state": "present"}
        description.update(props)
        description["chain"] = chain
        return description

    def _describe_existing(self, tolerant: bool = False) -> dict:
        """The image as it is; with tolerant, an unreadable backing chain still describes the top alone."""
        try:
            infos = read_chain(self.path, self.policy)
        except api.Qcow2Error:
            if not tolerant:
                raise
            infos = read_chain(self.path, self.policy, backing_chain=False)
        return self._describe(image_properties(infos[0]), describe_chain(infos))

    # ---- applying ----
    def apply(self) -> None:
        if self.action == "remove":
            with api.locked(self.path):
                os.unlink(self.path)
        elif self.action in ("create", "copy"):
            self._build_and_rename()
        elif self.action == "recreate":
            with api.locked(self.path):
                self._build_and_rename()
        elif self.action == "amend":
            if self.grow_to is not None:
                api.grow_image(self.path, self.grow_to)
            if self.lazy_refcounts is not None:
                api.set_lazy_refcounts(self.path, self.lazy_refcounts)

    def _build_and_rename(self) -> None:
        api.remove_stale_temporaries(self.path)  # a killed earlier run cannot clean up after itself
        tmp = temp_path_beside(self.path)
        self.module.add_cleanup_file(tmp)
        if self.request.source:
            api.convert(self.request.source, tmp, compress=self.request.compress, options=self.options, policy=self.policy)
            if self.grow_to is not None:
                api.grow_image(tmp, self.grow_to)
        else:
            api.create_image(tmp, self.options, policy=self.policy)
        # atomic_move: a new file gets Ansible's default mode (0666 & ~umask), a replaced one keeps its owner and mode
        self.module.atomic_move(tmp, self.path, unsafe_writes=self.params["unsafe_writes"])

    # ---- after ----
    def finish(self) -> None:
        if self.state != "present" or not os.path.exists(self.path):
            return
        file_args = self.module.load_file_common_arguments(self.params)
        diff = {"before": self.diff_before, "after": self.diff_after}
        if self.module.set_fs_attributes_if_different(file_args, False, diff=diff):
            self.changed = True

    def results(self) -> dict:
        if self.state != "present" or not os.path.exists(self.path):
            return {}
        if self.action is None and self.chain_read is not None:  # unchanged (owner or mode aside): as the plan read it
            return {"image": underscore_keys(self.chain_read[0])}
        return {"image": underscore_keys(read_chain(self.path, self.policy, backing_chain=False)[0])}
