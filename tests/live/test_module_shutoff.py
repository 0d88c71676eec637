# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules with domain on a shut-off domain, run by Ansible: the engine works offline and the
domain's definition follows, so the domain starts on the new chain."""

from __future__ import annotations

import functools
import os

import libvirt
from chain_setup import BASE_DATA, MID_DATA, TOP_DATA, three_deep_chain
from live_helpers import MiB, create_image, image_info_chain, reads_pattern, start_domain, write_offline
from module_runner import converge, run_ok

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.disk_model import domain_disks, select_disk
from ansible_collections.backingchain.qcow2.tests.unit.plugins.images import fingerprint


def definition(dom):
    """(source, format, <backingStore> present) of vda in the inactive XML."""
    disk = select_disk(domain_disks(dom, inactive=True), target="vda")
    return disk.source, disk.format, disk.has_backing_store


def shutoff_state(dom, directory):
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), fingerprint(directory)


def test_snapshot_then_active_commit_of_a_shut_off_domain(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    write_offline(base, 0x11, 0, MiB)
    dom = make_domain(base, start=False)
    overlay = str(image_dir / "overlay.qcow2")
    state = functools.partial(shutoff_state, dom, image_dir)

    check1, real1, _c2, real2 = converge("qcow2_snapshot", {"path": base, "type": "external", "overlay": overlay,
                                                            "domain": dom.name()}, state)

    assert check1["diff"]["after"]["chain"] == [overlay, base]
    assert check1["diff"]["after"]["definition"] == {"source": overlay, "format": "qcow2", "backing_store_in_xml": False}
    assert real1["domain"]["state"] == "shut off" and real1["domain"]["definition_changed"] is True
    assert real2["domain"]["definition_changed"] is False
    assert definition(dom) == (overlay, "qcow2", False)
    chain = image_info_chain(overlay)
    assert [image["filename"] for image in chain] == [overlay, base] and chain[0]["backing-filename-format"] == "qcow2"

    write_offline(overlay, 0x77, MiB, MiB)  # what the guest wrote while it ran on the overlay
    check1, real1, _c2, real2 = converge("qcow2_commit", {"path": overlay, "domain": dom.name(), "remove_committed": True},
                                         state)

    assert check1["diff"]["after"]["chain"] == [base] and check1["removed"] == [overlay]
    assert real1["committed"] == real1["removed"] == [overlay] and real1["bytes_copied"] == MiB
    assert not os.path.exists(overlay)
    assert definition(dom) == (base, "qcow2", False)
    assert "nothing to commit" in real2["msg"]
    assert reads_pattern(base, 0x11, 0, MiB) and reads_pattern(base, 0x77, MiB, MiB)
    start_domain(dom)  # libvirt starts it on the redefined disk
    assert live_chain(dom, "vda") == [base]


def test_intermediate_commit_and_rebase_of_a_shut_off_three_deep_chain(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top, start=False)
    state = functools.partial(shutoff_state, dom, image_dir)

    check1, real1, _c2, _r2 = converge("qcow2_commit", {"path": chain.top, "top": chain.mid, "domain": dom.name()}, state)

    assert check1["diff"]["after"]["chain"] == [chain.top, chain.base]
    assert real1["committed"] == [chain.mid] and "job" not in real1
    assert [image["filename"] for image in image_info_chain(chain.top)] == [chain.top, chain.base]
    assert definition(dom) == (chain.top, "qcow2", False)

    check1, real1, _c2, _r2 = converge("qcow2_rebase", {"path": chain.top, "backing_file": "", "domain": dom.name()}, state)

    assert check1["diff"]["after"]["chain"] == [chain.top]
    assert real1["new_backing"] == "" and real1["bytes_copied"] > 0
    assert [image["filename"] for image in image_info_chain(chain.top)] == [chain.top]
    for data in (BASE_DATA, MID_DATA, TOP_DATA):
        assert reads_pattern(chain.top, *data)

    other = create_image(str(image_dir / "other.qcow2"))  # offline, any image can become the backing file, unsafely too
    moved = run_ok("qcow2_rebase", {"path": chain.top, "backing_file": "other.qcow2", "mode": "unsafe", "domain": dom.name()},
                   in_process=True)
    assert moved["changed"] is True and moved["header_only"] is True and moved["domain"]["chain"] == [chain.top, other]
    assert definition(dom) == (chain.top, "qcow2", False)
    start_domain(dom)
    assert live_chain(dom, "vda") == [chain.top, other]
    for data in (BASE_DATA, MID_DATA, TOP_DATA):
        assert reads_pattern(chain.top, *data, force_share=True)


def test_a_definition_libvirt_wrote_is_kept_when_right_and_replaced_when_stale(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base)
    overlay = str(image_dir / "overlay.qcow2")
    args = {"path": base, "type": "external", "overlay": overlay, "domain": dom.name()}
    run_ok("qcow2_snapshot", args, in_process=True)  # live: libvirt writes <backingStore> into the definition
    dom.destroy()
    assert definition(dom) == (overlay, "qcow2", True)

    again = run_ok("qcow2_snapshot", args)  # the same task, now on the shut-off domain
    assert again["changed"] is False and again["domain"]["definition_changed"] is False
    assert definition(dom) == (overlay, "qcow2", True)

    other = create_image(str(image_dir / "other.qcow2"))
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(base, other)  # a <backingStore> the headers contradict
    dom.connect().defineXML(xml)
    check = run_ok("qcow2_snapshot", args, check=True, in_process=True)
    assert check["changed"] is True and definition(dom) == (overlay, "qcow2", True)
    fixed = run_ok("qcow2_snapshot", args, in_process=True)
    assert fixed["changed"] is True and fixed["domain"]["definition_changed"] is True
    assert definition(dom) == (overlay, "qcow2", False)
    start_domain(dom)
    assert live_chain(dom, "vda") == [overlay, base]
