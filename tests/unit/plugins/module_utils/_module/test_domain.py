# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import parse_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._module.domain import backing_store_agrees

CHAIN = ["/v/top.qcow2", "/v/mid.qcow2", "/v/base.raw"]
FORMATS = ["qcow2", "qcow2", "raw"]


def disk(backing_xml):
    xml = ("<domain><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
           "<source file='/v/top.qcow2'/>%s<target dev='vda'/></disk></devices></domain>" % backing_xml)
    return parse_disks(xml)[0]


def store(path, fmt, inner=""):
    return "<backingStore type='file'><format type='%s'/><source file='%s'/>%s</backingStore>" % (fmt, path, inner)


def test_no_backing_store_leaves_the_chain_to_the_headers():
    assert backing_store_agrees(disk(""), CHAIN, FORMATS)


def test_a_backing_store_naming_the_header_chain_agrees_also_when_it_stops_early():
    assert backing_store_agrees(disk(store("/v/mid.qcow2", "qcow2", store("/v/base.raw", "raw", "<backingStore/>"))),
                                CHAIN, FORMATS)
    assert backing_store_agrees(disk(store("/v/mid.qcow2", "qcow2")), CHAIN, FORMATS)  # libvirt probes the rest


def test_another_image_format_or_length_disagrees():
    assert not backing_store_agrees(disk(store("/v/other.qcow2", "qcow2")), CHAIN, FORMATS)
    assert not backing_store_agrees(disk(store("/v/mid.qcow2", "raw")), CHAIN, FORMATS)
    assert not backing_store_agrees(disk(store("/v/mid.qcow2", "qcow2", "<backingStore/>")), CHAIN, FORMATS)
    assert not backing_store_agrees(disk(store("/v/mid.qcow2", "qcow2")), CHAIN[:1], FORMATS[:1])
