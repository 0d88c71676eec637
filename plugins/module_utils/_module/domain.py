# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
"""The libvirt domain a task names with ``domain``: whether qemu runs it, the disk the task is about, and keeping
a shut-off domain's definition in step with what the engine did to that disk's images.

A disk's chain is what the next start or the running qemu uses: for an active domain the live XML
(libvirt lists every image qemu opened), for a shut-off one the image headers from the disk's
source on (the engine's changes are recorded there, and update_inactive_disk lets libvirt probe them).

libvirt trusts a <backingStore> in the inactive XML over the image headers, so after any change the
engine makes, update_inactive_disk points the disk at its (new) top and drops <backingStore>. When
the engine changes nothing, the definition is only rewritten if it is wrong: another source or
format, or a <backingStore> (libvirt writes one after live snapshots and commits) that disagrees
with the headers. One that agrees is left alone, so repeating a task reports no change.
"""

from __future__ import annotations

import typing as t

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import connect, domain_state_name, lookup_domain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.inactive_xml import update_inactive_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2 import api


class DomainDisk:
    """One disk of the domain with the chain its next operation works on, active image first."""

    def __init__(self, domain: Domain, model: Disk) -> None:
        self.domain = domain
        self.model = model  # disk_model.Disk from the live or inactive XML
        self.target = model.target
        self._chain: list[tuple[str, str]] | None = None

    @property
    def active(self) -> str:
        return t.cast(str, self.model.source)

    def _read_chain(self) -> list[tuple[str, str]]:
        if self.domain.running:
            return [(t.cast(str, image.path), t.cast(str, image.format)) for image in self.model.images]
        infos = api.image_info(self.active, backing_chain=True, force_share=True, policy=self.domain.policy)
        return [(self.active, infos[0]["format"])] + [(info["filename"], info["format"]) for info in infos[1:]]

    def _entries(self) -> list[tuple[str, str]]:
        if self._chain is None:
            self._chain = self._read_chain()
        return self._chain

    @property
    def chain(self) -> list[str]:
        """Paths, active image first."""
        return [path for path, _fmt in self._entries()]

    @property
    def formats(self) -> list[str]:
        """Formats of :attr:`chain`'s images."""
        return [fmt for _path, fmt in self._entries()]

    def position(self, path: str) -> int | None:
        """Depth of path in the chain (0: the active image); None if absent."""
        return api.position_of(self.chain, path)


class Domain:
    """The domain a task names; ``running`` is true while a qemu process holds its images (running or paused)."""

    def __init__(self, params: dict, policy: api.ChainPolicy) -> None:
        require_libvirt()
        self.conn = connect(params["uri"])
        self.dom = lookup_domain(self.conn, params["domain"])
        self.name: str = self.dom.name()
        self.policy = policy
        self.running = bool(self.dom.isActive())
        self.state = domain_state_name(self.dom)
        self._disks: list[DomainDisk] | None = None

    def disks(self) -> list[DomainDisk]:
        if self._disks is None:
            models = domain_disks(self.dom, inactive=not self.running)
            self._disks = [DomainDisk(self, model) for model in models if model.source]
        return self._disks

    def refresh(self) -> None:
        """Forget what was read: the next question reads the XML (and headers) again."""
        self._disks = None

    def disk(self, target: str) -> DomainDisk:
        for disk in self.disks():
            if disk.target == target:
                return disk
        raise LiveError("domain '%s' has no disk %s with a local image (disks: %s)" % (self.name, target, self._listing()),
                        domain=self.name, disk=target)

    def _listing(self) -> str:
        return ", ".join("%s=%s" % (disk.target, disk.active) for disk in self.disks()) or "none"

    def locate(self, path: str, target: str | None = None,
               done: t.Callable[[DomainDisk], bool] | None = None) -> DomainDisk | None:
        """The disk the task is about: the one named ``target``; else the one whose active image is path;
        else the one for which ``done(disk)`` says the task's change is already made. None if no disk is."""
        if target:
            return self.disk(target)
        for disk in self.disks():
            if api.same_file(disk.active, path):
                return disk
        if done is not None:
            for disk in self.disks():
                if done(disk):
                    return disk
        return None

    def holder(self, path: str) -> tuple[DomainDisk | None, int | None]:
        """(disk, depth) of the first disk with path somewhere in its chain, or (None, None)."""
        for disk in self.disks():
            try:
                depth = disk.position(path)
            except (api.Qcow2Error, OSError):  # another disk's unreadable chain says nothing about path
                continue
            if depth is not None:
                return disk, depth
        return None, None

    def chain_now(self, target: str) -> list[str]:
        """The chain of disk ``target`` read again (after a change)."""
        self.refresh()
        return self.disk(target).chain

    def result(self, target: str, **extra: t.Any) -> dict:
        """The ``domain`` return value: the disk's chain as it is now (read again), plus ``extra``."""
        result = {"name": self.name, "state": self.state, "disk": target, "chain": self.chain_now(target)}
        result.update(extra)
        return result

    def not_active_error(self, path: str, action: str) -> LiveError:
        """LiveError for a path that is not the active image of any disk, naming where it is instead."""
        disk, depth = self.holder(path)
        if disk is not None:
            return LiveError("%s is a backing image (depth %d) of disk %s of domain '%s', not its active image %s; %s"
                             % (path, depth, disk.target, self.name, disk.active, action), domain=self.name, disk=disk.target)
        return LiveError("%s is not an image of any disk of domain '%s' (disks: %s)" % (path, self.name, self._listing()),
                         domain=self.name)


