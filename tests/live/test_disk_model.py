# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The disk model read from real live and inactive domain XML."""

from __future__ import annotations

import os

import pytest
from chain_setup import three_deep_chain

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError


def test_live_xml_has_the_whole_chain_with_formats_and_indexes(make_domain, image_dir):
    chain = three_deep_chain(image_dir)  # relative links in the headers
    dom = make_domain(chain.top)

    (disk,) = domain_disks(dom)

    assert (disk.target, disk.device, disk.source, disk.format) == ("vda", "disk", chain.top, "qcow2")
    assert disk.chain_paths() == [chain.top, chain.mid, chain.base]  # libvirt reports them absolute
    assert [image.format for image in disk.backing] == ["qcow2", "qcow2"]
    indexes = [image.index for image in disk.images]
    assert all(isinstance(index, int) for index in indexes) and len(set(indexes)) == 3
    assert disk.job_spec(2) == "vda[%d]" % indexes[2]
    assert disk.chain_terminated and disk.mirror_job is None


def test_inactive_xml_has_no_chain_unless_one_was_written(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top, start=False)

    (disk,) = domain_disks(dom, inactive=True)

    assert disk.chain_paths() == [chain.top]
    assert not disk.has_backing_store and not disk.chain_terminated
    assert disk.active.index is None and disk.job_spec(0) == chain.top


def test_select_disk_by_target_or_by_any_spelling_of_the_active_image(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    disks = domain_disks(dom)
    link = str(image_dir / "link-to-top.qcow2")
    os.symlink(chain.top, link)

    assert select_disk(disks, target="vda").source == chain.top
    assert select_disk(disks, image=link).target == "vda"
    assert select_disk(disks, image=str(image_dir / ".." / image_dir.name / "top.qcow2")).target == "vda"
    assert select_disk(disks, target="vda").position_of(link) == 0
    with pytest.raises(LiveError, match="no disk"):
        select_disk(disks, image=chain.base, domain=dom.name())  # in the chain, but not the active image
    with pytest.raises(LiveError, match="no disk of domain '%s' with target vdb" % dom.name()):
        select_disk(disks, target="vdb", domain=dom.name())
