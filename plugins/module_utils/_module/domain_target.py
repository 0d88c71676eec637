# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The libvirt domain a task names with ``domain``: whether qemu runs it, and the disk the task is about.

A disk's chain is what the next start or the running qemu uses: for an active domain the live XML
(libvirt lists every image qemu opened), for a shut-off one the image headers from the disk's
source on (the engine's changes are recorded there, and update_inactive_disk lets libvirt probe them).
"""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import connect, domain_state_name, lookup_domain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import HAS_LIBVIRT, LIBVIRT_IMPORT_ERROR
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.paths import same_file
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.errors import MissingDependencyError, Qcow2Error


def require_libvirt_python():
    """MissingDependencyError (reported with missing_required_lib) when libvirt-python is not installed."""
    if not HAS_LIBVIRT:
        raise MissingDependencyError("libvirt-python is required for domain", "libvirt-python", LIBVIRT_IMPORT_ERROR)


class DomainDisk:
    """One disk of the domain with the chain its next operation works on, active image first."""

    def __init__(self, domain, model):
        self.domain = domain
        self.model = model  # disk_model.Disk from the live or inactive XML
        self.target = model.target
        self._chain = None

    @property
    def active(self):
        return self.model.source

    def _read_chain(self):
        if self.domain.running:
            return [(image.path, image.format) for image in self.model.images]
        infos = api.image_info(self.active, backing_chain=True, force_share=True, policy=self.domain.policy)
        return [(self.active, infos[0]["format"])] + [(info["filename"], info["format"]) for info in infos[1:]]

    def _entries(self):
        if self._chain is None:
            self._chain = self._read_chain()
        return self._chain

    @property
    def chain(self):
        """Paths, active image first."""
        return [path for path, _fmt in self._entries()]

    @property
    def formats(self):
        """Formats of :attr:`chain`'s images."""
        return [fmt for _path, fmt in self._entries()]

    def position(self, path):
        """Depth of path in the chain (0: the active image), compared by device and inode; None if absent."""
        return next((depth for depth, image in enumerate(self.chain) if same_file(image, path)), None)


class Domain:
    """The domain a task names; ``running`` is true while a qemu process holds its images (running or paused)."""

    def __init__(self, params, policy):
        require_libvirt_python()
        self.conn = connect(params["uri"])
        self.dom = lookup_domain(self.conn, params["domain"])
        self.name = self.dom.name()
        self.policy = policy
        self.running = bool(self.dom.isActive())
        self.state = domain_state_name(self.dom)
        self._disks = None

    def disks(self):
        if self._disks is None:
            models = domain_disks(self.dom, inactive=not self.running)
            self._disks = [DomainDisk(self, model) for model in models if model.source]
        return self._disks

    def refresh(self):
        """Forget what was read: the next question reads the XML (and headers) again."""
        self._disks = None

    def disk(self, target):
        for disk in self.disks():
            if disk.target == target:
                return disk
        raise LiveError("domain '%s' has no disk %s with a local image (disks: %s)" % (self.name, target, self._listing()),
                        domain=self.name, disk=target)

    def _listing(self):
        return ", ".join("%s=%s" % (disk.target, disk.active) for disk in self.disks()) or "none"

    def locate(self, path, target=None, done=None):
        """The disk the task is about: the one named ``target``; else the one whose active image is path;
        else the one for which ``done(disk)`` says the task's change is already made. None if no disk is."""
        if target:
            return self.disk(target)
        for disk in self.disks():
            if same_file(disk.active, path):
                return disk
        if done is not None:
            for disk in self.disks():
                if done(disk):
                    return disk
        return None

    def holder(self, path):
        """(disk, depth) of the first disk with path somewhere in its chain, or (None, None)."""
        for disk in self.disks():
            try:
                depth = disk.position(path)
            except (Qcow2Error, OSError):  # another disk's unreadable chain says nothing about path
                continue
            if depth is not None:
                return disk, depth
        return None, None

    def chain_now(self, target):
        """The chain of disk ``target`` read again (after a change)."""
        self.refresh()
        return self.disk(target).chain

    def result(self, target, **extra):
        """The ``domain`` return value: the disk's chain as it is now (read again), plus ``extra``."""
        result = {"name": self.name, "state": self.state, "disk": target, "chain": self.chain_now(target)}
        result.update(extra)
        return result

    def not_active_error(self, path, action):
        """LiveError for a path that is not the active image of any disk, naming where it is instead."""
        disk, depth = self.holder(path)
        if disk is not None:
            return LiveError("%s is a backing image (depth %d) of disk %s of domain '%s', not its active image %s; %s"
                             % (path, depth, disk.target, self.name, disk.active, action), domain=self.name, disk=disk.target)
        return LiveError("%s is not an image of any disk of domain '%s' (disks: %s)" % (path, self.name, self._listing()),
                         domain=self.name)


def require_active_image(domain, disk, path, action):
    """LiveError unless path is the active image of disk (the image the guest writes, or will write at start)."""
    if disk.position(path) != 0:
        raise LiveError("%s is not the active image of disk %s of domain '%s' (chain, top first: %s); %s"
                        % (path, disk.target, domain.name, disk.chain, action), domain=domain.name, disk=disk.target)


def requested_domain(params, policy):
    """The Domain for a task with ``domain`` set, else None (the image is changed offline)."""
    if not params.get("domain"):
        return None
    return Domain(params, policy)


def operation_for(module, policy, offline, live, shut_off, *args):
    """Which operation does the task: offline(module, *args) without ``domain``; with it, live(module, *args, domain)
    while qemu runs the domain, else shut_off(module, *args, domain) (the engine plus the domain's definition)."""
    domain = requested_domain(module.params, policy)
    if domain is None:
        return offline(module, *args)
    return (live if domain.running else shut_off)(module, *args, domain)
