# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""External disk-only snapshot of a running domain: new qcow2 overlays become the active images.

Flags: DISK_ONLY (no memory state), ATOMIC (all disks or none), NO_METADATA unless metadata
is asked for (libvirt then keeps a snapshot object that must later be deleted with
--metadata), QUIESCE on request (freezes guest filesystems through the QEMU guest agent).
libvirt creates each overlay itself, recording the old active image as backing file with its
format (absolute path).
"""

from __future__ import annotations

import os
import time
import types
import xml.etree.ElementTree as ET

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.connection import require_active
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import Disk, domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import (
    DomainHandle,
    libvirt_error_code,
    libvirt_error_text,
    require_libvirt,
)


def snapshot_xml(overlays: dict[str, str], all_targets: list[str], name: str | None = None,
                 description: str | None = None) -> str:
    """<domainsnapshot> asking for a qcow2 overlay for each target in ``overlays`` and
    explicitly no snapshot of every other disk (libvirt would otherwise invent overlay names)."""
    root = ET.Element("domainsnapshot")
    if name:
        ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    disks = ET.SubElement(root, "disks")
    for target in all_targets:
        disk = ET.SubElement(disks, "disk", name=target)
        if target in overlays:
            disk.set("snapshot", "external")
            ET.SubElement(disk, "driver", type="qcow2")
            ET.SubElement(disk, "source", file=overlays[target])
        else:
            disk.set("snapshot", "no")
    return ET.tostring(root, encoding="unicode")


def _agent_error_codes(libvirt: types.ModuleType) -> set:
    names = ("VIR_ERR_AGENT_UNRESPONSIVE", "VIR_ERR_AGENT_UNSYNCED", "VIR_ERR_AGENT_COMMAND_TIMEOUT",
             "VIR_ERR_AGENT_COMMAND_FAILED")
    return set(getattr(libvirt, name) for name in names if hasattr(libvirt, name))


def _is_agent_failure(libvirt: types.ModuleType, exc: BaseException) -> bool:
    """libvirt 9.0 says "argument unsupported: QEMU guest agent is not configured" without an
    agent channel, and VIR_ERR_AGENT_UNRESPONSIVE when the channel exists but nothing answers."""
    code = libvirt_error_code(exc)
    return code in _agent_error_codes(libvirt) or "guest agent" in libvirt_error_text(exc).lower()


def agent_not_answering(domain: str, reason: str, **details: object) -> LiveError:
    """The error for a quiesce the guest agent cannot do; nothing has been changed when it is raised."""
    return LiveError("quiesce was requested but the QEMU guest agent of domain '%s' does not answer (%s). Run "
                     "qemu-guest-agent in the guest with a virtio-serial channel named org.qemu.guest_agent.0, or "
                     "set quiesce to false. No snapshot was taken; the disks are unchanged." % (domain, reason),
                     domain=domain, **details)


def guest_agent_state(dom: DomainHandle) -> str | None:
    """The live XML's state of the guest agent channel: 'connected', 'disconnected', 'unknown' (no
    state reported), or None without a channel. libvirt follows the virtio-serial port, so
    'connected' means an agent in the guest opened it."""
    root = ET.fromstring(dom.XMLDesc(0))
    for target in root.findall("./devices/channel/target"):
        if target.get("name") == "org.qemu.guest_agent.0":
            return target.get("state", "unknown")
    return None


def _check_request(disks: list[Disk], overlays: dict[str, str], domain: str) -> None:
    if not overlays:
        raise LiveError("no overlay requested: give at least one disk target and overlay path")
    for target, path in overlays.items():
        disk = select_disk(disks, target=target, domain=domain)
        if not os.path.isabs(path):
            raise LiveError("overlay path %s for disk %s must be absolute" % (path, target), disk=target)
        if os.path.lexists(path):
            raise LiveError("overlay %s for disk %s already exists; libvirt creates the overlay itself" % (path, target),
                            disk=target)
        if not os.path.isdir(os.path.dirname(path)):
            raise LiveError("directory of overlay %s does not exist" % path, disk=target)
        if disk.source is None:
            raise LiveError("disk %s of domain '%s' has no local image to put an overlay on" % (target, domain), disk=target)


def create_disk_only_snapshot(dom: DomainHandle, overlays: dict[str, str], name: str | None = None, metadata: bool = False,
                              quiesce: bool = False, description: str | None = None) -> dict:
    """Atomically put a new qcow2 overlay on top of each given disk of a running domain.

    overlays: {target: absolute overlay path}; the paths must not exist yet. Other disks are
    left alone. metadata=False (default) leaves no libvirt snapshot object behind.
    quiesce=True freezes guest filesystems through the guest agent first; if the agent does
    not answer, LiveError says so and nothing changed (atomic).
    Returns {'changed': True, 'name', 'overlays', 'backing': {target: previous active image},
    'metadata', 'quiesced', 'duration'}; the new chain is verified in the live XML.
    """
    libvirt = require_libvirt()
    require_active(dom, "take a disk-only snapshot")
    domain = dom.name()
    disks = domain_disks(dom)
    _check_request(disks, overlays, domain)
    previous = {target: select_disk(disks, target=target).source for target in overlays}
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    if not metadata:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
    if quiesce:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    started = time.monotonic()
    try:
        snap = dom.snapshotCreateXML(snapshot_xml(overlays, [disk.target for disk in disks], name, description), flags)
    except libvirt.libvirtError as exc:
        if quiesce and _is_agent_failure(libvirt, exc):
            raise agent_not_answering(domain, libvirt_error_text(exc), libvirt_code=libvirt_error_code(exc))
        raise LiveError("disk-only snapshot of domain '%s' failed: %s" % (domain, libvirt_error_text(exc)),
                        domain=domain, libvirt_code=libvirt_error_code(exc))
    duration = round(time.monotonic() - started, 3)
    after = domain_disks(dom)
    for target, path in overlays.items():
        disk = select_disk(after, target=target)
        if disk.position_of(path) != 0:
            raise LiveError("snapshot of domain '%s' reported success but disk %s runs on %s, not %s"
                            % (domain, target, disk.source, path), domain=domain, disk=target)
    return {"changed": True, "name": snap.getName() if snap is not None else name, "overlays": dict(overlays),
            "backing": previous, "metadata": metadata, "quiesced": quiesce, "duration": duration}
