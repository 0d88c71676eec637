# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""libvirt checkpoints of one disk: a checkpoint is a persistent dirty bitmap of the same name in the disk's
qcow2 image, that libvirt creates, propagates into overlays, merges back on commit and deletes.

Only one disk of the domain gets a bitmap (every other disk is listed with checkpoint='no': libvirt would
otherwise add one to each). A shut-off domain cannot create or delete bitmaps through libvirt (libvirt 9.0):
there the engine writes the image and libvirt's metadata follows by redefine and metadata-only delete.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import (
    DomainHandle,
    libvirt_error_code,
    libvirt_error_text,
    require_libvirt,
)


def checkpoint_xml(dom: DomainHandle, name: str, target: str, created: int | None = None) -> str:
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    if created is not None:
        ET.SubElement(root, "creationTime").text = str(created)
    disks = ET.SubElement(root, "disks")
    for disk in domain_disks(dom, inactive=not dom.isActive()):
        if disk.device == "disk":
            ET.SubElement(disks, "disk", name=disk.target, checkpoint="bitmap" if disk.target == target else "no")
    return ET.tostring(root, encoding="unicode")


def checkpoint_names(dom: DomainHandle) -> list[str]:
    return [checkpoint.getName() for checkpoint in dom.listAllCheckpoints(0)]


def create_checkpoint(dom: DomainHandle, name: str, target: str) -> None:
    """A new checkpoint of a running domain: from now on its bitmap records every write to disk target."""
    libvirt = require_libvirt()
    try:
        dom.checkpointCreateXML(checkpoint_xml(dom, name, target), 0)
    except libvirt.libvirtError as exc:
        raise LiveError("checkpoint %s of disk %s of domain '%s' could not be created: %s"
                        % (name, target, dom.name(), libvirt_error_text(exc)), domain=dom.name(), disk=target,
                        libvirt_code=libvirt_error_code(exc))


def redefine_checkpoint(dom: DomainHandle, name: str, target: str) -> None:
    """Tell libvirt about a bitmap the engine added to a shut-off domain's disk, so that a live backup after the
    next start finds the checkpoint (its bitmap is what libvirt reads it from)."""
    libvirt = require_libvirt()
    try:
        dom.checkpointCreateXML(checkpoint_xml(dom, name, target, int(time.time())),
                                libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)
    except libvirt.libvirtError as exc:
        raise LiveError("checkpoint %s of disk %s of domain '%s' could not be redefined: %s"
                        % (name, target, dom.name(), libvirt_error_text(exc)), domain=dom.name(), disk=target,
                        libvirt_code=libvirt_error_code(exc))


def delete_checkpoint(dom: DomainHandle, name: str) -> None:
    """Delete a checkpoint and its bitmap; of a shut-off domain (or a checkpoint whose bitmap is gone), only
    libvirt's record of it (the engine removes a shut-off disk's bitmaps itself)."""
    libvirt = require_libvirt()
    try:
        checkpoint = dom.checkpointLookupByName(name, 0)
    except libvirt.libvirtError:
        return
    try:
        checkpoint.delete(0 if dom.isActive() else libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    except libvirt.libvirtError as exc:
        if not dom.isActive():
            raise LiveError("checkpoint %s of domain '%s' could not be deleted: %s"
                            % (name, dom.name(), libvirt_error_text(exc)), domain=dom.name())
        checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)


def checkpoint_size(dom: DomainHandle, name: str, target: str) -> int | None:
    """libvirt's count of the bytes the checkpoint's bitmap marks on disk target of a running domain (what an
    increment from it copies); None when libvirt cannot tell (the bitmap is unusable)."""
    libvirt = require_libvirt()
    try:
        xml = dom.checkpointLookupByName(name, 0).getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE)
    except libvirt.libvirtError:
        return None
    for disk in ET.fromstring(xml).findall("./disks/disk"):
        if disk.get("name") == target and disk.get("size") is not None:
            return int(disk.get("size"))
    return None
