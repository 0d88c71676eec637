# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Domains for module tests through libvirt's test driver: a real libvirt (the library itself, no daemon) that reads
its domains from a node XML file, test:///<file>. Every connection starts from that file again, so what a module
run changes is gone for the next one. Running domains of the test driver list no backing chain in their XML."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr


@dataclass
class DiskSpec:
    target: str
    file: str | None
    format: str | None = "qcow2"
    device: str = "disk"
    backing_xml: str = ""  # <backingStore> elements written into the definition, as libvirt writes them after jobs
    kind: str = "file"


@dataclass
class DomainSpec:
    name: str
    disks: list = field(default_factory=list)
    running: bool = True


def _disk_xml(disk):
    driver = "<driver name='qemu' type=%s/>" % quoteattr(disk.format) if disk.format else ""
    if disk.kind == "network":
        source = "<source protocol='nbd' name='export'><host name='localhost' port='10809'/></source>"
    else:
        source = "<source file=%s/>" % quoteattr(disk.file)
    return ("<disk type=%s device=%s>%s%s%s<target dev=%s bus='virtio'/></disk>"
            % (quoteattr(disk.kind), quoteattr(disk.device), driver, source, disk.backing_xml, quoteattr(disk.target)))


def node_uri(directory, domains):
    """Write a node XML with these DomainSpecs into directory and return its test:// URI."""
    parts = []
    for domain in domains:
        state = "" if domain.running else "<test:runstate>5</test:runstate>"  # 5: shut off
        parts.append("<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>%s</name>"
                     "<memory>65536</memory><os><type>hvm</type></os><devices>%s</devices>%s</domain>"
                     % (domain.name, "".join(_disk_xml(disk) for disk in domain.disks), state))
    path = directory / "libvirt-node.xml"
    path.write_text("<node>%s</node>" % "".join(parts))
    return "test://%s" % path


def backing_store(*images, terminated=True):
    """<backingStore> elements listing (path, format) images below a disk's source, ended by an empty one or not."""
    xml = "<backingStore/>" if terminated else ""
    for path, fmt in reversed(images):
        xml = "<backingStore type='file'><format type=%s/><source file=%s/>%s</backingStore>" % (
            quoteattr(fmt), quoteattr(path), xml)
    return xml
