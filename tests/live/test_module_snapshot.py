# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qcow2_snapshot with domain, on a running domain, run by Ansible: libvirt takes the snapshot."""

from __future__ import annotations

import os

from live_helpers import MiB, create_image, domblklist, guest_write, image_info_chain, reads_pattern, stop_gracefully, write_offline
from module_runner import converge, run_failed, run_ok

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain


def running_state(dom, directory):
    return live_chain(dom, "vda"), sorted(os.listdir(directory))


def test_snapshot_of_a_running_domain_converges_and_the_guest_writes_to_the_overlay(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    write_offline(base, 0x11, 0, MiB)
    dom = make_domain(base)
    overlay = str(image_dir / "overlay.qcow2")
    args = {"path": base, "type": "external", "overlay": overlay, "domain": dom.name()}

    check1, real1, check2, real2 = converge("qcow2_snapshot", args, lambda: running_state(dom, image_dir))

    assert check1["diff"]["before"]["chain"] == [base]
    assert check1["diff"]["after"]["chain"] == [overlay, base]
    assert check1["domain"]["chain"] == [base] and check1["domain"]["state"] == "running"
    assert real1["domain"] == {"name": dom.name(), "state": "running", "disk": "vda", "chain": [overlay, base],
                               "snapshot": None, "quiesced": False}
    assert domblklist(dom.name())["vda"] == overlay
    chain = image_info_chain(overlay)  # qemu-img info -U --backing-chain
    assert [image["filename"] for image in chain] == [overlay, base]
    assert chain[0]["backing-filename"] == base and chain[0]["backing-filename-format"] == "qcow2"
    assert real1["overlay"]["filename"] == overlay and real1["overlay"]["backing_filename_format"] == "qcow2"
    assert [image["filename"] for image in real1["chain"]] == [overlay, base]
    assert check2["diff"]["before"] == check2["diff"]["after"] == real1["diff"]["after"]
    assert real2["domain"]["chain"] == [overlay, base]
    assert dom.snapshotNum(0) == 0  # metadata is off by default

    guest_write(dom, 0x5A, 0, MiB)
    stop_gracefully(dom)
    assert reads_pattern(overlay, 0x5A, 0, MiB) and reads_pattern(base, 0x11, 0, MiB)


def test_snapshot_of_a_paused_domain_by_disk_target_with_metadata_keeps_a_named_libvirt_snapshot(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base)
    dom.suspend()  # qemu still holds the images: the live path
    overlay = str(image_dir / "overlay.qcow2")
    alias = str(image_dir / "alias.qcow2")
    os.symlink(base, alias)  # another spelling of the active image
    args = {"path": alias, "type": "external", "overlay": overlay, "domain": dom.name(), "disk": "vda",
            "metadata": True, "name": "before-upgrade"}

    result = run_ok("qcow2_snapshot", args)

    assert result["changed"] is True and result["domain"]["snapshot"] == "before-upgrade"
    assert result["domain"]["state"] == "paused"
    assert dom.snapshotListNames(0) == ["before-upgrade"]
    assert live_chain(dom, "vda") == [overlay, base]
    assert run_ok("qcow2_snapshot", args)["changed"] is False


def test_snapshot_refusals_change_nothing(make_domain, image_dir):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base, agent_channel=True)  # a channel no agent answers on
    overlay = str(image_dir / "overlay.qcow2")
    args = {"path": base, "type": "external", "overlay": overlay, "domain": dom.name()}

    for check in (True, False):
        quiesced = run_failed("qcow2_snapshot", dict(args, quiesce=True), check=check, in_process=check)
        assert "guest agent of domain '%s' does not answer" % dom.name() in quiesced["msg"]
        assert "No snapshot was taken" in quiesced["msg"]

    existing = create_image(str(image_dir / "existing.qcow2"))
    taken = run_failed("qcow2_snapshot", dict(args, overlay=existing), in_process=True)
    assert "already exists" in taken["msg"]

    missing = run_failed("qcow2_snapshot", dict(args, domain="bcq-test-no-such-domain"), in_process=True)
    assert "domain 'bcq-test-no-such-domain' does not exist" in missing["msg"]

    assert live_chain(dom, "vda") == [base] and not os.path.exists(overlay)

    run_ok("qcow2_snapshot", args, in_process=True)
    deeper = run_failed("qcow2_snapshot", dict(args, overlay=str(image_dir / "second.qcow2")), in_process=True)
    assert "is a backing image (depth 1) of disk vda" in deeper["msg"]
    assert live_chain(dom, "vda") == [overlay, base]
