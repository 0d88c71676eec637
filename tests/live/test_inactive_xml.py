# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pointing a shut-off domain at a new top image made offline."""

from __future__ import annotations

import pytest
from live_helpers import create_image, start_domain

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks, select_disk
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.inactive_xml import inactive_disk_matches, update_inactive_disk

QEMU_NS = "<qemu:commandline><qemu:env name='BCQ_MARK' value='kept'/></qemu:commandline>"


def stale_backing_store(path):
    return "<backingStore type='file'><format type='qcow2'/><source file='%s'/><backingStore/></backingStore>" % path


def test_libvirt_trusts_a_backing_store_written_in_the_inactive_xml(make_domain, image_dir):
    """Why the update removes <backingStore>: libvirt hands the written chain to qemu over the header's."""
    base = create_image(str(image_dir / "base.qcow2"))
    other = create_image(str(image_dir / "other.qcow2"))
    dom = make_domain(base, extra_disk_xml=stale_backing_store(other))  # base's header has no backing file
    assert live_chain(dom, "vda") == [base, other]


def test_update_points_disk_at_new_top_and_lets_libvirt_detect_the_chain(conn, make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    other = create_image(str(image_dir / "other.qcow2"))
    dom = make_domain(base, start=False, extra_disk_xml=stale_backing_store(other), ns_extra=QEMU_NS)
    top = create_image(str(image_dir / "top.qcow2"), backing=base)  # what the offline engine would have made
    assert not inactive_disk_matches(dom, "vda", top)
    xml_before = dom.XMLDesc(0)

    predicted = update_inactive_disk(conn, dom, "vda", top, check_mode=True)
    assert predicted["changed"] is True and dom.XMLDesc(0) == xml_before

    result = update_inactive_disk(conn, dom, "vda", top)

    assert result == predicted
    assert result["before"] == {"source": base, "format": "qcow2", "backing_store_in_xml": True}
    assert result["after"] == {"source": top, "format": "qcow2", "backing_store_in_xml": False}
    disk = select_disk(domain_disks(dom, inactive=True), target="vda")
    assert (disk.source, disk.format, disk.has_backing_store) == (top, "qcow2", False)
    assert "BCQ_MARK" in dom.XMLDesc(0) and "xmlns:qemu=" in dom.XMLDesc(0)  # other namespaces survive
    assert inactive_disk_matches(dom, "vda", top)
    assert update_inactive_disk(conn, dom, "vda", top)["changed"] is False

    start_domain(dom)
    live = select_disk(domain_disks(dom), target="vda")
    assert live.chain_paths() == [top, base]  # detected from the headers, the stale entry is gone
    assert [image.format for image in live.images] == ["qcow2", "qcow2"]
    assert live.chain_terminated


def test_update_refuses_a_running_domain_and_a_missing_image(conn, make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base)
    with pytest.raises(LiveError, match="is running"):
        update_inactive_disk(conn, dom, "vda", base)
    dom.destroy()
    with pytest.raises(LiveError, match="does not exist"):
        update_inactive_disk(conn, dom, "vda", str(image_dir / "missing.qcow2"))
    with pytest.raises(LiveError, match="no disk with target vdz"):
        update_inactive_disk(conn, dom, "vdz", base)
