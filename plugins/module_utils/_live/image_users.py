# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Which domains use an image: the active ones that have it open (so the engine's lock error can name
them), and on request also the shut-off ones whose disks will open it at their next start."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import domain_state_name
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import Connection, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import same_file


@dataclass
class ImageUse:
    """One place where a domain uses the image."""

    domain: str
    state: str  # libvirt's state word: running, paused, shut off, ...
    target: str  # disk target, e.g. vda
    depth: int  # 0: the active image the guest writes; 1..: a backing image
    path: str  # the path as libvirt (or, past what libvirt lists, the image headers) names it

    @property
    def role(self) -> str:
        return "active image" if self.depth == 0 else "backing image"


def find_image_users(conn: Connection, image: str, include_shut_off: bool = False,
                     chain_of: t.Callable[[Disk], list[str | None]] | None = None) -> list[ImageUse]:
    """Every disk of every active (running or paused) domain that has ``image`` anywhere in its chain,
    compared by device+inode so any spelling of the path matches.

    Only active domains hold images open; a shut-off domain that references the image does not lock
    it. include_shut_off=True also looks at the persistent definitions of the other domains.

    chain_of(disk) -> paths, active image first: the disk's chain, for disk_model.Disk objects whose XML
    does not list all of it (a definition lists only what someone wrote; libvirt's test driver lists no
    chain even for running domains). None: the chain the XML lists.
    """
    libvirt = require_libvirt()
    flags = 0 if include_shut_off else libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    uses = []
    for dom in conn.listAllDomains(flags):
        try:
            active = bool(dom.isActive())
            disks = domain_disks(dom, inactive=not active)
            state = domain_state_name(dom)
        except libvirt.libvirtError:  # the domain went away (or stopped) while we looked
            continue
        for disk in disks:
            chain = chain_of(disk) if chain_of is not None else disk.chain_paths()
            for depth, path in enumerate(chain):
                if same_file(path, image):
                    uses.append(ImageUse(dom.name(), state, disk.target, depth, path))
                    break
    return sorted(uses, key=lambda use: (use.domain, use.target))


def in_use_message(image: str, uses: list[ImageUse]) -> str:
    """A message turning a lock failure into advice, e.g.
    "image /vm/a.qcow2 is in use by running domain 'web1' (disk vda); pass domain: web1"."""
    if not uses:
        return "image %s is locked by a process that is not a libvirt domain on this host" % image
    parts = []
    for use in uses:
        where = "disk %s" % use.target if use.depth == 0 else "disk %s, backing image at depth %d" % (use.target, use.depth)
        parts.append("%s domain '%s' (%s)" % (use.state, use.domain, where))
    domains = sorted(set(use.domain for use in uses))
    if len(domains) == 1:
        hint = "pass domain: %s" % domains[0]
    else:  # no single domain can change an image others read through their chains
        hint = "it is shared by domains %s; change it only while they are shut off" % ", ".join(domains)
    return "image %s is in use by %s; %s" % (image, " and ".join(parts), hint)
