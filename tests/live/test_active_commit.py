# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Active commit with pivot while the guest keeps writing."""

from __future__ import annotations

from live_helpers import KiB, MiB, create_image, domblklist, guest_write, image_info_chain, reads_pattern, stop_gracefully, write_offline

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.active_commit import (
    active_commit,
    finish_active_commit,
    start_active_commit,
)
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.block_jobs import current_job, set_job_bandwidth
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.chain_state import disk_runs_on, live_chain
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.snapshot import create_disk_only_snapshot


def test_active_commit_pivots_and_base_holds_writes_from_before_and_during_the_job(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"))
    write_offline(base, 0x11, 0, MiB)  # data the base had before the VM ran
    dom = make_domain(base)
    overlay = str(image_dir / "overlay.qcow2")
    create_disk_only_snapshot(dom, {"vda": overlay})
    guest_write(dom, 0x22, 1 * MiB, MiB)  # before the job, into the overlay
    guest_write(dom, 0x23, 4 * MiB, 4 * MiB)  # enough data that the throttled job is still copying below

    handle = start_active_commit(dom, "vda", base=base, bandwidth=256 * KiB)
    job = current_job(dom, "vda")
    assert job is not None and job["cur"] < job["end"], job  # the job is running, not yet ready
    guest_write(dom, 0x5A, 2 * MiB, MiB)  # during the job: new area
    guest_write(dom, 0x33, 1 * MiB + 64 * KiB, 64 * KiB)  # during the job: overwrites data written before it
    guest_write(dom, 0x44, 16 * MiB, MiB)  # during the job: far away
    assert current_job(dom, "vda") is not None, "the writes must happen while the job runs"
    set_job_bandwidth(dom, "vda", 0)
    result = record_job("active commit + pivot", finish_active_commit(dom, handle, timeout=60))

    assert result["outcome"] == "pivoted", result["message"]
    assert result["changed"] is True and result["aborted"] is False
    assert result["end"] > 0 and result["cur"] == result["end"]
    assert result["chain_before"] == [overlay, base] and result["chain_after"] == [base]
    assert domblklist(dom.name())["vda"] == base
    assert disk_runs_on(dom, "vda", base)
    assert current_job(dom, "vda") is None
    guest_write(dom, 0x66, 20 * MiB, MiB)  # after the pivot the guest writes straight into the base

    stop_gracefully(dom)
    assert "backing-filename" not in image_info_chain(base)[0]  # the base stands alone
    assert reads_pattern(base, 0x11, 0, MiB)
    assert reads_pattern(base, 0x22, 1 * MiB, 64 * KiB)
    assert reads_pattern(base, 0x33, 1 * MiB + 64 * KiB, 64 * KiB)
    assert reads_pattern(base, 0x22, 1 * MiB + 128 * KiB, MiB - 128 * KiB)
    assert reads_pattern(base, 0x5A, 2 * MiB, MiB)
    assert reads_pattern(base, 0x00, 3 * MiB, MiB)
    assert reads_pattern(base, 0x23, 4 * MiB, 4 * MiB)
    assert reads_pattern(base, 0x44, 16 * MiB, MiB)
    assert reads_pattern(base, 0x66, 20 * MiB, MiB)


def test_active_commit_into_a_deeper_base_merges_every_layer_above_it(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base)
    first, second = str(image_dir / "s1.qcow2"), str(image_dir / "s2.qcow2")
    create_disk_only_snapshot(dom, {"vda": first})
    guest_write(dom, 0x01, 0, MiB)
    create_disk_only_snapshot(dom, {"vda": second})
    guest_write(dom, 0x02, MiB, MiB)

    result = record_job("active commit 2 layers", active_commit(dom, "vda", base=base, timeout=60))

    assert result["outcome"] == "pivoted", result["message"]
    assert result["chain_before"] == [second, first, base]
    assert live_chain(dom, "vda") == [base]
    stop_gracefully(dom)
    assert reads_pattern(base, 0x01, 0, MiB) and reads_pattern(base, 0x02, MiB, MiB)


def test_active_commit_without_pivot_leaves_a_copy_in_base_and_the_guest_on_the_overlay(make_domain, image_dir, record_job):
    base = create_image(str(image_dir / "base.qcow2"))
    dom = make_domain(base)
    overlay = str(image_dir / "overlay.qcow2")
    create_disk_only_snapshot(dom, {"vda": overlay})
    guest_write(dom, 0x77, 0, MiB)

    result = record_job("active commit, no pivot", active_commit(dom, "vda", timeout=60, pivot=False))

    assert result["outcome"] == "aborted", result["message"]
    assert result["aborted"] is True and result["changed"] is True
    assert live_chain(dom, "vda") == [overlay, base]
    assert current_job(dom, "vda") is None
    stop_gracefully(dom)
    assert reads_pattern(base, 0x77, 0, MiB)
