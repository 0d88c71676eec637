# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qcow2_commit with domain, on a running domain, run by Ansible: libvirt block commit jobs."""

from __future__ import annotations

import os
import time

from chain_setup import BASE_DATA, MID_DATA, TOP_DATA, three_deep_chain
from live_helpers import (
    KiB,
    MiB,
    create_image,
    domblklist,
    guest_write,
    image_info_chain,
    reads_pattern,
    stop_gracefully,
    write_offline,
)
from module_runner import ModuleRun, converge, run_failed, run_ok

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import start_active_commit
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import current_job, set_job_bandwidth
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot


def running_state(dom, directory):
    return live_chain(dom, "vda"), sorted(os.listdir(directory))


def wait_for_job(dom, seconds=60):
    deadline = time.monotonic() + seconds
    while current_job(dom, "vda") is None:
        assert time.monotonic() < deadline, "the module did not start a block job"
        time.sleep(0.05)
    return current_job(dom, "vda")


def test_active_commit_pivots_onto_base_with_every_guest_write(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"))
    write_offline(base, 0x11, 0, MiB)
    dom = make_domain(base)
    overlay = str(image_dir / "overlay.qcow2")
    create_disk_only_snapshot(dom, {"vda": overlay})
    guest_write(dom, 0x22, 1 * MiB, MiB)  # before the job
    guest_write(dom, 0x23, 4 * MiB, 4 * MiB)  # enough that the throttled job is still copying below
    args = {"path": overlay, "domain": dom.name(), "remove_committed": True, "timeout": 120}

    check = run_ok("qcow2_commit", dict(args, bandwidth="256K"), check=True, in_process=True)
    assert check["changed"] is True and "job" not in check and current_job(dom, "vda") is None
    assert check["diff"]["after"]["chain"] == [base] and check["committed"] == check["removed"] == [overlay]
    assert live_chain(dom, "vda") == [overlay, base] and os.path.exists(overlay)

    run = ModuleRun("qcow2_commit", dict(args, bandwidth="256K"))
    try:
        job = wait_for_job(dom)
        assert job["cur"] < job["end"], job  # still copying
        guest_write(dom, 0x5A, 2 * MiB, MiB)  # during the job: a new area
        guest_write(dom, 0x33, 1 * MiB + 64 * KiB, 64 * KiB)  # during the job: over data written before it
        guest_write(dom, 0x44, 16 * MiB, MiB)  # during the job: far away
        assert current_job(dom, "vda") is not None, "the writes must happen while the job runs"
        set_job_bandwidth(dom, "vda", 0)
        real = run.result()
    finally:
        run.stop()

    assert not real["failed"], real["msg"]
    record_job("module active commit", real["job"])
    assert real["changed"] is True and real["diff"] == check["diff"]
    assert real["job"]["job"] == "active commit" and real["job"]["outcome"] == "pivoted"
    assert real["job"]["end"] > 0 and real["job"]["cur"] == real["job"]["end"] and real["job"]["duration"] > 0
    assert real["top"] == overlay and real["base"] == base
    assert real["committed"] == real["removed"] == [overlay] and real["bytes_copied"] is None
    assert not os.path.exists(overlay)  # removed only after the pivot
    assert domblklist(dom.name())["vda"] == base and live_chain(dom, "vda") == [base]
    assert real["domain"]["chain"] == [base] and [image["filename"] for image in real["chain"]] == [base]

    again = run_ok("qcow2_commit", args)
    assert again["changed"] is False and "nothing to commit" in again["msg"]
    assert run_ok("qcow2_commit", args, check=True, in_process=True)["changed"] is False

    guest_write(dom, 0x66, 20 * MiB, MiB)  # after the pivot, straight into base
    stop_gracefully(dom)
    assert "backing-filename" not in image_info_chain(base)[0]
    assert reads_pattern(base, 0x11, 0, MiB)
    assert reads_pattern(base, 0x22, 1 * MiB, 64 * KiB)
    assert reads_pattern(base, 0x33, 1 * MiB + 64 * KiB, 64 * KiB)
    assert reads_pattern(base, 0x22, 1 * MiB + 128 * KiB, MiB - 128 * KiB)
    assert reads_pattern(base, 0x5A, 2 * MiB, MiB)
    assert reads_pattern(base, 0x23, 4 * MiB, 4 * MiB)
    assert reads_pattern(base, 0x44, 16 * MiB, MiB)
    assert reads_pattern(base, 0x66, 20 * MiB, MiB)


def test_intermediate_commit_on_a_three_deep_running_chain(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    args = {"path": chain.top, "top": chain.mid, "domain": dom.name()}

    check1, real1, _check2, real2 = converge("qcow2_commit", args, lambda: running_state(dom, image_dir))

    assert check1["diff"]["after"]["chain"] == [chain.top, chain.base]
    assert real1["job"]["job"] == "commit" and real1["job"]["outcome"] == "completed"
    assert real1["job"]["relative_backing"] is True
    assert real1["committed"] == [chain.mid] and real1["removed"] == [] and os.path.exists(chain.mid)
    assert live_chain(dom, "vda") == [chain.top, chain.base]
    info = image_info_chain(chain.top)
    assert [image["filename"] for image in info] == [chain.top, chain.base]
    assert info[0]["backing-filename"] == "base.qcow2" and info[0]["backing-filename-format"] == "qcow2"
    assert "not in the chain of disk vda" in real2["msg"]

    stop_gracefully(dom)
    for data in (BASE_DATA, MID_DATA, TOP_DATA):
        assert reads_pattern(chain.top, *data)
    assert reads_pattern(chain.base, *MID_DATA)  # mid's data now lives in base


def test_a_commit_that_times_out_is_aborted_and_the_domain_keeps_its_chain(make_domain, image_dir):
    chain = three_deep_chain(image_dir, mid_extra=8 * MiB)
    dom = make_domain(chain.top)

    failed = run_failed("qcow2_commit", {"path": chain.top, "top": chain.mid, "domain": dom.name(), "timeout": 1,
                                         "bandwidth": "128K"})

    assert failed["job"]["outcome"] == "timeout" and failed["job"]["aborted"] is True
    assert 0 < failed["job"]["end"] and failed["job"]["cur"] < failed["job"]["end"]
    assert "aborted" in failed["msg"] and "original chain" in failed["msg"]
    assert live_chain(dom, "vda") == [chain.top, chain.mid, chain.base]
    assert current_job(dom, "vda") is None and dom.isActive()


def test_commit_refusals_on_a_running_domain(make_domain, image_dir):
    chain = three_deep_chain(image_dir)
    dom = make_domain(chain.top)
    name = dom.name()

    deeper = run_failed("qcow2_commit", {"path": chain.mid, "domain": name}, in_process=True)
    assert "is a backing image (depth 1) of disk vda" in deeper["msg"]
    no_base = run_failed("qcow2_commit", {"path": chain.top, "top": chain.base, "domain": name}, in_process=True)
    assert "no backing file to commit into" in no_base["msg"]
    above = run_failed("qcow2_commit", {"path": chain.top, "top": chain.mid, "base": chain.top, "domain": name},
                       in_process=True)
    assert "is not below top" in above["msg"]
    busy = create_disk_only_snapshot(dom, {"vda": str(image_dir / "overlay.qcow2")})["overlays"]["vda"]
    # An active commit someone else started (4: ACTIVE); no base: libvirt commits into the chain's deepest image.
    dom.blockCommit("vda", None, None, 64 * KiB, 4)
    try:
        other_base = run_failed("qcow2_commit", {"path": busy, "domain": name}, check=True, in_process=True)
        assert "already has a block job (active commit of %s into %s" % (busy, chain.base) in other_base["msg"]
        assert "which is not the active commit of %s into %s asked for" % (busy, chain.top) in other_base["msg"]
        assert "virsh blockjob %s vda --abort" % name in other_base["msg"]
        below = run_failed("qcow2_commit", {"path": busy, "top": chain.mid, "domain": name}, in_process=True)
        assert "already has a block job (active commit of %s into %s" % (busy, chain.base) in below["msg"]
    finally:
        dom.blockJobAbort("vda", 0)
    assert live_chain(dom, "vda") == [busy, chain.top, chain.mid, chain.base]
    dom.blockRebase("vda", None, 64 * KiB, 64)  # a throttled pull of everything (64: BANDWIDTH_BYTES)
    try:
        pulling = run_failed("qcow2_commit", {"path": busy, "domain": name}, check=True, in_process=True)
        assert "already has a block job (pull, " in pulling["msg"]
        assert "wait for it to end, or abort it with: virsh blockjob %s vda --abort" % name in pulling["msg"]
    finally:
        dom.blockJobAbort("vda", 0)
    assert live_chain(dom, "vda") == [busy, chain.top, chain.mid, chain.base]


def test_an_active_commit_an_earlier_run_left_is_adopted_and_pivoted(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"))
    write_offline(base, 0x11, 0, MiB)
    dom = make_domain(base)
    overlay = create_disk_only_snapshot(dom, {"vda": str(image_dir / "overlay.qcow2")})["overlays"]["vda"]
    guest_write(dom, 0x22, 1 * MiB, 2 * MiB)
    # What a run killed during its active commit leaves: libvirt's job goes on, throttled here, and nobody pivots.
    start_active_commit(dom, "vda", base=base, bandwidth=64 * KiB)
    assert current_job(dom, "vda")["type"] == 4
    args = {"path": overlay, "domain": dom.name(), "remove_committed": True, "timeout": 120}

    check = run_ok("qcow2_commit", args, check=True, in_process=True)
    assert check["changed"] is True and "job" not in check
    assert "already runs on disk vda" in check["msg"] and "would wait for it to be ready and pivot" in check["msg"]
    assert check["diff"]["after"]["chain"] == [base] and check["committed"] == check["removed"] == [overlay]
    assert live_chain(dom, "vda") == [overlay, base] and current_job(dom, "vda") is not None

    real = run_ok("qcow2_commit", args)  # no bandwidth: the task lifts the earlier run's limit

    record_job("module adopted active commit", real["job"])
    assert real["changed"] is True and real["diff"] == check["diff"]
    assert real["job"]["adopted"] is True and real["job"]["outcome"] == "pivoted", real["job"]
    assert real["job"]["cur"] == real["job"]["end"] > 0
    assert real["job"]["duration"] < 16  # the limit was lifted: 2 MiB at the earlier run's 64 KiB/s take 32 s
    assert real["committed"] == real["removed"] == [overlay] and not os.path.exists(overlay)
    assert live_chain(dom, "vda") == [base] and current_job(dom, "vda") is None
    assert run_ok("qcow2_commit", args, check=True, in_process=True)["changed"] is False

    guest_write(dom, 0x33, 4 * MiB, MiB)  # after the pivot, straight into base
    stop_gracefully(dom)
    assert reads_pattern(base, 0x11, 0, MiB)
    assert reads_pattern(base, 0x22, 1 * MiB, 2 * MiB)
    assert reads_pattern(base, 0x33, 4 * MiB, MiB)
