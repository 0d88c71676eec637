# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""What qcow2_info says about the libvirt side of an image: the domain a task names, the domains using it.

The chain of a disk as libvirt sees it: the images the domain XML lists - all of them, ending in an empty
<backingStore/>, for a domain qemu runs; in a definition only what someone wrote there (libvirt writes it after
live jobs and trusts it at the next start) - then, where the list is not terminated, the images the headers name
below the last image listed, as libvirt probes them at start. Headers are read like qemu-img info -U: without
locks, so the images of running domains can be read.
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import connect
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.image_users import find_image_users
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import Connection, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain import Domain
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


def _headers_below(path: str, policy: api.ChainPolicy) -> list[tuple[str, str | None]]:
    """(path, format) of each image the headers name below ``path``, top first, as far as they can be followed:
    a missing backing file is listed and ends the walk, as do a raw image, a backing file recorded without format
    (libvirt does not probe one), a loop and a header that cannot be read."""
    below: list[tuple[str, str | None]] = []
    seen = {api.file_identity(path)}
    current = path
    while len(below) + 1 < policy.max_depth:
        try:
            info = api.image_info(current, backing_chain=False, force_share=True, policy=policy)[0]
            name = info.get("backing-filename")
            if not name:
                break
            current = api.check_backing_reference(name, current, policy)
        except (api.Qcow2Error, OSError):
            break
        fmt = info.get("backing-filename-format")
        identity = api.file_identity(current)
        if identity in seen:
            break
        below.append((current, fmt))
        if fmt != "qcow2" or identity is None:
            break
        seen.add(identity)
    return below


def libvirt_chain(model: Disk, policy: api.ChainPolicy, strict: bool = False) -> list[tuple[str | None, str | None]]:
    """[(path, format)] of disk_model.Disk ``model``, active image first (see the module docstring).

    strict: where the headers must be read, read them like qcow2_info (every image must open, allowed_backing_dirs
    applies; errors propagate). Otherwise the chain goes as far as it can be followed.
    """
    entries: list[tuple[str | None, str | None]] = [(image.path, image.format) for image in model.images]
    last = model.images[-1]
    if model.chain_terminated or not last.path or last.kind not in ("file", "block") or last.format != "qcow2":
        return entries
    if not strict:
        return entries + list(_headers_below(last.path, policy))
    infos = api.image_info(last.path, backing_chain=True, force_share=True, policy=policy)
    return entries + [(info["filename"], info["format"]) for info in infos[1:]]


def disk_entry(model: Disk) -> dict:
    """One disk of a domain as qcow2_info lists it in domain.disks."""
    return {"disk": model.target, "device": model.device, "type": model.active.kind, "file": model.source,
            "format": model.format}


class DomainView:
    """The domain a qcow2_info task names: its state, its disks, and the disk the task is about."""

    def __init__(self, params: dict, policy: api.ChainPolicy) -> None:
        self.domain = Domain(params, policy)
        self.policy = policy
        self.models = domain_disks(self.domain.dom, inactive=not self.domain.running)

    def _select(self, path: str | None, target: str | None) -> tuple[Disk, int | None]:
        """(model, depth of path or None) of the disk named ``target``, or of the disk whose active image is path."""
        name = self.domain.name
        if target:
            for model in self.models:
                if model.target == target:
                    return model, None
            raise LiveError("domain '%s' has no disk %s (disks: %s)" % (name, target, self._listing()), domain=name,
                            disk=target)
        for model in self.models:
            if api.same_file(model.source, path):
                return model, 0
        for model in self.models:
            depth = api.position_of([image for image, _fmt in libvirt_chain(model, self.policy)], path)
            if depth is not None:
                raise LiveError("%s is a backing image (depth %d) of disk %s of domain '%s', not the active image of a "
                                "disk; set disk: %s to describe that disk" % (path, depth, model.target, name, model.target),
                                domain=name, disk=model.target)
        raise LiveError("%s is in the chain of no disk of domain '%s' (disks: %s); users: true lists the domains that use "
                        "it" % (path, name, self._listing()), domain=name)

    def _listing(self) -> str:
        return ", ".join("%s=%s" % (model.target, model.source) for model in self.models) or "none"

    def describe(self, path: str | None = None, target: str | None = None) -> dict:
        """qcow2_info's ``domain``: name, state, every disk, and with path or target the selected disk and its chain
        (and where path is in it)."""
        result: dict = {"name": self.domain.name, "state": self.domain.state,
                        "disks": [disk_entry(m) for m in self.models]}
        if not path and not target:
            return result
        model, depth = self._select(path, target)
        chain = libvirt_chain(model, self.policy, strict=True)
        if path and depth is None:
            depth = api.position_of([image for image, _fmt in chain], path)
        result.update(disk=model.target, chain=[{"file": image, "format": fmt} for image, fmt in chain])
        if path:
            result["depth"] = depth
        return result


def image_users(params: dict, policy: api.ChainPolicy, conn: Connection | None = None) -> list[dict]:
    """qcow2_info's ``users``: every disk of every domain (running or not) with path anywhere in its chain."""
    require_libvirt()
    own = conn is None
    conn = conn or connect(params["uri"])
    try:
        uses = find_image_users(conn, params["path"], include_shut_off=True,
                                chain_of=lambda model: [image for image, _fmt in libvirt_chain(model, policy)])
    finally:
        if own:
            conn.close()
    return [{"domain": use.domain, "state": use.state, "disk": use.target, "depth": use.depth, "file": use.path}
            for use in uses]
