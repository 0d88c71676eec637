# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A domain's disks and chains read from live and inactive domain XML, without a libvirtd."""

from __future__ import annotations

import os

import pytest

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import parse_disks, require_position, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.tests.unit.plugins.module_utils._live.xml_fixtures import domain_xml, make_files


@pytest.fixture
def running(tmp_path):
    top, mid, base = make_files(tmp_path, "top.qcow2", "mid.qcow2", "base.raw")
    return parse_disks(domain_xml("running.xml", tmp_path)), (top, mid, base)


def test_live_xml_lists_every_disk_with_a_target_and_its_whole_chain(running):
    disks, (top, mid, base) = running
    assert [disk.target for disk in disks] == ["vda", "vdb", "vdc", "sda"]  # a disk without <target> is left out
    vda = disks[0]
    assert (vda.device, vda.source, vda.format) == ("disk", top, "qcow2")
    assert vda.chain_paths() == [top, mid, base]
    assert [image.format for image in vda.images] == ["qcow2", "qcow2", "raw"]
    assert [image.index for image in vda.images] == [3, 2, 1]
    assert vda.chain_terminated and vda.has_backing_store and vda.mirror_job is None


def test_block_network_and_empty_disks(running):
    disks, _paths = running
    vdb, vdc, sda = disks[1:]
    assert (vdb.active.kind, vdb.source, vdb.format, vdb.chain_terminated) == ("block", "/dev/vg0/data", "raw", True)
    assert vdb.backing == []
    assert (vdc.active.kind, vdc.source, vdc.active.index) == ("network", None, 5)
    assert (sda.device, sda.source, sda.active.index, sda.has_backing_store) == ("cdrom", None, None, False)


def test_job_spec_names_an_image_by_index_else_by_path(running, tmp_path):
    disks, (top, _mid, _base) = running
    assert disks[0].job_spec(0) == "vda[3]" and disks[0].job_spec(2) == "vda[1]"
    assert disks[2].job_spec(0) == "vdc[5]"
    with pytest.raises(LiveError, match="disk sda: image at depth 0 has no path"):
        disks[3].job_spec(0)
    (inactive,) = [disk for disk in parse_disks(domain_xml("shutoff.xml", tmp_path)) if disk.target == "vda"]
    assert inactive.job_spec(0) == top


def test_position_of_any_spelling_of_an_image(running, tmp_path):
    disks, (top, mid, base) = running
    vda = disks[0]
    os.symlink(mid, str(tmp_path / "link.qcow2"))
    os.link(base, str(tmp_path / "hard.raw"))
    assert vda.position_of(top) == 0
    assert vda.position_of(str(tmp_path / "link.qcow2")) == 1
    assert vda.position_of(str(tmp_path / "hard.raw")) == 2
    assert vda.position_of(str(tmp_path / "." / "top.qcow2")) == 0
    assert vda.position_of(str(tmp_path / "missing.qcow2")) is None
    assert require_position(vda, mid, "base") == 1
    with pytest.raises(LiveError) as err:
        require_position(vda, str(tmp_path / "missing.qcow2"), "base", domain="web1")
    assert str(err.value) == ("base %s is not in the backing chain of disk vda of domain 'web1' (chain, top first: %s)"
                              % (tmp_path / "missing.qcow2", [top, mid, base]))


def test_mirror_of_an_active_commit_and_of_an_older_copy_job(tmp_path):
    vda, vdb = parse_disks(domain_xml("active_commit.xml", tmp_path))
    assert (vda.mirror_job, vda.mirror_ready) == ("active-commit", True)
    assert (vda.mirror.path, vda.mirror.format, vda.mirror.index) == (str(tmp_path / "mid.qcow2"), "qcow2", 2)
    # older libvirt wrote the destination as attributes of <mirror> itself
    assert (vdb.mirror_job, vdb.mirror_ready) == ("copy", False)
    assert (vdb.mirror.path, vdb.mirror.format, vdb.mirror.index) == (str(tmp_path / "copy-dst.qcow2"), "qcow2", None)


def test_inactive_xml_lists_only_the_backing_store_someone_wrote(tmp_path):
    vda, vdb, vdc, vdd = parse_disks(domain_xml("shutoff.xml", tmp_path))
    assert vda.chain_paths() == [str(tmp_path / "top.qcow2")]
    assert not vda.has_backing_store and not vda.chain_terminated and vda.active.index is None
    assert vdb.chain_paths() == [str(tmp_path / "second.qcow2"), str(tmp_path / "second-base.qcow2")]
    assert vdb.has_backing_store and not vdb.chain_terminated  # libvirt probes what follows from the headers
    assert (vdc.active.kind, vdc.source) == ("block", "/dev/vg0/data")
    assert (vdd.source, vdd.format) == (None, None)


def test_select_disk_by_target_or_by_the_active_image(running, tmp_path):
    disks, (top, mid, _base) = running
    os.symlink(top, str(tmp_path / "link.qcow2"))
    assert select_disk(disks, target="vdb").source == "/dev/vg0/data"
    assert select_disk(disks, image=str(tmp_path / "link.qcow2")).target == "vda"
    assert select_disk(disks, target="vda", image=top).target == "vda"
    with pytest.raises(LiveError, match=r"no disk of domain 'web1' with active image .*mid.qcow2 \(disks: vda=.*top.qcow2, "):
        select_disk(disks, image=mid, domain="web1")  # in the chain, but not the active image
    with pytest.raises(LiveError, match="no disk with target vdz, active image"):
        select_disk(disks, target="vdz", image=top)
    with pytest.raises(LiveError, match="select a disk by target or by image path"):
        select_disk(disks)
    twice = disks[0].source
    doubled = parse_disks("<domain><devices>%s</devices></domain>" % "".join(
        "<disk type='file' device='disk'><source file='%s'/><target dev='%s'/></disk>" % (twice, dev) for dev in ("vda", "vdb")))
    with pytest.raises(LiveError, match="more than one disk uses .*top.qcow2: vda, vdb; select one by target"):
        select_disk(doubled, image=top)
