# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qcow2_rebase with domain, on a running domain, run by Ansible: libvirt block pull jobs."""

from __future__ import annotations

import os

from chain_setup import BASE_DATA, MID_DATA, TOP_DATA, three_deep_chain
from live_helpers import MiB, create_image, depth_at, guest_flush, guest_write, image_info_chain, reads_pattern, stop_gracefully
from module_runner import converge, run_failed

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain


def running_state(dom, directory):
    return live_chain(dom, "vda"), sorted(os.listdir(directory))


def test_pull_from_a_base_in_the_chain_then_everything(make_domain, image_dir, record_job):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    guest_write(dom, 0x44, 3 * MiB, MiB)
    args = {"path": chain.top, "backing_file": "base.qcow2", "domain": dom.name()}  # relative to path's directory

    check1, real1, _check2, real2 = converge("qcow2_rebase", args, lambda: running_state(dom, image_dir))

    assert check1["diff"]["after"]["chain"] == [chain.top, chain.base]
    assert check1["old_backing"] == "mid.qcow2" and check1["new_backing"] == "base.qcow2"
    record_job("module pull above base", real1["job"])
    assert real1["job"]["job"] == "pull" and real1["job"]["outcome"] == "completed"
    assert real1["old_backing"] == "mid.qcow2" and real1["new_backing"] == "base.qcow2"  # libvirt kept it relative
    assert real1["header_only"] is False and real1["bytes_copied"] is None
    assert live_chain(dom, "vda") == [chain.top, chain.base]
    assert image_info_chain(chain.top)[0]["backing-filename-format"] == "qcow2"
    guest_flush(dom)  # qemu caches qcow2 metadata; qemu-img map -U reads the file
    assert depth_at(chain.top, MID_DATA[1]) == 0 and depth_at(chain.top, BASE_DATA[1]) == 1
    assert real2["domain"]["chain"] == [chain.top, chain.base]

    flatten = dict(args, backing_file="")
    check1, real1, _check2, real2 = converge("qcow2_rebase", flatten, lambda: running_state(dom, image_dir))

    assert check1["diff"]["after"]["chain"] == [chain.top]
    assert real1["job"]["outcome"] == "completed" and real1["new_backing"] == "" and real1["new_format"] is None
    assert live_chain(dom, "vda") == [chain.top] and "backing-filename" not in image_info_chain(chain.top)[0]
    assert real2["image"]["filename"] == chain.top

    stop_gracefully(dom)
    for data in (BASE_DATA, MID_DATA, TOP_DATA, (0x44, 3 * MiB, MiB)):
        assert reads_pattern(chain.top, *data)
    assert reads_pattern(chain.mid, *MID_DATA)  # pulled-from images stay valid


def test_pull_refusals_on_a_running_domain(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    other = create_image(str(image_dir / "other.qcow2"))
    args = {"path": chain.top, "domain": dom.name()}

    outside = run_failed("qcow2_rebase", dict(args, backing_file=other), in_process=True)
    assert "is not in the chain of disk vda of running domain" in outside["msg"] and "shut the domain off" in outside["msg"]
    unsafe = run_failed("qcow2_rebase", dict(args, backing_file=chain.base, mode="unsafe"), in_process=True)
    assert "mode=unsafe" in unsafe["msg"] and "qemu holds open" in unsafe["msg"]
    raw = run_failed("qcow2_rebase", dict(args, backing_file=chain.base, backing_format="raw"), in_process=True)
    assert "is a qcow2 image, but backing_format is raw" in raw["msg"]
    not_active = run_failed("qcow2_rebase", dict(args, path=chain.mid, backing_file=""), in_process=True)
    assert "is a backing image (depth 1) of disk vda" in not_active["msg"]
    by_disk = run_failed("qcow2_rebase", dict(args, path=chain.mid, backing_file="", disk="vda"))
    assert "is not the active image of disk vda" in by_disk["msg"]
    assert live_chain(dom, "vda") == [chain.top, chain.mid, chain.base]


def test_a_pull_that_times_out_is_aborted_and_the_domain_keeps_its_chain(make_domain, image_dir):
    chain = three_deep_chain(image_dir, mid_extra=8 * MiB)
    dom = make_domain(chain.top)

    failed = run_failed("qcow2_rebase", {"path": chain.top, "backing_file": "", "domain": dom.name(), "timeout": 1,
                                         "bandwidth": "128K"}, in_process=True)

    assert failed["job"]["job"] == "pull" and failed["job"]["outcome"] == "timeout" and failed["job"]["aborted"] is True
    assert failed["job"]["cur"] < failed["job"]["end"] and "original chain" in failed["msg"]
    assert live_chain(dom, "vda") == [chain.top, chain.mid, chain.base] and dom.isActive()
