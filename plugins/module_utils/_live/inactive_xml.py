# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Pointing a shut-off domain's disk at a new top image (the engine moved the data offline).

The disk's ``<backingStore>`` is REMOVED rather than rewritten: libvirt 9.0 (blockdev mode)
trusts a ``<backingStore>`` written in the inactive XML and hands that chain to qemu, even when
the image header names another backing file (verified: the guest then reads the wrong base).
Without the element libvirt probes the chain from the image headers at every start, which is
always consistent with what the engine wrote (the engine records backing formats, which
libvirt requires for probing).
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import Connection, DomainHandle, libvirt_error_text, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import same_file


def _parse_keeping_prefixes(domain_xml: str) -> ET.Element:
    """Parse, registering the document's namespace prefixes (e.g. qemu:commandline) so that
    serialising does not rename them to ns0."""
    for _event, (prefix, uri) in ET.iterparse(io.StringIO(domain_xml), events=("start-ns",)):
        if prefix:
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:  # "ns0"-style prefixes are reserved by ElementTree and get renamed
                pass
    return ET.fromstring(domain_xml)


def _find_disk(root: ET.Element, target: str) -> ET.Element:
    for disk in root.findall("./devices/disk"):
        element = disk.find("target")
        if element is not None and element.get("dev") == target:
            return disk
    raise LiveError("domain '%s' has no disk with target %s" % (root.findtext("name"), target), disk=target)


def disk_source_state(disk: ET.Element) -> dict:
    """What the update compares and reports: source file, driver type, backingStore present."""
    source = disk.find("source")
    driver = disk.find("driver")
    return {
        "source": source.get("file") if source is not None else None,
        "format": driver.get("type") if driver is not None else None,
        "backing_store_in_xml": disk.find("backingStore") is not None,
    }


def _needs_change(state: dict, image: str, image_format: str) -> bool:
    return not same_file(state["source"], image) or state["format"] != image_format or state["backing_store_in_xml"]


def rewrite_disk_source(domain_xml: str, target: str, image: str, image_format: str = "qcow2") -> tuple[str, dict, dict]:
    """Return (new_xml, before, after) with disk ``target`` pointing at ``image`` of ``image_format``
    and no ``<backingStore>``; new_xml equals domain_xml when nothing needs to change."""
    root = _parse_keeping_prefixes(domain_xml)
    disk = _find_disk(root, target)
    if disk.get("type", "file") != "file":
        raise LiveError("disk %s is of type '%s'; only file-backed disks can be pointed at an image"
                        % (target, disk.get("type")), disk=target)
    before = disk_source_state(disk)
    if not _needs_change(before, image, image_format):
        return domain_xml, before, dict(before)
    source = disk.find("source")
    if source is None:
        source = ET.Element("source")
        disk.insert(0, source)
    source.set("file", image)
    source.attrib.pop("index", None)  # a live-XML-only attribute
    driver = disk.find("driver")
    if driver is None:
        driver = ET.Element("driver", name="qemu")
        disk.insert(0, driver)
    driver.set("type", image_format)
    for backing in disk.findall("backingStore"):
        disk.remove(backing)
    return ET.tostring(root, encoding="unicode"), before, disk_source_state(disk)


def inactive_disk_matches(dom: DomainHandle, target: str, image: str, image_format: str = "qcow2") -> bool:
    """True if the persistent definition already points ``target`` at ``image`` with that format
    and lets libvirt detect the chain (no <backingStore>): what update_inactive_disk would produce."""
    libvirt = require_libvirt()
    root = _parse_keeping_prefixes(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return not _needs_change(disk_source_state(_find_disk(root, target)), image, image_format)


def update_inactive_disk(conn: Connection, dom: DomainHandle, target: str, image: str, image_format: str = "qcow2", check_mode: bool = False) -> dict:
    """Redefine a shut-off persistent domain so disk ``target`` starts on ``image``.

    Returns {'changed', 'before', 'after'} (each {'source', 'format', 'backing_store_in_xml'}),
    usable as the module's diff. check_mode computes the same answer without redefining.
    """
    libvirt = require_libvirt()
    name = dom.name()
    if dom.isActive():
        raise LiveError("domain '%s' is running: its chain must be changed live, not by editing its definition" % name,
                        domain=name)
    if not dom.isPersistent():
        raise LiveError("domain '%s' is transient and has no definition to update" % name, domain=name)
    if not os.path.isabs(image):
        raise LiveError("image path %s must be absolute" % image, disk=target)
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE  # SECURE keeps passwords on redefine
    current = dom.XMLDesc(flags)
    new_xml, before, after = rewrite_disk_source(current, target, image, image_format)
    changed = new_xml != current
    if changed and not check_mode:
        if not os.path.exists(image):
            raise LiveError("image %s does not exist; create it before pointing domain '%s' at it" % (image, name),
                            domain=name, disk=target)
        try:
            conn.defineXML(new_xml)
        except libvirt.libvirtError as exc:
            raise LiveError("redefining domain '%s' failed: %s" % (name, libvirt_error_text(exc)), domain=name, disk=target)
    return {"changed": changed, "before": before, "after": after}
