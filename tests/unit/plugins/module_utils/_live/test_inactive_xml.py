# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rewriting a shut-off domain's disk to start on a new top image, on domain XML, without a libvirtd."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import parse_disks
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.inactive_xml import rewrite_disk_source
from ansible_collections.backingchain.qcow2.tests.unit.plugins.module_utils._live.xml_fixtures import domain_xml, make_files


def _disk(xml, target):
    return next(disk for disk in parse_disks(xml) if disk.target == target)


def test_the_disk_starts_on_the_new_top_and_its_backing_store_goes(tmp_path):
    second, new_top = make_files(tmp_path, "second.qcow2", "new-top.qcow2")
    xml = domain_xml("shutoff.xml", tmp_path)
    new_xml, before, after = rewrite_disk_source(xml, "vdb", new_top)
    assert before == {"source": second, "format": "qcow2", "backing_store_in_xml": True}
    assert after == {"source": new_top, "format": "qcow2", "backing_store_in_xml": False}
    vdb = _disk(new_xml, "vdb")
    assert (vdb.source, vdb.format, vdb.has_backing_store) == (new_top, "qcow2", False)
    # the other disks and the rest of the definition stay, qemu's namespace prefix included
    assert [(d.target, d.source) for d in parse_disks(new_xml) if d.target != "vdb"] == \
           [(d.target, d.source) for d in parse_disks(xml) if d.target != "vdb"]
    assert "xmlns:qemu=" in new_xml and "<qemu:env name=\"MARK\" value=\"kept\" />" in new_xml
    assert "<name>old</name>" in new_xml


def test_nothing_changes_when_the_disk_already_starts_there(tmp_path):
    top, = make_files(tmp_path, "top.qcow2")
    os.symlink(top, str(tmp_path / "link.qcow2"))
    xml = domain_xml("shutoff.xml", tmp_path)
    for spelling in (top, str(tmp_path / "link.qcow2")):
        new_xml, before, after = rewrite_disk_source(xml, "vda", spelling)
        assert new_xml is xml and before == after == {"source": top, "format": "qcow2", "backing_store_in_xml": False}
    new_xml, before, after = rewrite_disk_source(xml, "vda", top, "raw")  # another format is a change
    assert new_xml != xml and after["format"] == "raw"
    assert 'discard="unmap"' in new_xml  # the driver's other settings stay


def test_a_live_index_and_a_whole_chain_are_dropped(tmp_path):
    top, _mid, _base, new_top = make_files(tmp_path, "top.qcow2", "mid.qcow2", "base.raw", "new-top.qcow2")
    new_xml, before, _after = rewrite_disk_source(domain_xml("running.xml", tmp_path), "vda", new_top)
    assert before == {"source": top, "format": "qcow2", "backing_store_in_xml": True}
    vda = _disk(new_xml, "vda")
    assert (vda.source, vda.active.index, vda.backing, vda.has_backing_store) == (new_top, None, [], False)


def test_a_disk_without_source_or_driver_gets_both(tmp_path):
    new_top, = make_files(tmp_path, "new-top.qcow2")
    new_xml, before, after = rewrite_disk_source(domain_xml("shutoff.xml", tmp_path), "vdd", new_top)
    assert before == {"source": None, "format": None, "backing_store_in_xml": False}
    assert after == {"source": new_top, "format": "qcow2", "backing_store_in_xml": False}
    assert (_disk(new_xml, "vdd").source, _disk(new_xml, "vdd").format) == (new_top, "qcow2")


def test_refused_disks(tmp_path):
    xml = domain_xml("shutoff.xml", tmp_path)
    with pytest.raises(LiveError, match="disk vdc is of type 'block'; only file-backed disks"):
        rewrite_disk_source(xml, "vdc", str(tmp_path / "x.qcow2"))
    with pytest.raises(LiveError, match="domain 'old' has no disk with target vdz"):
        rewrite_disk_source(xml, "vdz", str(tmp_path / "x.qcow2"))