def require_active_image(domain: Domain, disk: DomainDisk, path: str, action: str) -> None:
    """LiveError unless path is the active image of disk (the image the guest writes, or will write at start)."""
    if disk.position(path) != 0:
        raise LiveError("%s is not the active image of disk %s of domain '%s' (chain, top first: %s); %s"
                        % (path, disk.target, domain.name, disk.chain, action), domain=domain.name, disk=disk.target)


def backing_store_agrees(model: Disk, chain: list[str], formats: list[str]) -> bool:
    """True if the <backingStore> elements of the inactive XML disk ``model`` (if any) name the images
    below the top of ``chain`` with their ``formats``. An unterminated list may stop early: libvirt
    probes the rest from the headers."""
    listed = model.backing
    below = list(zip(chain[1:], formats[1:]))
    if len(listed) > len(below) or (model.chain_terminated and len(listed) != len(below)):
        return False
    # a listed image names the header's image when it spells it alike (even one gone since) or is the same file
    return all((image.path == path or api.same_file(image.path, path)) and image.format == fmt
               for image, (path, fmt) in zip(listed, below))


class DefinitionSync:
    """plan() says whether a shut-off domain's definition must change and how; apply() redefines the domain."""

    def __init__(self, domain: Domain, disk: DomainDisk) -> None:
        self.domain = domain
        self.disk = disk
        self.top: str | None = None
        self.format: str | None = None
        self.changed = False
        self.before: dict = {}
        self.after: dict = {}

    def plan(self, top: str, top_format: str, images_change: bool, chain_after: list[str] | None = None,
             formats_after: list[str] | None = None) -> bool:
        """top: the image the disk must start on; images_change: the engine will write the chain, so any
        <backingStore> goes. Otherwise chain_after/formats_after (the headers' chain from top) decide
        whether an existing <backingStore> is still right."""
        self.top, self.format = top, top_format
        predicted = update_inactive_disk(self.domain.conn, self.domain.dom, self.disk.target, top, top_format,
                                         check_mode=True)
        self.before, self.after = predicted["before"], predicted["after"]
        self.changed = predicted["changed"]
        if self.changed and not images_change:
            source_right = api.same_file(self.before["source"], top) and self.before["format"] == top_format
            if source_right and backing_store_agrees(self.disk.model, chain_after or [], formats_after or []):
                self.changed = False
                self.after = dict(self.before)
        return self.changed

    def apply(self) -> None:
        if self.changed:
            done = update_inactive_disk(self.domain.conn, self.domain.dom, self.disk.target, t.cast(str, self.top),
                                        t.cast(str, self.format))
            self.after = done["after"]
