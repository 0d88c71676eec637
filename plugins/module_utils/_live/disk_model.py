# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A domain's disks and their backing chains, as libvirt reports them in the domain XML.

In the live XML libvirt lists the whole chain it opened (absolute paths, even for relative
links in the images, each with an ``index``). In the inactive XML a ``<backingStore>`` is
only present if someone wrote one; libvirt then trusts it instead of the image headers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import DomainHandle, require_libvirt
from ansible_collections.backingchain.qcow2.plugins.module_utils._qcow2.api import position_of, same_file


@dataclass
class ChainImage:
    """One image of a disk's chain."""

    path: str | None  # file or block device; None for network/volume sources
    format: str | None  # driver type of the active image, <format type> of a backing image
    index: int | None = None  # live XML only; "vda[index]" names this image in block job APIs
    kind: str = "file"  # the XML type attribute: file, block, network, volume


@dataclass
class Disk:
    """One ``<disk>`` of a domain."""

    target: str  # e.g. vda
    device: str  # disk, cdrom, floppy, lun
    active: ChainImage  # the image the guest writes to (<source>)
    backing: list[ChainImage] = field(default_factory=list)  # top-down, without the active image
    chain_terminated: bool = False  # the XML ends the chain with an empty <backingStore/>
    has_backing_store: bool = False  # any <backingStore> element was present
    mirror_job: str | None = None  # <mirror job=...> while a copy/active-commit job runs
    mirror_ready: bool = False  # <mirror ready='yes'>: the job can be pivoted
    mirror: ChainImage | None = None  # the job's destination: the base of an active commit, a copy's target

    @property
    def source(self) -> str | None:
        """Path of the active image."""
        return self.active.path

    @property
    def format(self) -> str | None:
        """Format (driver type) of the active image."""
        return self.active.format

    @property
    def images(self) -> list[ChainImage]:
        """Active image first, then each backing image down to the base."""
        return [self.active] + self.backing

    def chain_paths(self) -> list[str | None]:
        """Paths of :attr:`images`, top-down."""
        return [image.path for image in self.images]

    def position_of(self, path: str) -> int | None:
        """Depth of ``path`` in the chain (0 = active image), or None if it is not in it."""
        return position_of(self.chain_paths(), path)

    def job_spec(self, depth: int) -> str:
        """How block job APIs name the image at ``depth``: "vda[3]" when libvirt gave an index
        (unambiguous even if the same name appears twice), else its path."""
        image = self.images[depth]
        if image.index is not None:
            return "%s[%d]" % (self.target, image.index)
        if image.path is None:
            raise LiveError("disk %s: image at depth %d has no path" % (self.target, depth), disk=self.target)
        return image.path


def _source_path(kind: str, source: ET.Element | None) -> str | None:
    if source is None:
        return None
    if kind == "file":
        return source.get("file")
    if kind == "block":
        return source.get("dev")
    return None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _parse_backing(disk: Disk, element: ET.Element | None) -> None:
    while element is not None:
        disk.has_backing_store = True
        source = element.find("source")
        if source is None:  # <backingStore/>: no more backing images
            disk.chain_terminated = True
            return
        kind = element.get("type", "file")
        fmt = element.find("format")
        disk.backing.append(ChainImage(
            path=_source_path(kind, source),
            format=fmt.get("type") if fmt is not None else None,
            index=_int_or_none(element.get("index") or source.get("index")),
            kind=kind,
        ))
        element = element.find("backingStore")


def _parse_disk(element: ET.Element) -> Disk | None:
    target = element.find("target")
    if target is None or not target.get("dev"):
        return None
    kind = element.get("type", "file")
    source = element.find("source")
    driver = element.find("driver")
    disk = Disk(
        target=target.get("dev"),
        device=element.get("device", "disk"),
        active=ChainImage(
            path=_source_path(kind, source),
            format=driver.get("type") if driver is not None else None,
            index=_int_or_none(source.get("index")) if source is not None else None,
            kind=kind,
        ),
    )
    _parse_backing(disk, element.find("backingStore"))
    mirror = element.find("mirror")
    if mirror is not None:
        disk.mirror_job = mirror.get("job", "copy")
        disk.mirror_ready = mirror.get("ready") == "yes"
        disk.mirror = _parse_mirror(mirror)
    return disk


def _parse_mirror(mirror: ET.Element) -> ChainImage:
    """<mirror type='file' job='active-commit'><format type='qcow2'/><source file='...' index='3'/></mirror>
    (libvirt 9.0; older libvirt wrote the destination as a ``file`` attribute of <mirror> itself)."""
    kind = mirror.get("type", "file")
    source = mirror.find("source")
    fmt = mirror.find("format")
    return ChainImage(
        path=_source_path(kind, source) if source is not None else mirror.get("file"),
        format=fmt.get("type") if fmt is not None else mirror.get("format"),
        index=_int_or_none(source.get("index")) if source is not None else None,
        kind=kind,
    )


def parse_disks(domain_xml: str) -> list[Disk]:
    """Every ``<disk>`` with a target in a domain XML document, in document order."""
    root = ET.fromstring(domain_xml)
    disks = []
    for element in root.findall("./devices/disk"):
        disk = _parse_disk(element)
        if disk is not None:
            disks.append(disk)
    return disks


def domain_disks(dom: DomainHandle, inactive: bool = False) -> list[Disk]:
    """The disks of a domain: the live definition (what qemu runs, full chains) or, with
    ``inactive=True``, the persistent one used at next start."""
    libvirt = require_libvirt()
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return parse_disks(dom.XMLDesc(flags))


def select_disk(disks: list[Disk], target: str | None = None, image: str | None = None, domain: str = "") -> Disk:
    """The disk with this target (e.g. "vda") or whose active image is ``image``.

    With only ``image`` given, a disk that has it deeper in its chain is not selected: the
    caller asked for the disk the guest writes through that image. Raises LiveError if no
    disk or more than one disk matches.
    """
    if target is None and image is None:
        raise LiveError("select a disk by target or by image path")
    where = " of domain '%s'" % domain if domain else ""
    matches = [
        disk for disk in disks
        if (target is None or disk.target == target) and (image is None or same_file(disk.source, image))
    ]
    if not matches:
        wanted = ", ".join(part for part in (
            "target %s" % target if target else "", "active image %s" % image if image else "") if part)
        present = ", ".join("%s=%s" % (disk.target, disk.source) for disk in disks) or "none"
        raise LiveError("no disk%s with %s (disks: %s)" % (where, wanted, present), disk=target, image=image)
    if len(matches) > 1:
        raise LiveError("more than one disk%s uses %s: %s; select one by target"
                        % (where, image, ", ".join(disk.target for disk in matches)), image=image)
    return matches[0]


def require_position(disk: Disk, path: str, what: str, domain: str = "") -> int:
    """Depth of ``path`` in the disk's chain; LiveError naming ``what`` (e.g. "base") if absent."""
    depth = disk.position_of(path)
    if depth is None:
        where = " of domain '%s'" % domain if domain else ""
        raise LiveError("%s %s is not in the backing chain of disk %s%s (chain, top first: %s)"
                        % (what, path, disk.target, where, disk.chain_paths()), disk=disk.target, image=path)
    return depth
